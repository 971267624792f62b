/*
 * trtLoader.h: the TensorRT backend lives in libtensorkiln_runtime_tensorrt.so, built only where TensorRT is (it
 * links libnvinfer, libnvonnxparser and the CUDA runtime); libtensorkiln_runtime loads it with dlopen when a session
 * asks for backend "tensorrt", so the runtime itself never needs TensorRT. The two talk through one C entry point
 * (trtEntry.h): no exception crosses it.
 */
#pragma once

#include <memory>
#include <string>

#include "backend.h"
#include "manifest.h"

namespace tensorkiln
{

//! The library's path: $TENSORKILN_RUNTIME_TENSORRT_LIBRARY, else beside libtensorkiln_runtime.so.
std::string tensorRtBackendLibrary();
//! A BackendUnavailableError, with what to build, when the library is missing or cannot be loaded.
void requireTensorRtBackend();
//! A TensorRT engine for the export (built, or loaded from the engine cache) as a Backend.
std::unique_ptr<Backend> openTensorRtBackend(std::string const& modelPath, Manifest const& manifest,
    LoadOptions const& options);

} // namespace tensorkiln
