/*
 * megaEmaKernel.h: the launcher of MegaEma's chunked parallel scan (no FFT), for the TensorRT plugin and the torch
 * binding alike. It takes plain pointers, strides and sizes plus a stream; it never throws and never allocates.
 *
 * Launch design (see megaEmaScan.h for the math): chunks of kMEGA_EMA_CHUNK = 64 steps; a thread block covers 32
 * channels (one warp, so loads of x and stores of the output coalesce) times the directions (blockDim.y = 1 or 2),
 * and blocks cover (batch, channel tile, chunk). Each thread keeps a tile of 4 or 16 EMA dimensions in registers and
 * loops over the tiles. Phase A (chunk-local states) and B (a sequential pass over chunks per state) run only when
 * there is more than one chunk or a truncation; phase C buffers y for its chunk in shared memory
 * (directions x 64 x 32 accumulators), adds the two directions in a fixed order and writes the output once, in the
 * output dtype. Everything accumulates in fp32 (fp64 for fp64 inputs).
 *
 * Workspace: megaEmaScanLayout() (megaEmaParams.h): chunks x B x K x N accumulators for the chunk states, plus
 * chunks x B x D x N with truncation (the untruncated forward states that final_state needs); 0 for L <= 64
 * without truncation.
 */
#pragma once

#include "common/elementType.h"
#include "megaEmaPlugin/megaEmaParams.h"

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace tensorkiln::plugin
{

struct MegaEmaLaunchParams
{
    //! x (B, L, D) with strides in elements, of type xType (fp32/fp16/bf16; fp64 from the torch binding).
    void const* x{nullptr};
    ElementType xType{ElementType::kFLOAT32};
    int64_t xStrides[3]{0, 0, 0};
    //! damping_factor, decay_factor, ema_expansion_matrix (K, N, 1) and kernel_projection_matrix (K, N), contiguous,
    //! each of its own floating type.
    void const* params[4]{nullptr, nullptr, nullptr, nullptr};
    ElementType paramTypes[4]{ElementType::kFLOAT32, ElementType::kFLOAT32, ElementType::kFLOAT32,
        ElementType::kFLOAT32};
    //! prev_state (B, D, N), contiguous, or nullptr.
    void const* prevState{nullptr};
    ElementType prevStateType{ElementType::kFLOAT32};
    //! output (B, L, D) and final_state (B, D, N), contiguous, of type xType.
    void* output{nullptr};
    void* finalState{nullptr};
    //! The problem (shape, attributes) and its workspace, as megaEmaScanLayout() computed them.
    MegaEmaScanLayout layout{};
    void* workspace{nullptr};
    std::size_t workspaceBytes{0};
};

//! Enqueue the scan on `stream`. Returns cudaErrorInvalidValue for inconsistent parameters (null pointers,
//! a workspace smaller than layout.workspaceBytes), else the launch status.
cudaError_t launchMegaEma(MegaEmaLaunchParams const& params, cudaStream_t stream) noexcept;

} // namespace tensorkiln::plugin
