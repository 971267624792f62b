/*
 * mraAttentionTiles.h: the block-sparse (high-resolution) part of MRA-2 attention (reference/ops/mra_attention.py)
 * and the output, compiled once per build in the namespace TK_CPU_ISA_NS (see cpuSimd.h). The driver
 * (mraAttention.cpp) validates, plans the workspace (mraAttentionPlan.h), runs prepareHead (mraAttentionBlocks.h) per
 * (batch, head), selects the blocks, then runs blockRows.
 *
 * blockRow: one block row of 32 queries, computed transposed so that keys and values are read in place: for each
 * selected tile, S^T = K Q^T (32 keys x 32 queries, cpuGemm.h's kernel over the head dim, K broadcast from its
 * rows), divided by float(1 / scale), minus 1e4 (1 - key mask); the exact per-query max over all of the row's tiles
 * (two passes, the op's scatter_reduce amax, not an online rescale); P^T = exp(S^T - max) and its per-query sums;
 * O = P V over the tiles (P^T's columns broadcast). Key blocks with any mask other than 1 are read from per-row
 * copies of k * mask and v * mask, as the op multiplies them. In "full" mode the low-resolution remainder joins
 * under the larger of the two stabilisers, with the op's log-correction; the output is divided by the normaliser
 * + 1e-6 and multiplied by the query's mask.
 */
#pragma once

#include "cpu/cpuGemm.h"
#include "cpu/cpuSimd.h"
#include "cpu/mraAttentionBlocks.h"
#include "cpu/mraAttentionPlan.h"

#include <cstdint>
#include <math.h>

namespace tensorkiln::cpu::TK_CPU_ISA_NS
{

//! Where the tiles read key block `col` of head `bh`: rows of D floats (in place, or the zero-padded tail).
static inline float const* keyBlock(MraPlan const& plan, int64_t bh, int64_t col) noexcept
{
    if ((col + 1) * kMRA_BLOCK > plan.length)
    {
        return plan.keyTail + bh * kMRA_BLOCK * plan.headDim;
    }
    return plan.key + (bh * plan.length + col * kMRA_BLOCK) * plan.headDim;
}

//! Where the tiles read value block `col`: its rows and their stride (D in place, else Dp in the copy).
static inline float const* valueBlock(MraPlan const& plan, int64_t bh, int64_t col, int64_t& stride) noexcept
{
    stride = plan.paddedDim;
    if (plan.valueCopyAll)
    {
        return plan.valueCopy + (bh * plan.nb + col) * kMRA_BLOCK * plan.paddedDim;
    }
    if ((col + 1) * kMRA_BLOCK > plan.length)
    {
        return plan.valueCopy + bh * kMRA_BLOCK * plan.paddedDim;
    }
    stride = plan.headDim; // == paddedDim here
    return plan.value + (bh * plan.length + col * kMRA_BLOCK) * plan.headDim;
}

//! One block row's working memory, carved from the caller's per-thread scratch (carveScratch).
struct RowScratch
{
    float* scoresT; //!< (tiles x 32 keys, 32 queries): S^T, then P^T
    float* queryT;
    float* outTile;
    float* weights;
    float* lowOut;
    float* colMax;
    float* colSum;
    float* queryMask;
    float* maskedCopies;
    int32_t* cols;
    float const** keySources;   //!< per tile: 32 rows of D
    float const** valueSources; //!< per tile: 32 rows of valueStrides[j]
    int64_t* valueStrides;
};

//! S^T tile (32 keys x 32 queries, rows of 32) = K (32 x D, rows of D) Q^T (D x 32).
static inline void tileScores(float const* keys, float const* queryT, int64_t dim, float* scoresT) noexcept
{
    for (int64_t j0 = 0; j0 < kMAIN_EXTENT; j0 += kMAIN_ROWS)
    {
        for (int64_t i0 = 0; i0 < kMRA_BLOCK; i0 += 2 * kVEC_F)
        {
            VecF acc[kMAIN_ROWS][2];
            zeroBlock(acc);
            gemmBlock(keys + j0 * dim, dim, 1, queryT + i0, kMRA_BLOCK, dim, acc);
            storeBlock(scoresT + j0 * kMRA_BLOCK + i0, kMRA_BLOCK, acc);
        }
    }
    VecF acc[2][4];
    zeroBlock(acc);
    gemmBlock(keys + kMAIN_EXTENT * dim, dim, 1, queryT, kMRA_BLOCK, dim, acc);
    storeBlock(scoresT + kMAIN_EXTENT * kMRA_BLOCK, kMRA_BLOCK, acc);
}

//! Rows [i0, i0 + kMR) x columns [d0, d0 + 8 kNV) of O (32 queries x Dp) += P_j V_j for tile j, with P^T
//! (keys x 32 queries) in s.scoresT. O is read and written per tile so that V_j and P_j stay in L1 meanwhile.
template <int kMR, int kNV>
static inline void probsTimesValues(
    MraPlan const& plan, RowScratch const& s, int64_t j, bool first, int64_t i0, int64_t d0) noexcept
{
    VecF acc[kMR][kNV];
    float* out = s.outTile + i0 * plan.paddedDim + d0;
    if (first)
    {
        zeroBlock(acc);
    }
    else
    {
        loadBlock(out, plan.paddedDim, acc);
    }
    gemmBlock(s.scoresT + j * kMRA_BLOCK * kMRA_BLOCK + i0, 1, kMRA_BLOCK, s.valueSources[j] + d0,
        s.valueStrides[j], kMRA_BLOCK, acc);
    storeBlock(out, plan.paddedDim, acc);
}

//! O = P V for the whole block row, tile by tile: 6 x 16 blocks, then the last two queries 2 x 32 (2 x 16, 2 x 8).
static inline void outputTile(MraPlan const& plan, RowScratch const& s, int64_t tiles) noexcept
{
    int64_t const paddedDim = plan.paddedDim;
    for (int64_t j = 0; j < tiles; ++j)
    {
        bool const first = j == 0;
        for (int64_t i0 = 0; i0 < kMAIN_EXTENT; i0 += kMAIN_ROWS)
        {
            int64_t d0 = 0;
            for (; d0 + 2 * kVEC_F <= paddedDim; d0 += 2 * kVEC_F)
            {
                probsTimesValues<kMAIN_ROWS, 2>(plan, s, j, first, i0, d0);
            }
            if (d0 < paddedDim)
            {
                probsTimesValues<kMAIN_ROWS, 1>(plan, s, j, first, i0, d0);
            }
        }
        int64_t d0 = 0;
        for (; d0 + 4 * kVEC_F <= paddedDim; d0 += 4 * kVEC_F)
        {
            probsTimesValues<2, 4>(plan, s, j, first, kMAIN_EXTENT, d0);
        }
        for (; d0 + 2 * kVEC_F <= paddedDim; d0 += 2 * kVEC_F)
        {
            probsTimesValues<2, 2>(plan, s, j, first, kMAIN_EXTENT, d0);
        }
        if (d0 < paddedDim)
        {
            probsTimesValues<2, 1>(plan, s, j, first, kMAIN_EXTENT, d0);
        }
    }
}

template <typename T>
static T* carve(float*& p, int64_t count) noexcept
{
    T* const part = reinterpret_cast<T*>(p);
    p = alignFloats(p + (count * static_cast<int64_t>(sizeof(T)) + 3) / 4);
    return part;
}

static RowScratch carveScratch(MraPlan const& plan, int64_t tiles, int64_t maskedTiles, float* scratch) noexcept
{
    RowScratch s{};
    float* p = alignFloats(scratch);
    s.scoresT = carve<float>(p, kMRA_BLOCK * kMRA_BLOCK * tiles);
    s.queryT = carve<float>(p, kMRA_BLOCK * plan.headDim);
    s.outTile = carve<float>(p, kMRA_BLOCK * plan.paddedDim);
    s.weights = carve<float>(p, plan.nb + kVEC_F);
    s.lowOut = carve<float>(p, plan.paddedDim);
    s.colMax = carve<float>(p, kMRA_BLOCK);
    s.colSum = carve<float>(p, kMRA_BLOCK);
    s.queryMask = carve<float>(p, kMRA_BLOCK);
    s.maskedCopies = carve<float>(p, maskedTiles * kMRA_BLOCK * (plan.headDim + plan.paddedDim));
    s.cols = carve<int32_t>(p, plan.nb);
    s.keySources = carve<float const*>(p, tiles);
    s.valueSources = carve<float const*>(p, tiles);
    s.valueStrides = carve<int64_t>(p, tiles);
    return s;
}

//! Where each selected tile's keys and values are read: in place, or copies times the mask (any mask but 1).
static void tileSources(MraPlan const& plan, int64_t bh, int64_t tiles, RowScratch const& s) noexcept
{
    int64_t const dim = plan.headDim;
    int64_t const paddedDim = plan.paddedDim;
    int64_t const batch = bh / plan.heads;
    float const* keyMask = plan.keyMask + batch * plan.nb * kMRA_BLOCK;
    uint8_t const* allOnes = plan.blockAllOnes + batch * plan.nb;
    float* copy = s.maskedCopies;
    for (int64_t j = 0; j < tiles; ++j)
    {
        int64_t const col = s.cols[j];
        float const* keys = keyBlock(plan, bh, col);
        int64_t stride = 0;
        float const* values = valueBlock(plan, bh, col, stride);
        if (allOnes[col] == 0)
        {
            float* maskedKeys = copy;
            float* maskedValues = copy + kMRA_BLOCK * dim;
            copy += kMRA_BLOCK * (dim + paddedDim);
            for (int64_t i = 0; i < kMRA_BLOCK; ++i)
            {
                float const m = keyMask[col * kMRA_BLOCK + i];
                for (int64_t d = 0; d < dim; ++d)
                {
                    maskedKeys[i * dim + d] = keys[i * dim + d] * m;
                }
                for (int64_t d = 0; d < paddedDim; ++d)
                {
                    maskedValues[i * paddedDim + d] = d < dim ? values[i * stride + d] * m : 0.0F;
                }
            }
            keys = maskedKeys;
            values = maskedValues;
            stride = paddedDim;
        }
        s.keySources[j] = keys;
        s.valueSources[j] = values;
        s.valueStrides[j] = stride;
    }
}

//! Q^T (D x 32) = (q * mask)^T of the block row's queries, zero for the op's padding past L.
static void transposeQueries(float const* query, int64_t dim, int64_t rows, RowScratch const& s) noexcept
{
    int64_t const wholeDims = rows == kMRA_BLOCK ? dim / kVEC_F * kVEC_F : 0;
    for (int64_t d0 = 0; d0 < wholeDims; d0 += kVEC_F)
    {
        for (int64_t i0 = 0; i0 < kMRA_BLOCK; i0 += kVEC_F)
        {
            transpose8x8(query + i0 * dim + d0, dim, s.queryT + d0 * kMRA_BLOCK + i0, kMRA_BLOCK);
        }
    }
    for (int64_t d = wholeDims; d < dim; ++d)
    {
        for (int64_t i = 0; i < kMRA_BLOCK; ++i)
        {
            s.queryT[d * kMRA_BLOCK + i] = i < rows ? query[i * dim + d] : 0.0F;
        }
    }
    bool allOnes = true;
    for (int64_t i = 0; i < kMRA_BLOCK; ++i)
    {
        allOnes = allOnes && s.queryMask[i] == 1.0F;
    }
    if (allOnes)
    {
        return;
    }
    for (int64_t d = 0; d < dim; ++d)
    {
        for (int64_t i = 0; i < kMRA_BLOCK; i += kVEC_F)
        {
            float* line = s.queryT + d * kMRA_BLOCK + i;
            vstore(line, vmul(vload(line), vload(s.queryMask + i)));
        }
    }
}

//! The row's selected tiles: S^T, its softmax over keys per query (exact max), P^T left in place, O = P V.
static void highResolutionPart(
    MraPlan const& plan, int64_t bh, int64_t row, int64_t tiles, RowScratch const& s) noexcept
{
    int64_t const dim = plan.headDim;
    int64_t const batch = bh / plan.heads;
    int64_t const rows = minI64(kMRA_BLOCK, plan.length - row * kMRA_BLOCK);
    transposeQueries(plan.query + (bh * plan.length + row * kMRA_BLOCK) * dim, dim, rows, s);
    tileSources(plan, bh, tiles, s);
    float const* keyPenalty = plan.keyPenalty + batch * plan.nb * kMRA_BLOCK;
    constexpr int64_t kGROUPS = kMRA_BLOCK / kVEC_F;
    VecF maxVec[kGROUPS];
    for (int64_t g = 0; g < kGROUPS; ++g)
    {
        maxVec[g] = vset(-INFINITY);
    }
    for (int64_t j = 0; j < tiles; ++j)
    {
        int64_t const col = s.cols[j];
        float* tile = s.scoresT + j * kMRA_BLOCK * kMRA_BLOCK;
        tileScores(s.keySources[j], s.queryT, dim, tile);
        for (int64_t key = 0; key < kMRA_BLOCK; ++key)
        {
            VecF const penalty = vset(keyPenalty[col * kMRA_BLOCK + key]);
            float* line = tile + key * kMRA_BLOCK;
            for (int64_t g = 0; g < kGROUPS; ++g)
            {
                VecF const logit = vsub(scaleLogits(plan, vload(line + g * kVEC_F)), penalty);
                vstore(line + g * kVEC_F, logit);
                maxVec[g] = vmax(maxVec[g], logit);
            }
        }
    }
    VecF sumVec[kGROUPS];
    for (int64_t g = 0; g < kGROUPS; ++g)
    {
        sumVec[g] = vzero();
    }
    for (int64_t line = 0; line < tiles * kMRA_BLOCK; ++line)
    {
        float* p = s.scoresT + line * kMRA_BLOCK;
        for (int64_t g = 0; g < kGROUPS; ++g)
        {
            VecF const prob = vexp(vsub(vload(p + g * kVEC_F), maxVec[g]));
            vstore(p + g * kVEC_F, prob);
            sumVec[g] = vadd(sumVec[g], prob);
        }
    }
    for (int64_t g = 0; g < kGROUPS; ++g)
    {
        vstore(s.colMax + g * kVEC_F, maxVec[g]);
        vstore(s.colSum + g * kVEC_F, sumVec[g]);
    }
    outputTile(plan, s, tiles);
}

static void writeRows(MraPlan const& plan, int64_t bh, int64_t row, int64_t tiles, float lowNorm,
    RowScratch const& s) noexcept
{
    int64_t const dim = plan.headDim;
    int64_t const paddedDim = plan.paddedDim;
    int64_t const rows = minI64(kMRA_BLOCK, plan.length - row * kMRA_BLOCK);
    int64_t const wholeDims = dim / kVEC_F * kVEC_F;
    float const lowMax = plan.lowRowMax[bh * plan.nb + row];
    float* out = plan.output + (bh * plan.length + row * kMRA_BLOCK) * dim;
    if (tiles == 0)
    {
        for (int64_t e = 0; e < kMRA_BLOCK * paddedDim; ++e)
        {
            s.outTile[e] = 0.0F; // no high-resolution part: its output and norm are 0
        }
    }
    for (int64_t i = 0; i < rows; ++i)
    {
        float const keep = s.queryMask[i];
        float const* high = s.outTile + i * paddedDim;
        float* o = out + i * dim;
        float const highNorm = tiles > 0 ? s.colSum[i] : 0.0F;
        float highCorr = 1.0F;
        float lowCorr = 0.0F;
        float denominator = highNorm + kMRA_EPS;
        if (plan.fullMode)
        {
            // Both parts under the larger stabiliser; without tiles the low-resolution max (correction 0).
            float const stabiliser = tiles > 0 ? s.colMax[i] : lowMax;
            float const correction = (lowMax - stabiliser) * keep;
            lowCorr = ::expf(correction * (correction <= 0.0F ? 1.0F : 0.0F));
            highCorr = ::expf(-correction * (correction > 0.0F ? 1.0F : 0.0F));
            float const normaliser = highNorm * highCorr + lowNorm * lowCorr;
            denominator = normaliser + kMRA_EPS;
        }
        // numerator = high * highCorr + low * lowCorr ("sparse": high alone), / denominator, * keep.
        VecF const hc = vset(highCorr);
        VecF const lc = vset(lowCorr);
        VecF const den = vset(denominator);
        VecF const kv = vset(keep);
        int64_t d = 0;
        for (; d < wholeDims; d += kVEC_F)
        {
            VecF numerator = vload(high + d);
            if (plan.fullMode)
            {
                numerator = vadd(vmul(numerator, hc), vmul(vload(s.lowOut + d), lc));
            }
            vstore(o + d, vmul(vdiv(numerator, den), kv));
        }
        for (; d < dim; ++d)
        {
            float numerator = high[d];
            if (plan.fullMode)
            {
                float const highPart = numerator * highCorr;
                float const lowPart = s.lowOut[d] * lowCorr;
                numerator = highPart + lowPart;
            }
            o[d] = numerator / denominator * keep;
        }
    }
}

static void blockRow(MraPlan const& plan, int64_t bh, int64_t row, float* scratch) noexcept
{
    int64_t const nb = plan.nb;
    int64_t const dim = plan.headDim;
    int64_t const firstToken = row * kMRA_BLOCK;
    int64_t const rows = minI64(kMRA_BLOCK, plan.length - firstToken);
    float const* mask = plan.mask + (bh / plan.heads) * plan.length;
    uint8_t const* flags = plan.blockFlags + (bh * nb + row) * nb;

    uint8_t const* allOnes = plan.blockAllOnes + (bh / plan.heads) * nb;
    int64_t tiles = 0;
    int64_t maskedTiles = 0;
    for (int64_t col = 0; col < nb; ++col)
    {
        bool const selected = (flags[col] & kBLOCK_SELECTED) != 0;
        tiles += selected ? 1 : 0;
        maskedTiles += selected && allOnes[col] == 0 ? 1 : 0;
    }
    RowScratch const s = carveScratch(plan, tiles, maskedTiles, scratch);
    bool anyToken = false;
    for (int64_t i = 0; i < kMRA_BLOCK; ++i)
    {
        s.queryMask[i] = i < rows ? mask[firstToken + i] : 0.0F;
        anyToken = anyToken || s.queryMask[i] != 0.0F;
    }
    if (!anyToken)
    {
        // Every query is padding: the op multiplies its (finite) context by mask 0.
        float* out = plan.output + (bh * plan.length + firstToken) * dim;
        for (int64_t e = 0; e < rows * dim; ++e)
        {
            out[e] = 0.0F;
        }
        return;
    }
    int64_t t = 0;
    for (int64_t col = 0; col < nb; ++col)
    {
        if ((flags[col] & kBLOCK_SELECTED) != 0)
        {
            s.cols[t++] = static_cast<int32_t>(col);
        }
    }
    float const lowNorm = plan.fullMode ? lowResolutionPart(plan, bh, row, s.weights, s.lowOut) : 0.0F;
    if (tiles > 0)
    {
        highResolutionPart(plan, bh, row, tiles, s);
    }
    writeRows(plan, bh, row, tiles, lowNorm, s);
}

void blockRows(MraPlan const& plan, int64_t begin, int64_t end, float* scratch) noexcept
{
    for (int64_t item = begin; item < end; ++item)
    {
        blockRow(plan, item / plan.nb, item % plan.nb, scratch);
    }
}

} // namespace tensorkiln::cpu::TK_CPU_ISA_NS
