/*
 * registration.cpp: register the CUDA implementations for the tensorkiln ops' CUDA dispatch key. The ops' schemas
 * are defined in Python (torch.library.custom_op in reference/ops/); an implementation may be registered before or
 * after its schema, so loading this library in either order works.
 */
#include "torch/bindings.h"

#include <torch/library.h>

TORCH_LIBRARY_IMPL(tensorkiln, CUDA, m)
{
    m.impl("mega_ema", &tensorkiln::torch_binding::megaEmaCuda);
    m.impl("mra_attention", &tensorkiln::torch_binding::mraAttentionCuda);
}
