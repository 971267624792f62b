/*
 * backend.h: what a Session runs its prepared feeds on. ONNX Runtime (ortBackend.cpp) is built in; TensorRT
 * (trt/) lives in its own shared library, loaded when asked for, so libtensorkiln_runtime never needs libnvinfer.
 */
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "tensorkiln/session.h"

namespace tensorkiln
{

class Backend
{
public:
    virtual ~Backend() = default;
    //! The graph's input and output names, in the graph's order.
    virtual std::vector<std::string> inputNames() const = 0;
    virtual std::vector<std::string> outputNames() const = 0;
    //! Run the graph on every feed; thread-safe.
    virtual NamedTensors run(std::vector<std::pair<std::string, Tensor>> const& feeds) const = 0;
    virtual std::vector<std::string> providers() const = 0;
    virtual std::map<std::string, std::string> customNodeImplementations() const = 0;
};

} // namespace tensorkiln
