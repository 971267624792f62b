/*
 * megaEmaPlugin.h: the MegaEma TensorRT plugin (IPluginV3: OneCore + OneBuild + OneRuntime) and its creator
 * (IPluginCreatorV3One): a thin adapter over megaEmaParams.h (rules) and megaEmaKernel.h (the scan).
 *
 * Node contract (op_type "MegaEma", domain "tensorkiln", plugin_version "1", namespace ""; K = 2D if bidirectional
 * else D; generated constants in common/nodeContract.h, the source is runtime/contract.py):
 *
 *   Inputs
 *     0. x                          (B, L, D)     fp32 | fp16 | bf16   input, already multiplied by the padding mask
 *     1. damping_factor             (K, N, 1)     fp32 | fp16 | bf16   delta: p = sigmoid(delta)
 *     2. decay_factor               (K, N, 1)     fp32 | fp16 | bf16   alpha: q = 1 - p * sigmoid(alpha)
 *     3. ema_expansion_matrix       (K, N, 1)     fp32 | fp16 | bf16   beta
 *     4. kernel_projection_matrix   (K, N)        fp32 | fp16 | bf16   gamma (scaled by sqrt(1/N) inside)
 *     5. prev_state [optional]      (B, D, N)     x's dtype            state before x[:, 0]; unidirectional and
 *                                                                     truncation 0 only
 *   Outputs
 *     0. output                     (B, L, D)     x's dtype            the EMA (no residual, no SiLU)
 *     1. final_state                (B, D, N)     x's dtype            exact forward state after x[:, L-1]
 *   Fields (ONNX attributes)
 *     bidirectional  int32 0/1 (default 0)   rows [D, 2D) scan the reversed sequence; both include x_t
 *     truncation     int32 >= 0 (default 0)  0: none; else the kernel is cut to min(truncation, L) taps
 *
 * Parameters may each be fp32, fp16 or bf16 independently of x (the contract also allows fp64, which TensorRT
 * tensors cannot be). Linear format only. Workspace: megaEmaWorkspaceSize() at the profile's maximum dims.
 */
#pragma once

#include "common/trtUtils.h"
#include "megaEmaPlugin/megaEmaParams.h"

#include <NvInferRuntime.h>

namespace tensorkiln::plugin
{

class MegaEmaPlugin : public nvinfer1::IPluginV3,
                      public nvinfer1::IPluginV3OneCore,
                      public nvinfer1::IPluginV3OneBuild,
                      public nvinfer1::IPluginV3OneRuntime
{
public:
    explicit MegaEmaPlugin(MegaEmaAttributes const& attributes);
    MegaEmaPlugin(MegaEmaPlugin const& other);
    MegaEmaPlugin& operator=(MegaEmaPlugin const&) = delete;
    ~MegaEmaPlugin() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    std::size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    MegaEmaAttributes mAttributes;
    // The serialized fields point here (TensorRT INT fields are int32).
    int32_t mBidirectional;
    int32_t mTruncation;
    //! 5, or 6 with prev_state; recorded by configurePlugin()/onShapeChange() because enqueue() gets no count.
    int32_t mNbInputs{-1};
    PluginFieldList mSerialized;
};

class MegaEmaPluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    MegaEmaPluginCreator();
    ~MegaEmaPluginCreator() override = default;

    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;

private:
    PluginFieldList mFieldNames;
};

} // namespace tensorkiln::plugin
