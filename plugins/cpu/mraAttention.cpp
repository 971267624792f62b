/*
 * mraAttention.cpp: tensorkiln::cpu::mraAttention, the driver of the MRA-2 CPU kernel: argument checks with the
 * op's rules (reference/ops/mra_attention.py, _check_inputs), the workspace plan, the top-k block selection, and the
 * two parallel phases over the per-ISA loops (mraAttentionTiles.h):
 *
 *   1. per (batch, head): block means and low-resolution logits (prepareHead), then the selection below;
 *   2. per block row of 32 queries: the selected tiles' softmax, the low-resolution remainder, the output.
 *
 * The selection is the op's: the ranking score of block (r, c) is (low_logit - row max before empty blocks are
 * removed) + 5e3 on the diagonal band |r - c| <= diagonal_n / 2, + 5e3 for r < first_n, + 5e3 for c < first_n, each
 * added in fp32 in that order; the top num_blocks scores win, ties going to the lower flat index r * nb + c (the op's
 * stable descending sort). "Covered" (left out of the low-resolution part in "full" mode) is score >= the k-th
 * score, ties included, as the op. Scores are ranked through an order-preserving uint32 image (-0 == +0), with the
 * flat index in the low bits, so nth_element gives exactly the op's set in O(nb^2).
 */
#include "cpu/cpuDispatch.h"
#include "cpu/cpuKernels.h"
#include "cpu/mraAttentionPlan.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <new>
#include <sstream>
#include <vector>

namespace tensorkiln::cpu
{
namespace
{

//! Order-preserving map float -> uint32 (larger float, larger key); -0 is taken as +0, as float comparison does.
uint32_t orderedKey(float x) noexcept
{
    float const value = x == 0.0F ? 0.0F : x;
    uint32_t bits = 0;
    std::memcpy(&bits, &value, sizeof(bits));
    return (bits & 0x80000000U) != 0 ? ~bits : (bits | 0x80000000U);
}

//! Larger score first; among equal scores the lower flat index (the larger complement) first.
uint64_t rankOf(uint32_t scoreKey, int64_t index) noexcept
{
    return (static_cast<uint64_t>(scoreKey) << 32) | (0xffffffffU - static_cast<uint32_t>(index));
}

float rankingScore(float lowLogit, float rankRowMax, int64_t row, int64_t col, int64_t firstN, int64_t diagonalN)
{
    float score = lowLogit - rankRowMax;
    if (diagonalN > 0)
    {
        int64_t const offset = diagonalN / 2;
        score = score + ((row - col <= offset && col - row <= offset) ? kMRA_PRIOR_BONUS : 0.0F);
    }
    if (firstN > 0)
    {
        score = score + (row < firstN ? kMRA_PRIOR_BONUS : 0.0F);
        score = score + (col < firstN ? kMRA_PRIOR_BONUS : 0.0F);
    }
    return score;
}

//! Top-k of one (batch, head): sets kBLOCK_SELECTED and kBLOCK_COVERED in its block flags.
void selectBlocks(MraPlan const& plan, int64_t bh, std::vector<uint32_t>& scoreKeys, std::vector<uint64_t>& ranked)
{
    int64_t const nb = plan.nb;
    int64_t const candidates = nb * nb;
    uint8_t* flags = plan.blockFlags + bh * candidates;
    if (plan.budget >= candidates)
    {
        // Every block: the k-th score is the smallest, so every block is covered too.
        std::memset(flags, kBLOCK_SELECTED | kBLOCK_COVERED, static_cast<size_t>(candidates));
        return;
    }
    float const* lowLogits = plan.lowLogits + bh * nb * plan.lowStride;
    float const* rankRowMax = plan.rankRowMax + bh * nb;
    scoreKeys.resize(static_cast<size_t>(candidates));
    ranked.resize(static_cast<size_t>(candidates));
    for (int64_t row = 0; row < nb; ++row)
    {
        for (int64_t col = 0; col < nb; ++col)
        {
            int64_t const index = row * nb + col;
            float const score = rankingScore(
                lowLogits[row * plan.lowStride + col], rankRowMax[row], row, col, plan.firstN, plan.diagonalN);
            uint32_t const key = orderedKey(score);
            scoreKeys[static_cast<size_t>(index)] = key;
            ranked[static_cast<size_t>(index)] = rankOf(key, index);
        }
    }
    auto const kth = ranked.begin() + (plan.budget - 1);
    std::nth_element(ranked.begin(), kth, ranked.end(), std::greater<uint64_t>());
    uint64_t const last = *kth;
    auto const threshold = static_cast<uint32_t>(last >> 32);
    for (int64_t index = 0; index < candidates; ++index)
    {
        uint32_t const key = scoreKeys[static_cast<size_t>(index)];
        bool const selected = rankOf(key, index) >= last;
        flags[index] = static_cast<uint8_t>((selected ? kBLOCK_SELECTED : 0) | (key >= threshold ? kBLOCK_COVERED : 0));
    }
}

Status checkArgs(MraAttentionArgs const& a)
{
    std::ostringstream message;
    if (a.batch < 0 || a.heads < 0 || a.length < 1 || a.headDim < 1)
    {
        message << "mra_attention: shape (B, H, L, D) = (" << a.batch << ", " << a.heads << ", " << a.length << ", "
                << a.headDim << ") is invalid: B and H must be >= 0, the sequence length and head dim >= 1";
    }
    else if (a.numBlocks < 1)
    {
        message << "mra_attention: num_blocks must be at least 1, got " << a.numBlocks;
    }
    else if (!(std::isfinite(a.scale) && a.scale > 0.0F))
    {
        message << "mra_attention: scale must be positive and finite, got " << a.scale;
    }
    else if (a.initialPriorFirstNBlocks < 0 || a.initialPriorDiagonalNBlocks < 0)
    {
        message << "mra_attention: initial_prior_first_n_blocks and initial_prior_diagonal_n_blocks must be >= 0, got "
                << a.initialPriorFirstNBlocks << " and " << a.initialPriorDiagonalNBlocks;
    }
    else if (a.batch * a.heads > 0
        && (a.query == nullptr || a.key == nullptr || a.value == nullptr || a.attentionMask == nullptr
            || a.output == nullptr))
    {
        message << "mra_attention: a null query, key, value, attention_mask or output buffer";
    }
    else
    {
        int64_t const nb = (a.length + kMRA_BLOCK - 1) / kMRA_BLOCK;
        // Flat block indices live in 32 bits, as in the CUDA kernel (L <= 46340 * 32).
        if (nb > 46340)
        {
            message << "mra_attention: the sequence length L must be at most " << 46340 * kMRA_BLOCK << ", got "
                    << a.length;
        }
        else
        {
            return Status::success();
        }
    }
    return Status::error(message.str());
}

MraPlan makePlan(MraAttentionArgs const& a)
{
    MraPlan plan;
    plan.query = a.query;
    plan.key = a.key;
    plan.value = a.value;
    plan.mask = a.attentionMask;
    plan.output = a.output;
    plan.batch = a.batch;
    plan.heads = a.heads;
    plan.length = a.length;
    plan.headDim = a.headDim;
    plan.nb = (a.length + kMRA_BLOCK - 1) / kMRA_BLOCK;
    plan.paddedDim = (a.headDim + 7) / 8 * 8;
    plan.lowStride = (plan.nb + 15) / 16 * 16;
    plan.budget = std::min(a.numBlocks, plan.nb * plan.nb);
    // The op divides fp32 logits by the Python float 1 / scale, i.e. by its fp32 rounding.
    plan.invScale = static_cast<float>(1.0 / static_cast<double>(a.scale));
    int exponent = 0;
    plan.multiplyByScale = std::frexp(plan.invScale, &exponent) == 0.5F && std::isnormal(plan.invScale)
        && std::isnormal(1.0F / plan.invScale);
    plan.exactScale = 1.0F / plan.invScale;
    plan.fullMode = a.fullMode;
    plan.firstN = a.initialPriorFirstNBlocks;
    plan.diagonalN = a.initialPriorDiagonalNBlocks;
    return plan;
}

//! The workspace of mraAttentionPlan.h, owned for one call.
struct MraWorkspace
{
    std::vector<float> floats;
    std::vector<uint8_t> bytes;

    void carve(MraPlan& plan)
    {
        int64_t const bh = plan.batch * plan.heads;
        int64_t const nb = plan.nb;
        int64_t const dp = plan.paddedDim;
        int64_t const padded = nb * kMRA_BLOCK;
        bool const partial = plan.length % kMRA_BLOCK != 0;
        plan.valueCopyAll = plan.headDim % 8 != 0;
        int64_t const valueCopy = plan.valueCopyAll ? bh * padded * dp : partial ? bh * kMRA_BLOCK * dp : 0;
        int64_t const sizes[] = {partial ? bh * kMRA_BLOCK * plan.headDim : 0, valueCopy, plan.batch * padded,
            plan.batch * padded, bh * nb * dp, bh * nb * dp, bh * dp * plan.lowStride, bh * nb * dp, bh * nb,
            bh * nb * plan.lowStride, bh * nb, bh * nb};
        float** targets[] = {&plan.keyTail, &plan.valueCopy, &plan.keyMask, &plan.keyPenalty, &plan.queryMeans,
            &plan.keyMeans, &plan.keyMeansT, &plan.valueMeans, &plan.tokenCounts, &plan.lowLogits, &plan.rankRowMax,
            &plan.lowRowMax};
        int64_t total = 0;
        for (int64_t size : sizes)
        {
            total += size;
        }
        floats.resize(static_cast<size_t>(total));
        bytes.resize(static_cast<size_t>(bh * nb * nb + plan.batch * nb));
        float* p = floats.data();
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); ++i)
        {
            *targets[i] = p;
            p += sizes[i];
        }
        plan.blockFlags = bytes.data();
        plan.blockAllOnes = bytes.data() + bh * nb * nb;
    }
};

//! keyMask, keyPenalty and blockAllOnes of every batch row.
void fillKeyMasks(MraPlan const& plan)
{
    int64_t const padded = plan.nb * kMRA_BLOCK;
    for (int64_t b = 0; b < plan.batch; ++b)
    {
        for (int64_t block = 0; block < plan.nb; ++block)
        {
            bool allOnes = true;
            for (int64_t i = 0; i < kMRA_BLOCK; ++i)
            {
                int64_t const token = block * kMRA_BLOCK + i;
                float const m = token < plan.length ? plan.mask[b * plan.length + token] : 0.0F;
                plan.keyMask[b * padded + token] = m;
                plan.keyPenalty[b * padded + token] = kMRA_REMOVED * (1.0F - m);
                allOnes = allOnes && m == 1.0F;
            }
            plan.blockAllOnes[b * plan.nb + block] = allOnes ? 1 : 0;
        }
    }
}

//! The most selected tiles in any block row, and the most of them with a mask other than 1.
void countTiles(MraPlan const& plan, int64_t& maxTiles, int64_t& maxMasked)
{
    int64_t const nb = plan.nb;
    maxTiles = 0;
    maxMasked = 0;
    for (int64_t row = 0; row < plan.batch * plan.heads * nb; ++row)
    {
        uint8_t const* flags = plan.blockFlags + row * nb;
        uint8_t const* allOnes = plan.blockAllOnes + (row / (plan.heads * nb)) * nb;
        int64_t tiles = 0;
        int64_t masked = 0;
        for (int64_t col = 0; col < nb; ++col)
        {
            int64_t const selected = flags[col] & kBLOCK_SELECTED;
            tiles += selected;
            masked += allOnes[col] == 0 ? selected : 0;
        }
        maxTiles = std::max(maxTiles, tiles);
        maxMasked = std::max(maxMasked, masked);
    }
}

Status runMra(MraAttentionArgs const& args, ParallelFor const& parallel)
{
    Status const status = checkArgs(args);
    if (!status.ok || args.batch * args.heads == 0)
    {
        return status;
    }
    MraPlan plan = makePlan(args);
    MraWorkspace workspace;
    workspace.carve(plan);
    fillKeyMasks(plan);
    CpuKernelTable const& kernels = activeCpuKernels();
    int64_t const bh = plan.batch * plan.heads;
    int64_t const nb = plan.nb;
    std::atomic<bool> failed{false};

    double const prepareCost
        = static_cast<double>(nb * kMRA_BLOCK * plan.paddedDim * 8 + nb * nb * (2 * plan.paddedDim + 40));
    parallel(bh, prepareCost,
        [&](int64_t begin, int64_t end)
        {
            try
            {
                std::vector<uint32_t> scoreKeys;
                std::vector<uint64_t> ranked;
                for (int64_t item = begin; item < end; ++item)
                {
                    kernels.mraPrepareHead(plan, item);
                    selectBlocks(plan, item, scoreKeys, ranked);
                }
            }
            catch (...)
            {
                failed = true;
            }
        });
    if (failed)
    {
        return Status::error("mra_attention: out of memory while selecting blocks");
    }

    int64_t maxTiles = 0;
    int64_t maxMasked = 0;
    countTiles(plan, maxTiles, maxMasked);
    double const tileFlops = 4.0 * kMRA_BLOCK * kMRA_BLOCK * static_cast<double>(plan.paddedDim);
    double const rowCost = tileFlops * static_cast<double>(plan.budget) / static_cast<double>(nb)
        + (plan.fullMode ? 2.0 * static_cast<double>(nb * plan.paddedDim) : 0.0);
    int64_t const scratchFloats = mraRowScratchFloats(plan, maxTiles, maxMasked);
    parallel(bh * nb, rowCost,
        [&](int64_t begin, int64_t end)
        {
            try
            {
                std::vector<float> scratch(static_cast<size_t>(scratchFloats));
                kernels.mraBlockRows(plan, begin, end, scratch.data());
            }
            catch (...)
            {
                failed = true;
            }
        });
    if (failed)
    {
        return Status::error("mra_attention: out of memory for the per-thread scratch");
    }
    return Status::success();
}

} // namespace

Status mraAttention(MraAttentionArgs const& args, ParallelFor const& parallel) noexcept
{
    try
    {
        return runMra(args, parallel);
    }
    catch (std::bad_alloc const&)
    {
        return Status::error("mra_attention: out of memory for the workspace (B=" + std::to_string(args.batch)
            + " H=" + std::to_string(args.heads) + " L=" + std::to_string(args.length) + ")");
    }
    catch (std::exception const& error)
    {
        return Status::error(std::string("mra_attention: ") + error.what());
    }
    catch (...)
    {
        return Status::error("mra_attention: unknown error");
    }
}

} // namespace tensorkiln::cpu
