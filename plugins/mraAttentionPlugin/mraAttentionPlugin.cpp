/*
 * mraAttentionPlugin.cpp: the IPluginV3 wrapper of MraAttention (contract in mraAttentionPlugin.h). Each entry point
 * runs its body through guarded()/guardedStatus(), so that a PluginError (invalid attributes, shapes, dtypes, a
 * failed launch) is logged and returned as an error value, never thrown across the ABI.
 */
#include "mraAttentionPlugin/mraAttentionPlugin.h"

#include "common/cudaCheck.h"
#include "common/nodeContract.h"
#include "common/status.h"
#include "mraAttentionPlugin/mraAttentionKernel.h"

#include <vector>

namespace tensorkiln::plugin
{
namespace
{

using nvinfer1::DataType;
using nvinfer1::PluginFieldType;

//! The element type of a TensorRT type the plugin accepts; throws PluginError naming the tensor otherwise.
ElementType elementTypeOf(DataType type, char const* tensor)
{
    std::optional<ElementType> const element = toElementType(type);
    TK_CHECK(element.has_value(), MraContract::kOP_TYPE << ": " << tensor << " has an unsupported TensorRT data type "
                                                        << static_cast<int32_t>(type));
    return *element;
}

void checkCounts(int32_t nbInputs, int32_t nbOutputs)
{
    TK_CHECK(nbInputs == MraContract::kNB_INPUTS && nbOutputs == MraContract::kNB_OUTPUTS,
        MraContract::kOP_TYPE << ": expects " << MraContract::kNB_INPUTS << " inputs and " << MraContract::kNB_OUTPUTS
                              << " output, got " << nbInputs << " and " << nbOutputs);
}

//! Shapes and dtypes of a set of tensor descriptions (build-time dims may hold -1).
template <typename Desc, typename DescOf>
MraShape checkTensors(Desc const* in, int32_t nbInputs, Desc const* out, int32_t nbOutputs, DescOf descOf)
{
    checkCounts(nbInputs, nbOutputs);
    std::vector<std::vector<int64_t>> extents;
    std::vector<ElementType> types;
    for (int32_t i = 0; i < nbInputs; ++i)
    {
        nvinfer1::PluginTensorDesc const& desc = descOf(in[i]);
        extents.push_back(toExtents(desc.dims));
        types.push_back(elementTypeOf(desc.type, MraContract::kINPUT_NAMES[static_cast<size_t>(i)]));
    }
    MraShape const shape = checkMraShapes(extents);
    checkMraTypes(types);
    nvinfer1::PluginTensorDesc const& output = descOf(out[MraContract::kOUT_OUTPUT]);
    TK_CHECK(elementTypeOf(output.type, "output") == types[MraContract::kIN_QUERY],
        MraContract::kOP_TYPE << ": output dtype must equal query dtype");
    return shape;
}

} // namespace

// ---- MraAttentionPlugin ----

MraAttentionPlugin::MraAttentionPlugin(MraAttributes const& attributes)
    : mAttributes(attributes)
{
    validateMraAttributes(mAttributes);
    mNumBlocks = mAttributes.numBlocks;
    mScale = static_cast<float>(mAttributes.scale);
    // What the engine runs is what it serializes: the fp32 scale of the ONNX attribute.
    mAttributes.scale = static_cast<double>(mScale);
    mApproxMode = mraApproxModeName(mAttributes.approxMode);
    mPriorFirstNBlocks = mAttributes.priorFirstNBlocks;
    mPriorDiagonalNBlocks = mAttributes.priorDiagonalNBlocks;
}

MraAttentionPlugin::MraAttentionPlugin(MraAttentionPlugin const& other)
    : nvinfer1::IPluginV3(other)
    , nvinfer1::IPluginV3OneCore(other)
    , nvinfer1::IPluginV3OneBuild(other)
    , nvinfer1::IPluginV3OneRuntime(other)
    , mAttributes(other.mAttributes)
    , mNumBlocks(other.mNumBlocks)
    , mScale(other.mScale)
    , mApproxMode(other.mApproxMode)
    , mPriorFirstNBlocks(other.mPriorFirstNBlocks)
    , mPriorDiagonalNBlocks(other.mPriorDiagonalNBlocks)
{
    // mSerialized is left empty: its fields would point into `other`.
}

nvinfer1::IPluginCapability* MraAttentionPlugin::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept
{
    return guarded("MraAttention::getCapabilityInterface", static_cast<nvinfer1::IPluginCapability*>(nullptr),
        [this, type]() -> nvinfer1::IPluginCapability*
        {
            switch (type)
            {
            case nvinfer1::PluginCapabilityType::kCORE:
                return static_cast<nvinfer1::IPluginV3OneCore*>(this);
            case nvinfer1::PluginCapabilityType::kBUILD:
                return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
            case nvinfer1::PluginCapabilityType::kRUNTIME:
                return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
            }
            return nullptr;
        });
}

nvinfer1::IPluginV3* MraAttentionPlugin::clone() noexcept
{
    return guarded("MraAttention::clone", static_cast<nvinfer1::IPluginV3*>(nullptr),
        [this]() -> nvinfer1::IPluginV3* { return new MraAttentionPlugin(*this); });
}

char const* MraAttentionPlugin::getPluginName() const noexcept
{
    return MraContract::kOP_TYPE;
}

char const* MraAttentionPlugin::getPluginVersion() const noexcept
{
    return MraContract::kPLUGIN_VERSION;
}

char const* MraAttentionPlugin::getPluginNamespace() const noexcept
{
    return contract::kPLUGIN_NAMESPACE;
}

int32_t MraAttentionPlugin::getNbOutputs() const noexcept
{
    return MraContract::kNB_OUTPUTS;
}

int32_t MraAttentionPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    return guardedStatus("MraAttention::getOutputDataTypes",
        [&]()
        {
            checkCounts(nbInputs, nbOutputs);
            TK_CHECK(outputTypes != nullptr && inputTypes != nullptr, "MraAttention: null type arrays");
            outputTypes[MraContract::kOUT_OUTPUT] = inputTypes[MraContract::kIN_QUERY];
        });
}

int32_t MraAttentionPlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
    nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
    int32_t nbOutputs, nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept
{
    return guardedStatus("MraAttention::getOutputShapes",
        [&]()
        {
            checkCounts(nbInputs, nbOutputs);
            TK_CHECK(inputs != nullptr && outputs != nullptr, "MraAttention: null shape arrays");
            // Extents known while building the network are checked now; the rest in configurePlugin().
            std::vector<std::vector<int64_t>> extents(static_cast<size_t>(nbInputs));
            for (int32_t i = 0; i < nbInputs; ++i)
            {
                for (int32_t axis = 0; axis < inputs[i].nbDims; ++axis)
                {
                    nvinfer1::IDimensionExpr const* extent = inputs[i].d[axis];
                    extents[static_cast<size_t>(i)].push_back(
                        extent != nullptr && extent->isConstant() ? extent->getConstantValue() : -1);
                }
            }
            checkMraShapes(extents);
            nvinfer1::DimsExprs const& query = inputs[MraContract::kIN_QUERY];
            outputs[MraContract::kOUT_OUTPUT] = query; // (B, H, L, D)
        });
}

bool MraAttentionPlugin::supportsFormatCombination(
    int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    return guarded("MraAttention::supportsFormatCombination", false,
        [&]()
        {
            if (inOut == nullptr || nbInputs != MraContract::kNB_INPUTS || nbOutputs != MraContract::kNB_OUTPUTS
                || pos < 0 || pos >= nbInputs + nbOutputs)
            {
                return false;
            }
            nvinfer1::PluginTensorDesc const& desc = inOut[pos].desc;
            std::optional<ElementType> const type = toElementType(desc.type);
            std::optional<ElementType> const queryType = toElementType(inOut[MraContract::kIN_QUERY].desc.type);
            return desc.format == nvinfer1::TensorFormat::kLINEAR && type.has_value() && queryType.has_value()
                   && mraSupportsType(pos, *type, *queryType);
        });
}

int32_t MraAttentionPlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    return guardedStatus("MraAttention::configurePlugin",
        [&]()
        {
            TK_CHECK(in != nullptr && out != nullptr, "MraAttention: null tensor descriptions");
            checkTensors(in, nbInputs, out, nbOutputs,
                [](nvinfer1::DynamicPluginTensorDesc const& d) -> nvinfer1::PluginTensorDesc const& { return d.desc; });
        });
}

size_t MraAttentionPlugin::getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* /*outputs*/, int32_t nbOutputs) const noexcept
{
    return guarded("MraAttention::getWorkspaceSize", size_t{0},
        [&]()
        {
            checkCounts(nbInputs, nbOutputs);
            TK_CHECK(inputs != nullptr, "MraAttention: null tensor descriptions");
            // The size at the profile's largest query covers every shape of the profile (it is monotone).
            nvinfer1::Dims const& query = inputs[MraContract::kIN_QUERY].max;
            TK_CHECK(query.nbDims == 4, "MraAttention: query must have rank 4, got rank " << query.nbDims);
            return mraWorkspaceBytes(query.d[0], query.d[1], query.d[2], query.d[3], mAttributes.numBlocks);
        });
}

int32_t MraAttentionPlugin::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    return guardedStatus("MraAttention::onShapeChange",
        [&]()
        {
            TK_CHECK(in != nullptr && out != nullptr, "MraAttention: null tensor descriptions");
            checkTensors(in, nbInputs, out, nbOutputs,
                [](nvinfer1::PluginTensorDesc const& d) -> nvinfer1::PluginTensorDesc const& { return d; });
        });
}

int32_t MraAttentionPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* outputDesc, void const* const* inputs, void* const* outputs, void* workspace,
    cudaStream_t stream) noexcept
{
    return guardedStatus("MraAttention::enqueue",
        [&]()
        {
            TK_CHECK(inputDesc != nullptr && outputDesc != nullptr && inputs != nullptr && outputs != nullptr,
                "MraAttention: null enqueue arguments");
            nvinfer1::Dims const& dims = inputDesc[MraContract::kIN_QUERY].dims;
            TK_CHECK(dims.nbDims == 4, "MraAttention: query must have rank 4, got rank " << dims.nbDims);
            MraAttentionKernelParams params;
            params.batch = static_cast<int32_t>(dims.d[0]);
            params.heads = static_cast<int32_t>(dims.d[1]);
            params.length = static_cast<int32_t>(dims.d[2]);
            params.headDim = static_cast<int32_t>(dims.d[3]);
            params.query = inputs[MraContract::kIN_QUERY];
            params.key = inputs[MraContract::kIN_KEY];
            params.value = inputs[MraContract::kIN_VALUE];
            params.mask = inputs[MraContract::kIN_ATTENTION_MASK];
            params.output = outputs[MraContract::kOUT_OUTPUT];
            // Linear formats: contiguous (B, H, L, D) and (B, L).
            MraStrides const strides = mraContiguousStrides(dims.d[1], dims.d[2], dims.d[3]);
            params.queryStrides = strides;
            params.keyStrides = strides;
            params.valueStrides = strides;
            params.outputStrides = strides;
            params.maskBatchStride = dims.d[2];
            params.dataType = elementTypeOf(inputDesc[MraContract::kIN_QUERY].type, "query");
            params.maskType = elementTypeOf(inputDesc[MraContract::kIN_ATTENTION_MASK].type, "attention_mask");
            params.numBlocks = mAttributes.numBlocks;
            params.scale = mAttributes.scale;
            params.approxMode = mAttributes.approxMode;
            params.priorFirstNBlocks = mAttributes.priorFirstNBlocks;
            params.priorDiagonalNBlocks = mAttributes.priorDiagonalNBlocks;
            params.workspace = workspace;
            // TensorRT allocated getWorkspaceSize() at the profile's maximum, which covers this shape.
            params.workspaceBytes
                = mraWorkspaceBytes(dims.d[0], dims.d[1], dims.d[2], dims.d[3], mAttributes.numBlocks);
            TK_CHECK_CUDA(launchMraAttention(params, stream));
        });
}

nvinfer1::IPluginV3* MraAttentionPlugin::attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept
{
    // No per-context resources: scratch lives in TensorRT's workspace.
    return clone();
}

nvinfer1::PluginFieldCollection const* MraAttentionPlugin::getFieldsToSerialize() noexcept
{
    return guarded("MraAttention::getFieldsToSerialize", static_cast<nvinfer1::PluginFieldCollection const*>(nullptr),
        [this]()
        {
            mSerialized.clear();
            mSerialized.add(MraContract::kATTR_NUM_BLOCKS, &mNumBlocks, PluginFieldType::kINT32, 1);
            mSerialized.add(MraContract::kATTR_SCALE, &mScale, PluginFieldType::kFLOAT32, 1);
            mSerialized.add(MraContract::kATTR_APPROX_MODE, mApproxMode.c_str(), PluginFieldType::kCHAR,
                static_cast<int32_t>(mApproxMode.size() + 1));
            mSerialized.add(
                MraContract::kATTR_INITIAL_PRIOR_FIRST_N_BLOCKS, &mPriorFirstNBlocks, PluginFieldType::kINT32, 1);
            mSerialized.add(
                MraContract::kATTR_INITIAL_PRIOR_DIAGONAL_N_BLOCKS, &mPriorDiagonalNBlocks, PluginFieldType::kINT32, 1);
            return mSerialized.collection();
        });
}

// ---- MraAttentionPluginCreator ----

MraAttentionPluginCreator::MraAttentionPluginCreator()
{
    mFieldNames.add(MraContract::kATTR_NUM_BLOCKS, nullptr, PluginFieldType::kINT32, 1);
    mFieldNames.add(MraContract::kATTR_SCALE, nullptr, PluginFieldType::kFLOAT32, 1);
    mFieldNames.add(MraContract::kATTR_APPROX_MODE, nullptr, PluginFieldType::kCHAR, 0);
    mFieldNames.add(MraContract::kATTR_INITIAL_PRIOR_FIRST_N_BLOCKS, nullptr, PluginFieldType::kINT32, 1);
    mFieldNames.add(MraContract::kATTR_INITIAL_PRIOR_DIAGONAL_N_BLOCKS, nullptr, PluginFieldType::kINT32, 1);
}

char const* MraAttentionPluginCreator::getPluginName() const noexcept
{
    return MraContract::kOP_TYPE;
}

char const* MraAttentionPluginCreator::getPluginVersion() const noexcept
{
    return MraContract::kPLUGIN_VERSION;
}

char const* MraAttentionPluginCreator::getPluginNamespace() const noexcept
{
    return contract::kPLUGIN_NAMESPACE;
}

nvinfer1::PluginFieldCollection const* MraAttentionPluginCreator::getFieldNames() noexcept
{
    return guarded("MraAttention::getFieldNames", static_cast<nvinfer1::PluginFieldCollection const*>(nullptr),
        [this]() { return mFieldNames.collection(); });
}

nvinfer1::IPluginV3* MraAttentionPluginCreator::createPlugin(
    char const* /*name*/, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase /*phase*/) noexcept
{
    // The same fields arrive at build time (from the ONNX node's attributes) and at runtime (from
    // getFieldsToSerialize()), so both phases parse them alike.
    return guarded("MraAttention::createPlugin", static_cast<nvinfer1::IPluginV3*>(nullptr),
        [fc]() -> nvinfer1::IPluginV3*
        { return new MraAttentionPlugin(parseMraAttributes(readFields(fc, MraContract::kOP_TYPE))); });
}

} // namespace tensorkiln::plugin
