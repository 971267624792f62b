/*
 * generationConfig.h: one generate call's options resolved and checked: runtime/generation_config.py's resolve in
 * C++ (the argument, else generation_config.json, else config.json's special ids, else HF's default), with the same
 * RuntimeInputError messages, values shown as Python shows them.
 */
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "jsonFile.h"
#include "tensorkiln/generation.h"

namespace tensorkiln
{

constexpr int64_t kDEFAULT_MAX_NEW_TOKENS = 20;

struct ResolvedOptions
{
    int64_t maxNewTokens{kDEFAULT_MAX_NEW_TOKENS};
    int64_t minNewTokens{0};
    bool doSample{false};
    double temperature{1.0};
    int64_t topK{50};
    double topP{1.0};
    std::optional<uint64_t> seed;
    int64_t numBeams{1};
    double repetitionPenalty{1.0};
    int64_t noRepeatNgramSize{0};
    std::vector<int64_t> eosTokenIds;
    int64_t padTokenId{0};
    std::vector<std::string> stopStrings;
};

//! The typed options as the JSON object of HF names the resolver reads (unset fields left out).
Json optionsToJson(GenerationOptions const& options);
//! A request's options parsed from JSON text (a RuntimeInputError when it is not a JSON object).
Json optionsFromJsonText(std::string const& text);

//! Resolve `given` (HF-named options; null means not given) over `defaults` (generation_config.json) over
//! `config` (config.json) for a prompt of `promptLength` tokens.
ResolvedOptions resolveOptions(Json const& given, Json const& defaults, Json const& config, int64_t promptLength);

} // namespace tensorkiln
