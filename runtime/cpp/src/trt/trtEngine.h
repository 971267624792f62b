/*
 * trtEngine.h: the TensorRT side of the backend (libtensorkiln_runtime_tensorrt.so), kept thin: everything TensorRT
 * does not need to decide is in enginePlan.h, tested everywhere. trtEngine.cpp needs NvInfer.h alone (running a
 * serialized engine); trtBuild.cpp adds NvOnnxParser.h (building one, the engine cache and the entry point).
 *
 * Verified here by compiling with -Werror against TensorRT 10.x and 11.x headers; it runs only where TensorRT and a
 * GPU are (see the README's C++ section).
 */
#pragma once

#include <NvInfer.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backend.h"
#include "manifest.h"

namespace tensorkiln::trt
{

//! TensorRT's messages at warning and above go to stderr; the last error is kept for the exception's message.
class Logger : public nvinfer1::ILogger
{
public:
    void log(Severity severity, char const* message) noexcept override;
    std::string lastError() const;

private:
    mutable std::mutex mMutex;
    std::string mLastError;
};

//! "10.16.0" from the loaded libnvinfer (getInferLibVersion), not the headers'.
std::string loadedVersion();
//! The current CUDA device's name and compute capability ("9.0"); a BackendUnavailableError without one.
std::pair<std::string, std::string> currentDevice();

//! A Backend over a serialized engine; `customNodesRunOn` is what customNodeImplementations() reports for every
//! custom node of the manifest.
std::unique_ptr<Backend> engineBackend(std::vector<char> const& plan, Manifest const& manifest,
    std::string const& customNodesRunOn, std::shared_ptr<Logger> logger);

} // namespace tensorkiln::trt
