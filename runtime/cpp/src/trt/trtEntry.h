/*
 * trtEntry.h: the one entry point libtensorkiln_runtime_tensorrt.so exports. Both libraries come from one build of
 * runtime/cpp, so the request carries C++ objects; errors come back as a kind and a message, never as an exception.
 */
#pragma once

#include <cstddef>

#include "backend.h"
#include "manifest.h"

namespace tensorkiln
{

struct TrtRequest
{
    std::string const* modelPath;
    Manifest const* manifest;
    LoadOptions const* options;
    std::string const* cacheDir; //!< the tensorkiln cache folder (engines/ under it by default)
};

} // namespace tensorkiln

extern "C"
{
    //! 0 and *backend set on success; otherwise the ErrorKind as an int and `message` filled.
    typedef int (*TensorkilnTrtCreate)(tensorkiln::TrtRequest const* request, tensorkiln::Backend** backend,
        char* message, std::size_t messageSize);
}

#define TK_TRT_ENTRY_POINT "tensorkilnCreateTensorRtBackend"
