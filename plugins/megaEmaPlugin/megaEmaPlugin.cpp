/*
 * megaEmaPlugin.cpp: the IPluginV3 boilerplate of MegaEma. Every entry point runs through guarded() /
 * guardedStatus() (common/status.h): an invalid attribute, shape or dtype is logged and returned as an error
 * status, never thrown across the ABI. The rules themselves live in megaEmaParams.cpp.
 */
#include "megaEmaPlugin/megaEmaPlugin.h"

#include "common/cudaCheck.h"
#include "common/status.h"
#include "megaEmaPlugin/megaEmaKernel.h"

#include <vector>

namespace tensorkiln::plugin
{
namespace
{

using nvinfer1::DataType;
using C = MegaEmaContract;

constexpr char const* kWHERE = MegaEmaContract::kOP_TYPE;

ElementType elementTypeOf(DataType type)
{
    std::optional<ElementType> const element = toElementType(type);
    TK_CHECK(element.has_value(), kWHERE << ": unsupported TensorRT data type " << static_cast<int32_t>(type));
    return *element;
}

void checkCounts(int32_t nbInputs, int32_t nbOutputs)
{
    TK_CHECK(nbInputs == C::kNB_REQUIRED_INPUTS || nbInputs == C::kNB_INPUTS,
        kWHERE << ": expects " << C::kNB_REQUIRED_INPUTS << " or " << C::kNB_INPUTS << " inputs, got " << nbInputs);
    TK_CHECK(nbOutputs == C::kNB_OUTPUTS, kWHERE << ": expects " << C::kNB_OUTPUTS << " outputs, got " << nbOutputs);
}

//! Extents of known dims; DimsExprs that are not build-time constants become -1.
std::vector<std::vector<int64_t>> extentsOf(nvinfer1::DimsExprs const* inputs, int32_t nbInputs)
{
    std::vector<std::vector<int64_t>> extents(static_cast<std::size_t>(nbInputs));
    for (int32_t i = 0; i < nbInputs; ++i)
    {
        for (int32_t axis = 0; axis < inputs[i].nbDims; ++axis)
        {
            nvinfer1::IDimensionExpr const* expr = inputs[i].d[axis];
            extents[static_cast<std::size_t>(i)].push_back(expr->isConstant() ? expr->getConstantValue() : -1);
        }
    }
    return extents;
}

template <typename Desc, typename GetDims>
std::vector<std::vector<int64_t>> extentsOf(Desc const* descs, int32_t nbInputs, GetDims&& dimsOf)
{
    std::vector<std::vector<int64_t>> extents;
    extents.reserve(static_cast<std::size_t>(nbInputs));
    for (int32_t i = 0; i < nbInputs; ++i)
    {
        extents.push_back(toExtents(dimsOf(descs[i])));
    }
    return extents;
}

template <typename Desc, typename GetType>
void checkTypes(Desc const* descs, int32_t nbInputs, GetType&& typeOf)
{
    std::vector<ElementType> types;
    for (int32_t i = 0; i < nbInputs; ++i)
    {
        types.push_back(elementTypeOf(typeOf(descs[i])));
    }
    checkMegaEmaTypes(types, false);
}

} // namespace

MegaEmaPlugin::MegaEmaPlugin(MegaEmaAttributes const& attributes)
    : mAttributes(attributes)
    , mBidirectional(attributes.bidirectional ? 1 : 0)
    , mTruncation(static_cast<int32_t>(attributes.truncation))
{
    validateMegaEmaAttributes(mAttributes);
}

MegaEmaPlugin::MegaEmaPlugin(MegaEmaPlugin const& other)
    : nvinfer1::IPluginV3(other)
    , nvinfer1::IPluginV3OneCore(other)
    , nvinfer1::IPluginV3OneBuild(other)
    , nvinfer1::IPluginV3OneRuntime(other)
    , mAttributes(other.mAttributes)
    , mBidirectional(other.mBidirectional)
    , mTruncation(other.mTruncation)
    , mNbInputs(other.mNbInputs)
{
    // mSerialized is rebuilt on demand: its fields must point at this object's members, not at other's.
}

nvinfer1::IPluginCapability* MegaEmaPlugin::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

nvinfer1::IPluginV3* MegaEmaPlugin::clone() noexcept
{
    return guarded("MegaEma::clone", static_cast<nvinfer1::IPluginV3*>(nullptr),
        [this]() -> nvinfer1::IPluginV3* { return new MegaEmaPlugin(*this); });
}

char const* MegaEmaPlugin::getPluginName() const noexcept
{
    return C::kOP_TYPE;
}

char const* MegaEmaPlugin::getPluginVersion() const noexcept
{
    return C::kPLUGIN_VERSION;
}

char const* MegaEmaPlugin::getPluginNamespace() const noexcept
{
    return contract::kPLUGIN_NAMESPACE;
}

int32_t MegaEmaPlugin::getNbOutputs() const noexcept
{
    return C::kNB_OUTPUTS;
}

int32_t MegaEmaPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    return guardedStatus("MegaEma::getOutputDataTypes", [&]() {
        checkCounts(nbInputs, nbOutputs);
        ElementType const xType = elementTypeOf(inputTypes[C::kIN_X]);
        TK_CHECK(megaEmaSupportsType(C::kIN_X, nbInputs, xType, xType),
            kWHERE << ": x may not be " << elementTypeName(xType));
        outputTypes[C::kOUT_OUTPUT] = inputTypes[C::kIN_X];
        outputTypes[C::kOUT_FINAL_STATE] = inputTypes[C::kIN_X];
    });
}

int32_t MegaEmaPlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
    nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
    int32_t nbOutputs, nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept
{
    return guardedStatus("MegaEma::getOutputShapes", [&]() {
        checkCounts(nbInputs, nbOutputs);
        // Fails early, at network construction, on every extent that is already a constant.
        checkMegaEmaShapes(extentsOf(inputs, nbInputs), mAttributes);
        nvinfer1::DimsExprs const& x = inputs[C::kIN_X];
        outputs[C::kOUT_OUTPUT] = x; // (B, L, D)
        nvinfer1::DimsExprs& state = outputs[C::kOUT_FINAL_STATE];
        state.nbDims = 3; // (B, D, N)
        state.d[0] = x.d[0];
        state.d[1] = x.d[2];
        state.d[2] = inputs[C::kIN_KERNEL_PROJECTION_MATRIX].d[1];
    });
}

bool MegaEmaPlugin::supportsFormatCombination(
    int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    return guarded("MegaEma::supportsFormatCombination", false, [&]() {
        checkCounts(nbInputs, nbOutputs);
        nvinfer1::PluginTensorDesc const& desc = inOut[pos].desc;
        std::optional<ElementType> const type = toElementType(desc.type);
        std::optional<ElementType> const xType = toElementType(inOut[C::kIN_X].desc.type);
        return desc.format == nvinfer1::TensorFormat::kLINEAR && type.has_value() && xType.has_value()
            && megaEmaSupportsType(pos, nbInputs, *type, *xType);
    });
}

int32_t MegaEmaPlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    return guardedStatus("MegaEma::configurePlugin", [&]() {
        checkCounts(nbInputs, nbOutputs);
        auto const dimsOf = [](nvinfer1::DynamicPluginTensorDesc const& d) { return d.desc.dims; };
        checkMegaEmaShapes(extentsOf(in, nbInputs, dimsOf), mAttributes);
        checkTypes(in, nbInputs, [](nvinfer1::DynamicPluginTensorDesc const& d) { return d.desc.type; });
        mNbInputs = nbInputs;
    });
}

std::size_t MegaEmaPlugin::getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* /*outputs*/, int32_t nbOutputs) const noexcept
{
    // The size at the profile's maximum dims covers every smaller shape: the formula is monotone (ctest checks).
    return guarded("MegaEma::getWorkspaceSize", std::size_t{0}, [&]() {
        checkCounts(nbInputs, nbOutputs);
        auto const maxDimsOf = [](nvinfer1::DynamicPluginTensorDesc const& d) { return d.max; };
        MegaEmaShape const shape = checkMegaEmaShapes(extentsOf(inputs, nbInputs, maxDimsOf), mAttributes);
        return megaEmaWorkspaceSize(shape, mAttributes, elementTypeOf(inputs[C::kIN_X].desc.type));
    });
}

int32_t MegaEmaPlugin::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    return guardedStatus("MegaEma::onShapeChange", [&]() {
        checkCounts(nbInputs, nbOutputs);
        auto const dimsOf = [](nvinfer1::PluginTensorDesc const& d) { return d.dims; };
        checkMegaEmaShapes(extentsOf(in, nbInputs, dimsOf), mAttributes);
        checkTypes(in, nbInputs, [](nvinfer1::PluginTensorDesc const& d) { return d.type; });
        mNbInputs = nbInputs;
    });
}

int32_t MegaEmaPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* /*outputDesc*/, void const* const* inputs, void* const* outputs, void* workspace,
    cudaStream_t stream) noexcept
{
    return guardedStatus("MegaEma::enqueue", [&]() {
        // enqueue() gets no input count: onShapeChange(), which TensorRT calls when it prepares execution for a
        // shape, recorded whether prev_state is connected.
        TK_CHECK(mNbInputs == C::kNB_REQUIRED_INPUTS || mNbInputs == C::kNB_INPUTS,
            kWHERE << ": enqueue before onShapeChange/configurePlugin");
        auto const dimsOf = [](nvinfer1::PluginTensorDesc const& d) { return d.dims; };
        MegaEmaShape const shape = checkMegaEmaShapes(extentsOf(inputDesc, mNbInputs, dimsOf), mAttributes);
        ElementType const xType = elementTypeOf(inputDesc[C::kIN_X].type);

        MegaEmaLaunchParams params;
        params.x = inputs[C::kIN_X];
        params.xType = xType;
        params.xStrides[0] = shape.length * shape.channels; // linear (B, L, D)
        params.xStrides[1] = shape.channels;
        params.xStrides[2] = 1;
        int32_t const paramInputs[4] = {C::kIN_DAMPING_FACTOR, C::kIN_DECAY_FACTOR, C::kIN_EMA_EXPANSION_MATRIX,
            C::kIN_KERNEL_PROJECTION_MATRIX};
        for (int32_t i = 0; i < 4; ++i)
        {
            params.params[i] = inputs[paramInputs[i]];
            params.paramTypes[i] = elementTypeOf(inputDesc[paramInputs[i]].type);
        }
        if (shape.hasPrevState)
        {
            params.prevState = inputs[C::kIN_PREV_STATE];
            params.prevStateType = elementTypeOf(inputDesc[C::kIN_PREV_STATE].type);
        }
        params.output = outputs[C::kOUT_OUTPUT];
        params.finalState = outputs[C::kOUT_FINAL_STATE];
        params.layout = megaEmaScanLayout(shape, mAttributes, xType);
        params.workspace = workspace;
        // getWorkspaceSize() gave at least this much: it is the same monotone formula at the profile's maximum.
        params.workspaceBytes = params.layout.workspaceBytes;
        TK_CHECK_CUDA(launchMegaEma(params, stream));
    });
}

nvinfer1::IPluginV3* MegaEmaPlugin::attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept
{
    return clone();
}

nvinfer1::PluginFieldCollection const* MegaEmaPlugin::getFieldsToSerialize() noexcept
{
    return guarded("MegaEma::getFieldsToSerialize", static_cast<nvinfer1::PluginFieldCollection const*>(nullptr),
        [this]() {
            mSerialized.clear();
            mSerialized.add(C::kATTR_BIDIRECTIONAL, &mBidirectional, nvinfer1::PluginFieldType::kINT32, 1);
            mSerialized.add(C::kATTR_TRUNCATION, &mTruncation, nvinfer1::PluginFieldType::kINT32, 1);
            return mSerialized.collection();
        });
}

MegaEmaPluginCreator::MegaEmaPluginCreator()
{
    mFieldNames.add(C::kATTR_BIDIRECTIONAL, nullptr, nvinfer1::PluginFieldType::kINT32, 1);
    mFieldNames.add(C::kATTR_TRUNCATION, nullptr, nvinfer1::PluginFieldType::kINT32, 1);
}

char const* MegaEmaPluginCreator::getPluginName() const noexcept
{
    return C::kOP_TYPE;
}

char const* MegaEmaPluginCreator::getPluginVersion() const noexcept
{
    return C::kPLUGIN_VERSION;
}

char const* MegaEmaPluginCreator::getPluginNamespace() const noexcept
{
    return contract::kPLUGIN_NAMESPACE;
}

nvinfer1::PluginFieldCollection const* MegaEmaPluginCreator::getFieldNames() noexcept
{
    return mFieldNames.collection();
}

nvinfer1::IPluginV3* MegaEmaPluginCreator::createPlugin(
    char const* /*name*/, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase /*phase*/) noexcept
{
    // The build phase gets the node's attributes, the runtime phase getFieldsToSerialize()'s fields: same names.
    return guarded("MegaEma::createPlugin", static_cast<nvinfer1::IPluginV3*>(nullptr),
        [fc]() -> nvinfer1::IPluginV3* { return new MegaEmaPlugin(parseMegaEmaAttributes(readFields(fc, kWHERE))); });
}

} // namespace tensorkiln::plugin
