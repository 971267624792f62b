/*
 * cpuKernelsAvx2.cpp: the AVX2+FMA build of the hot loops. Compile this file, and only this one, with
 * -mavx2 -mfma (x86-64); cpuDispatch.cpp runs it only where the CPU supports both. Without those flags (or off
 * x86) it compiles to nothing and the portable build runs everywhere.
 *
 * Include nothing here that defines non-static inline functions shared with other files (std containers,
 * std::function): the linker keeps one copy of such a function, and this file's copy would be AVX2 code.
 */
#include "cpu/cpuDispatch.h"

#if defined(__AVX2__) && defined(__FMA__)

#define TK_CPU_ISA_NS avx2
#include "cpu/megaEmaRecurrence.h"
#include "cpu/mraAttentionBlocks.h"
#include "cpu/mraAttentionTiles.h"

namespace tensorkiln::cpu::avx2
{

CpuKernelTable const* kernelTable() noexcept
{
    static CpuKernelTable const table{&prepareHead, &blockRows, &emaItems};
    return &table;
}

} // namespace tensorkiln::cpu::avx2

#else

namespace tensorkiln::cpu::avx2
{

CpuKernelTable const* kernelTable() noexcept
{
    return nullptr;
}

} // namespace tensorkiln::cpu::avx2

#endif
