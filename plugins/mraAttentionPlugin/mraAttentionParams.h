/*
 * mraAttentionParams.h: the host logic of the MraAttention node (tensorkiln::mra_attention), free of TensorRT and
 * CUDA so that ctest covers it: attribute parsing and validation, the contract's shape and dtype rules, output
 * extents, and the exact workspace layout of the kernels (shared by the plugin, the torch binding and the launcher).
 *
 * The rules are those of reference/ops/mra_attention.py (_check_inputs); names and positions come from
 * common/nodeContract.h, which is generated from runtime/contract.py. The workspace layout is inline so that the
 * launcher carves the workspace with the very function the plugin sizes it with.
 */
#pragma once

#include "common/elementType.h"
#include "common/fields.h"
#include "common/nodeContract.h"

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace tensorkiln::plugin
{

using MraContract = contract::MraAttention;

//! Tokens per block, fixed by the MRA paper's kernels; L is padded inside to a multiple of it.
constexpr int32_t kMRA_BLOCK_SIZE = 32;
//! The largest head dim the kernels take (their buckets are 32, 64 and 128).
constexpr int32_t kMRA_MAX_HEAD_DIM = 128;
//! The largest L whose nb * nb block candidates still index as int32 (46340^2 < 2^31).
constexpr int64_t kMRA_MAX_LENGTH = int64_t{46340} * kMRA_BLOCK_SIZE;
//! HF's constants: +5e3 makes prior blocks win top-k; -1e4 removes blocks and keys (exp(-1e4) == 0 in fp32).
constexpr float kMRA_PRIOR_BONUS = 5e3F;
constexpr float kMRA_REMOVED = 1e4F;
constexpr float kMRA_EPS = 1e-6F;

enum class MraApproxMode : int32_t
{
    kFULL = 0,   //!< high-resolution blocks plus the low-resolution remainder
    kSPARSE = 1, //!< high-resolution blocks only
};

//! The node's attributes, validated. scale is kept as the double the torch op receives; TensorRT's field is fp32.
struct MraAttributes
{
    int32_t numBlocks{0};
    double scale{0.0};
    MraApproxMode approxMode{MraApproxMode::kFULL};
    int32_t priorFirstNBlocks{static_cast<int32_t>(MraContract::kDEFAULT_INITIAL_PRIOR_FIRST_N_BLOCKS)};
    int32_t priorDiagonalNBlocks{static_cast<int32_t>(MraContract::kDEFAULT_INITIAL_PRIOR_DIAGONAL_N_BLOCKS)};
};

//! "full" / "sparse" -> MraApproxMode; throws PluginError naming the field otherwise.
MraApproxMode parseMraApproxMode(std::string_view text);
char const* mraApproxModeName(MraApproxMode mode) noexcept;

//! Read and validate the fields: num_blocks and scale are required, the others take the contract's defaults;
//! unknown fields are logged and ignored.
MraAttributes parseMraAttributes(FieldReader const& fields);
//! num_blocks >= 1, scale finite and > 0, approx_mode known, priors >= 0; throws PluginError naming the field.
void validateMraAttributes(MraAttributes const& attributes);

//! The problem's sizes. An extent of -1 is not known yet (TensorRT's build phase) and checks skip it.
struct MraShape
{
    int64_t batch{-1};
    int64_t heads{-1};
    int64_t length{-1};
    int64_t headDim{-1};
};

//! Check the four inputs' extents against the contract: query, key, value (B, H, L, D), all equal, and
//! attention_mask (B, L); 1 <= L <= kMRA_MAX_LENGTH, 1 <= D <= 128. -1 extents are wildcards.
//! Throws PluginError naming the input and the rule, as the torch op does.
MraShape checkMraShapes(std::vector<std::vector<int64_t>> const& inputExtents);

//! The output's extents: (B, H, L, D), query's.
std::vector<int64_t> mraOutputExtents(MraShape const& shape);

//! Whether the element type at `position` (inputs 0..3, then the output at 4) is supported, given query's type:
//! query fp32/fp16/bf16, key/value/output query's type, the mask fp32/fp16/bf16 of its own (TensorRT has no fp64).
bool mraSupportsType(int32_t position, ElementType type, ElementType queryType) noexcept;
//! Check the four input types (the torch binding's path, where the mask may also be fp64); throws PluginError.
void checkMraTypes(std::vector<ElementType> const& inputTypes);

//! ceil(L / 32): block rows (and columns) of the padded sequence.
inline int64_t mraNumBlockRows(int64_t length) noexcept
{
    return (length + kMRA_BLOCK_SIZE - 1) / kMRA_BLOCK_SIZE;
}

//! The head-dim bucket of the kernels: 32, 64 or 128 (the head dim is zero-padded to it).
inline int32_t mraPaddedHeadDim(int64_t headDim) noexcept
{
    return headDim <= 32 ? 32 : (headDim <= 64 ? 64 : 128);
}

//! The block budget clamped to the nb * nb blocks that exist.
inline int64_t mraClampedBudget(int64_t numBlocks, int64_t length) noexcept
{
    int64_t const nb = mraNumBlockRows(length);
    return numBlocks < nb * nb ? numBlocks : nb * nb;
}

//! Byte offsets of the kernels' scratch arrays inside the workspace, each aligned to kALIGNMENT, and the total.
//! With BH = batch * heads, nb = ceil(L / 32), Dp = the head-dim bucket, K = the clamped budget:
//!   queryMeans, keyMeans, valueMeans  float [BH][nb][Dp]   masked block means (zero above D)
//!   tokenCounts                       float [BH][nb]       real tokens per block
//!   lowLogits                         float [BH][nb][nb]   low-resolution logits, empty blocks at -1e4
//!   rankRowMax                        float [BH][nb]       row max before removing empty blocks (ranks top-k)
//!   lowRowMax                         float [BH][nb]       row max without empty blocks (the stabiliser)
//!   thresholds                        float [BH]           the k-th largest ranking score
//!   selected                          int32 [BH][K]        selected flat block indices, ascending
//!   rowStarts                         int32 [BH][nb + 1]   where each block row's selection starts in `selected`
struct MraWorkspaceLayout
{
    static constexpr size_t kALIGNMENT = 256;
    size_t queryMeans{0};
    size_t keyMeans{0};
    size_t valueMeans{0};
    size_t tokenCounts{0};
    size_t lowLogits{0};
    size_t rankRowMax{0};
    size_t lowRowMax{0};
    size_t thresholds{0};
    size_t selected{0};
    size_t rowStarts{0};
    size_t totalBytes{0};
};

//! The layout for sizes already checked by checkMraShapes (all >= 1) and numBlocks >= 1.
inline MraWorkspaceLayout mraWorkspaceLayout(
    int64_t batch, int64_t heads, int64_t length, int64_t headDim, int64_t numBlocks) noexcept
{
    auto const bh = static_cast<size_t>(batch * heads);
    auto const nb = static_cast<size_t>(mraNumBlockRows(length));
    auto const dp = static_cast<size_t>(mraPaddedHeadDim(headDim));
    auto const budget = static_cast<size_t>(mraClampedBudget(numBlocks, length));
    MraWorkspaceLayout layout;
    size_t offset = 0;
    auto const take = [&offset](size_t bytes)
    {
        size_t const start = offset;
        offset += (bytes + MraWorkspaceLayout::kALIGNMENT - 1) / MraWorkspaceLayout::kALIGNMENT
                  * MraWorkspaceLayout::kALIGNMENT;
        return start;
    };
    layout.queryMeans = take(bh * nb * dp * sizeof(float));
    layout.keyMeans = take(bh * nb * dp * sizeof(float));
    layout.valueMeans = take(bh * nb * dp * sizeof(float));
    layout.tokenCounts = take(bh * nb * sizeof(float));
    layout.lowLogits = take(bh * nb * nb * sizeof(float));
    layout.rankRowMax = take(bh * nb * sizeof(float));
    layout.lowRowMax = take(bh * nb * sizeof(float));
    layout.thresholds = take(bh * sizeof(float));
    layout.selected = take(bh * budget * sizeof(int32_t));
    layout.rowStarts = take(bh * (nb + 1) * sizeof(int32_t));
    layout.totalBytes = offset;
    return layout;
}

//! Workspace bytes of one call; 0 when there is nothing to compute (batch or heads 0). Monotone in every extent,
//! so the size at a profile's maximum dims covers every smaller shape (TensorRT's getWorkspaceSize contract).
inline size_t mraWorkspaceBytes(
    int64_t batch, int64_t heads, int64_t length, int64_t headDim, int64_t numBlocks) noexcept
{
    if (batch <= 0 || heads <= 0 || length <= 0 || headDim <= 0 || numBlocks <= 0)
    {
        return 0;
    }
    return mraWorkspaceLayout(batch, heads, length, headDim, numBlocks).totalBytes;
}

inline size_t mraWorkspaceBytes(MraShape const& shape, MraAttributes const& attributes) noexcept
{
    return mraWorkspaceBytes(shape.batch, shape.heads, shape.length, shape.headDim, attributes.numBlocks);
}

} // namespace tensorkiln::plugin
