/*
 * mraAttentionKernel.h: the CUDA kernels of MRA-2 attention (tensorkiln::mra_attention) behind one plain launcher.
 *
 * The launcher runs four kernels on the stream: masked block means, low-resolution logits, top-k block selection
 * per (batch, head), and block-sparse attention fused with the low-resolution part and the output write. The math is
 * that of reference/ops/mra_attention.py, which documents the node contract; mraAttentionKernel.cu says how.
 */
#pragma once

#include "common/elementType.h"
#include "mraAttentionPlugin/mraAttentionParams.h"

#include <cstddef>
#include <cstdint>
#include <cuda_runtime_api.h>

namespace tensorkiln::plugin
{

//! Element strides of a (B, H, L, D) tensor; the head dim is contiguous (stride 1).
struct MraStrides
{
    int64_t batch{0};
    int64_t head{0};
    int64_t token{0};
};

//! Strides of a contiguous (B, H, L, D) tensor.
inline MraStrides mraContiguousStrides(int64_t heads, int64_t length, int64_t headDim) noexcept
{
    return MraStrides{heads * length * headDim, length * headDim, headDim};
}

struct MraAttentionKernelParams
{
    void const* query{nullptr}; //!< (B, H, L, D) of dataType
    void const* key{nullptr};   //!< (B, H, L, D) of dataType
    void const* value{nullptr}; //!< (B, H, L, D) of dataType
    void const* mask{nullptr};  //!< (B, L) of maskType, token stride 1: 1 = token, 0 = padding
    void* output{nullptr};      //!< (B, H, L, D) of dataType; written everywhere, zero at padded positions
    MraStrides queryStrides;
    MraStrides keyStrides;
    MraStrides valueStrides;
    MraStrides outputStrides;
    int64_t maskBatchStride{0};
    ElementType dataType{ElementType::kFLOAT32}; //!< fp32, fp16 or bf16
    ElementType maskType{ElementType::kFLOAT32}; //!< fp32, fp16, bf16 or fp64 (read as fp32, as the op's .float())
    int32_t batch{0};
    int32_t heads{0};
    int32_t length{0};
    int32_t headDim{0};
    int32_t numBlocks{0}; //!< the budget (>= 1) before clamping to the blocks that exist
    double scale{0.0};    //!< multiplies q.k; logits are divided by float(1 / scale) as the reference does
    MraApproxMode approxMode{MraApproxMode::kFULL};
    int32_t priorFirstNBlocks{0};
    int32_t priorDiagonalNBlocks{0};
    void* workspace{nullptr}; //!< mraWorkspaceBytes(batch, heads, length, headDim, numBlocks) bytes, 16-aligned
    size_t workspaceBytes{0};
};

//! Enqueue MRA-2 attention on `stream`. Returns cudaErrorInvalidValue for arguments outside the contract (checked
//! again here, as the launcher is also called by the torch binding), else the status of the launches. Never throws.
cudaError_t launchMraAttention(MraAttentionKernelParams const& params, cudaStream_t stream) noexcept;

} // namespace tensorkiln::plugin
