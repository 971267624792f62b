/*
 * mraAttentionKernel.cu: MRA-2 attention (Zeng et al., "Multi Resolution Analysis (MRA) for Approximate
 * Self-Attention", ICML 2022) as four CUDA kernels, with the semantics of reference/ops/mra_attention.py.
 *
 * Written for this op, not ported from transformers/kernels/mra: none of HF's launch-geometry assumptions
 * (head_dim % 16, num_block % 2/4/8, 64 head dims per step) exist here. Every kernel takes any L (padded inside to
 * 32, padding masked), any head dim up to 128 (zero-padded to the bucket Dp = 32, 64 or 128) and any budget, and
 * accumulates in fp32 whatever the input dtype. Per (batch, head) "bh", with nb = ceil(L / 32) block rows:
 *
 *   1. blockMeansKernel      grid nb * BH, Dp threads: masked block sums of q, k, v over 32 tokens divided by
 *                            (token count + 1e-6); the token counts.
 *   2. lowLogitsKernel       grid nb * BH, 256 threads (a warp per key block): low-resolution logits of one block
 *                            row, empty blocks at -1e4; its max with empty blocks at logit 0 (ranks top-k, as HF) and
 *                            without them (the low-resolution stabiliser).
 *   3. selectBlocksKernel    grid BH, 1024 threads: top-k over the nb * nb ranking scores (logit - row max + HF's
 *                            priors), recomputed on the fly from the stored logits. A 4-pass radix select on the
 *                            order-preserving uint32 image of each score (256-bin shared-memory histogram per byte)
 *                            finds the k-th largest score exactly in O(nb^2) with no size limit; a compaction pass
 *                            with block-wide scans then writes the selected flat indices in ascending order, taking
 *                            every score above the threshold and, among scores equal to it, the lowest indices
 *                            (what torch.topk does on CUDA). Each block row's slice of the sorted list is found by
 *                            binary search (rowStarts).
 *   4. sparseAttentionKernel grid nb * BH, 256 threads: one block row of 32 queries. In "full" mode it first forms
 *                            the low-resolution part of the row: blocks whose score reaches the threshold (ties
 *                            included, as the reference) are covered at high resolution and left out. It then runs
 *                            over the row's selected 32x32 tiles with an online softmax (exact row max; padded keys
 *                            get logit - 1e4, so they raise it only in a row that sees no real key), adds both parts
 *                            under the larger stabiliser, divides by the normaliser + 1e-6 and writes the output, zero
 *                            at padded positions.
 *
 * Kernel 4 keeps Q, K (row stride Dp + 4, so float4 reads of 8 different rows hit different banks) and V tiles in
 * fp32 shared memory: 50,976 bytes at Dp = 128 (opted in above 48 KiB). Thread t owns query row t / 8 and, in that
 * row, key columns (t % 8) + 8u for q.k and head dims 4 (t % 8) + 32u .. + 3 for p.v; probabilities move between
 * the 8 lanes of a row by warp shuffles.
 *
 * Rounding follows the reference where it decides anything discrete: logits are divided by float(1 / scale), and
 * the ranking scores are formed with the same fp32 operations in the same order (logit - 1e4 for empty blocks, minus
 * the row max, plus each 5e3 prior separately), so the selection and the "covered" set use bit-identical scores.
 * Everything else differs from PyTorch only by summation order. Build without --use_fast_math: expf and the IEEE
 * divisions are part of that agreement.
 */
#include "mraAttentionPlugin/mraAttentionKernel.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math_constants.h>

#include <cmath>
#include <cstdint>
#include <limits>

namespace tensorkiln::plugin
{
namespace
{

constexpr int kBLOCK = kMRA_BLOCK_SIZE;
constexpr int kWARP = 32;
constexpr unsigned kFULL_MASK = 0xffffffffU;
constexpr int kLOW_THREADS = 256;
constexpr int kLOW_WARPS = kLOW_THREADS / kWARP;
constexpr int kSELECT_THREADS = 1024;
constexpr int kSELECT_WARPS = kSELECT_THREADS / kWARP;
constexpr int kRADIX_BINS = 256;
constexpr int kATTN_THREADS = 256;
constexpr int kATTN_WARPS = kATTN_THREADS / kWARP;
constexpr int kROW_LANES = kATTN_THREADS / kBLOCK;  // 8 lanes per query row
constexpr int kKEYS_PER_LANE = kBLOCK / kROW_LANES; // 4 key columns per lane
static_assert(kBLOCK == 32 && kROW_LANES == 8 && kSELECT_WARPS == kWARP, "the thread layouts below assume these");

__device__ __forceinline__ float toFloat(float x)
{
    return x;
}
__device__ __forceinline__ float toFloat(__half x)
{
    return __half2float(x);
}
__device__ __forceinline__ float toFloat(__nv_bfloat16 x)
{
    return __bfloat162float(x);
}

template <typename T>
__device__ __forceinline__ T fromFloat(float x);
template <>
__device__ __forceinline__ float fromFloat<float>(float x)
{
    return x;
}
template <>
__device__ __forceinline__ __half fromFloat<__half>(float x)
{
    return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 fromFloat<__nv_bfloat16>(float x)
{
    return __float2bfloat16_rn(x);
}

//! attention_mask (B, L), token stride 1, in any of the floating types the op accepts.
struct MaskView
{
    void const* data;
    ElementType type;
    int64_t batchStride;
};

__device__ __forceinline__ float maskValue(MaskView const& mask, int64_t batch, int token)
{
    int64_t const index = batch * mask.batchStride + token;
    switch (mask.type)
    {
    case ElementType::kFLOAT16:
        return __half2float(static_cast<__half const*>(mask.data)[index]);
    case ElementType::kBFLOAT16:
        return __bfloat162float(static_cast<__nv_bfloat16 const*>(mask.data)[index]);
    case ElementType::kFLOAT64:
        return static_cast<float>(static_cast<double const*>(mask.data)[index]);
    case ElementType::kFLOAT32:
        break;
    }
    return static_cast<float const*>(mask.data)[index];
}

struct Priors
{
    int firstN;
    int diagonalN;
};

//! Everything the four kernels read: the call's tensors, sizes and attributes, and the workspace arrays.
struct DeviceArgs
{
    void const* query;
    void const* key;
    void const* value;
    MaskView mask;
    void* output;
    MraStrides queryStrides;
    MraStrides keyStrides;
    MraStrides valueStrides;
    MraStrides outputStrides;
    int heads;
    int length;
    int headDim;
    int nb;     //!< block rows of the padded sequence
    int budget; //!< clamped to nb * nb
    float invScale;
    MraApproxMode approxMode;
    Priors priors;
    float* queryMeans;
    float* keyMeans;
    float* valueMeans;
    float* tokenCounts;
    float* lowLogits;
    float* rankRowMax;
    float* lowRowMax;
    float* thresholds;
    int32_t* selected;
    int32_t* rowStarts;
};

__device__ __forceinline__ float warpSum(float x)
{
#pragma unroll
    for (int offset = kWARP / 2; offset > 0; offset /= 2)
    {
        x += __shfl_xor_sync(kFULL_MASK, x, offset);
    }
    return x; // the butterfly leaves the same bits in every lane (each step adds the same two numbers)
}

//! The score top-k ranks, with the reference's fp32 operations in its order (see _select_blocks).
__device__ __forceinline__ float rankingScore(float lowLogit, float rankRowMax, int row, int col, Priors priors)
{
    float score = lowLogit - rankRowMax;
    if (priors.diagonalN > 0)
    {
        score = score + (abs(row - col) <= priors.diagonalN / 2 ? kMRA_PRIOR_BONUS : 0.0F);
    }
    if (priors.firstN > 0)
    {
        score = score + (row < priors.firstN ? kMRA_PRIOR_BONUS : 0.0F);
        score = score + (col < priors.firstN ? kMRA_PRIOR_BONUS : 0.0F);
    }
    return score;
}

//! Order-preserving map float -> uint32 (larger float, larger key); -0 is taken as +0, as float comparison does.
__device__ __forceinline__ uint32_t orderedKey(float x)
{
    uint32_t const bits = __float_as_uint(x == 0.0F ? 0.0F : x);
    return (bits & 0x80000000U) != 0 ? ~bits : (bits | 0x80000000U);
}

__device__ __forceinline__ float keyToFloat(uint32_t key)
{
    return __uint_as_float((key & 0x80000000U) != 0 ? (key & 0x7fffffffU) : ~key);
}

// ---------------------------------------------------------------------------------------------------------------
// 1. Block means and token counts.

template <typename T, int kDP>
__global__ void __launch_bounds__(kDP) blockMeansKernel(DeviceArgs a)
{
    int64_t const bh = blockIdx.x / a.nb;
    int const blockRow = static_cast<int>(blockIdx.x - bh * a.nb);
    int64_t const batch = bh / a.heads;
    int64_t const head = bh - batch * a.heads;
    int const d = threadIdx.x;
    T const* query = static_cast<T const*>(a.query) + batch * a.queryStrides.batch + head * a.queryStrides.head;
    T const* key = static_cast<T const*>(a.key) + batch * a.keyStrides.batch + head * a.keyStrides.head;
    T const* value = static_cast<T const*>(a.value) + batch * a.valueStrides.batch + head * a.valueStrides.head;

    float querySum = 0.0F;
    float keySum = 0.0F;
    float valueSum = 0.0F;
    float count = 0.0F;
    int const firstToken = blockRow * kBLOCK;
    int const lastToken = min(firstToken + kBLOCK, a.length);
    for (int token = firstToken; token < lastToken; ++token)
    {
        float const m = maskValue(a.mask, batch, token);
        count += m;
        if (d < a.headDim)
        {
            querySum += toFloat(query[token * a.queryStrides.token + d]) * m;
            keySum += toFloat(key[token * a.keyStrides.token + d]) * m;
            valueSum += toFloat(value[token * a.valueStrides.token + d]) * m;
        }
    }
    float const denominator = count + kMRA_EPS;
    int64_t const rowIndex = bh * a.nb + blockRow;
    a.queryMeans[rowIndex * kDP + d] = querySum / denominator;
    a.keyMeans[rowIndex * kDP + d] = keySum / denominator;
    a.valueMeans[rowIndex * kDP + d] = valueSum / denominator;
    if (d == 0)
    {
        a.tokenCounts[rowIndex] = count;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 2. Low-resolution logits of one block row, and its two maxima.

template <int kDP>
__global__ void __launch_bounds__(kLOW_THREADS) lowLogitsKernel(DeviceArgs a)
{
    __shared__ float queryMean[kDP];
    __shared__ float warpRankMax[kLOW_WARPS];
    __shared__ float warpLowMax[kLOW_WARPS];

    int64_t const bh = blockIdx.x / a.nb;
    int const blockRow = static_cast<int>(blockIdx.x - bh * a.nb);
    int64_t const rowIndex = bh * a.nb + blockRow;
    int const lane = threadIdx.x % kWARP;
    int const warp = threadIdx.x / kWARP;
    for (int d = threadIdx.x; d < kDP; d += kLOW_THREADS)
    {
        queryMean[d] = a.queryMeans[rowIndex * kDP + d];
    }
    float const rowCount = a.tokenCounts[rowIndex];
    float const* tokenCounts = a.tokenCounts + bh * a.nb;
    float* lowLogits = a.lowLogits + rowIndex * a.nb;
    __syncthreads();

    float rankMax = -CUDART_INF_F;
    float lowMax = -CUDART_INF_F;
    for (int col = warp; col < a.nb; col += kLOW_WARPS)
    {
        float const* keyMean = a.keyMeans + (bh * a.nb + col) * kDP;
        float dot = 0.0F;
#pragma unroll
        for (int u = 0; u < kDP / kWARP; ++u)
        {
            dot = fmaf(queryMean[lane + kWARP * u], keyMean[lane + kWARP * u], dot);
        }
        float const logit = warpSum(dot) / a.invScale;
        bool const empty = tokenCounts[col] * rowCount < 0.5F;
        float const low = logit - (empty ? kMRA_REMOVED : 0.0F);
        if (lane == 0)
        {
            lowLogits[col] = low;
        }
        rankMax = fmaxf(rankMax, logit);
        lowMax = fmaxf(lowMax, low);
    }
    if (lane == 0)
    {
        warpRankMax[warp] = rankMax;
        warpLowMax[warp] = lowMax;
    }
    __syncthreads();
    if (threadIdx.x == 0)
    {
        for (int w = 1; w < kLOW_WARPS; ++w)
        {
            rankMax = fmaxf(rankMax, warpRankMax[w]);
            lowMax = fmaxf(lowMax, warpLowMax[w]);
        }
        a.rankRowMax[rowIndex] = rankMax;
        a.lowRowMax[rowIndex] = lowMax;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 3. Top-k block selection of one (batch, head).

//! Exclusive prefix sum over the 1024 threads of the block; `total` gets the block's sum. All threads must call it.
__device__ __forceinline__ int blockExclusiveScan(int value, int* warpTotals, int& total)
{
    int const lane = threadIdx.x % kWARP;
    int const warp = threadIdx.x / kWARP;
    int inclusive = value;
#pragma unroll
    for (int offset = 1; offset < kWARP; offset *= 2)
    {
        int const other = __shfl_up_sync(kFULL_MASK, inclusive, offset);
        if (lane >= offset)
        {
            inclusive += other;
        }
    }
    if (lane == kWARP - 1)
    {
        warpTotals[warp] = inclusive;
    }
    __syncthreads();
    if (warp == 0)
    {
        int warpInclusive = warpTotals[lane];
#pragma unroll
        for (int offset = 1; offset < kWARP; offset *= 2)
        {
            int const other = __shfl_up_sync(kFULL_MASK, warpInclusive, offset);
            if (lane >= offset)
            {
                warpInclusive += other;
            }
        }
        warpTotals[lane] = warpInclusive;
    }
    __syncthreads();
    int const before = warp == 0 ? 0 : warpTotals[warp - 1];
    total = warpTotals[kSELECT_WARPS - 1];
    __syncthreads(); // warpTotals is reused by the next call
    return before + inclusive - value;
}

__global__ void __launch_bounds__(kSELECT_THREADS) selectBlocksKernel(DeviceArgs a)
{
    __shared__ unsigned histogram[kRADIX_BINS];
    __shared__ int warpTotals[kSELECT_WARPS];
    __shared__ uint32_t sharedPrefix;
    __shared__ int sharedRemaining;

    int const nb = a.nb;
    int const candidates = nb * nb;
    int const budget = a.budget;
    int64_t const bh = blockIdx.x;
    int const tid = threadIdx.x;
    float const* lowLogits = a.lowLogits + bh * candidates;
    float const* rankRowMax = a.rankRowMax + bh * nb;
    int32_t* selected = a.selected + bh * budget;
    int32_t* rowStarts = a.rowStarts + bh * (nb + 1);
    auto const keyAt = [&](int index)
    {
        int const row = index / nb;
        return orderedKey(rankingScore(lowLogits[index], rankRowMax[row], row, index - row * nb, a.priors));
    };

    if (budget >= candidates)
    {
        // Every block: the threshold is the smallest score, so every block counts as covered.
        for (int index = tid; index < candidates; index += kSELECT_THREADS)
        {
            selected[index] = index;
        }
        if (tid == 0)
        {
            a.thresholds[bh] = -CUDART_INF_F;
        }
    }
    else
    {
        // Radix select, most significant byte first: after the pass at `shift`, `prefix` holds the top bytes of the
        // k-th largest key and `remaining` its rank among the keys that share them.
        uint32_t prefix = 0;
        uint32_t prefixMask = 0;
        int remaining = budget;
        for (int shift = 24; shift >= 0; shift -= 8)
        {
            for (int bin = tid; bin < kRADIX_BINS; bin += kSELECT_THREADS)
            {
                histogram[bin] = 0;
            }
            __syncthreads();
            for (int index = tid; index < candidates; index += kSELECT_THREADS)
            {
                uint32_t const key = keyAt(index);
                if ((key & prefixMask) == prefix)
                {
                    atomicAdd(&histogram[(key >> shift) & 0xffU], 1U);
                }
            }
            __syncthreads();
            if (tid == 0)
            {
                int above = 0;
                int bin = kRADIX_BINS - 1;
                for (; bin > 0; --bin)
                {
                    int const count = static_cast<int>(histogram[bin]);
                    if (above + count >= remaining)
                    {
                        break;
                    }
                    above += count;
                }
                sharedPrefix = prefix | (static_cast<uint32_t>(bin) << shift);
                sharedRemaining = remaining - above;
            }
            __syncthreads();
            prefix = sharedPrefix;
            remaining = sharedRemaining;
            prefixMask |= 0xffU << shift;
        }
        uint32_t const thresholdKey = prefix; // the k-th largest key; `remaining` of its equals are taken
        if (tid == 0)
        {
            a.thresholds[bh] = keyToFloat(thresholdKey);
        }

        // Compaction in index order: everything above the threshold, and the first `remaining` equal to it.
        int equalsSeen = 0;
        int written = 0;
        for (int base = 0; base < candidates && written < budget; base += kSELECT_THREADS)
        {
            int const index = base + tid;
            bool const valid = index < candidates;
            uint32_t const key = valid ? keyAt(index) : 0U;
            int const isEqual = valid && key == thresholdKey ? 1 : 0;
            int equalTotal = 0;
            int const equalRank = equalsSeen + blockExclusiveScan(isEqual, warpTotals, equalTotal);
            int const take = valid && (key > thresholdKey || (isEqual != 0 && equalRank < remaining)) ? 1 : 0;
            int takeTotal = 0;
            int const position = written + blockExclusiveScan(take, warpTotals, takeTotal);
            if (take != 0)
            {
                selected[position] = index;
            }
            equalsSeen += equalTotal;
            written += takeTotal;
        }
    }
    __syncthreads(); // `selected` is complete and visible to the block

    int const count = min(budget, candidates);
    for (int row = tid; row <= nb; row += kSELECT_THREADS)
    {
        int const target = row * nb;
        int lo = 0;
        int hi = count;
        while (lo < hi)
        {
            int const mid = (lo + hi) / 2;
            if (selected[mid] < target)
            {
                lo = mid + 1;
            }
            else
            {
                hi = mid;
            }
        }
        rowStarts[row] = lo;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 4. Block-sparse attention of one block row, combined with the low-resolution part.

//! Shared-memory layout of sparseAttentionKernel, in floats (every array starts on a 16-byte boundary).
template <int kDP>
struct AttentionSmem
{
    static constexpr int kTILE_STRIDE = kDP + 4;
    static constexpr int kQUERY = 0;
    static constexpr int kKEY = kQUERY + kBLOCK * kTILE_STRIDE;
    static constexpr int kVALUE = kKEY + kBLOCK * kTILE_STRIDE;
    static constexpr int kKEY_MASK = kVALUE + kBLOCK * kDP;
    static constexpr int kQUERY_MASK = kKEY_MASK + kBLOCK;
    static constexpr int kLOW_OUT = kQUERY_MASK + kBLOCK;
    static constexpr int kLOW_NORM = kLOW_OUT + kDP;
    static constexpr int kFLOATS = kLOW_NORM + kATTN_WARPS;
    static constexpr size_t kBYTES = kFLOATS * sizeof(float);
    static_assert(kATTN_WARPS * kDP <= kBLOCK * kTILE_STRIDE, "the low-resolution partials reuse the key tile");
    static_assert(kKEY % 4 == 0 && kVALUE % 4 == 0 && kTILE_STRIDE % 4 == 0, "float4 alignment");
};

//! A 32 x Dp tile of tokens [firstToken, firstToken + 32) of one (batch, head), times the mask, zero-padded.
template <typename T, int kDP>
__device__ __forceinline__ void loadTile(T const* source, int64_t tokenStride, int firstToken, int length, int headDim,
    MaskView const& mask, int64_t batch, float* tile, int tileStride)
{
    for (int e = threadIdx.x; e < kBLOCK * kDP; e += kATTN_THREADS)
    {
        int const r = e / kDP;
        int const d = e % kDP;
        int const token = firstToken + r;
        float x = 0.0F;
        if (token < length && d < headDim)
        {
            x = toFloat(source[token * tokenStride + d]) * maskValue(mask, batch, token);
        }
        tile[r * tileStride + d] = x;
    }
}

__device__ __forceinline__ void scaleAdd(float4& acc, float p, float4 v)
{
    acc.x = fmaf(p, v.x, acc.x);
    acc.y = fmaf(p, v.y, acc.y);
    acc.z = fmaf(p, v.z, acc.z);
    acc.w = fmaf(p, v.w, acc.w);
}

template <typename T, int kDP>
__global__ void __launch_bounds__(kATTN_THREADS) sparseAttentionKernel(DeviceArgs a)
{
    using Smem = AttentionSmem<kDP>;
    constexpr int kSTRIDE = Smem::kTILE_STRIDE;
    constexpr int kVEC = kDP / kWARP; // float4 output slots per lane
    extern __shared__ float4 smemVec[];
    float* smem = reinterpret_cast<float*>(smemVec);
    float* queryTile = smem + Smem::kQUERY;
    float* keyTile = smem + Smem::kKEY;
    float* valueTile = smem + Smem::kVALUE;
    float* keyMask = smem + Smem::kKEY_MASK;
    float* queryMask = smem + Smem::kQUERY_MASK;
    float* lowOut = smem + Smem::kLOW_OUT;
    float* lowNormPartial = smem + Smem::kLOW_NORM;

    int const nb = a.nb;
    int64_t const bh = blockIdx.x / nb;
    int const blockRow = static_cast<int>(blockIdx.x - bh * nb);
    int64_t const rowIndex = bh * nb + blockRow;
    int64_t const batch = bh / a.heads;
    int64_t const head = bh - batch * a.heads;
    int const tid = threadIdx.x;
    int const lane = tid % kWARP;
    int const warp = tid / kWARP;
    int const row = tid / kROW_LANES;   // query row in the block
    int const group = tid % kROW_LANES; // lane within the row's 8
    int const firstToken = blockRow * kBLOCK;
    T const* query = static_cast<T const*>(a.query) + batch * a.queryStrides.batch + head * a.queryStrides.head;
    T const* key = static_cast<T const*>(a.key) + batch * a.keyStrides.batch + head * a.keyStrides.head;
    T const* value = static_cast<T const*>(a.value) + batch * a.valueStrides.batch + head * a.valueStrides.head;

    if (tid < kBLOCK)
    {
        int const token = firstToken + tid;
        queryMask[tid] = token < a.length ? maskValue(a.mask, batch, token) : 0.0F;
    }
    loadTile<T, kDP>(query, a.queryStrides.token, firstToken, a.length, a.headDim, a.mask, batch, queryTile, kSTRIDE);
    float const lowMax = a.lowRowMax[rowIndex];
    bool const full = a.approxMode == MraApproxMode::kFULL;

    // Low resolution: every block not covered at high resolution, weighted by its token count.
    float lowNorm = 0.0F;
    if (full)
    {
        float const rankMax = a.rankRowMax[rowIndex];
        float const threshold = a.thresholds[bh];
        float const* lowLogits = a.lowLogits + rowIndex * nb;
        float const* tokenCounts = a.tokenCounts + bh * nb;
        float const* valueMeans = a.valueMeans + bh * nb * kDP;
        float partial[kVEC];
#pragma unroll
        for (int u = 0; u < kVEC; ++u)
        {
            partial[u] = 0.0F;
        }
        float norm = 0.0F;
        for (int col = warp; col < nb; col += kATTN_WARPS)
        {
            float const low = lowLogits[col];
            float const covered = rankingScore(low, rankMax, blockRow, col, a.priors) >= threshold ? 1.0F : 0.0F;
            float const weight = expf((low - lowMax) - kMRA_REMOVED * covered) * tokenCounts[col];
            norm += weight;
#pragma unroll
            for (int u = 0; u < kVEC; ++u)
            {
                partial[u] = fmaf(weight, valueMeans[col * kDP + lane + kWARP * u], partial[u]);
            }
        }
        float* scratch = keyTile; // free until the first key tile is loaded
#pragma unroll
        for (int u = 0; u < kVEC; ++u)
        {
            scratch[warp * kDP + lane + kWARP * u] = partial[u];
        }
        if (lane == 0)
        {
            lowNormPartial[warp] = norm;
        }
        __syncthreads();
        for (int d = tid; d < kDP; d += kATTN_THREADS)
        {
            float sum = 0.0F;
            for (int w = 0; w < kATTN_WARPS; ++w)
            {
                sum += scratch[w * kDP + d];
            }
            lowOut[d] = sum;
        }
        for (int w = 0; w < kATTN_WARPS; ++w)
        {
            lowNorm += lowNormPartial[w];
        }
    }
    __syncthreads(); // query tile, query mask and lowOut are ready; the scratch is free

    // High resolution: the row's selected tiles, with an online softmax.
    int32_t const* rowStarts = a.rowStarts + bh * (nb + 1);
    int32_t const* selected = a.selected + bh * a.budget;
    int const begin = rowStarts[blockRow];
    int const end = rowStarts[blockRow + 1];
    float rowMax = -CUDART_INF_F;
    float rowSum = 0.0F;
    float4 acc[kVEC];
#pragma unroll
    for (int u = 0; u < kVEC; ++u)
    {
        acc[u] = make_float4(0.0F, 0.0F, 0.0F, 0.0F);
    }
    for (int slot = begin; slot < end; ++slot)
    {
        int const keyFirstToken = (selected[slot] - blockRow * nb) * kBLOCK;
        __syncthreads(); // the previous tiles are consumed
        loadTile<T, kDP>(key, a.keyStrides.token, keyFirstToken, a.length, a.headDim, a.mask, batch, keyTile, kSTRIDE);
        loadTile<T, kDP>(
            value, a.valueStrides.token, keyFirstToken, a.length, a.headDim, a.mask, batch, valueTile, kDP);
        if (tid < kBLOCK)
        {
            int const token = keyFirstToken + tid;
            keyMask[tid] = token < a.length ? maskValue(a.mask, batch, token) : 0.0F;
        }
        __syncthreads();

        float score[kKEYS_PER_LANE];
#pragma unroll
        for (int u = 0; u < kKEYS_PER_LANE; ++u)
        {
            score[u] = 0.0F;
        }
#pragma unroll 8
        for (int d = 0; d < kDP; d += 4)
        {
            float4 const q = *reinterpret_cast<float4 const*>(queryTile + row * kSTRIDE + d);
#pragma unroll
            for (int u = 0; u < kKEYS_PER_LANE; ++u)
            {
                float4 const k = *reinterpret_cast<float4 const*>(keyTile + (group + kROW_LANES * u) * kSTRIDE + d);
                score[u] = fmaf(q.x, k.x, score[u]);
                score[u] = fmaf(q.y, k.y, score[u]);
                score[u] = fmaf(q.z, k.z, score[u]);
                score[u] = fmaf(q.w, k.w, score[u]);
            }
        }
        float tileMax = -CUDART_INF_F;
#pragma unroll
        for (int u = 0; u < kKEYS_PER_LANE; ++u)
        {
            float const keep = keyMask[group + kROW_LANES * u];
            score[u] = score[u] / a.invScale - kMRA_REMOVED * (1.0F - keep);
            tileMax = fmaxf(tileMax, score[u]);
        }
#pragma unroll
        for (int offset = 1; offset < kROW_LANES; offset *= 2)
        {
            tileMax = fmaxf(tileMax, __shfl_xor_sync(kFULL_MASK, tileMax, offset));
        }
        float const newMax = fmaxf(rowMax, tileMax);
        float const rescale = expf(rowMax - newMax); // 0 on the first tile
        float prob[kKEYS_PER_LANE];
        float tileSum = 0.0F;
#pragma unroll
        for (int u = 0; u < kKEYS_PER_LANE; ++u)
        {
            prob[u] = expf(score[u] - newMax);
            tileSum += prob[u];
        }
#pragma unroll
        for (int offset = 1; offset < kROW_LANES; offset *= 2)
        {
            tileSum += __shfl_xor_sync(kFULL_MASK, tileSum, offset);
        }
        rowSum = rowSum * rescale + tileSum;
        rowMax = newMax;
#pragma unroll
        for (int u = 0; u < kVEC; ++u)
        {
            acc[u].x *= rescale;
            acc[u].y *= rescale;
            acc[u].z *= rescale;
            acc[u].w *= rescale;
        }
        int const rowLane0 = lane & ~(kROW_LANES - 1);
#pragma unroll
        for (int c = 0; c < kBLOCK; ++c)
        {
            // Key column c's probability sits in lane (c % 8) of this row's 8, slot c / 8.
            float const p = __shfl_sync(kFULL_MASK, prob[c / kROW_LANES], rowLane0 | (c % kROW_LANES));
            float const* valueRow = valueTile + c * kDP + 4 * group;
#pragma unroll
            for (int u = 0; u < kVEC; ++u)
            {
                scaleAdd(acc[u], p, *reinterpret_cast<float4 const*>(valueRow + kWARP * u));
            }
        }
    }

    int const token = firstToken + row;
    if (token >= a.length)
    {
        return; // padding inside the op: nothing to write
    }
    float const keep = queryMask[row];
    float highScale = 1.0F;
    float lowScale = 0.0F;
    float denominator = rowSum + kMRA_EPS;
    if (full)
    {
        // Bring both parts to the larger of their stabilisers; a row without selected tiles keeps lowMax.
        float const stabiliser = end > begin ? rowMax : lowMax;
        float const correction = (lowMax - stabiliser) * keep;
        lowScale = expf(correction <= 0.0F ? correction : 0.0F);
        highScale = expf(correction > 0.0F ? -correction : 0.0F);
        denominator = (rowSum * highScale + lowNorm * lowScale) + kMRA_EPS;
    }
    T* out = static_cast<T*>(a.output) + batch * a.outputStrides.batch + head * a.outputStrides.head
             + token * a.outputStrides.token;
#pragma unroll
    for (int u = 0; u < kVEC; ++u)
    {
        int const d0 = 4 * group + kWARP * u;
        float const high[4] = {acc[u].x, acc[u].y, acc[u].z, acc[u].w};
#pragma unroll
        for (int e = 0; e < 4; ++e)
        {
            int const d = d0 + e;
            if (d < a.headDim)
            {
                float const numerator = full ? high[e] * highScale + lowOut[d] * lowScale : high[e];
                out[d] = fromFloat<T>(numerator / denominator * keep);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Launch.

template <typename T, int kDP>
cudaError_t launchAll(DeviceArgs const& args, int64_t batchHeads, cudaStream_t stream)
{
    auto const rowBlocks = static_cast<unsigned>(batchHeads * args.nb);
    blockMeansKernel<T, kDP><<<rowBlocks, kDP, 0, stream>>>(args);
    cudaError_t status = cudaGetLastError();
    if (status != cudaSuccess)
    {
        return status;
    }
    lowLogitsKernel<kDP><<<rowBlocks, kLOW_THREADS, 0, stream>>>(args);
    status = cudaGetLastError();
    if (status != cudaSuccess)
    {
        return status;
    }
    selectBlocksKernel<<<static_cast<unsigned>(batchHeads), kSELECT_THREADS, 0, stream>>>(args);
    status = cudaGetLastError();
    if (status != cudaSuccess)
    {
        return status;
    }
    constexpr size_t kSMEM = AttentionSmem<kDP>::kBYTES;
    if (kSMEM > 48 * 1024)
    {
        status = cudaFuncSetAttribute(
            sparseAttentionKernel<T, kDP>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kSMEM));
        if (status != cudaSuccess)
        {
            return status;
        }
    }
    sparseAttentionKernel<T, kDP><<<rowBlocks, kATTN_THREADS, kSMEM, stream>>>(args);
    return cudaGetLastError();
}

template <typename T>
cudaError_t launchForType(DeviceArgs const& args, int64_t batchHeads, cudaStream_t stream)
{
    switch (mraPaddedHeadDim(args.headDim))
    {
    case 32:
        return launchAll<T, 32>(args, batchHeads, stream);
    case 64:
        return launchAll<T, 64>(args, batchHeads, stream);
    default:
        return launchAll<T, 128>(args, batchHeads, stream);
    }
}

bool validStrides(MraStrides const& s) noexcept
{
    return s.batch >= 0 && s.head >= 0 && s.token >= 0;
}

} // namespace

cudaError_t launchMraAttention(MraAttentionKernelParams const& p, cudaStream_t stream) noexcept
{
    bool const validSizes = p.batch >= 0 && p.heads >= 0 && p.length >= 1 && p.length <= kMRA_MAX_LENGTH
                            && p.headDim >= 1 && p.headDim <= kMRA_MAX_HEAD_DIM;
    bool const validAttributes = p.numBlocks >= 1 && std::isfinite(p.scale) && p.scale > 0.0
                                 && (p.approxMode == MraApproxMode::kFULL || p.approxMode == MraApproxMode::kSPARSE)
                                 && p.priorFirstNBlocks >= 0 && p.priorDiagonalNBlocks >= 0
                                 && (p.dataType == ElementType::kFLOAT32 || p.dataType == ElementType::kFLOAT16
                                     || p.dataType == ElementType::kBFLOAT16)
                                 && (p.maskType == ElementType::kFLOAT32 || p.maskType == ElementType::kFLOAT16
                                     || p.maskType == ElementType::kBFLOAT16 || p.maskType == ElementType::kFLOAT64);
    if (!validSizes || !validAttributes || !validStrides(p.queryStrides) || !validStrides(p.keyStrides)
        || !validStrides(p.valueStrides) || !validStrides(p.outputStrides) || p.maskBatchStride < 0)
    {
        return cudaErrorInvalidValue;
    }
    int64_t const batchHeads = int64_t{p.batch} * p.heads;
    if (batchHeads == 0)
    {
        return cudaSuccess;
    }
    int64_t const nb = mraNumBlockRows(p.length);
    if (batchHeads * nb > std::numeric_limits<int32_t>::max())
    {
        return cudaErrorInvalidValue; // more block rows than one grid dimension takes
    }
    MraWorkspaceLayout const layout = mraWorkspaceLayout(p.batch, p.heads, p.length, p.headDim, p.numBlocks);
    if (p.query == nullptr || p.key == nullptr || p.value == nullptr || p.mask == nullptr || p.output == nullptr
        || p.workspace == nullptr || p.workspaceBytes < layout.totalBytes
        || reinterpret_cast<uintptr_t>(p.workspace) % 16 != 0)
    {
        return cudaErrorInvalidValue;
    }

    auto* const base = static_cast<char*>(p.workspace);
    DeviceArgs args{};
    args.query = p.query;
    args.key = p.key;
    args.value = p.value;
    args.mask = MaskView{p.mask, p.maskType, p.maskBatchStride};
    args.output = p.output;
    args.queryStrides = p.queryStrides;
    args.keyStrides = p.keyStrides;
    args.valueStrides = p.valueStrides;
    args.outputStrides = p.outputStrides;
    args.heads = p.heads;
    args.length = p.length;
    args.headDim = p.headDim;
    args.nb = static_cast<int>(nb);
    args.budget = static_cast<int>(mraClampedBudget(p.numBlocks, p.length));
    // The reference divides fp32 logits by the Python float 1 / scale, i.e. by its fp32 rounding.
    args.invScale = static_cast<float>(1.0 / p.scale);
    args.approxMode = p.approxMode;
    args.priors = Priors{p.priorFirstNBlocks, p.priorDiagonalNBlocks};
    args.queryMeans = reinterpret_cast<float*>(base + layout.queryMeans);
    args.keyMeans = reinterpret_cast<float*>(base + layout.keyMeans);
    args.valueMeans = reinterpret_cast<float*>(base + layout.valueMeans);
    args.tokenCounts = reinterpret_cast<float*>(base + layout.tokenCounts);
    args.lowLogits = reinterpret_cast<float*>(base + layout.lowLogits);
    args.rankRowMax = reinterpret_cast<float*>(base + layout.rankRowMax);
    args.lowRowMax = reinterpret_cast<float*>(base + layout.lowRowMax);
    args.thresholds = reinterpret_cast<float*>(base + layout.thresholds);
    args.selected = reinterpret_cast<int32_t*>(base + layout.selected);
    args.rowStarts = reinterpret_cast<int32_t*>(base + layout.rowStarts);

    switch (p.dataType)
    {
    case ElementType::kFLOAT32:
        return launchForType<float>(args, batchHeads, stream);
    case ElementType::kFLOAT16:
        return launchForType<__half>(args, batchHeads, stream);
    case ElementType::kBFLOAT16:
        return launchForType<__nv_bfloat16>(args, batchHeads, stream);
    case ElementType::kFLOAT64:
        break;
    }
    return cudaErrorInvalidValue;
}

} // namespace tensorkiln::plugin
