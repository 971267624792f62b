/*
 * enginePlan.h: everything the TensorRT backend decides that needs no TensorRT, so it is unit-tested on any machine
 * and shared, by a documented format, with the Python runtime's TensorRT backend (runtime/tensorrt_engine.py):
 *
 * - the optimisation profile of each input, from the manifest's dims and length rules;
 * - whether the ONNX parser's kENABLE_PLUGIN_OVERRIDE flag is set, and what the custom nodes then run on;
 * - the engine cache key: sha256 of the key text below, written one "name=value" line each, in this order:
 *
 *     tensorkiln-trt-engine-key/1
 *     model_sha256=<the manifest's sha256 of the model file>
 *     tensorrt=<major.minor.patch>
 *     device=<GPU name>
 *     compute_capability=<major.minor>
 *     precision=<the export's precision>
 *     plugins=<sha256 of the plugin library loaded, or none>
 *     plugin_override=<on|off>
 *     profile=<input>:<min>/<opt>/<max>;...   (each shape as dims joined by "x", inputs in the manifest's order)
 *
 *   An engine is cached as <cache>/<key>.engine with <key>.json (the key's fields) beside it.
 */
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "manifest.h"

namespace tensorkiln::trt
{

//! The shapes TensorRT is asked to serve: batch and choice counts up to these, sequences up to max_length.
struct ProfileSettings
{
    int64_t maxBatch{8};
    int64_t optBatch{1};
    int64_t optSequence{128}; //!< clipped to max_length
    int64_t maxChoices{4};    //!< multiple-choice heads' num_choices
};

struct InputProfile
{
    std::string name;
    std::vector<int64_t> min;
    std::vector<int64_t> opt;
    std::vector<int64_t> max;
};

//! One optimisation profile covering every input of the export.
std::vector<InputProfile> profilesFromManifest(Manifest const& manifest, ProfileSettings const& settings = {});
//! "input_ids:1x1/1x128/8x128;..." (the key's profile line).
std::string profileText(std::vector<InputProfile> const& profiles);

struct PluginDecision
{
    bool setOverrideFlag{false};
    std::string customNodesRunOn; //!< "plugin (libtensorkiln_plugins.so)" or "function body (why)"
};

//! What the parser does with the custom nodes: the plugins take them only when the export has some, the plugin
//! library is loaded and the parser has kENABLE_PLUGIN_OVERRIDE (TensorRT >= 10.15); otherwise TensorRT inlines
//! their model-local function bodies.
PluginDecision pluginDecision(bool hasCustomNodes, bool pluginsLoaded, bool parserHasOverrideFlag,
    std::string const& tensorrtVersion);

struct EngineKeyFields
{
    std::string modelSha256;
    std::string tensorrtVersion;
    std::string deviceName;
    std::string computeCapability;
    std::string precision;
    std::string pluginsSha256; //!< "none" without plugins
    bool pluginOverride{false};
    std::string profile;
};

//! The key text (the format above) and its sha256, the cache key.
std::string engineKeyText(EngineKeyFields const& fields);
std::string engineKey(EngineKeyFields const& fields);

} // namespace tensorkiln::trt
