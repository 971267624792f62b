/*
 * bindings.h: the CUDA implementations of the tensorkiln ops (reference/ops/), built on the same launchers as the
 * TensorRT plugins. registration.cpp registers them with TORCH_LIBRARY_IMPL(tensorkiln, CUDA, m): a kernel for the
 * CUDA dispatch key wins over the CompositeExplicitAutograd default that torch.library.custom_op registers for the
 * pure-PyTorch implementation, so CUDA tensors run these and every other device keeps the pure implementation.
 */
#pragma once

#include "common/elementType.h"

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>
#include <string_view>
#include <tuple>

namespace tensorkiln::torch_binding
{

//! The kernels' element type of a floating tensor; ValueError naming `what` otherwise.
plugin::ElementType elementTypeOf(at::Tensor const& tensor, char const* what);

//! tensorkiln::mega_ema on CUDA (schema in reference/ops/mega_ema.py).
std::tuple<at::Tensor, at::Tensor> megaEmaCuda(at::Tensor const& x, at::Tensor const& dampingFactor,
    at::Tensor const& decayFactor, at::Tensor const& emaExpansionMatrix, at::Tensor const& kernelProjectionMatrix,
    std::optional<at::Tensor> const& prevState, bool bidirectional, int64_t truncation);

//! tensorkiln::mra_attention on CUDA (schema in reference/ops/mra_attention.py).
at::Tensor mraAttentionCuda(at::Tensor const& query, at::Tensor const& key, at::Tensor const& value,
    at::Tensor const& attentionMask, int64_t numBlocks, double scale, c10::string_view approxMode,
    int64_t initialPriorFirstNBlocks, int64_t initialPriorDiagonalNBlocks);

} // namespace tensorkiln::torch_binding
