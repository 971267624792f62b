/*
 * megaEmaRecurrence.h: the hot loop of MegaEma (reference/ops/mega_ema.py), compiled once per build in the
 * namespace TK_CPU_ISA_NS (see cpuSimd.h). One scan item is one batch row and four channels (one fp64 vector);
 * the driver (megaEma.cpp) computes the coefficients (megaEmaPlan.h) and runs the items in parallel.
 *
 * Per channel d and EMA dimension n the op's kernel is k_l = sum_n fp32(w g)_n q_n^l, so with the scan
 * s_t = q s_{t-1} + x_t (the EMA state is h_t = w s_t) the output is y_t = sum_n fp32(w g)_n s_{t,n}. The scan runs
 * in fp64: with q near 1 an fp32 recurrence would carry a rounding error of order sqrt(1 / (1 - q)) ulp of the
 * state, and the fp64 one is exact to fp32 precision for any q and L; the outputs are rounded to fp32 once.
 *
 * Backward rows (bidirectional, rows [D, 2D)) scan from t = L-1 down with their own coefficients, including x_t,
 * and their output adds to the forward one. prev_state h_{-1} reaches y_t as sum_n g q^(t+1) h_{-1}: a second,
 * input-free recurrence. Truncation to T taps: the windowed scan v_t = s_t - q^T s_{t-T} obeys
 * v_t = q v_{t-1} + x_t - q^T x_{t-T} (x outside [0, L) is 0), which fp64 keeps exact; the exact final state is
 * s_{L-1} = sum_j q^(jT) v_{L-1-jT}, gathered by Horner's rule at t = L-1 (mod T).
 */
#pragma once

#include "cpu/cpuSimd.h"
#include "cpu/megaEmaPlan.h"

#include <cstdint>

namespace tensorkiln::cpu::TK_CPU_ISA_NS
{

//! EMA dimensions one register-blocked pass carries.
constexpr int kEMA_BLOCK_N = 8;

//! Where one scan item reads and writes: batch row b, channels [c0, c0 + lanes), one direction.
struct EmaLanes
{
    float const* x;      //!< x[b, 0, c0]
    float* output;       //!< output[b, 0, c0]
    int64_t stride;      //!< D: from one time step to the next
    int64_t lanes;       //!< 4, or fewer in the last channel group
    int64_t length;
    bool forward;
};

static inline VecD loadLanes(float const* p, int64_t lanes) noexcept
{
    if (lanes == kVEC_D)
    {
        return dloadFloats(p);
    }
    float padded[kVEC_D] = {0.0F, 0.0F, 0.0F, 0.0F};
    for (int64_t i = 0; i < lanes; ++i)
    {
        padded[i] = p[i];
    }
    return dloadFloats(padded);
}

static inline void storeLanes(float* p, VecD v, int64_t lanes) noexcept
{
    if (lanes == kVEC_D)
    {
        dstoreFloats(p, v);
        return;
    }
    float padded[kVEC_D];
    dstoreFloats(padded, v);
    for (int64_t i = 0; i < lanes; ++i)
    {
        p[i] = padded[i];
    }
}

//! Coefficients of one channel group packed per EMA dimension n, four lanes each, at packed + n * kPACK:
//! q, fp32(w g), q^taps, g, w (the last for the final state only).
constexpr int64_t kPACK = kEMA_COEFFICIENTS * kVEC_D;
constexpr int64_t kPACK_DECAY = 0;
constexpr int64_t kPACK_OUTPUT = kVEC_D;
constexpr int64_t kPACK_LAG = 2 * kVEC_D;
constexpr int64_t kPACK_PROJECTION = 3 * kVEC_D;
constexpr int64_t kPACK_INPUT = 4 * kVEC_D;

//! Hide a pointer's value from the optimiser, so that loads through it stay inside the loop: the coefficients are
//! read from L1 each step (as FMA memory operands), leaving the registers to the loop-carried states.
static inline double const* opaque(double const* p) noexcept
{
#if defined(__GNUC__)
    __asm__("" : "+r"(p));
#endif
    return p;
}

//! Scan steps [first, first + steps) of the direction for EMA dimensions [n0, n0 + kNB), adding y to ybuf.
template <int kNB, bool kTRUNC, bool kPREV>
static void scanBlock(EmaLanes const& io, double const* packed, int64_t n0, int64_t first, int64_t steps,
    int64_t taps, int64_t checkpoint, double* state, double* prevState, double* horner, double* ybuf) noexcept
{
    VecD s[kNB];
    VecD r[kNB];
    for (int n = 0; n < kNB; ++n)
    {
        s[n] = dload(state + (n0 + n) * kVEC_D);
        if (kPREV)
        {
            r[n] = dload(prevState + (n0 + n) * kVEC_D);
        }
    }
    packed += n0 * kPACK;
    int64_t const direction = io.forward ? 1 : -1;
    int64_t t = io.forward ? first : io.length - 1 - first;
    for (int64_t step = 0; step < steps; ++step, t += direction)
    {
        VecD const x = loadLanes(io.x + t * io.stride, io.lanes);
        VecD lagged = dzero();
        if (kTRUNC)
        {
            int64_t const lagTime = t - direction * taps;
            if (lagTime >= 0 && lagTime < io.length)
            {
                lagged = loadLanes(io.x + lagTime * io.stride, io.lanes);
            }
        }
        double const* c = opaque(packed);
        VecD y0 = dzero();
        VecD y1 = dzero();
        for (int n = 0; n < kNB; ++n)
        {
            VecD const q = dload(c + n * kPACK + kPACK_DECAY);
            VecD const input = kTRUNC ? dfnma(dload(c + n * kPACK + kPACK_LAG), lagged, x) : x;
            s[n] = dfma(q, s[n], input);
            if (n % 2 == 0)
            {
                y0 = dfma(dload(c + n * kPACK + kPACK_OUTPUT), s[n], y0);
            }
            else
            {
                y1 = dfma(dload(c + n * kPACK + kPACK_OUTPUT), s[n], y1);
            }
            if (kPREV)
            {
                r[n] = dmul(q, r[n]);
                y1 = dfma(dload(c + n * kPACK + kPACK_PROJECTION), r[n], y1);
            }
        }
        if (kTRUNC && t == checkpoint)
        {
            for (int n = 0; n < kNB; ++n)
            {
                double* f = horner + (n0 + n) * kVEC_D;
                dstore(f, dfma(dload(c + n * kPACK + kPACK_LAG), dload(f), s[n]));
            }
            checkpoint += taps;
        }
        double* y = ybuf + step * kVEC_D;
        dstore(y, dadd(dload(y), dadd(y0, y1)));
    }
    for (int n = 0; n < kNB; ++n)
    {
        dstore(state + (n0 + n) * kVEC_D, s[n]);
        if (kPREV)
        {
            dstore(prevState + (n0 + n) * kVEC_D, r[n]);
        }
    }
}

template <int kNB>
static void scanBlockDispatch(bool truncated, bool prev, EmaLanes const& io, double const* packed, int64_t n0,
    int64_t first, int64_t steps, int64_t taps, int64_t checkpoint, double* state, double* prevState, double* horner,
    double* ybuf) noexcept
{
    if (truncated)
    {
        scanBlock<kNB, true, false>(io, packed, n0, first, steps, taps, checkpoint, state, prevState, horner, ybuf);
    }
    else if (prev)
    {
        scanBlock<kNB, false, true>(io, packed, n0, first, steps, taps, checkpoint, state, prevState, horner, ybuf);
    }
    else
    {
        scanBlock<kNB, false, false>(io, packed, n0, first, steps, taps, checkpoint, state, prevState, horner, ybuf);
    }
}

//! The first t >= first with t = L-1 (mod taps): where Horner's rule picks up the windowed state.
static inline int64_t firstCheckpoint(int64_t length, int64_t taps, int64_t first) noexcept
{
    int64_t checkpoint = (length - 1) % taps;
    if (checkpoint < first)
    {
        checkpoint += (first - checkpoint + taps - 1) / taps * taps;
    }
    return checkpoint;
}

//! One channel group (four lanes) of a scan item in one direction: where it reads and its scratch.
struct EmaGroup
{
    EmaLanes io;
    int64_t c0;
    double* packed;    //!< (N, kPACK)
    double* state;     //!< (N, 4): the scan s
    double* prevState; //!< (N, 4): q^(t+1) h_{-1}
    double* horner;    //!< (N, 4): the exact state gathered from the windowed scan
};

static EmaGroup makeGroup(MegaEmaPlan const& plan, int64_t b, int64_t c0, bool forward, double* scratch) noexcept
{
    int64_t const ndim = plan.ndim;
    int64_t const channels = plan.channels;
    EmaGroup g{{plan.x + b * plan.length * channels + c0, plan.output + b * plan.length * channels + c0, channels,
                   minI64(kVEC_D, channels - c0), plan.length, forward},
        c0, scratch, nullptr, nullptr, nullptr};
    g.state = g.packed + ndim * kPACK;
    g.prevState = g.state + ndim * kVEC_D;
    g.horner = g.prevState + ndim * kVEC_D;
    int64_t const direction = forward ? 0 : 1;
    double const* sources[] = {plan.decay, plan.outputWeight, plan.lagDecay, plan.projection, plan.inputWeight};
    for (int64_t n = 0; n < ndim; ++n)
    {
        int64_t const offset = (direction * ndim + n) * plan.paddedChannels + c0;
        for (int64_t kind = 0; kind < kPACK / kVEC_D; ++kind)
        {
            for (int64_t lane = 0; lane < kVEC_D; ++lane)
            {
                g.packed[n * kPACK + kind * kVEC_D + lane] = sources[kind][offset + lane];
            }
        }
    }
    for (int64_t e = 0; e < 3 * ndim * kVEC_D; ++e)
    {
        g.state[e] = 0.0;
    }
    if (forward && plan.prevState != nullptr)
    {
        for (int64_t lane = 0; lane < g.io.lanes; ++lane)
        {
            for (int64_t n = 0; n < ndim; ++n)
            {
                g.prevState[n * kVEC_D + lane] = plan.prevState[(b * channels + c0 + lane) * ndim + n];
            }
        }
    }
    return g;
}

//! Steps [first, first + steps) of one group: every EMA dimension in blocks of 8 (4, 2, 1 for the rest), then the
//! outputs, rounded to fp32 (the backward direction adds to the forward one's).
static void scanChunk(MegaEmaPlan const& plan, EmaGroup const& g, int64_t first, int64_t steps, double* ybuf) noexcept
{
    bool const forward = g.io.forward;
    bool const prev = forward && plan.prevState != nullptr;
    for (int64_t e = 0; e < steps * kVEC_D; ++e)
    {
        ybuf[e] = 0.0;
    }
    // Only the forward scan gathers the final state (t never equals -1).
    int64_t const checkpoint = plan.truncated && forward ? firstCheckpoint(plan.length, plan.taps, first) : -1;
    for (int64_t n0 = 0; n0 < plan.ndim;)
    {
        int64_t const left = plan.ndim - n0;
        int const width = left >= 8 ? 8 : left >= 4 ? 4 : left >= 2 ? 2 : 1;
        switch (width)
        {
        case 8:
            scanBlockDispatch<8>(plan.truncated, prev, g.io, g.packed, n0, first, steps, plan.taps, checkpoint,
                g.state, g.prevState, g.horner, ybuf);
            break;
        case 4:
            scanBlockDispatch<4>(plan.truncated, prev, g.io, g.packed, n0, first, steps, plan.taps, checkpoint,
                g.state, g.prevState, g.horner, ybuf);
            break;
        case 2:
            scanBlockDispatch<2>(plan.truncated, prev, g.io, g.packed, n0, first, steps, plan.taps, checkpoint,
                g.state, g.prevState, g.horner, ybuf);
            break;
        default:
            scanBlockDispatch<1>(plan.truncated, prev, g.io, g.packed, n0, first, steps, plan.taps, checkpoint,
                g.state, g.prevState, g.horner, ybuf);
            break;
        }
        n0 += width;
    }
    for (int64_t step = 0; step < steps; ++step)
    {
        int64_t const t = forward ? first + step : plan.length - 1 - (first + step);
        float* out = g.io.output + t * plan.channels;
        VecD y = dload(ybuf + step * kVEC_D);
        if (!forward)
        {
            y = dadd(y, loadLanes(out, g.io.lanes)); // the forward rows' output, already rounded once
        }
        storeLanes(out, y, g.io.lanes);
    }
}

//! final_state = w s_{L-1} (+ q^L h_{-1}); with truncation the exact s_{L-1} is Horner's sum.
static void writeFinalState(MegaEmaPlan const& plan, int64_t b, EmaGroup const& g) noexcept
{
    double const* scan = plan.truncated ? g.horner : g.state;
    for (int64_t lane = 0; lane < g.io.lanes; ++lane)
    {
        for (int64_t n = 0; n < plan.ndim; ++n)
        {
            double const w = g.packed[n * kPACK + kPACK_INPUT + lane];
            double value = w * scan[n * kVEC_D + lane];
            if (plan.prevState != nullptr)
            {
                value += g.prevState[n * kVEC_D + lane];
            }
            plan.finalState[(b * plan.channels + g.c0 + lane) * plan.ndim + n] = static_cast<float>(value);
        }
    }
}

//! One scan item: batch row b, channel groups [group0, group0 + kEMA_ITEM_GROUPS) (fewer at the end). Time chunks
//! outermost, so that the chunk's lines of x and of the output serve every group of the item from cache.
static void scanItem(MegaEmaPlan const& plan, int64_t b, int64_t group0, double* scratch) noexcept
{
    int64_t const groups = minI64(kEMA_ITEM_GROUPS, (plan.channels + kVEC_D - 1) / kVEC_D - group0);
    int64_t const perGroup = megaEmaGroupDoubles(plan);
    double* ybuf = scratch + kEMA_ITEM_GROUPS * perGroup;
    for (int direction = 0; direction < (plan.bidirectional ? 2 : 1); ++direction)
    {
        bool const forward = direction == 0;
        EmaGroup items[kEMA_ITEM_GROUPS];
        for (int64_t i = 0; i < groups; ++i)
        {
            items[i] = makeGroup(plan, b, (group0 + i) * kVEC_D, forward, scratch + i * perGroup);
        }
        for (int64_t first = 0; first < plan.length; first += kEMA_TIME_CHUNK)
        {
            int64_t const steps = minI64(kEMA_TIME_CHUNK, plan.length - first);
            for (int64_t i = 0; i < groups; ++i)
            {
                scanChunk(plan, items[i], first, steps, ybuf);
            }
        }
        for (int64_t i = 0; forward && i < groups; ++i)
        {
            writeFinalState(plan, b, items[i]);
        }
    }
}

void emaItems(MegaEmaPlan const& plan, int64_t begin, int64_t end, double* scratch) noexcept
{
    int64_t const groups = (plan.channels + kVEC_D - 1) / kVEC_D;
    int64_t const itemsPerRow = (groups + kEMA_ITEM_GROUPS - 1) / kEMA_ITEM_GROUPS;
    for (int64_t item = begin; item < end; ++item)
    {
        scanItem(plan, item / itemsPerRow, (item % itemsPerRow) * kEMA_ITEM_GROUPS, scratch);
    }
}

} // namespace tensorkiln::cpu::TK_CPU_ISA_NS
