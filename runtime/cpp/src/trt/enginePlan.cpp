/*
 * enginePlan.cpp: the TensorRT backend's decisions without TensorRT (see enginePlan.h). Profiles: batch_size
 * 1..maxBatch (opt optBatch); sequence_length 1..max_length (opt min(optSequence, max_length)); the cache's
 * past_sequence_length 0..max_length-1 (opt half the opt sequence); "past + new" dims their sum, not capped (a cap
 * would make the profile's corners inconsistent shapes, e.g. past 127 + new 128 against a mask of 128, which
 * TensorRT's builder rejects; the input rules still keep every real call within max_length); num_choices
 * 1..maxChoices; fixed dims (Nystromformer's fixed length, hidden sizes) as they are.
 */
#include "trt/enginePlan.h"

#include "sha256.h"

#include <algorithm>

namespace tensorkiln::trt
{
namespace
{

struct Range
{
    int64_t min, opt, max;
};

Range symbolRange(std::string const& symbol, Manifest const& manifest, ProfileSettings const& settings)
{
    int64_t const maxLength = manifest.lengthRules.maxLength;
    int64_t const optSequence = std::min(settings.optSequence, maxLength);
    if (symbol == kBATCH)
        return {1, std::min(settings.optBatch, settings.maxBatch), settings.maxBatch};
    if (symbol == "num_choices")
        return {1, 1, settings.maxChoices};
    if (symbol == kPAST)
        return {0, optSequence / 2, maxLength - 1};
    return {1, optSequence, maxLength}; // sequence_length and any other per-token dim
}

Range dimRange(Dim const& dim, Manifest const& manifest, ProfileSettings const& settings)
{
    if (std::holds_alternative<int64_t>(dim))
    {
        int64_t const size = std::get<int64_t>(dim);
        return {size, size, size};
    }
    std::string const& text = std::get<std::string>(dim);
    if (text.find('+') == std::string::npos)
        return symbolRange(text, manifest, settings);
    Range total{0, 0, 0};
    std::size_t start = 0;
    while (true)
    {
        std::size_t const end = text.find('+', start);
        std::string part = text.substr(start, end == std::string::npos ? std::string::npos : end - start);
        part.erase(0, part.find_first_not_of(' '));
        part.erase(part.find_last_not_of(' ') + 1);
        Range const r = symbolRange(part, manifest, settings);
        total = {total.min + r.min, total.opt + r.opt, total.max + r.max};
        if (end == std::string::npos)
            break;
        start = end + 1;
    }
    return total;
}

std::string shapeText(std::vector<int64_t> const& shape)
{
    std::string out;
    for (std::size_t i = 0; i < shape.size(); ++i)
        out += (i ? "x" : "") + std::to_string(shape[i]);
    return out;
}

} // namespace

std::vector<InputProfile> profilesFromManifest(Manifest const& manifest, ProfileSettings const& settings)
{
    std::vector<InputProfile> profiles;
    for (auto const& input : manifest.inputs)
    {
        InputProfile profile{input.name, {}, {}, {}};
        for (auto const& dim : input.dims)
        {
            Range const r = dimRange(dim, manifest, settings);
            profile.min.push_back(r.min);
            profile.opt.push_back(r.opt);
            profile.max.push_back(r.max);
        }
        profiles.push_back(profile);
    }
    return profiles;
}

std::string profileText(std::vector<InputProfile> const& profiles)
{
    std::string out;
    for (std::size_t i = 0; i < profiles.size(); ++i)
    {
        auto const& p = profiles[i];
        out += (i ? ";" : "") + p.name + ":" + shapeText(p.min) + "/" + shapeText(p.opt) + "/" + shapeText(p.max);
    }
    return out;
}

PluginDecision pluginDecision(bool hasCustomNodes, bool pluginsLoaded, bool parserHasOverrideFlag,
    std::string const& tensorrtVersion)
{
    if (!hasCustomNodes)
        return {false, ""};
    if (!pluginsLoaded)
        return {false, "function body (no plugin library: set TENSORKILN_TRT_PLUGINS to libtensorkiln_plugins.so)"};
    if (!parserHasOverrideFlag)
    {
        return {false, "function body (TensorRT " + tensorrtVersion
                + "'s ONNX parser has no kENABLE_PLUGIN_OVERRIDE: TensorRT 10.15 or newer lets the plugins take the "
                  "custom nodes)"};
    }
    return {true, "plugin (libtensorkiln_plugins.so)"};
}

std::string engineKeyText(EngineKeyFields const& f)
{
    return "tensorkiln-trt-engine-key/1\nmodel_sha256=" + f.modelSha256 + "\ntensorrt=" + f.tensorrtVersion
        + "\ndevice=" + f.deviceName + "\ncompute_capability=" + f.computeCapability + "\nprecision=" + f.precision
        + "\nplugins=" + (f.pluginsSha256.empty() ? "none" : f.pluginsSha256) + "\nplugin_override="
        + (f.pluginOverride ? "on" : "off") + "\nprofile=" + f.profile + "\n";
}

std::string engineKey(EngineKeyFields const& fields)
{
    return sha256Bytes(engineKeyText(fields));
}

} // namespace tensorkiln::trt
