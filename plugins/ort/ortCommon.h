/*
 * ortCommon.h: what the ONNX Runtime ops of libtensorkiln_ort.so share: node attributes read into the plugins'
 * neutral Field list (so the attribute rules are those of megaEmaParams.cpp / mraAttentionParams.cpp, with the same
 * defaults and errors as the TensorRT plugins), ORT element types, tensors viewed as (type, extents, data), the
 * fp16/bf16/fp64 <-> fp32 conversions of the CPU path, the ParallelFor over ORT's intra-op pool, and the boundary
 * that turns every exception into an OrtStatus.
 *
 * The ORT C++ API is initialised by hand (ORT_API_MANUAL_INIT, set by CMake for every source of the library):
 * RegisterCustomOps() installs the OrtApi that the loading onnxruntime hands over, so the library needs no link
 * against a particular libonnxruntime.
 */
#pragma once

#include "common/elementType.h"
#include "common/fields.h"
#include "cpu/cpuKernels.h"

#include <onnxruntime_cxx_api.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

namespace tensorkiln::ort
{

using plugin::ElementType;

//! The ORT element type of a plugin ElementType, and back (nullopt for types the nodes never take).
ONNXTensorElementDataType toOrtType(ElementType type) noexcept;
std::optional<ElementType> fromOrtType(ONNXTensorElementDataType type) noexcept;

//! A node's attributes as plugin::Field views, each with the type the node gave it (INT, FLOAT or STRING), so the
//! plugins' parsers apply the contract's defaults to absent ones and name the attribute in every error. The
//! storage lives as long as this object.
class NodeAttributes
{
public:
    template <std::size_t N>
    NodeAttributes(OrtKernelInfo const* info, std::array<char const*, N> const& names)
        : NodeAttributes(info, std::vector<char const*>(names.begin(), names.end()))
    {
    }
    NodeAttributes(OrtKernelInfo const* info, std::vector<char const*> const& names);

    plugin::FieldReader reader(std::string owner) const;

private:
    std::deque<int64_t> mInts;
    std::deque<float> mFloats;
    std::deque<std::string> mStrings;
    std::vector<plugin::Field> mFields;
};

//! One input tensor as the kernels see it; data is on the node's device.
struct TensorView
{
    ElementType type{ElementType::kFLOAT32};
    std::vector<int64_t> extents;
    void const* data{nullptr};

    int64_t elementCount() const noexcept;
};

//! Input `index` of the context (nullopt for an absent optional input). Throws PluginError for a dtype outside
//! the contract, naming the input.
std::optional<TensorView> inputView(Ort::KernelContext& context, std::size_t index, char const* owner,
    char const* inputName);

//! fp32 data of a tensor: the tensor's own buffer when it is fp32, else a converted copy held in `storage`.
float const* asFloat32(TensorView const& view, std::vector<float>& storage);

//! Write `count` fp32 values to `destination` in `type` (round to nearest even for fp16/bf16).
void storeFromFloat32(float const* source, std::size_t count, ElementType type, void* destination);

//! The CPU kernels' ParallelFor over ORT's intra-op thread pool (serial where the work is too small to share).
cpu::ParallelFor ortParallelFor(Ort::KernelContext& context);

//! Throws PluginError with the kernel's message when a CPU kernel failed.
void throwIfFailed(cpu::Status const& status, char const* owner);

//! The OrtStatus of the exception being handled: ORT_INVALID_ARGUMENT for PluginError (the node breaks the
//! contract), ORT_RUNTIME_EXCEPTION otherwise. Call only inside a catch block.
OrtStatus* currentExceptionStatus(char const* owner) noexcept;

//! Run body() and return nullptr, or the status of what it threw: the ORT boundary of every entry point.
template <typename F>
OrtStatus* statusOf(char const* owner, F&& body) noexcept
{
    try
    {
        body();
        return nullptr;
    }
    catch (...)
    {
        return currentExceptionStatus(owner);
    }
}

} // namespace tensorkiln::ort
