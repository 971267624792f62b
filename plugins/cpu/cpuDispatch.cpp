/*
 * cpuDispatch.cpp: CPU feature detection and the choice of build (see cpuDispatch.h), and cpuKernelIsa().
 */
#include "cpu/cpuDispatch.h"

#include "cpu/cpuKernels.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace tensorkiln::cpu
{
namespace
{

constexpr int32_t kUNDECIDED = -1;
std::atomic<int32_t> gActiveIsa{kUNDECIDED};

CpuIsa detectIsa() noexcept
{
    char const* requested = std::getenv("TENSORKILN_CPU_ISA");
    if (requested != nullptr && std::strcmp(requested, "portable") == 0)
    {
        return CpuIsa::kPORTABLE;
    }
    return cpuSupportsAvx2Fma() ? CpuIsa::kAVX2_FMA : CpuIsa::kPORTABLE;
}

} // namespace

bool cpuSupportsAvx2Fma() noexcept
{
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
    // GCC and Clang check the OS's XSAVE support of the AVX state too, not only CPUID.
    return avx2::kernelTable() != nullptr && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

CpuIsa activeCpuIsa() noexcept
{
    int32_t isa = gActiveIsa.load(std::memory_order_acquire);
    if (isa == kUNDECIDED)
    {
        int32_t expected = kUNDECIDED;
        gActiveIsa.compare_exchange_strong(expected, static_cast<int32_t>(detectIsa()), std::memory_order_acq_rel);
        isa = gActiveIsa.load(std::memory_order_acquire);
    }
    return static_cast<CpuIsa>(isa);
}

CpuKernelTable const& activeCpuKernels() noexcept
{
    return activeCpuIsa() == CpuIsa::kAVX2_FMA ? *avx2::kernelTable() : *portable::kernelTable();
}

bool overrideCpuIsa(CpuIsa isa) noexcept
{
    if (isa == CpuIsa::kAVX2_FMA && !cpuSupportsAvx2Fma())
    {
        return false;
    }
    gActiveIsa.store(static_cast<int32_t>(isa), std::memory_order_release);
    return true;
}

char const* cpuKernelIsa() noexcept
{
    return activeCpuIsa() == CpuIsa::kAVX2_FMA ? "avx2+fma" : "portable";
}

} // namespace tensorkiln::cpu
