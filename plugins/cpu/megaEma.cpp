/*
 * megaEma.cpp: tensorkiln::cpu::megaEma, the driver of the MegaEma CPU kernel: argument checks with the op's rules
 * (reference/ops/mega_ema.py, _check), the coefficients, and the parallel scan over (batch, 4 channels) items
 * (megaEmaRecurrence.h).
 *
 * The coefficients are rounded to fp32 exactly where the op rounds them, because with q near 1 the output's
 * sensitivity to q grows like L / (1 - q) and one ulp of q would show: p = sigmoid(delta) and s = sigmoid(alpha)
 * as PyTorch's fp32 operations (see sigmoid below), q = 1 - fp32(p s) in fp32,
 * w = fp32(p beta), g = fp32(gamma fp32(sqrt(1 / N))) (the op multiplies by the Python float sqrt(1/N), which
 * PyTorch casts to fp32), the kernel weight fp32(w g); products of two floats are formed in fp64 (exact) and
 * rounded, so no compiler contraction into an FMA changes them.
 */
#include "cpu/cpuDispatch.h"
#include "cpu/cpuKernels.h"
#include "cpu/megaEmaPlan.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <new>
#include <sstream>
#include <vector>

namespace tensorkiln::cpu
{
namespace
{

//! PyTorch's fp32 sequence 1 / (1 + exp(-x)), with exp correctly rounded (via fp64): its vectorised exp agrees with
//! that in about 97% of inputs, where an fp64 sigmoid rounded once agrees in about 67%.
float sigmoid(float x) noexcept
{
    float const e = static_cast<float>(std::exp(-static_cast<double>(x)));
    float const denominator = 1.0F + e;
    return 1.0F / denominator;
}

float product(float a, float b) noexcept
{
    return static_cast<float>(static_cast<double>(a) * static_cast<double>(b));
}

Status checkArgs(MegaEmaArgs const& a)
{
    std::ostringstream message;
    if (a.batch < 0 || a.length < 1 || a.channels < 1 || a.ndim < 1)
    {
        message << "mega_ema: x must be (batch, length, channels) with length, channels and ndim >= 1, got B="
                << a.batch << " L=" << a.length << " D=" << a.channels << " N=" << a.ndim;
    }
    else if (a.truncation < 0)
    {
        message << "mega_ema: truncation must be 0 (none) or positive, got " << a.truncation;
    }
    else if (a.prevState != nullptr && a.bidirectional)
    {
        message << "mega_ema: prev_state is only defined for a unidirectional EMA (bidirectional=False)";
    }
    else if (a.prevState != nullptr && a.truncation != 0)
    {
        message << "mega_ema: prev_state needs truncation=0: a truncated kernel has no recurrent state";
    }
    else if (a.batch > 0
        && (a.x == nullptr || a.dampingFactor == nullptr || a.decayFactor == nullptr
            || a.emaExpansionMatrix == nullptr || a.kernelProjectionMatrix == nullptr || a.output == nullptr
            || a.finalState == nullptr))
    {
        message << "mega_ema: a null input or output buffer";
    }
    else
    {
        return Status::success();
    }
    return Status::error(message.str());
}

//! The coefficient arrays of megaEmaPlan.h, (direction, N, Dc) each, owned for one call.
struct EmaCoefficientArrays
{
    std::vector<double> values;

    void fill(MegaEmaArgs const& a, MegaEmaPlan& plan)
    {
        int64_t const directions = a.bidirectional ? 2 : 1;
        int64_t const size = directions * a.ndim * plan.paddedChannels;
        values.assign(static_cast<size_t>(5 * size), 0.0);
        double* decay = values.data();
        double* outputWeight = decay + size;
        double* inputWeight = outputWeight + size;
        double* projection = inputWeight + size;
        double* lagDecay = projection + size;
        float const projectionScale = static_cast<float>(std::sqrt(1.0 / static_cast<double>(a.ndim)));
        for (int64_t direction = 0; direction < directions; ++direction)
        {
            for (int64_t d = 0; d < a.channels; ++d)
            {
                int64_t const row = direction * a.channels + d;
                for (int64_t n = 0; n < a.ndim; ++n)
                {
                    int64_t const param = row * a.ndim + n;
                    float const p = sigmoid(a.dampingFactor[param]);
                    float const damped = product(p, sigmoid(a.decayFactor[param]));
                    float const q = 1.0F - damped;
                    float const w = product(p, a.emaExpansionMatrix[param]);
                    float const g = product(a.kernelProjectionMatrix[param], projectionScale);
                    int64_t const at = (direction * a.ndim + n) * plan.paddedChannels + d;
                    decay[at] = q;
                    outputWeight[at] = product(w, g);
                    inputWeight[at] = w;
                    projection[at] = g;
                    lagDecay[at]
                        = plan.truncated ? std::pow(static_cast<double>(q), static_cast<double>(plan.taps)) : 0.0;
                }
            }
        }
        plan.decay = decay;
        plan.outputWeight = outputWeight;
        plan.inputWeight = inputWeight;
        plan.projection = projection;
        plan.lagDecay = lagDecay;
    }
};

Status runEma(MegaEmaArgs const& args, ParallelFor const& parallel)
{
    Status const status = checkArgs(args);
    if (!status.ok || args.batch == 0)
    {
        return status;
    }
    MegaEmaPlan plan;
    plan.x = args.x;
    plan.prevState = args.prevState;
    plan.output = args.output;
    plan.finalState = args.finalState;
    plan.batch = args.batch;
    plan.length = args.length;
    plan.channels = args.channels;
    plan.ndim = args.ndim;
    plan.paddedChannels = (args.channels + kEMA_LANES - 1) / kEMA_LANES * kEMA_LANES;
    plan.bidirectional = args.bidirectional;
    plan.taps = args.truncation == 0 ? args.length : std::min(args.truncation, args.length);
    plan.truncated = plan.taps < args.length;
    EmaCoefficientArrays coefficients;
    coefficients.fill(args, plan);

    CpuKernelTable const& kernels = activeCpuKernels();
    int64_t const groups = plan.paddedChannels / kEMA_LANES;
    int64_t const itemsPerRow = (groups + kEMA_ITEM_GROUPS - 1) / kEMA_ITEM_GROUPS;
    int64_t const scratchDoubles = megaEmaScratchDoubles(plan);
    double const itemCost = static_cast<double>(plan.length * plan.ndim * kEMA_LANES * kEMA_ITEM_GROUPS)
        * (plan.truncated ? 6.0 : 4.0)
        * (plan.bidirectional ? 2.0 : 1.0);
    std::atomic<bool> failed{false};
    parallel(args.batch * itemsPerRow, itemCost,
        [&](int64_t begin, int64_t end)
        {
            try
            {
                std::vector<double> scratch(static_cast<size_t>(scratchDoubles));
                kernels.megaEmaItems(plan, begin, end, scratch.data());
            }
            catch (...)
            {
                failed = true;
            }
        });
    if (failed)
    {
        return Status::error("mega_ema: out of memory for the per-thread scratch");
    }
    return Status::success();
}

} // namespace

Status megaEma(MegaEmaArgs const& args, ParallelFor const& parallel) noexcept
{
    try
    {
        return runEma(args, parallel);
    }
    catch (std::bad_alloc const&)
    {
        return Status::error("mega_ema: out of memory for the coefficients");
    }
    catch (std::exception const& error)
    {
        return Status::error(std::string("mega_ema: ") + error.what());
    }
    catch (...)
    {
        return Status::error("mega_ema: unknown error");
    }
}

} // namespace tensorkiln::cpu
