/*
 * cpuKernelsCApi.cpp: a C ABI over the CPU kernels for ctypes, used only by tests/test_cpu_kernels.py and
 * scripts/bench_cpu_kernels.py through cpu_kernels_capi.py, which builds it with g++ together with the .cpp files
 * of plugins/cpu. Not part of any library.
 *
 * Every function returns 0 on success; on failure 1, with the kernel's message copied into `error`.
 */
#include "cpu/cpuDispatch.h"
#include "cpu/cpuKernels.h"
#include "cpu/threadPool.h"

#include <cstdint>
#include <cstring>
#include <new>

namespace
{

using namespace tensorkiln::cpu;

int report(Status const& status, char* error, int64_t errorSize) noexcept
{
    if (status.ok)
    {
        return 0;
    }
    if (error != nullptr && errorSize > 0)
    {
        std::strncpy(error, status.message.c_str(), static_cast<size_t>(errorSize - 1));
        error[errorSize - 1] = '\0';
    }
    return 1;
}

ParallelFor parallelOf(void* pool)
{
    return pool == nullptr ? serialParallelFor() : static_cast<ThreadPool*>(pool)->parallelFor();
}

} // namespace

extern "C"
{

//! 0: the portable build, 1: AVX2+FMA. Returns 0 when that build cannot run here.
int tkCpuSelectIsa(int isa)
{
    return overrideCpuIsa(isa == 1 ? CpuIsa::kAVX2_FMA : CpuIsa::kPORTABLE) ? 1 : 0;
}

int tkCpuSupportsAvx2Fma()
{
    return cpuSupportsAvx2Fma() ? 1 : 0;
}

char const* tkCpuKernelIsa()
{
    return cpuKernelIsa();
}

void* tkThreadPoolCreate(int threads)
{
    try
    {
        return new ThreadPool(threads);
    }
    catch (...)
    {
        return nullptr;
    }
}

void tkThreadPoolDestroy(void* pool)
{
    delete static_cast<ThreadPool*>(pool);
}

int tkMraAttention(float const* query, float const* key, float const* value, float const* mask, float* output,
    int64_t batch, int64_t heads, int64_t length, int64_t headDim, int64_t numBlocks, float scale, int fullMode,
    int64_t firstN, int64_t diagonalN, void* pool, char* error, int64_t errorSize)
{
    try
    {
        MraAttentionArgs args;
        args.query = query;
        args.key = key;
        args.value = value;
        args.attentionMask = mask;
        args.output = output;
        args.batch = batch;
        args.heads = heads;
        args.length = length;
        args.headDim = headDim;
        args.numBlocks = numBlocks;
        args.scale = scale;
        args.fullMode = fullMode != 0;
        args.initialPriorFirstNBlocks = firstN;
        args.initialPriorDiagonalNBlocks = diagonalN;
        return report(mraAttention(args, parallelOf(pool)), error, errorSize);
    }
    catch (...)
    {
        return report(Status::error("tkMraAttention: exception"), error, errorSize);
    }
}

int tkMegaEma(float const* x, float const* damping, float const* decay, float const* expansion,
    float const* projection, float const* prevState, float* output, float* finalState, int64_t batch, int64_t length,
    int64_t channels, int64_t ndim, int bidirectional, int64_t truncation, void* pool, char* error, int64_t errorSize)
{
    try
    {
        MegaEmaArgs args;
        args.x = x;
        args.dampingFactor = damping;
        args.decayFactor = decay;
        args.emaExpansionMatrix = expansion;
        args.kernelProjectionMatrix = projection;
        args.prevState = prevState;
        args.output = output;
        args.finalState = finalState;
        args.batch = batch;
        args.length = length;
        args.channels = channels;
        args.ndim = ndim;
        args.bidirectional = bidirectional != 0;
        args.truncation = truncation;
        return report(megaEma(args, parallelOf(pool)), error, errorSize);
    }
    catch (...)
    {
        return report(Status::error("tkMegaEma: exception"), error, errorSize);
    }
}

} // extern "C"
