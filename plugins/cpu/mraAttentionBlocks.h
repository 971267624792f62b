/*
 * mraAttentionBlocks.h: the block-level (low-resolution) part of MRA-2 attention (reference/ops/mra_attention.py),
 * compiled once per build in the namespace TK_CPU_ISA_NS (see cpuSimd.h).
 *
 * prepareHead, per (batch, head): masked block sums of q, k, v over 32 tokens in token order, divided by
 * (token count + 1e-6); the low-resolution logits q_mean . k_mean / float(1 / scale) (a register-blocked product
 * with the key means transposed), -1e4 for empty blocks, and both row maxima the op takes; zero-padded copies of
 * what the tiles cannot read in place (the last, partial key and value block; every value row when D is not a whole
 * number of vectors).
 *
 * lowResolutionPart, per block row in "full" mode: the blocks not covered at high resolution, weighted by
 * exp(low_logit - row max) times their token counts, times the value means.
 */
#pragma once

#include "cpu/cpuGemm.h"
#include "cpu/cpuSimd.h"
#include "cpu/mraAttentionPlan.h"

#include <cstdint>
#include <math.h>

namespace tensorkiln::cpu::TK_CPU_ISA_NS
{

//! The op's `logit / inv_scale`: a multiplication where that is exact (inv_scale a power of two), else a division.
static inline VecF scaleLogits(MraPlan const& plan, VecF s) noexcept
{
    return plan.multiplyByScale ? vmul(s, vset(plan.exactScale)) : vdiv(s, vset(plan.invScale));
}
static inline float scaleLogit(MraPlan const& plan, float s) noexcept
{
    return plan.multiplyByScale ? s * plan.exactScale : s / plan.invScale;
}

//! sums[d] += row[d] * m for d < dim; vectorised over whole vectors, the rest one by one (same operations).
static inline void addScaled(float* sums, float const* row, float m, int64_t dim) noexcept
{
    VecF const mv = vset(m);
    int64_t d = 0;
    for (; d + kVEC_F <= dim; d += kVEC_F)
    {
        vstore(sums + d, vadd(vload(sums + d), vmul(vload(row + d), mv)));
    }
    for (; d < dim; ++d)
    {
        float const product = row[d] * m;
        sums[d] += product;
    }
}

//! The zero-padded copies of block `row`'s keys (rows of D) and values (rows of Dp), where the plan wants them.
static void copyPaddedBlock(MraPlan const& plan, int64_t bh, int64_t row) noexcept
{
    int64_t const length = plan.length;
    int64_t const dim = plan.headDim;
    int64_t const paddedDim = plan.paddedDim;
    bool const partial = (row + 1) * kMRA_BLOCK > length;
    float* keyCopy = partial ? plan.keyTail + bh * kMRA_BLOCK * dim : nullptr;
    float* valueCopy = nullptr;
    if (plan.valueCopyAll)
    {
        valueCopy = plan.valueCopy + (bh * plan.nb + row) * kMRA_BLOCK * paddedDim;
    }
    else if (partial)
    {
        valueCopy = plan.valueCopy + bh * kMRA_BLOCK * paddedDim;
    }
    float const* key = plan.key + bh * length * dim;
    float const* value = plan.value + bh * length * dim;
    for (int64_t i = 0; i < kMRA_BLOCK; ++i)
    {
        int64_t const token = row * kMRA_BLOCK + i;
        bool const real = token < length; // past L: the op's padding, zero rows
        for (int64_t d = 0; keyCopy != nullptr && d < dim; ++d)
        {
            keyCopy[i * dim + d] = real ? key[token * dim + d] : 0.0F;
        }
        for (int64_t d = 0; valueCopy != nullptr && d < paddedDim; ++d)
        {
            valueCopy[i * paddedDim + d] = real && d < dim ? value[token * dim + d] : 0.0F;
        }
    }
}

//! Block means of one block row (masked sums over its tokens in token order / (count + 1e-6)), its token count,
//! and its key mean into the transposed copy the low-resolution product reads.
static void blockMeans(MraPlan const& plan, int64_t bh, int64_t row) noexcept
{
    int64_t const length = plan.length;
    int64_t const dim = plan.headDim;
    int64_t const paddedDim = plan.paddedDim;
    float const* mask = plan.mask + (bh / plan.heads) * length;
    int64_t const block = bh * plan.nb + row;
    float* querySum = plan.queryMeans + block * paddedDim;
    float* keySum = plan.keyMeans + block * paddedDim;
    float* valueSum = plan.valueMeans + block * paddedDim;
    for (int64_t d = 0; d < paddedDim; ++d)
    {
        querySum[d] = 0.0F;
        keySum[d] = 0.0F;
        valueSum[d] = 0.0F;
    }
    float count = 0.0F;
    int64_t const end = minI64((row + 1) * kMRA_BLOCK, length); // tokens past L add mask 0 and zero rows
    for (int64_t token = row * kMRA_BLOCK; token < end; ++token)
    {
        float const m = mask[token];
        count += m;
        int64_t const offset = (bh * length + token) * dim;
        addScaled(querySum, plan.query + offset, m, dim);
        addScaled(keySum, plan.key + offset, m, dim);
        addScaled(valueSum, plan.value + offset, m, dim);
    }
    float const denominator = count + kMRA_EPS;
    float* keyMeansT = plan.keyMeansT + bh * paddedDim * plan.lowStride;
    for (int64_t d = 0; d < dim; ++d)
    {
        querySum[d] = querySum[d] / denominator;
        keySum[d] = keySum[d] / denominator;
        valueSum[d] = valueSum[d] / denominator;
        keyMeansT[d * plan.lowStride + row] = keySum[d];
    }
    plan.tokenCounts[block] = count;
}

//! Low-resolution logits of block rows [r0, r0 + kMR): raw q_mean . k_mean products, rows of lowStride.
template <int kMR>
static inline void lowLogitRows(MraPlan const& plan, int64_t bh, int64_t r0) noexcept
{
    int64_t const paddedDim = plan.paddedDim;
    float const* queryMeans = plan.queryMeans + (bh * plan.nb + r0) * paddedDim;
    float const* keyMeansT = plan.keyMeansT + bh * paddedDim * plan.lowStride;
    float* out = plan.lowLogits + (bh * plan.nb + r0) * plan.lowStride;
    for (int64_t c0 = 0; c0 < plan.lowStride; c0 += 2 * kVEC_F)
    {
        VecF acc[kMR][2];
        zeroBlock(acc);
        gemmBlock(queryMeans, paddedDim, 1, keyMeansT + c0, plan.lowStride, paddedDim, acc);
        storeBlock(out + c0, plan.lowStride, acc);
    }
}

void prepareHead(MraPlan const& plan, int64_t bh) noexcept
{
    int64_t const nb = plan.nb;
    for (int64_t row = 0; row < nb; ++row)
    {
        blockMeans(plan, bh, row);
        if (plan.valueCopyAll || (row + 1) * kMRA_BLOCK > plan.length)
        {
            copyPaddedBlock(plan, bh, row);
        }
    }
    int64_t row = 0;
    for (; row + kMAIN_ROWS <= nb; row += kMAIN_ROWS)
    {
        lowLogitRows<kMAIN_ROWS>(plan, bh, row);
    }
    for (; row < nb; ++row)
    {
        lowLogitRows<1>(plan, bh, row);
    }
    // The op's low_logit / inv_scale, its row max (ranks top-k), empty blocks at -1e4 and the row max after.
    float const* counts = plan.tokenCounts + bh * nb;
    for (row = 0; row < nb; ++row)
    {
        float* lowLogits = plan.lowLogits + (bh * nb + row) * plan.lowStride;
        float rankMax = -INFINITY;
        float lowMax = -INFINITY;
        for (int64_t col = 0; col < nb; ++col)
        {
            float const logit = scaleLogit(plan, lowLogits[col]);
            bool const empty = counts[col] * counts[row] < 0.5F;
            float const low = empty ? logit - kMRA_REMOVED : logit;
            lowLogits[col] = low;
            rankMax = logit > rankMax ? logit : rankMax;
            lowMax = low > lowMax ? low : lowMax;
        }
        plan.rankRowMax[bh * nb + row] = rankMax;
        plan.lowRowMax[bh * nb + row] = lowMax;
    }
}

//! Full mode: the low-resolution remainder of block row `row` (blocks not covered), into lowOut (Dp); its norm.
static float lowResolutionPart(MraPlan const& plan, int64_t bh, int64_t row, float* weights, float* lowOut) noexcept
{
    int64_t const nb = plan.nb;
    int64_t const paddedDim = plan.paddedDim;
    float const* lowLogits = plan.lowLogits + (bh * nb + row) * plan.lowStride;
    uint8_t const* flags = plan.blockFlags + (bh * nb + row) * nb;
    float const* counts = plan.tokenCounts + bh * nb;
    float const* valueMeans = plan.valueMeans + bh * nb * paddedDim;
    float const lowMax = plan.lowRowMax[bh * nb + row];
    int64_t const rounded = (nb + kVEC_F - 1) / kVEC_F * kVEC_F;
    for (int64_t col = 0; col < rounded; ++col)
    {
        weights[col] = col < nb ? lowLogits[col] - lowMax : -INFINITY;
    }
    for (int64_t col = 0; col < rounded; col += kVEC_F)
    {
        vstore(weights + col, vexp(vload(weights + col)));
    }
    for (int64_t d = 0; d < paddedDim; ++d)
    {
        lowOut[d] = 0.0F;
    }
    float norm = 0.0F;
    for (int64_t col = 0; col < nb; ++col)
    {
        // A covered block's weight is exp(x - 1e4) with x <= 0: exactly 0 in fp32, as in the op.
        float const weight = (flags[col] & kBLOCK_COVERED) != 0 ? 0.0F : weights[col] * counts[col];
        norm += weight;
        if (weight == 0.0F)
        {
            continue;
        }
        VecF const w = vset(weight);
        float const* mean = valueMeans + col * paddedDim;
        for (int64_t d = 0; d < paddedDim; d += kVEC_F)
        {
            vstore(lowOut + d, vfma(w, vload(mean + d), vload(lowOut + d)));
        }
    }
    return norm;
}

} // namespace tensorkiln::cpu::TK_CPU_ISA_NS
