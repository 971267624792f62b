/*
 * ortOps.h: the ONNX Runtime custom ops of libtensorkiln_ort.so, tensorkiln::MraAttention and tensorkiln::MegaEma,
 * one OrtCustomOp per (element type of the node's main tensor, execution provider).
 *
 * Types: ORT picks a kernel by the node's input types, and infers the outputs' type from the kernel it picked. So
 * each op is registered once per main type T (fp32, fp16, bf16): query/key/value/output (MraAttention) and
 * x/prev_state/output/final_state (MegaEma) are declared as T, while the inputs that may take any float type of
 * their own (attention_mask; the four EMA parameters) are declared free and converted inside the kernel. The CPU
 * kernels compute in fp32 (fp16/bf16/fp64 inputs are converted, outputs converted back, as the contract says:
 * "computed in fp32, returned in the input's dtype"); the CUDA kernels read every type natively.
 *
 * Names, input positions, attributes and defaults come from common/nodeContract.h (generated from
 * runtime/contract.py); the attribute and shape rules from the plugins' host logic (mraAttentionParams.h,
 * megaEmaParams.h), so a node the TensorRT plugin refuses, this library refuses with the same message.
 */
#pragma once

#include "common/elementType.h"
#include "megaEmaPlugin/megaEmaParams.h"
#include "mraAttentionPlugin/mraAttentionParams.h"
#include "ort/ortCommon.h"

namespace tensorkiln::ort
{

enum class Device
{
    kCPU,
    kCUDA,
};

//! ORT's name of the execution provider a Device's kernels run on.
char const* executionProviderName(Device device) noexcept;

struct MraAttentionKernel
{
    plugin::MraAttributes attributes;
    Device device;

    OrtStatus* ComputeV2(OrtKernelContext* context) noexcept;
};

struct MraAttentionOp : Ort::CustomOpBase<MraAttentionOp, MraAttentionKernel, true>
{
    MraAttentionOp(ElementType type, Device device) noexcept;

    OrtStatus* CreateKernelV2(OrtApi const& api, OrtKernelInfo const* info, void** kernel) const noexcept;
    char const* GetName() const noexcept;
    char const* GetExecutionProviderType() const noexcept;
    std::size_t GetInputTypeCount() const noexcept;
    ONNXTensorElementDataType GetInputType(std::size_t index) const noexcept;
    std::size_t GetOutputTypeCount() const noexcept;
    ONNXTensorElementDataType GetOutputType(std::size_t index) const noexcept;

    ElementType mType;
    Device mDevice;
};

struct MegaEmaKernel
{
    plugin::MegaEmaAttributes attributes;
    Device device;

    OrtStatus* ComputeV2(OrtKernelContext* context) noexcept;
};

struct MegaEmaOp : Ort::CustomOpBase<MegaEmaOp, MegaEmaKernel, true>
{
    MegaEmaOp(ElementType type, Device device) noexcept;

    OrtStatus* CreateKernelV2(OrtApi const& api, OrtKernelInfo const* info, void** kernel) const noexcept;
    char const* GetName() const noexcept;
    char const* GetExecutionProviderType() const noexcept;
    std::size_t GetInputTypeCount() const noexcept;
    ONNXTensorElementDataType GetInputType(std::size_t index) const noexcept;
    OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(std::size_t index) const noexcept;
    std::size_t GetOutputTypeCount() const noexcept;
    ONNXTensorElementDataType GetOutputType(std::size_t index) const noexcept;

    ElementType mType;
    Device mDevice;
};

//! The CUDA paths (ortCudaKernels.cpp), compiled only into a library built with CUDA (TK_ORT_WITH_CUDA).
void computeMraAttentionCuda(Ort::KernelContext& context, plugin::MraAttributes const& attributes);
void computeMegaEmaCuda(Ort::KernelContext& context, plugin::MegaEmaAttributes const& attributes);

} // namespace tensorkiln::ort
