/*
 * megaEmaKernel.cu: the three kernels of MegaEma's chunked parallel scan and their launcher (design in
 * megaEmaKernel.h, math in megaEmaScan.h). Templates: T = x's element type, Acc = the accumulator (fp32, or fp64
 * for fp64 x), kTile = EMA dimensions per register tile (4 for N <= 4, else 16).
 */
#include "megaEmaPlugin/megaEmaKernel.h"
#include "megaEmaPlugin/megaEmaScan.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace tensorkiln::plugin
{
namespace
{

template <typename Acc>
TK_HOST_DEVICE Acc toAcc(float v)
{
    return static_cast<Acc>(v);
}
template <typename Acc>
TK_HOST_DEVICE Acc toAcc(double v)
{
    return static_cast<Acc>(v);
}
template <typename Acc>
TK_HOST_DEVICE Acc toAcc(__half v)
{
    return static_cast<Acc>(__half2float(v));
}
template <typename Acc>
TK_HOST_DEVICE Acc toAcc(__nv_bfloat16 v)
{
    return static_cast<Acc>(__bfloat162float(v));
}

template <typename T>
struct FromAcc
{
    template <typename Acc>
    TK_HOST_DEVICE static T convert(Acc v)
    {
        return static_cast<T>(v);
    }
};
template <>
struct FromAcc<__half>
{
    template <typename Acc>
    TK_HOST_DEVICE static __half convert(Acc v)
    {
        return __float2half_rn(static_cast<float>(v));
    }
};
template <>
struct FromAcc<__nv_bfloat16>
{
    template <typename Acc>
    TK_HOST_DEVICE static __nv_bfloat16 convert(Acc v)
    {
        return __float2bfloat16_rn(static_cast<float>(v));
    }
};

//! Element `index` of a tensor whose type is only known at run time (parameters, prev_state).
template <typename Acc>
TK_HOST_DEVICE Acc loadAs(void const* data, ElementType type, int64_t index)
{
    switch (type)
    {
    case ElementType::kFLOAT16: return toAcc<Acc>(static_cast<__half const*>(data)[index]);
    case ElementType::kBFLOAT16: return toAcc<Acc>(static_cast<__nv_bfloat16 const*>(data)[index]);
    case ElementType::kFLOAT64: return toAcc<Acc>(static_cast<double const*>(data)[index]);
    case ElementType::kFLOAT32: break;
    }
    return toAcc<Acc>(static_cast<float const*>(data)[index]);
}

//! The Access of megaEmaScan.h over device memory.
template <typename T, typename Acc>
struct DeviceAccess
{
    T const* xData;
    int64_t xStrideB;
    int64_t xStrideT;
    int64_t xStrideD;
    void const* params[4];
    ElementType paramTypes[4];
    void const* prevData;
    ElementType prevType;
    T* finalData;
    Acc* carryData;
    Acc* exactData;
    int64_t batch;
    int64_t rows;
    int64_t channels;
    int64_t ndim;

    TK_HOST_DEVICE Acc x(int64_t b, int64_t t, int64_t d) const
    {
        return toAcc<Acc>(xData[b * xStrideB + t * xStrideT + d * xStrideD]);
    }
    TK_HOST_DEVICE Acc param(int32_t which, int64_t row, int64_t n) const
    {
        return loadAs<Acc>(params[which], paramTypes[which], row * ndim + n);
    }
    TK_HOST_DEVICE bool hasPrev() const
    {
        return prevData != nullptr;
    }
    TK_HOST_DEVICE Acc prev(int64_t b, int64_t d, int64_t n) const
    {
        return loadAs<Acc>(prevData, prevType, (b * channels + d) * ndim + n);
    }
    TK_HOST_DEVICE Acc& carry(int64_t chunk, int64_t b, int64_t row, int64_t n) const
    {
        return carryData[((chunk * batch + b) * rows + row) * ndim + n];
    }
    TK_HOST_DEVICE Acc& exact(int64_t chunk, int64_t b, int64_t d, int64_t n) const
    {
        return exactData[((chunk * batch + b) * channels + d) * ndim + n];
    }
    TK_HOST_DEVICE void storeFinal(int64_t b, int64_t d, int64_t n, Acc value) const
    {
        finalData[(b * channels + d) * ndim + n] = FromAcc<T>::convert(value);
    }
};

constexpr int32_t kMAX_THREADS = kMEGA_EMA_LANES * 2;

//! The block's (batch, channel tile, chunk) from blockIdx.x: channel tiles vary fastest.
struct BlockCoordinates
{
    int64_t b;
    int64_t d;
    int64_t chunk;
};

__device__ __forceinline__ BlockCoordinates blockCoordinates(MegaEmaGeometry const& g)
{
    int64_t const channelTiles = (g.channels + kMEGA_EMA_LANES - 1) / kMEGA_EMA_LANES;
    int64_t block = blockIdx.x;
    int64_t const channelTile = block % channelTiles;
    block /= channelTiles;
    return BlockCoordinates{block / g.chunks, channelTile * kMEGA_EMA_LANES + threadIdx.x, block % g.chunks};
}

//! Phase A: grid (B * channel tiles * chunks, N tiles), block (32, directions).
template <typename T, typename Acc, int kTile>
__global__ void __launch_bounds__(kMAX_THREADS) localStatesKernel(DeviceAccess<T, Acc> io, MegaEmaGeometry g)
{
    BlockCoordinates const at = blockCoordinates(g);
    if (at.d < g.channels)
    {
        mega_ema::chunkLocalStates<Acc, kTile>(
            io, g, at.b, at.d, static_cast<int32_t>(threadIdx.y), static_cast<int64_t>(blockIdx.y), at.chunk);
    }
}

//! Phase B: one thread per (b, row, n), grid-stride.
template <typename T, typename Acc>
__global__ void __launch_bounds__(256) combineKernel(DeviceAccess<T, Acc> io, MegaEmaGeometry g)
{
    int64_t const total = g.batch * g.rows * g.ndim;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    {
        int64_t const n = i % g.ndim;
        int64_t const row = (i / g.ndim) % g.rows;
        int64_t const b = i / (g.ndim * g.rows);
        mega_ema::combineChunkStates<Acc>(io, g, b, row, n);
    }
}

//! Phase C: grid (B * channel tiles * chunks), block (32, directions), shared [directions][64][32] accumulators.
template <typename T, typename Acc, int kTile>
__global__ void __launch_bounds__(kMAX_THREADS) outputKernel(DeviceAccess<T, Acc> io, MegaEmaGeometry g, T* output)
{
    extern __shared__ __align__(16) unsigned char sharedBytes[];
    Acc* const buffer = reinterpret_cast<Acc*>(sharedBytes);
    BlockCoordinates const at = blockCoordinates(g);
    int64_t const begin = mega_ema::chunkBegin(at.chunk);
    int64_t const steps = mega_ema::chunkSteps(g, at.chunk);
    bool const active = at.d < g.channels;
    if (active)
    {
        // Each thread owns its column of the buffer: no atomics, and a fixed summation order.
        Acc* const column = buffer + threadIdx.y * (kMEGA_EMA_CHUNK * kMEGA_EMA_LANES) + threadIdx.x;
        mega_ema::chunkOutputs<Acc, kTile>(io, g, at.b, at.d, static_cast<int32_t>(threadIdx.y), at.chunk,
            [column, begin](int64_t t, Acc y, bool first) {
                Acc& slot = column[(t - begin) * kMEGA_EMA_LANES];
                slot = first ? y : slot + y;
            });
    }
    __syncthreads();
    if (active)
    {
        for (int64_t i = threadIdx.y; i < steps; i += blockDim.y)
        {
            Acc y = buffer[i * kMEGA_EMA_LANES + threadIdx.x];
            if (g.directions == 2)
            {
                y += buffer[(kMEGA_EMA_CHUNK + i) * kMEGA_EMA_LANES + threadIdx.x];
            }
            output[(at.b * g.length + begin + i) * g.channels + at.d] = FromAcc<T>::convert(y);
        }
    }
}

template <typename T, typename Acc, int kTile>
cudaError_t launchTyped(MegaEmaLaunchParams const& params, cudaStream_t stream)
{
    MegaEmaGeometry const& g = params.layout.geometry;
    DeviceAccess<T, Acc> io{};
    io.xData = static_cast<T const*>(params.x);
    io.xStrideB = params.xStrides[0];
    io.xStrideT = params.xStrides[1];
    io.xStrideD = params.xStrides[2];
    for (int i = 0; i < 4; ++i)
    {
        io.params[i] = params.params[i];
        io.paramTypes[i] = params.paramTypes[i];
    }
    io.prevData = params.prevState;
    io.prevType = params.prevStateType;
    io.finalData = static_cast<T*>(params.finalState);
    auto* const workspace = static_cast<unsigned char*>(params.workspace);
    io.carryData = g.useCarries ? reinterpret_cast<Acc*>(workspace + params.layout.carryOffset) : nullptr;
    io.exactData = g.truncation > 0 ? reinterpret_cast<Acc*>(workspace + params.layout.exactOffset) : nullptr;
    io.batch = g.batch;
    io.rows = g.rows;
    io.channels = g.channels;
    io.ndim = g.ndim;

    int64_t const channelTiles = (g.channels + kMEGA_EMA_LANES - 1) / kMEGA_EMA_LANES;
    dim3 const block(kMEGA_EMA_LANES, static_cast<unsigned>(g.directions));
    auto const chunkBlocks = static_cast<unsigned>(channelTiles * g.chunks * g.batch);
    int64_t const tiles = (g.ndim + kTile - 1) / kTile;

    if (g.useCarries)
    {
        localStatesKernel<T, Acc, kTile><<<dim3(chunkBlocks, static_cast<unsigned>(tiles)), block, 0, stream>>>(io, g);
    }
    if (g.useCarries || g.length == 0)
    {
        int64_t const total = g.batch * g.rows * g.ndim;
        constexpr int64_t kTHREADS = 256;
        int64_t const blocks = (total + kTHREADS - 1) / kTHREADS;
        combineKernel<T, Acc><<<static_cast<unsigned>(blocks < 65535 ? blocks : 65535), kTHREADS, 0, stream>>>(io, g);
    }
    if (g.length > 0)
    {
        std::size_t const shared
            = static_cast<std::size_t>(g.directions) * kMEGA_EMA_CHUNK * kMEGA_EMA_LANES * sizeof(Acc);
        outputKernel<T, Acc, kTile><<<chunkBlocks, block, shared, stream>>>(io, g, static_cast<T*>(params.output));
    }
    return cudaGetLastError();
}

template <typename T, typename Acc>
cudaError_t launchTiled(MegaEmaLaunchParams const& params, cudaStream_t stream)
{
    return params.layout.geometry.ndim <= 4 ? launchTyped<T, Acc, 4>(params, stream)
                                            : launchTyped<T, Acc, 16>(params, stream);
}

} // namespace

cudaError_t launchMegaEma(MegaEmaLaunchParams const& params, cudaStream_t stream) noexcept
{
    MegaEmaScanLayout const& layout = params.layout;
    MegaEmaGeometry const& g = layout.geometry;
    if (g.batch == 0 || g.channels == 0)
    {
        return cudaSuccess;
    }
    bool const valid = g.batch > 0 && g.length >= 0 && g.channels > 0 && g.ndim > 0
        && (g.rows == g.directions * g.channels) && params.x != nullptr && params.output != nullptr
        && params.finalState != nullptr && params.params[0] != nullptr && params.params[1] != nullptr
        && params.params[2] != nullptr && params.params[3] != nullptr && (params.prevState != nullptr) == g.hasPrevState
        && (layout.workspaceBytes == 0
            || (params.workspace != nullptr && params.workspaceBytes >= layout.workspaceBytes))
        && (layout.accumulatorBytes == (params.xType == ElementType::kFLOAT64 ? 8U : 4U))
        && (g.ndim + 3) / 4 <= 65535;
    if (!valid)
    {
        return cudaErrorInvalidValue;
    }
    switch (params.xType)
    {
    case ElementType::kFLOAT32: return launchTiled<float, float>(params, stream);
    case ElementType::kFLOAT16: return launchTiled<__half, float>(params, stream);
    case ElementType::kBFLOAT16: return launchTiled<__nv_bfloat16, float>(params, stream);
    case ElementType::kFLOAT64: return launchTiled<double, double>(params, stream);
    }
    return cudaErrorInvalidValue;
}

} // namespace tensorkiln::plugin
