/*
 * mraAttentionPlugin.h: the TensorRT plugin of the MraAttention node (op tensorkiln::mra_attention,
 * reference/ops/mra_attention.py): MRA-2 multi-resolution block-sparse attention, block size 32.
 *
 *   #      name            shape          dtype
 *   in 0   query           (B, H, L, D)   fp32 / fp16 / bf16, linear; L >= 1 (padded inside to 32), 1 <= D <= 128
 *   in 1   key             (B, H, L, D)   query's dtype, linear
 *   in 2   value           (B, H, L, D)   query's dtype, linear
 *   in 3   attention_mask  (B, L)         fp32 / fp16 / bf16, linear: 1 = token, 0 = padding
 *   out 0  output          (B, H, L, D)   query's dtype, linear; zero at padded positions
 *
 *   field                            type     default  meaning
 *   num_blocks                       INT32    required block budget (>= 1), clamped to the ceil(L/32)^2 blocks
 *   scale                            FLOAT32  required multiplies q.k (> 0)
 *   approx_mode                      CHAR     "full"   "full": selected blocks + low-resolution rest; "sparse"
 *   initial_prior_first_n_blocks     INT32    0        block rows/columns top-k always prefers
 *   initial_prior_diagonal_n_blocks  INT32    0        diagonal band top-k always prefers
 *
 * Plugin name "MraAttention", version "1", namespace "" (common/nodeContract.h). Computed in fp32 whatever the
 * dtype. The workspace is mraWorkspaceBytes() at the profile's maximum shape (mraAttentionParams.h). The classes
 * are thin: rules live in mraAttentionParams.h, the math in mraAttentionKernel.cu. Every entry point catches
 * everything and returns an error value.
 */
#pragma once

#include "common/trtUtils.h"
#include "mraAttentionPlugin/mraAttentionParams.h"

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>

namespace tensorkiln::plugin
{

class MraAttentionPlugin : public nvinfer1::IPluginV3,
                           public nvinfer1::IPluginV3OneCore,
                           public nvinfer1::IPluginV3OneBuild,
                           public nvinfer1::IPluginV3OneRuntime
{
public:
    //! Attributes must be valid (parseMraAttributes); scale is kept at fp32, the field's type.
    explicit MraAttentionPlugin(MraAttributes const& attributes);
    MraAttentionPlugin(MraAttentionPlugin const& other);
    MraAttentionPlugin& operator=(MraAttentionPlugin const&) = delete;
    ~MraAttentionPlugin() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs, nvinfer1::DataType const* inputTypes,
        int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    MraAttributes mAttributes;
    // The serialized values; getFieldsToSerialize() points its fields at them.
    int32_t mNumBlocks;
    float mScale;
    std::string mApproxMode;
    int32_t mPriorFirstNBlocks;
    int32_t mPriorDiagonalNBlocks;
    PluginFieldList mSerialized;
};

class MraAttentionPluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    MraAttentionPluginCreator();

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
