/*
 * trtBuild.cpp: the TensorRT backend's entry point (trtEntry.h): the engine cache key (enginePlan.h's format),
 * the cached engine loaded when its key matches, else the ONNX model parsed (the plugin library loaded and the
 * parser's kENABLE_PLUGIN_OVERRIDE set where pluginDecision says so), one optimisation profile from the manifest's
 * length rules, the engine built as a strongly typed network (the export's own precision) and cached atomically.
 */
#include "trt/enginePlan.h"
#include "trt/trtEngine.h"
#include "trt/trtEntry.h"

#include "sha256.h"

#include <NvOnnxParser.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string_view>

#include <unistd.h>

#define TK_TRT_AT_LEAST(major, minor)                                                                                  \
    (NV_TENSORRT_MAJOR > (major) || (NV_TENSORRT_MAJOR == (major) && NV_TENSORRT_MINOR >= (minor)))

namespace tensorkiln::trt
{
namespace
{

namespace fs = std::filesystem;

Error unavailable(std::string const& message)
{
    return Error(ErrorKind::kBACKEND_UNAVAILABLE, message);
}

std::vector<char> readBytes(fs::path const& path)
{
    std::ifstream file(path, std::ios::binary);
    return std::vector<char>((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
}

void writeAtomically(fs::path const& path, void const* data, std::size_t size)
{
    fs::create_directories(path.parent_path());
    // One partial file per process, so two services building the same engine never write into each other's.
    fs::path const partial = path.string() + "." + std::to_string(::getpid()) + ".partial";
    {
        std::ofstream file(partial, std::ios::binary | std::ios::trunc);
        file.write(static_cast<char const*>(data), static_cast<std::streamsize>(size));
        if (!file)
            throw unavailable("cannot write " + partial.string());
    }
    fs::rename(partial, path);
}

std::string pluginLibrary(LoadOptions const& options)
{
    if (!options.tensorrtPlugins.empty())
        return options.tensorrtPlugins;
    char const* chosen = std::getenv("TENSORKILN_TRT_PLUGINS");
    return chosen != nullptr ? chosen : "";
}

void addProfile(nvinfer1::IBuilder& builder, nvinfer1::INetworkDefinition const& network,
    nvinfer1::IBuilderConfig& config, Manifest const& manifest)
{
    std::set<std::string> networkInputs; // an input the graph never reads is not the network's
    for (int32_t i = 0; i < network.getNbInputs(); ++i)
        networkInputs.insert(network.getInput(i)->getName());
    nvinfer1::IOptimizationProfile* profile = builder.createOptimizationProfile();
    auto const toDims = [](std::vector<int64_t> const& shape) {
        nvinfer1::Dims dims{};
        dims.nbDims = static_cast<int32_t>(shape.size());
        for (std::size_t i = 0; i < shape.size(); ++i)
            dims.d[i] = shape[i];
        return dims;
    };
    for (InputProfile const& input : profilesFromManifest(manifest))
    {
        if (networkInputs.count(input.name) == 0)
            continue;
        profile->setDimensions(input.name.c_str(), nvinfer1::OptProfileSelector::kMIN, toDims(input.min));
        profile->setDimensions(input.name.c_str(), nvinfer1::OptProfileSelector::kOPT, toDims(input.opt));
        profile->setDimensions(input.name.c_str(), nvinfer1::OptProfileSelector::kMAX, toDims(input.max));
    }
    config.addOptimizationProfile(profile);
}

std::vector<char> buildPlan(std::string const& modelPath, Manifest const& manifest, bool pluginOverride, Logger& logger)
{
    std::unique_ptr<nvinfer1::IBuilder> builder(nvinfer1::createInferBuilder(logger));
    if (!builder)
        throw unavailable("TensorRT could not create a builder: " + logger.lastError());
#if NV_TENSORRT_MAJOR >= 11
    uint32_t const networkFlags = 0; // every network is strongly typed
#else
    uint32_t const networkFlags = 1U << static_cast<uint32_t>(nvinfer1::NetworkDefinitionCreationFlag::kSTRONGLY_TYPED);
#endif
    std::unique_ptr<nvinfer1::INetworkDefinition> network(builder->createNetworkV2(networkFlags));
    std::unique_ptr<nvonnxparser::IParser> parser(nvonnxparser::createParser(*network, logger));
#if TK_TRT_AT_LEAST(10, 15)
    if (pluginOverride)
        parser->setFlag(nvonnxparser::OnnxParserFlag::kENABLE_PLUGIN_OVERRIDE);
#else
    (void) pluginOverride; // pluginDecision never asks for the flag where the parser lacks it
#endif
    if (!parser->parseFromFile(modelPath.c_str(), static_cast<int>(nvinfer1::ILogger::Severity::kWARNING)))
    {
        std::string const why = parser->getNbErrors() > 0 ? parser->getError(0)->desc() : logger.lastError();
        throw unavailable("TensorRT's ONNX parser refused " + modelPath + ": " + why);
    }
    std::unique_ptr<nvinfer1::IBuilderConfig> config(builder->createBuilderConfig());
    if (manifest.precision == "fp32") // TF32 matmuls (TensorRT's default) break the fp32 rule of the parity policy
        config->clearFlag(nvinfer1::BuilderFlag::kTF32);
    addProfile(*builder, *network, *config, manifest);
    std::unique_ptr<nvinfer1::IHostMemory> plan(builder->buildSerializedNetwork(*network, *config));
    if (!plan)
        throw unavailable("TensorRT could not build an engine for " + modelPath + ": " + logger.lastError());
    char const* bytes = static_cast<char const*>(plan->data());
    return std::vector<char>(bytes, bytes + plan->size());
}

//! The record beside a cached engine, as runtime/tensorrt_engine.py writes it (either runtime reuses the other's).
Json engineRecord(std::string const& key, EngineKeyFields const& fields, std::vector<char> const& plan)
{
    return Json{{"format", "tensorkiln-trt-engine-key/1"}, {"key", key}, {"model_sha256", fields.modelSha256},
        {"tensorrt_version", fields.tensorrtVersion}, {"device_name", fields.deviceName},
        {"compute_capability", fields.computeCapability}, {"precision", fields.precision},
        {"plugins_sha256", fields.pluginsSha256}, {"plugin_override", fields.pluginOverride},
        {"profile", fields.profile}, {"engine_bytes", plan.size()},
        {"engine_sha256", sha256Bytes(std::string_view(plan.data(), plan.size()))}};
}

//! The cached engine when it and its record agree (key, size, sha256); otherwise empty, with a warning on stderr
//! saying why it is rebuilt (a damaged or replaced engine is never deserialized).
std::vector<char> cachedPlan(fs::path const& enginePath, fs::path const& recordPath, std::string const& key)
{
    if (!fs::exists(enginePath) && !fs::exists(recordPath))
        return {};
    std::vector<char> plan = readBytes(enginePath);
    std::ifstream recordFile(recordPath);
    Json const record = Json::parse(recordFile, nullptr, /*allow_exceptions=*/false);
    bool const agrees = record.is_object() && record.value("key", "") == key
        && record.value("engine_bytes", uint64_t{0}) == plan.size() && !plan.empty()
        && record.value("engine_sha256", "") == sha256Bytes(std::string_view(plan.data(), plan.size()));
    if (agrees)
        return plan;
    std::fprintf(stderr, "tensorkiln: warning: the cached TensorRT engine %s does not match its record (damaged, "
        "replaced or half-written); building it again\n", enginePath.string().c_str());
    return {};
}

std::unique_ptr<Backend> open(TrtRequest const& request)
{
    auto logger = std::make_shared<Logger>();
    Manifest const& manifest = *request.manifest;
    // The plugins matter (and enter the key) only for an export with custom nodes, as in the Python runtime.
    std::string const plugins = manifest.customNodes.empty() ? "" : pluginLibrary(*request.options);
    bool const pluginsLoaded = !plugins.empty()
        && getPluginRegistry()->loadLibrary(plugins.c_str()) != nullptr;
    if (!plugins.empty() && !pluginsLoaded)
        throw unavailable("TensorRT could not load the plugin library " + plugins + ": " + logger->lastError());
    PluginDecision const decision = pluginDecision(!manifest.customNodes.empty(), pluginsLoaded,
        TK_TRT_AT_LEAST(10, 15), loadedVersion());
    auto const [device, capability] = currentDevice();
    EngineKeyFields fields{*manifest.fileDigest(manifest.modelFile), loadedVersion(), device, capability,
        manifest.precision, pluginsLoaded ? sha256File(plugins) : "none", decision.setOverrideFlag,
        profileText(profilesFromManifest(manifest))};
    std::string const key = engineKey(fields);
    fs::path const cache = request.options->engineCacheDir.empty() ? fs::path(*request.cacheDir) / "engines"
                                                                   : fs::path(request.options->engineCacheDir);
    fs::path const enginePath = cache / (key + ".engine");
    fs::path const recordPath = cache / (key + ".json");
    std::vector<char> plan = cachedPlan(enginePath, recordPath, key);
    if (plan.empty())
    {
        plan = buildPlan(*request.modelPath, manifest, decision.setOverrideFlag, *logger);
        writeAtomically(enginePath, plan.data(), plan.size());
        std::string const record = engineRecord(key, fields, plan).dump(2) + "\n";
        writeAtomically(recordPath, record.data(), record.size());
    }
    return engineBackend(plan, manifest, decision.customNodesRunOn, logger);
}

} // namespace
} // namespace tensorkiln::trt

extern "C" __attribute__((visibility("default"))) int tensorkilnCreateTensorRtBackend(
    tensorkiln::TrtRequest const* request, tensorkiln::Backend** backend, char* message, std::size_t messageSize)
{
    auto const report = [&](int status, char const* text) {
        std::snprintf(message, messageSize, "%s", text);
        return status;
    };
    try
    {
        *backend = tensorkiln::trt::open(*request).release();
        return 0;
    }
    catch (tensorkiln::Error const& error)
    {
        return report(static_cast<int>(error.kind()) + 1, error.what());
    }
    catch (std::exception const& error)
    {
        return report(static_cast<int>(tensorkiln::ErrorKind::kBACKEND_UNAVAILABLE) + 1, error.what());
    }
}
