/*
 * cudaCheck.h: CUDA runtime status -> PluginError, for host code that calls the CUDA runtime (launcher callers,
 * enqueue). Launchers themselves return cudaError_t and never throw, so the torch binding can map the same status
 * to a TORCH_CHECK.
 */
#pragma once

#include "common/status.h"

#include <cuda_runtime_api.h>

#include <sstream>

namespace tensorkiln::plugin
{

[[noreturn]] inline void throwCudaError(cudaError_t status, char const* expression)
{
    std::ostringstream message;
    message << expression << " failed: " << cudaGetErrorName(status) << " (" << cudaGetErrorString(status) << ")";
    throw PluginError(message.str());
}

} // namespace tensorkiln::plugin

#define TK_CHECK_CUDA(call)                                                                                            \
    do                                                                                                                 \
    {                                                                                                                  \
        cudaError_t const tkStatus_ = (call);                                                                          \
        if (tkStatus_ != cudaSuccess)                                                                                  \
        {                                                                                                              \
            ::tensorkiln::plugin::throwCudaError(tkStatus_, #call);                                                    \
        }                                                                                                              \
    } while (false)
