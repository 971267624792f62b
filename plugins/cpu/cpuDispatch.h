/*
 * cpuDispatch.h: the run-time choice between the AVX2+FMA and the portable build of the hot loops. Both builds come
 * from the same source (mraAttentionTiles.h, megaEmaRecurrence.h over cpuSimd.h), compiled twice:
 * cpuKernelsAvx2.cpp with -mavx2 -mfma and cpuKernelsPortable.cpp with the target's baseline flags.
 *
 * The AVX2 build runs when the CPU and the OS support AVX2 and FMA (__builtin_cpu_supports), unless the environment
 * variable TENSORKILN_CPU_ISA=portable asks for the portable one (read once, at the first kernel call).
 */
#pragma once

#include "cpu/megaEmaPlan.h"
#include "cpu/mraAttentionPlan.h"

#include <cstdint>

namespace tensorkiln::cpu
{

enum class CpuIsa : int32_t
{
    kPORTABLE = 0,
    kAVX2_FMA = 1,
};

//! The hot loops of one build. Each function is noexcept and touches only the plan's buffers and its scratch.
struct CpuKernelTable
{
    //! Workspace of one (batch, head): masked key tiles, values, block means, low-resolution logits and maxima.
    void (*mraPrepareHead)(MraPlan const& plan, int64_t bh) noexcept;
    //! Block rows [begin, end) of the flattened (BH, nb): sparse tiles, low-resolution remainder, output rows.
    void (*mraBlockRows)(MraPlan const& plan, int64_t begin, int64_t end, float* scratch) noexcept;
    //! Scan items [begin, end) of the flattened (B, ceil(D / 4)).
    void (*megaEmaItems)(MegaEmaPlan const& plan, int64_t begin, int64_t end, double* scratch) noexcept;
};

bool cpuSupportsAvx2Fma() noexcept;
//! The build that runs: TENSORKILN_CPU_ISA or an override, else the best the CPU supports.
CpuIsa activeCpuIsa() noexcept;
CpuKernelTable const& activeCpuKernels() noexcept;
//! Tests and benchmarks: run `isa` from now on (kAVX2_FMA only where supported; returns false otherwise).
bool overrideCpuIsa(CpuIsa isa) noexcept;

namespace portable
{
CpuKernelTable const* kernelTable() noexcept;
} // namespace portable
namespace avx2
{
//! nullptr where cpuKernelsAvx2.cpp was not compiled for AVX2 and FMA (a non-x86 target, or flags missing).
CpuKernelTable const* kernelTable() noexcept;
} // namespace avx2

} // namespace tensorkiln::cpu
