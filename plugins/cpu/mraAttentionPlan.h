/*
 * mraAttentionPlan.h: what the MRA driver (mraAttention.cpp) hands the per-ISA kernels (mraAttentionTiles.h): the
 * call's tensors and attributes, and the workspace the kernels fill and read. Plain data and `static` helpers only:
 * the AVX2 translation unit must share no inline function (one merged copy, maybe AVX2 code) with the portable one.
 *
 * Per (batch, head) "bh", with nb = ceil(L / 32) block rows, Lp = 32 nb and Dp = D rounded up to 8. The tiles
 * read keys and values in place; only what cannot be read in place is copied:
 *
 *   keyTail      (BH, 32, D)       the last key block, zero past L (used when L % 32 != 0)
 *   valueCopy    (BH, 32, Dp)      the same for values when D % 8 == 0; else (BH, Lp, Dp): every value row
 *                                  zero-padded to whole vectors (valueCopyAll)
 *   keyMask      (B, Lp)           the mask, 0 past L
 *   keyPenalty   (B, Lp)           1e4 * (1 - mask) per key token, in fp32 as the op
 *   blockAllOnes (B, nb)           1 where every token of the block has mask 1 (no mask product needed)
 *   queryMeans, keyMeans, valueMeans (BH, nb, Dp)   masked block sums / (token count + 1e-6)
 *   keyMeansT    (BH, Dp, nbs)     keyMeans transposed, nbs = nb rounded up to 16 (zero columns past nb)
 *   tokenCounts  (BH, nb)          sum of the mask per block
 *   lowLogits    (BH, nb, nbs)     low-resolution logits, empty blocks at -1e4 (the op's low_logit)
 *   rankRowMax   (BH, nb)          their row max before the empty blocks are removed (ranks top-k)
 *   lowRowMax    (BH, nb)          their row max after (the low-resolution stabiliser)
 *   blockFlags   (BH, nb, nb)      kSELECTED: a high-resolution tile; kCOVERED: score >= the k-th score
 */
#pragma once

#include <cstdint>

namespace tensorkiln::cpu
{

constexpr int64_t kMRA_BLOCK = 32;
//! HF's constants, as the op's: +5e3 makes prior blocks win top-k; -1e4 removes blocks and keys; 1e-6 epsilon.
constexpr float kMRA_PRIOR_BONUS = 5e3F;
constexpr float kMRA_REMOVED = 1e4F;
constexpr float kMRA_EPS = 1e-6F;

constexpr uint8_t kBLOCK_SELECTED = 1;
constexpr uint8_t kBLOCK_COVERED = 2;

struct MraPlan
{
    float const* query{nullptr};
    float const* key{nullptr};
    float const* value{nullptr};
    float const* mask{nullptr};
    float* output{nullptr};
    int64_t batch{0};
    int64_t heads{0};
    int64_t length{0};
    int64_t headDim{0};
    int64_t nb{0};
    int64_t paddedDim{0};
    int64_t lowStride{0};
    int64_t budget{0};
    //! The op divides logits by float(1 / scale); when that is a power of two, multiplying by its inverse is exact.
    float invScale{1.0F};
    bool multiplyByScale{false};
    float exactScale{1.0F};
    bool fullMode{true};
    int64_t firstN{0};
    int64_t diagonalN{0};

    bool valueCopyAll{false};
    float* keyTail{nullptr};
    float* valueCopy{nullptr};
    float* keyMask{nullptr};
    float* keyPenalty{nullptr};
    uint8_t* blockAllOnes{nullptr};
    float* queryMeans{nullptr};
    float* keyMeans{nullptr};
    float* keyMeansT{nullptr};
    float* valueMeans{nullptr};
    float* tokenCounts{nullptr};
    float* lowLogits{nullptr};
    float* rankRowMax{nullptr};
    float* lowRowMax{nullptr};
    uint8_t* blockFlags{nullptr};
};

//! Floats of per-thread scratch one block row needs when its row holds at most `tiles` selected tiles, `maskedTiles`
//! of them with a mask other than 1 (see carveScratch in mraAttentionTiles.h; each of its 13 parts 64-byte aligned).
static inline int64_t mraRowScratchFloats(MraPlan const& plan, int64_t tiles, int64_t maskedTiles) noexcept
{
    int64_t const block = kMRA_BLOCK;
    return block * block * tiles + block * plan.headDim + block * plan.paddedDim + plan.paddedDim + plan.nb + 8
        + 3 * block + maskedTiles * block * (plan.headDim + plan.paddedDim) + plan.nb + 6 * tiles + 14 * 16;
}

} // namespace tensorkiln::cpu
