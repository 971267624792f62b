/*
 * inputs.h: checking and completing a session's named inputs against the manifest: runtime/inputs.py in C++, the
 * same defaults (attention_mask all ones, token_type_ids zeros, positions from the mask, an empty cache: a
 * prefill, fixed-length graphs padded and trimmed) and the same RuntimeInputError messages, in the same order.
 */
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "manifest.h"
#include "tensorkiln/session.h"

namespace tensorkiln
{

//! What config.json bounds: token ids below vocab_size, token types below type_vocab_size.
struct ModelLimits
{
    int64_t vocabSize{0};
    std::optional<int64_t> typeVocabSize;
};

//! The limits of an export's config.json; a ManifestError names a key that is missing or wrong.
ModelLimits modelLimits(Json const& config);

//! The graph's feeds (in the manifest's input order) and the real length when they were padded to a fixed one.
struct Prepared
{
    std::vector<std::pair<std::string, Tensor>> feeds;
    std::optional<int64_t> realLength;
};

//! Check `inputs` against the manifest and complete them into the graph's feeds.
Prepared prepare(Manifest const& manifest, ModelLimits const& limits, NamedTensors const& inputs);
//! Slice per-token outputs back to the real length of padded inputs.
NamedTensors trim(Manifest const& manifest, Prepared const& prepared, NamedTensors outputs);

//! HF generate's positions: the count of real tokens before each token; padded slots take 1 (int64 mask in).
Tensor positionIdsFromMask(Tensor const& mask);
//! The first `count` entries of `tensor` along `axis`.
Tensor sliceAxis(Tensor const& tensor, std::size_t axis, int64_t begin, int64_t count);

} // namespace tensorkiln
