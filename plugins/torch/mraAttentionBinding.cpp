/*
 * mraAttentionBinding.cpp: tensorkiln::mra_attention for CUDA tensors through launchMraAttention
 * (mraAttentionPlugin/mraAttentionKernel.h).
 *
 * Same checks as the op (mraAttentionParams.cpp mirrors reference/ops/mra_attention.py): query/key/value
 * fp32/fp16/bf16 of one dtype and shape (B, H, L, D), attention_mask (B, L) of any floating dtype; the output has
 * query's dtype. Inputs whose head dim is not contiguous are made contiguous; other strides pass through.
 */
#include "common/status.h"
#include "mraAttentionPlugin/mraAttentionKernel.h"
#include "mraAttentionPlugin/mraAttentionParams.h"
#include "torch/bindings.h"

#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <string>

namespace tensorkiln::torch_binding
{
namespace
{

at::Tensor headDimContiguous(at::Tensor const& tensor)
{
    return tensor.stride(3) == 1 ? tensor : tensor.contiguous();
}

plugin::MraStrides stridesOf(at::Tensor const& tensor)
{
    return plugin::MraStrides{tensor.stride(0), tensor.stride(1), tensor.stride(2)};
}

} // namespace

at::Tensor mraAttentionCuda(at::Tensor const& query, at::Tensor const& key, at::Tensor const& value,
    at::Tensor const& attentionMask, int64_t numBlocks, double scale, c10::string_view approxMode,
    int64_t initialPriorFirstNBlocks, int64_t initialPriorDiagonalNBlocks)
{
    plugin::MraAttributes attributes;
    plugin::MraShape shape;
    try
    {
        TK_CHECK(numBlocks >= 1 && numBlocks <= INT32_MAX, "mra_attention: num_blocks must be in [1, 2^31), got "
                << numBlocks);
        TK_CHECK(initialPriorFirstNBlocks >= 0 && initialPriorFirstNBlocks <= INT32_MAX
                && initialPriorDiagonalNBlocks >= 0 && initialPriorDiagonalNBlocks <= INT32_MAX,
            "mra_attention: the initial_prior_* counts must be in [0, 2^31)");
        attributes.numBlocks = static_cast<int32_t>(numBlocks);
        attributes.scale = scale;
        attributes.approxMode = plugin::parseMraApproxMode(std::string_view(approxMode.data(), approxMode.size()));
        attributes.priorFirstNBlocks = static_cast<int32_t>(initialPriorFirstNBlocks);
        attributes.priorDiagonalNBlocks = static_cast<int32_t>(initialPriorDiagonalNBlocks);
        plugin::validateMraAttributes(attributes);
        shape = plugin::checkMraShapes(
            {query.sizes().vec(), key.sizes().vec(), value.sizes().vec(), attentionMask.sizes().vec()});
        plugin::checkMraTypes({elementTypeOf(query, "query"), elementTypeOf(key, "key"), elementTypeOf(value, "value"),
            elementTypeOf(attentionMask, "attention_mask")});
    }
    catch (plugin::PluginError const& error)
    {
        TORCH_CHECK_VALUE(false, error.what());
    }
    TORCH_CHECK(query.is_cuda(), "mra_attention (CUDA): query must be a CUDA tensor");
    for (at::Tensor const* other : {&key, &value, &attentionMask})
    {
        TORCH_CHECK(other->device() == query.device(), "mra_attention (CUDA): every input must be on ", query.device());
    }

    c10::cuda::CUDAGuard const guard(query.device());
    at::Tensor output = at::empty({shape.batch, shape.heads, shape.length, shape.headDim}, query.options());
    if (output.numel() == 0)
    {
        return output;
    }
    at::Tensor const q = headDimContiguous(query);
    at::Tensor const k = headDimContiguous(key);
    at::Tensor const v = headDimContiguous(value);
    at::Tensor const mask = attentionMask.stride(1) == 1 ? attentionMask : attentionMask.contiguous();

    plugin::MraAttentionKernelParams params;
    params.query = q.data_ptr();
    params.key = k.data_ptr();
    params.value = v.data_ptr();
    params.mask = mask.data_ptr();
    params.output = output.data_ptr();
    params.queryStrides = stridesOf(q);
    params.keyStrides = stridesOf(k);
    params.valueStrides = stridesOf(v);
    params.outputStrides = stridesOf(output);
    params.maskBatchStride = mask.stride(0);
    params.dataType = elementTypeOf(q, "query");
    params.maskType = elementTypeOf(mask, "attention_mask");
    params.batch = static_cast<int32_t>(shape.batch);
    params.heads = static_cast<int32_t>(shape.heads);
    params.length = static_cast<int32_t>(shape.length);
    params.headDim = static_cast<int32_t>(shape.headDim);
    params.numBlocks = attributes.numBlocks;
    params.scale = attributes.scale;
    params.approxMode = attributes.approxMode;
    params.priorFirstNBlocks = attributes.priorFirstNBlocks;
    params.priorDiagonalNBlocks = attributes.priorDiagonalNBlocks;
    size_t const workspaceBytes = plugin::mraWorkspaceBytes(shape, attributes);
    at::Tensor workspace;
    if (workspaceBytes > 0)
    {
        workspace = at::empty({static_cast<int64_t>(workspaceBytes)}, query.options().dtype(at::kByte));
        params.workspace = workspace.data_ptr();
        params.workspaceBytes = workspaceBytes;
    }
    cudaError_t const status
        = plugin::launchMraAttention(params, c10::cuda::getCurrentCUDAStream(query.get_device()).stream());
    TORCH_CHECK(status == cudaSuccess, "mra_attention (CUDA): launch failed: ", cudaGetErrorString(status));
    return output;
}

} // namespace tensorkiln::torch_binding

