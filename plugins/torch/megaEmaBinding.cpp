/*
 * megaEmaBinding.cpp: tensorkiln::mega_ema for CUDA tensors through launchMegaEma (megaEmaPlugin/megaEmaKernel.h).
 *
 * Same checks as the op (megaEmaParams.cpp mirrors reference/ops/mega_ema.py's _check) and the same dtypes: x in
 * fp32/fp16/bf16/fp64, computed in fp32 (fp64 for fp64), returned in x's dtype; the parameters and prev_state may
 * be any floating dtype, as the op casts them. x may be strided; the rest is made contiguous (it is small).
 */
#include "common/cudaCheck.h"
#include "megaEmaPlugin/megaEmaKernel.h"
#include "megaEmaPlugin/megaEmaParams.h"
#include "torch/bindings.h"

#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

namespace tensorkiln::torch_binding
{

using plugin::ElementType;

ElementType elementTypeOf(at::Tensor const& tensor, char const* what)
{
    switch (tensor.scalar_type())
    {
    case at::kFloat: return ElementType::kFLOAT32;
    case at::kHalf: return ElementType::kFLOAT16;
    case at::kBFloat16: return ElementType::kBFLOAT16;
    case at::kDouble: return ElementType::kFLOAT64;
    default: break;
    }
    TORCH_CHECK_VALUE(false, what, " must be a floating tensor (float32/float16/bfloat16/float64), got ",
        tensor.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> megaEmaCuda(at::Tensor const& x, at::Tensor const& dampingFactor,
    at::Tensor const& decayFactor, at::Tensor const& emaExpansionMatrix, at::Tensor const& kernelProjectionMatrix,
    std::optional<at::Tensor> const& prevState, bool bidirectional, int64_t truncation)
{
    at::Tensor const* parameters[4] = {&dampingFactor, &decayFactor, &emaExpansionMatrix, &kernelProjectionMatrix};
    char const* names[4] = {"damping_factor", "decay_factor", "ema_expansion_matrix", "kernel_projection_matrix"};
    bool const hasPrev = prevState.has_value() && prevState->defined();

    plugin::MegaEmaAttributes attributes;
    attributes.bidirectional = bidirectional;
    attributes.truncation = truncation;
    std::vector<std::vector<int64_t>> extents{x.sizes().vec()};
    for (at::Tensor const* parameter : parameters)
    {
        extents.push_back(parameter->sizes().vec());
    }
    if (hasPrev)
    {
        extents.push_back(prevState->sizes().vec());
    }
    plugin::MegaEmaShape shape;
    plugin::MegaEmaScanLayout layout{};
    try
    {
        plugin::validateMegaEmaAttributes(attributes);
        shape = plugin::checkMegaEmaShapes(extents, attributes);
        layout = plugin::megaEmaScanLayout(shape, attributes, elementTypeOf(x, "x"));
    }
    catch (plugin::PluginError const& error)
    {
        TORCH_CHECK_VALUE(false, error.what());
    }

    TORCH_CHECK(x.is_cuda(), "mega_ema (CUDA): x must be a CUDA tensor");
    for (int i = 0; i < 4; ++i)
    {
        TORCH_CHECK(parameters[i]->device() == x.device(), "mega_ema (CUDA): ", names[i], " is on ",
            parameters[i]->device(), " but x is on ", x.device());
    }
    TORCH_CHECK(!hasPrev || prevState->device() == x.device(), "mega_ema (CUDA): prev_state is not on x's device");

    c10::cuda::CUDAGuard const guard(x.device());
    at::Tensor output = at::empty({shape.batch, shape.length, shape.channels}, x.options());
    at::Tensor finalState = at::empty({shape.batch, shape.channels, shape.ndim}, x.options());
    if (output.numel() == 0 && finalState.numel() == 0)
    {
        return {output, finalState};
    }

    at::Tensor contiguous[4];
    plugin::MegaEmaLaunchParams params;
    params.x = x.data_ptr();
    params.xType = elementTypeOf(x, "x");
    for (int i = 0; i < 3; ++i)
    {
        params.xStrides[i] = x.stride(i);
    }
    for (int i = 0; i < 4; ++i)
    {
        contiguous[i] = parameters[i]->contiguous();
        params.params[i] = contiguous[i].data_ptr();
        params.paramTypes[i] = elementTypeOf(contiguous[i], names[i]);
    }
    at::Tensor prev;
    if (hasPrev)
    {
        prev = prevState->contiguous();
        params.prevState = prev.data_ptr();
        params.prevStateType = elementTypeOf(prev, "prev_state");
    }
    params.output = output.data_ptr();
    params.finalState = finalState.data_ptr();
    params.layout = layout;
    at::Tensor workspace;
    if (layout.workspaceBytes > 0)
    {
        workspace = at::empty({static_cast<int64_t>(layout.workspaceBytes)}, x.options().dtype(at::kByte));
        params.workspace = workspace.data_ptr();
        params.workspaceBytes = layout.workspaceBytes;
    }
    cudaError_t const status = plugin::launchMegaEma(params, c10::cuda::getCurrentCUDAStream(x.get_device()).stream());
    TORCH_CHECK(status == cudaSuccess, "mega_ema (CUDA): launch failed: ", cudaGetErrorString(status));
    return {output, finalState};
}

} // namespace tensorkiln::torch_binding
