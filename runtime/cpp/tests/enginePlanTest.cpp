/*
 * enginePlanTest.cpp: the TensorRT backend's decisions, against the format documented in src/trt/enginePlan.h
 * (the expected profile worked out by hand from those rules; the key's sha256 printed by Python's hashlib for the
 * same text), so a change of format shows here and in the Python helper's tests alike.
 */
#include "testing.h"
#include "trt/enginePlan.h"

using namespace tensorkiln;

namespace
{

Manifest causalLm()
{
    Manifest manifest;
    manifest.lengthRules.maxLength = 128;
    manifest.inputs = {{"input_ids", "int64", {kBATCH, "sequence_length"}, 1},
        {"attention_mask", "int64", {kBATCH, "past_sequence_length + sequence_length"}, 1},
        {"past_key_values.0.key", "float32", {kBATCH, int64_t{4}, kPAST, int64_t{8}}, std::nullopt}};
    return manifest;
}

} // namespace

TK_TEST(profilesFollowTheLengthRules)
{
    std::vector<trt::InputProfile> const profiles = trt::profilesFromManifest(causalLm());
    CHECK_EQ(profiles.size(), std::size_t{3});
    CHECK_EQ(trt::profileText(profiles),
        std::string("input_ids:1x1/1x128/8x128;attention_mask:1x1/1x192/8x255;"
                    "past_key_values.0.key:1x4x0x8/1x4x64x8/8x4x127x8"));
    trt::ProfileSettings settings;
    settings.maxBatch = 2;
    settings.optSequence = 16;
    CHECK_EQ(trt::profileText({trt::profilesFromManifest(causalLm(), settings)[1]}),
        std::string("attention_mask:1x1/1x24/2x255"));
}

TK_TEST(fixedLengthGraphsGetFixedProfiles)
{
    Manifest manifest;
    manifest.lengthRules.maxLength = 32;
    manifest.lengthRules.fixedLength = 32;
    manifest.inputs = {{"input_ids", "int64", {kBATCH, int64_t{32}}, 1}};
    CHECK_EQ(trt::profileText(trt::profilesFromManifest(manifest)), std::string("input_ids:1x32/1x32/8x32"));
}

TK_TEST(engineKeyTextFollowsTheDocumentedFormat)
{
    trt::EngineKeyFields fields;
    fields.modelSha256 = std::string(32 * 2, 'a');
    for (std::size_t i = 1; i < fields.modelSha256.size(); i += 2)
        fields.modelSha256[i] = 'b';
    fields.tensorrtVersion = "10.16.0";
    fields.deviceName = "NVIDIA H100 80GB HBM3";
    fields.computeCapability = "9.0";
    fields.precision = "fp16";
    fields.profile = "input_ids:1x1/1x128/8x128";
    std::string const text = "tensorkiln-trt-engine-key/1\nmodel_sha256=" + fields.modelSha256
        + "\ntensorrt=10.16.0\ndevice=NVIDIA H100 80GB HBM3\ncompute_capability=9.0\nprecision=fp16\nplugins=none\n"
          "plugin_override=off\nprofile=input_ids:1x1/1x128/8x128\n";
    CHECK_EQ(trt::engineKeyText(fields), text);
    CHECK_EQ(trt::engineKey(fields), std::string("5072db7dad867979c472b5a1cbad9f171cd40690e1f2da66fa4ce30253357150"));
    fields.pluginOverride = true;
    fields.pluginsSha256 = "cd";
    CHECK(trt::engineKeyText(fields).find("\nplugins=cd\nplugin_override=on\n") != std::string::npos);
    CHECK(trt::engineKey(fields) != std::string("5072db7dad867979c472b5a1cbad9f171cd40690e1f2da66fa4ce30253357150"));
}

TK_TEST(pluginsTakeTheCustomNodesOnlyWithTheOverrideFlag)
{
    CHECK(!trt::pluginDecision(false, true, true, "10.16.0").setOverrideFlag);
    CHECK(!trt::pluginDecision(true, false, true, "10.16.0").setOverrideFlag);
    trt::PluginDecision const old = trt::pluginDecision(true, true, false, "10.14.1");
    CHECK(!old.setOverrideFlag && old.customNodesRunOn.find("function body") == 0);
    CHECK(trt::pluginDecision(true, true, true, "10.16.0").setOverrideFlag);
}
