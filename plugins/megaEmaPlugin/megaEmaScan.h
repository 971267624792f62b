/*
 * megaEmaScan.h: the per-thread bodies of MegaEma's chunked parallel scan, written once for the GPU kernels
 * (megaEmaKernel.cu) and for the host emulation that the ctest runs without a GPU (tests/megaEmaScanTest.cpp).
 *
 * The recurrence, per batch b, parameter row k and EMA dimension n (Ma et al. 2022, eq. 2-3; HF's
 * MegaMultiDimensionDampedEma):
 *
 *     h_t = q * h_{t-1} + w * x_t,        y_t = sum_n g_n * h_{t,n}
 *     p = sigmoid(delta), q = 1 - p * sigmoid(alpha), w = p * beta, g = gamma * sqrt(1/N)
 *
 * Rows [0, D) scan forward; when bidirectional, rows [D, 2D) scan the reversed sequence (both include x_t) and the
 * two results add. The sequence is cut into chunks of kMEGA_EMA_CHUNK steps:
 *
 *   A. chunkLocalStates: every chunk scans from a zero state; its end state (its start state, backward) is kept.
 *   B. combineChunkStates: per (b, k, n) a short sequential pass over the chunks turns those into each chunk's
 *      incoming state, H_in(c+1) = q^len(c) * H_in(c) + local(c), starting from prev_state or 0, and yields the
 *      final state.
 *   C. chunkOutputs: every chunk re-scans from its incoming state and emits y_t.
 *
 * Truncation to T taps (y_t = sum_{s<T} k_s x_{t-s}, k the impulse response) is itself a linear recurrence:
 * w_t = h_t - q^T h_{t-T} obeys w_t = q * w_{t-1} + w * (x_t - q^T x_{t-T}), so the same scan runs with the input
 * u_t = x_t - q^T x_{t-T} (x_{t+T} backward; x outside [0, L) is 0). final_state stays the untruncated h_{L-1}, so
 * with truncation phase A also keeps the forward rows' untruncated chunk states and phase B chains those too.
 *
 * An `Access` type supplies the data: x(b, t, d), param(which, row, n), hasPrev()/prev(b, d, n),
 * carry(chunk, b, row, n) and exact(chunk, b, d, n) (references into the workspace) and storeFinal(b, d, n, value).
 */
#pragma once

#include "megaEmaPlugin/megaEmaParams.h"

#include <math.h>

#if defined(__CUDACC__)
#define TK_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define TK_HOST_DEVICE inline
#endif
// Only the device pass unrolls: the host compiler would warn about an unknown pragma.
#if defined(__CUDA_ARCH__)
#define TK_UNROLL _Pragma("unroll")
#else
#define TK_UNROLL
#endif

namespace tensorkiln::plugin::mega_ema
{

//! Which parameter tensor Access::param reads.
enum ParamIndex : int32_t
{
    kDAMPING = 0,
    kDECAY = 1,
    kEXPANSION = 2,
    kPROJECTION = 3,
};

TK_HOST_DEVICE float mathExp(float v)
{
    return expf(v);
}
TK_HOST_DEVICE double mathExp(double v)
{
    return exp(v);
}
TK_HOST_DEVICE float mathPow(float base, float exponent)
{
    return powf(base, exponent);
}
TK_HOST_DEVICE double mathPow(double base, double exponent)
{
    return pow(base, exponent);
}

//! As torch.sigmoid: 1 / (1 + exp(-v)).
template <typename Acc>
TK_HOST_DEVICE Acc sigmoid(Acc v)
{
    return Acc(1) / (Acc(1) + mathExp(-v));
}

//! One thread's coefficients for kTile consecutive EMA dimensions of one parameter row.
template <typename Acc, int kTile>
struct Lane
{
    Acc weight[kTile];     //!< w = p * beta
    Acc decay[kTile];      //!< q
    Acc gain[kTile];       //!< g = gamma * sqrt(1/N)
    Acc decayTrunc[kTile]; //!< q^T (truncation only)
};

//! Coefficients of row `row`, dimensions [n0, n0 + kTile). Dimensions past ndim get zeros: their state stays 0 and
//! they add nothing, which keeps the inner loops free of bounds checks.
template <typename Acc, int kTile, typename Access>
TK_HOST_DEVICE void loadLane(
    Lane<Acc, kTile>& lane, Access const& io, MegaEmaGeometry const& g, int64_t row, int64_t n0)
{
    // As the op: the Python float sqrt(1/N), rounded once to the compute dtype.
    Acc const scale = static_cast<Acc>(sqrt(1.0 / static_cast<double>(g.ndim)));
TK_UNROLL
    for (int j = 0; j < kTile; ++j)
    {
        int64_t const n = n0 + j;
        if (n < g.ndim)
        {
            Acc const p = sigmoid(io.param(kDAMPING, row, n));
            Acc const q = Acc(1) - p * sigmoid(io.param(kDECAY, row, n));
            lane.weight[j] = p * io.param(kEXPANSION, row, n);
            lane.decay[j] = q;
            lane.gain[j] = io.param(kPROJECTION, row, n) * scale;
            lane.decayTrunc[j] = g.truncation > 0 ? mathPow(q, static_cast<Acc>(g.truncation)) : Acc(0);
        }
        else
        {
            lane.weight[j] = Acc(0);
            lane.decay[j] = Acc(0);
            lane.gain[j] = Acc(0);
            lane.decayTrunc[j] = Acc(0);
        }
    }
}

//! The time steps [begin, end) of a chunk.
TK_HOST_DEVICE int64_t chunkBegin(int64_t chunk)
{
    return chunk * kMEGA_EMA_CHUNK;
}
TK_HOST_DEVICE int64_t chunkSteps(MegaEmaGeometry const& g, int64_t chunk)
{
    int64_t const remaining = g.length - chunkBegin(chunk);
    return remaining < kMEGA_EMA_CHUNK ? remaining : kMEGA_EMA_CHUNK;
}

//! Advance `state` over one chunk of (b, d) in direction `dir` (0 forward, 1 backward), optionally with the
//! truncated input. Calls emit(t, y_t) after every step when kEmit.
template <bool kEmit, bool kTruncated, typename Acc, int kTile, typename Access, typename Emit>
TK_HOST_DEVICE void sweepChunk(Lane<Acc, kTile> const& lane, Acc (&state)[kTile], Access const& io,
    MegaEmaGeometry const& g, int64_t b, int64_t d, int32_t dir, int64_t chunk, Emit&& emit)
{
    int64_t const steps = chunkSteps(g, chunk);
    int64_t const step = dir == 0 ? 1 : -1;
    int64_t t = dir == 0 ? chunkBegin(chunk) : chunkBegin(chunk) + steps - 1;
    for (int64_t i = 0; i < steps; ++i, t += step)
    {
        Acc const xt = io.x(b, t, d);
        Acc xLagged = Acc(0);
        if (kTruncated)
        {
            int64_t const lagged = t - step * g.truncation;
            xLagged = (lagged >= 0 && lagged < g.length) ? io.x(b, lagged, d) : Acc(0);
        }
        Acc y = Acc(0);
TK_UNROLL
        for (int j = 0; j < kTile; ++j)
        {
            Acc const input = kTruncated ? xt - lane.decayTrunc[j] * xLagged : xt;
            state[j] = lane.decay[j] * state[j] + lane.weight[j] * input;
            y += lane.gain[j] * state[j];
        }
        if (kEmit)
        {
            emit(t, y);
        }
    }
}

struct NoEmit
{
    template <typename Acc>
    TK_HOST_DEVICE void operator()(int64_t, Acc) const
    {
    }
};

//! Phase A for one thread: the chunk-local state(s) of (b, d, dir) for dimensions [tile * kTile, +kTile).
template <typename Acc, int kTile, typename Access>
TK_HOST_DEVICE void chunkLocalStates(
    Access const& io, MegaEmaGeometry const& g, int64_t b, int64_t d, int32_t dir, int64_t tile, int64_t chunk)
{
    int64_t const row = dir * g.channels + d;
    int64_t const n0 = tile * kTile;
    Lane<Acc, kTile> lane;
    loadLane(lane, io, g, row, n0);
    Acc state[kTile];
TK_UNROLL
    for (int j = 0; j < kTile; ++j)
    {
        state[j] = Acc(0);
    }
    if (g.truncation > 0)
    {
        sweepChunk<false, true>(lane, state, io, g, b, d, dir, chunk, NoEmit{});
    }
    else
    {
        sweepChunk<false, false>(lane, state, io, g, b, d, dir, chunk, NoEmit{});
    }
TK_UNROLL
    for (int j = 0; j < kTile; ++j)
    {
        if (n0 + j < g.ndim)
        {
            io.carry(chunk, b, row, n0 + j) = state[j];
        }
    }
    if (g.truncation > 0 && dir == 0)
    {
        // final_state is the untruncated h_{L-1}: keep the plain recurrence's chunk states as well.
TK_UNROLL
        for (int j = 0; j < kTile; ++j)
        {
            state[j] = Acc(0);
        }
        sweepChunk<false, false>(lane, state, io, g, b, d, dir, chunk, NoEmit{});
TK_UNROLL
        for (int j = 0; j < kTile; ++j)
        {
            if (n0 + j < g.ndim)
            {
                io.exact(chunk, b, d, n0 + j) = state[j];
            }
        }
    }
}

//! Replace chunk-local states by incoming states along one chain; return the state after the whole sequence.
template <typename Acc, typename StateAt>
TK_HOST_DEVICE Acc chainChunks(MegaEmaGeometry const& g, Acc q, bool backward, Acc initial, StateAt&& stateAt)
{
    Acc const decayFull = mathPow(q, static_cast<Acc>(kMEGA_EMA_CHUNK));
    Acc const decayLast = g.chunks > 0 ? mathPow(q, static_cast<Acc>(chunkSteps(g, g.chunks - 1))) : Acc(1);
    Acc carry = initial;
    for (int64_t i = 0; i < g.chunks; ++i)
    {
        int64_t const chunk = backward ? g.chunks - 1 - i : i;
        Acc& slot = stateAt(chunk);
        Acc const local = slot;
        slot = carry;
        carry = (chunk == g.chunks - 1 ? decayLast : decayFull) * carry + local;
    }
    return carry;
}

//! Phase B for one (b, row, n): incoming states for every chunk, and final_state for forward rows. With zero
//! chunks (an empty sequence) it only writes final_state = prev_state (or 0).
template <typename Acc, typename Access>
TK_HOST_DEVICE void combineChunkStates(Access const& io, MegaEmaGeometry const& g, int64_t b, int64_t row, int64_t n)
{
    bool const backward = row >= g.channels;
    Acc const p = sigmoid(io.param(kDAMPING, row, n));
    Acc const q = Acc(1) - p * sigmoid(io.param(kDECAY, row, n));
    Acc const initial = (!backward && io.hasPrev()) ? io.prev(b, row, n) : Acc(0);
    Acc carry = initial;
    if (g.useCarries)
    {
        carry = chainChunks(g, q, backward, initial, [&](int64_t chunk) -> Acc& { return io.carry(chunk, b, row, n); });
    }
    if (backward)
    {
        return;
    }
    if (g.truncation > 0)
    {
        carry = chainChunks(g, q, false, Acc(0), [&](int64_t chunk) -> Acc& { return io.exact(chunk, b, row, n); });
    }
    io.storeFinal(b, row, n, carry);
}

//! Phase C for one (b, d, dir): scan the chunk from its incoming state over every tile of kTile dimensions and
//! emit(t, y, firstTile): the caller stores the first tile's y_t and adds the others'. Without carries (a single
//! chunk, no truncation) the forward direction also writes final_state.
template <typename Acc, int kTile, typename Access, typename Emit>
TK_HOST_DEVICE void chunkOutputs(
    Access const& io, MegaEmaGeometry const& g, int64_t b, int64_t d, int32_t dir, int64_t chunk, Emit&& emit)
{
    int64_t const row = dir * g.channels + d;
    int64_t const tiles = (g.ndim + kTile - 1) / kTile;
    for (int64_t tile = 0; tile < tiles; ++tile)
    {
        int64_t const n0 = tile * kTile;
        Lane<Acc, kTile> lane;
        loadLane(lane, io, g, row, n0);
        Acc state[kTile];
TK_UNROLL
        for (int j = 0; j < kTile; ++j)
        {
            int64_t const n = n0 + j;
            Acc initial = Acc(0);
            if (n < g.ndim)
            {
                if (g.useCarries)
                {
                    initial = io.carry(chunk, b, row, n);
                }
                else if (dir == 0 && io.hasPrev())
                {
                    initial = io.prev(b, d, n);
                }
            }
            state[j] = initial;
        }
        bool const firstTile = tile == 0;
        auto tileEmit = [&](int64_t t, Acc y) { emit(t, y, firstTile); };
        if (g.truncation > 0)
        {
            sweepChunk<true, true>(lane, state, io, g, b, d, dir, chunk, tileEmit);
        }
        else
        {
            sweepChunk<true, false>(lane, state, io, g, b, d, dir, chunk, tileEmit);
        }
        if (!g.useCarries && dir == 0)
        {
TK_UNROLL
            for (int j = 0; j < kTile; ++j)
            {
                if (n0 + j < g.ndim)
                {
                    io.storeFinal(b, d, n0 + j, state[j]);
                }
            }
        }
    }
}

} // namespace tensorkiln::plugin::mega_ema
