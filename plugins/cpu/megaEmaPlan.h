/*
 * megaEmaPlan.h: what the EMA driver (megaEma.cpp) hands the per-ISA scan (megaEmaRecurrence.h). Plain data only
 * (see mraAttentionPlan.h for why).
 *
 * The coefficients are the op's fp32 values (p = sigmoid(delta), q = 1 - p sigmoid(alpha), w = p beta,
 * g = gamma fp32(sqrt(1/N)), rounded where the op rounds), widened to fp64 and laid out (direction, N, Dc) with
 * Dc = D rounded up to 4, so that one fp64 vector holds four channels. A scan item is one batch row and up to
 * 16 channels (four vectors). Direction 0 is the forward rows [0, D),
 * direction 1 the backward rows [D, 2D) of a bidirectional EMA.
 */
#pragma once

#include <cstdint>

namespace tensorkiln::cpu
{

//! Channels per vector: four fp64 lanes.
constexpr int64_t kEMA_LANES = 4;
//! Channel groups (vectors) per scan item: 16 channels, a 64-byte line of x and of the output.
constexpr int64_t kEMA_ITEM_GROUPS = 4;
//! Coefficients packed per EMA dimension and group: q, fp32(w g), q^taps, g, w.
constexpr int64_t kEMA_COEFFICIENTS = 5;
//! Time steps whose outputs a scan item gathers in fp64 before writing them.
constexpr int64_t kEMA_TIME_CHUNK = 256;

struct MegaEmaPlan
{
    float const* x{nullptr};
    float const* prevState{nullptr};
    float* output{nullptr};
    float* finalState{nullptr};
    int64_t batch{0};
    int64_t length{0};
    int64_t channels{0};
    int64_t ndim{0};
    int64_t paddedChannels{0};
    bool bidirectional{false};
    //! Kernel taps min(truncation, L); truncated is taps < L (else the kernel covers every shift anyway).
    int64_t taps{0};
    bool truncated{false};

    double const* decay{nullptr};       //!< q
    double const* outputWeight{nullptr}; //!< fp32(w g): the op's kernel is sum_n fp32(w g) q^l
    double const* inputWeight{nullptr};  //!< w: the state is w times the scan of x
    double const* projection{nullptr};   //!< g: prev_state reaches the output through it
    double const* lagDecay{nullptr};     //!< q^taps (truncated only)
};

//! fp64 scratch of one channel group: packed coefficients and three recurrences' states, N x 4 lanes each.
static inline int64_t megaEmaGroupDoubles(MegaEmaPlan const& plan) noexcept
{
    return plan.ndim * kEMA_LANES * (kEMA_COEFFICIENTS + 3);
}

//! fp64 scratch one scan item needs: its groups, and a time chunk of outputs.
static inline int64_t megaEmaScratchDoubles(MegaEmaPlan const& plan) noexcept
{
    return kEMA_ITEM_GROUPS * megaEmaGroupDoubles(plan) + kEMA_TIME_CHUNK * kEMA_LANES;
}

} // namespace tensorkiln::cpu
