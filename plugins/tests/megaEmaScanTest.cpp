/*
 * megaEmaScanTest.cpp: the chunked scan's per-thread bodies (megaEmaPlugin/megaEmaScan.h, the code the GPU kernels
 * run) executed on the host in the kernels' phase order, against an independent oracle: the EMA recurrence step by
 * step, and truncation as an explicit convolution with the impulse response cut to min(T, L) taps, both in double.
 *
 * This checks the chunk decomposition (carries across chunk boundaries, short last chunks, the backward direction,
 * prev_state, the truncated-input recurrence, final_state) without a GPU; the kernels' thread indexing and dtype
 * conversions are covered by tests/test_kernels_gpu.py on a CUDA machine.
 */
#include "megaEmaPlugin/megaEmaScan.h"
#include "tests/testing.h"

#include <cmath>
#include <random>
#include <vector>

using namespace tensorkiln::plugin;

namespace
{

struct Problem
{
    int64_t batch;
    int64_t length;
    int64_t channels;
    int64_t ndim;
    bool bidirectional;
    int64_t truncation;
    bool withPrev;
    std::vector<double> x;         // stored (B, D, L): x(b, t, d) = x[(b * D + d) * L + t], a non-contiguous view
    std::vector<double> params[4]; // (K, N)
    std::vector<double> prev;      // (B, D, N)
};

Problem makeProblem(int64_t b, int64_t l, int64_t d, int64_t n, bool bidirectional, int64_t truncation, bool withPrev,
    unsigned seed)
{
    std::mt19937 random(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    Problem p{b, l, d, n, bidirectional, truncation, withPrev, {}, {}, {}};
    int64_t const rows = bidirectional ? 2 * d : d;
    p.x.resize(static_cast<std::size_t>(b * l * d));
    for (double& v : p.x)
    {
        v = normal(random);
    }
    for (auto& param : p.params)
    {
        param.resize(static_cast<std::size_t>(rows * n));
        for (double& v : param)
        {
            v = normal(random);
        }
    }
    if (withPrev)
    {
        p.prev.resize(static_cast<std::size_t>(b * d * n));
        for (double& v : p.prev)
        {
            v = normal(random);
        }
    }
    return p;
}

template <typename Acc>
struct HostAccess
{
    Problem const* problem;
    std::vector<Acc>* carries;
    std::vector<Acc>* exacts;
    std::vector<double>* finalState;
    int64_t rows;

    Acc x(int64_t b, int64_t t, int64_t d) const
    {
        Problem const& p = *problem;
        return static_cast<Acc>(p.x[static_cast<std::size_t>((b * p.channels + d) * p.length + t)]);
    }
    Acc param(int32_t which, int64_t row, int64_t n) const
    {
        return static_cast<Acc>(problem->params[which][static_cast<std::size_t>(row * problem->ndim + n)]);
    }
    bool hasPrev() const
    {
        return problem->withPrev;
    }
    Acc prev(int64_t b, int64_t d, int64_t n) const
    {
        Problem const& p = *problem;
        return static_cast<Acc>(p.prev[static_cast<std::size_t>((b * p.channels + d) * p.ndim + n)]);
    }
    Acc& carry(int64_t chunk, int64_t b, int64_t row, int64_t n) const
    {
        return (*carries)[static_cast<std::size_t>(((chunk * problem->batch + b) * rows + row) * problem->ndim + n)];
    }
    Acc& exact(int64_t chunk, int64_t b, int64_t d, int64_t n) const
    {
        Problem const& p = *problem;
        return (*exacts)[static_cast<std::size_t>(((chunk * p.batch + b) * p.channels + d) * p.ndim + n)];
    }
    void storeFinal(int64_t b, int64_t d, int64_t n, Acc value) const
    {
        (*finalState)[static_cast<std::size_t>((b * problem->channels + d) * problem->ndim + n)] = value;
    }
};

struct Result
{
    std::vector<double> y;          // (B, L, D)
    std::vector<double> finalState; // (B, D, N)
};

//! The kernels' orchestration on the host: phase A over (b, d, dir, tile, chunk), phase B over (b, row, n),
//! phase C over (b, chunk, d, dir) with the two directions summed in the kernel's order.
template <typename Acc, int kTile>
Result emulate(Problem const& p)
{
    MegaEmaAttributes attributes;
    attributes.bidirectional = p.bidirectional;
    attributes.truncation = p.truncation;
    MegaEmaShape const shape{p.batch, p.length, p.channels, p.ndim, p.withPrev};
    MegaEmaScanLayout const layout
        = megaEmaScanLayout(shape, attributes, sizeof(Acc) == 8 ? ElementType::kFLOAT64 : ElementType::kFLOAT32);
    MegaEmaGeometry const& g = layout.geometry;

    std::vector<Acc> carries(static_cast<std::size_t>(g.chunks * g.batch * g.rows * g.ndim), Acc(-999));
    std::vector<Acc> exacts(static_cast<std::size_t>(g.chunks * g.batch * g.channels * g.ndim), Acc(-999));
    Result result{std::vector<double>(static_cast<std::size_t>(p.batch * p.length * p.channels), -999.0),
        std::vector<double>(static_cast<std::size_t>(p.batch * p.channels * p.ndim), -999.0)};
    HostAccess<Acc> const io{&p, &carries, &exacts, &result.finalState, g.rows};
    TK_EXPECT(layout.workspaceBytes >= (g.useCarries ? carries.size() * sizeof(Acc) : 0));

    int64_t const tiles = (g.ndim + kTile - 1) / kTile;
    if (g.useCarries)
    {
        for (int64_t b = 0; b < g.batch; ++b)
            for (int64_t d = 0; d < g.channels; ++d)
                for (int32_t dir = 0; dir < g.directions; ++dir)
                    for (int64_t tile = 0; tile < tiles; ++tile)
                        for (int64_t chunk = 0; chunk < g.chunks; ++chunk)
                            mega_ema::chunkLocalStates<Acc, kTile>(io, g, b, d, dir, tile, chunk);
    }
    if (g.useCarries || g.length == 0)
    {
        for (int64_t b = 0; b < g.batch; ++b)
            for (int64_t row = 0; row < g.rows; ++row)
                for (int64_t n = 0; n < g.ndim; ++n)
                    mega_ema::combineChunkStates<Acc>(io, g, b, row, n);
    }
    for (int64_t b = 0; b < g.batch; ++b)
    {
        for (int64_t chunk = 0; chunk < g.chunks; ++chunk)
        {
            int64_t const begin = mega_ema::chunkBegin(chunk);
            for (int64_t d = 0; d < g.channels; ++d)
            {
                Acc buffer[2][kMEGA_EMA_CHUNK];
                for (int32_t dir = 0; dir < g.directions; ++dir)
                {
                    mega_ema::chunkOutputs<Acc, kTile>(io, g, b, d, dir, chunk, [&](int64_t t, Acc y, bool first) {
                        Acc& slot = buffer[dir][t - begin];
                        slot = first ? y : slot + y;
                    });
                }
                for (int64_t i = 0; i < mega_ema::chunkSteps(g, chunk); ++i)
                {
                    Acc y = buffer[0][i];
                    if (g.directions == 2)
                    {
                        y += buffer[1][i];
                    }
                    result.y[static_cast<std::size_t>((b * p.length + begin + i) * p.channels + d)] = y;
                }
            }
        }
    }
    return result;
}

//! The oracle, written from the op's definition only.
Result oracle(Problem const& p)
{
    Result result{std::vector<double>(static_cast<std::size_t>(p.batch * p.length * p.channels), 0.0),
        std::vector<double>(static_cast<std::size_t>(p.batch * p.channels * p.ndim), 0.0)};
    auto sig = [](double v) { return 1.0 / (1.0 + std::exp(-v)); };
    int64_t const taps = p.truncation == 0 ? p.length : std::min(p.truncation, p.length);
    int32_t const directions = p.bidirectional ? 2 : 1;
    for (int64_t b = 0; b < p.batch; ++b)
    {
        for (int64_t d = 0; d < p.channels; ++d)
        {
            auto xAt = [&](int64_t t) { return p.x[static_cast<std::size_t>((b * p.channels + d) * p.length + t)]; };
            for (int32_t dir = 0; dir < directions; ++dir)
            {
                int64_t const row = dir * p.channels + d;
                std::vector<double> w(static_cast<std::size_t>(p.ndim)), q(w.size()), g(w.size());
                for (int64_t n = 0; n < p.ndim; ++n)
                {
                    auto at = [&](int which) { return p.params[which][static_cast<std::size_t>(row * p.ndim + n)]; };
                    double const pp = sig(at(0));
                    q[static_cast<std::size_t>(n)] = 1.0 - pp * sig(at(1));
                    w[static_cast<std::size_t>(n)] = pp * at(2);
                    g[static_cast<std::size_t>(n)] = at(3) * std::sqrt(1.0 / static_cast<double>(p.ndim));
                }
                // The impulse response k_s and the plain recurrence.
                std::vector<double> kernel(static_cast<std::size_t>(taps), 0.0);
                for (int64_t s = 0; s < taps; ++s)
                    for (std::size_t n = 0; n < w.size(); ++n)
                        kernel[static_cast<std::size_t>(s)] += g[n] * w[n] * std::pow(q[n], static_cast<double>(s));
                std::vector<double> h(w.size(), 0.0);
                if (dir == 0 && p.withPrev)
                    for (std::size_t n = 0; n < h.size(); ++n)
                        h[n] = p.prev[static_cast<std::size_t>((b * p.channels + d) * p.ndim) + n];
                for (int64_t i = 0; i < p.length; ++i)
                {
                    int64_t const t = dir == 0 ? i : p.length - 1 - i;
                    double y = 0.0;
                    for (std::size_t n = 0; n < h.size(); ++n)
                    {
                        h[n] = q[n] * h[n] + w[n] * xAt(t);
                        y += g[n] * h[n];
                    }
                    if (p.truncation > 0)
                    {
                        y = 0.0;
                        for (int64_t s = 0; s < taps; ++s)
                        {
                            int64_t const source = dir == 0 ? t - s : t + s;
                            if (source >= 0 && source < p.length)
                                y += kernel[static_cast<std::size_t>(s)] * xAt(source);
                        }
                    }
                    result.y[static_cast<std::size_t>((b * p.length + t) * p.channels + d)] += y;
                }
                if (dir == 0)
                    for (std::size_t n = 0; n < h.size(); ++n)
                        result.finalState[static_cast<std::size_t>((b * p.channels + d) * p.ndim) + n] = h[n];
            }
        }
    }
    return result;
}

double maxError(std::vector<double> const& a, std::vector<double> const& b)
{
    double error = a.size() == b.size() ? 0.0 : INFINITY;
    for (std::size_t i = 0; i < a.size() && i < b.size(); ++i)
        error = std::max(error, std::fabs(a[i] - b[i]) / (1.0 + std::fabs(b[i])));
    return error;
}

template <typename Acc, int kTile>
void checkCase(int64_t b, int64_t l, int64_t d, int64_t n, bool bidirectional, int64_t truncation, bool withPrev,
    double tolerance)
{
    Problem const p = makeProblem(b, l, d, n, bidirectional, truncation, withPrev,
        static_cast<unsigned>(l * 131 + d * 17 + n * 7 + truncation * 3 + (bidirectional ? 1 : 0)));
    Result const expected = oracle(p);
    Result const actual = emulate<Acc, kTile>(p);
    double const yError = maxError(actual.y, expected.y);
    double const stateError = maxError(actual.finalState, expected.finalState);
    if (!(yError <= tolerance && stateError <= tolerance))
    {
        std::ostringstream message;
        message << "B=" << b << " L=" << l << " D=" << d << " N=" << n << " bidirectional=" << bidirectional
                << " truncation=" << truncation << " prev=" << withPrev << " tile=" << kTile
                << ": y error " << yError << ", final_state error " << stateError << " > " << tolerance;
        tensorkiln::testing::recordFailure(__FILE__, __LINE__, message.str());
    }
}

} // namespace

TK_TEST(megaEmaScanMatchesTheRecurrence)
{
    for (int64_t l : {1, 5, 63, 64, 65, 130, 200})
        for (int64_t n : {1, 4, 5, 16, 17})
            for (bool bidirectional : {false, true})
            {
                checkCase<double, 4>(2, l, 3, n, bidirectional, 0, false, 1e-11);
                checkCase<double, 16>(2, l, 3, n, bidirectional, 0, false, 1e-11);
                if (!bidirectional)
                    checkCase<double, 16>(2, l, 3, n, false, 0, true, 1e-11);
            }
}

TK_TEST(megaEmaScanTruncation)
{
    for (int64_t l : {1, 9, 64, 65, 150})
        for (int64_t truncation : {1, 2, 7, 63, 64, 65, 100, 149, 150, 1000})
            for (bool bidirectional : {false, true})
            {
                checkCase<double, 4>(1, l, 2, 3, bidirectional, truncation, false, 1e-10);
                checkCase<double, 16>(2, l, 2, 18, bidirectional, truncation, false, 1e-10);
            }
}

TK_TEST(megaEmaScanInFloat)
{
    // The GPU accumulates in fp32: the chunked order must not lose more than a few ulps over a few hundred steps.
    for (bool bidirectional : {false, true})
        for (int64_t truncation : {0, 20})
        {
            checkCase<float, 16>(2, 300, 4, 16, bidirectional, truncation, false, 2e-5);
            checkCase<float, 4>(2, 300, 4, 3, bidirectional, truncation, false, 2e-5);
        }
    checkCase<float, 16>(2, 300, 4, 16, false, 0, true, 2e-5);
}

TK_TEST(megaEmaScanEmptySequenceKeepsTheState)
{
    checkCase<double, 4>(2, 0, 3, 4, false, 0, true, 0.0);
    checkCase<double, 4>(2, 0, 3, 4, false, 0, false, 0.0);
}
