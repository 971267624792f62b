/*
 * ortMegaEma.cpp: tensorkiln::MegaEma for ONNX Runtime. The CPU kernel is cpu::megaEma (plugins/cpu) over ORT's
 * intra-op pool; the CUDA kernel is the TensorRT plugin's scan launcher on ORT's stream (ortCudaKernels.cpp).
 */
#include "ort/ortOps.h"

#include "common/status.h"

#include <vector>

namespace tensorkiln::ort
{
namespace
{

using C = plugin::contract::MegaEma;

//! The node's inputs: five required, prev_state optional (absent or empty-named).
std::vector<TensorView> megaEmaInputs(Ort::KernelContext& context)
{
    std::vector<TensorView> inputs;
    for (int32_t i = 0; i < C::kNB_INPUTS; ++i)
    {
        auto const index = static_cast<std::size_t>(i);
        std::optional<TensorView> view = inputView(context, index, C::kOP_TYPE, C::kINPUT_NAMES[index]);
        if (!view.has_value())
        {
            TK_CHECK(i >= C::kNB_REQUIRED_INPUTS, C::kOP_TYPE << ": input " << C::kINPUT_NAMES[index] << " is required");
            break;
        }
        inputs.push_back(*view);
    }
    return inputs;
}

//! A float32 buffer for an output: the output's own when it is fp32, else `scratch`, converted afterwards.
float* outputBuffer(Ort::UnownedValue& output, ElementType type, int64_t count, std::vector<float>& scratch)
{
    if (type == ElementType::kFLOAT32)
    {
        return output.GetTensorMutableData<float>();
    }
    scratch.resize(static_cast<std::size_t>(count));
    return scratch.data();
}

void computeCpu(Ort::KernelContext& context, plugin::MegaEmaAttributes const& attributes)
{
    std::vector<TensorView> const inputs = megaEmaInputs(context);
    std::vector<ElementType> types;
    std::vector<std::vector<int64_t>> extents;
    for (TensorView const& view : inputs)
    {
        types.push_back(view.type);
        extents.push_back(view.extents);
    }
    plugin::checkMegaEmaTypes(types, false);
    plugin::MegaEmaShape const shape = plugin::checkMegaEmaShapes(extents, attributes);
    TK_CHECK(!(shape.hasPrevState && (attributes.bidirectional || attributes.truncation != 0)),
        C::kOP_TYPE << ": prev_state needs bidirectional=0 and truncation=0");
    std::array<std::vector<int64_t>, 2> const outputExtents = plugin::megaEmaOutputExtents(shape);
    Ort::UnownedValue output = context.GetOutput(C::kOUT_OUTPUT, outputExtents[C::kOUT_OUTPUT]);
    Ort::UnownedValue finalState = context.GetOutput(C::kOUT_FINAL_STATE, outputExtents[C::kOUT_FINAL_STATE]);
    int64_t const outputCount = shape.batch * shape.length * shape.channels;
    int64_t const stateCount = shape.batch * shape.channels * shape.ndim;
    if (outputCount == 0 && stateCount == 0)
    {
        return;
    }

    ElementType const xType = inputs[C::kIN_X].type;
    std::vector<float> storage[C::kNB_INPUTS];
    std::vector<float> outputScratch;
    std::vector<float> stateScratch;
    cpu::MegaEmaArgs args;
    args.x = asFloat32(inputs[C::kIN_X], storage[C::kIN_X]);
    args.dampingFactor = asFloat32(inputs[C::kIN_DAMPING_FACTOR], storage[C::kIN_DAMPING_FACTOR]);
    args.decayFactor = asFloat32(inputs[C::kIN_DECAY_FACTOR], storage[C::kIN_DECAY_FACTOR]);
    args.emaExpansionMatrix = asFloat32(inputs[C::kIN_EMA_EXPANSION_MATRIX], storage[C::kIN_EMA_EXPANSION_MATRIX]);
    args.kernelProjectionMatrix
        = asFloat32(inputs[C::kIN_KERNEL_PROJECTION_MATRIX], storage[C::kIN_KERNEL_PROJECTION_MATRIX]);
    if (shape.hasPrevState)
    {
        args.prevState = asFloat32(inputs[C::kIN_PREV_STATE], storage[C::kIN_PREV_STATE]);
    }
    args.output = outputBuffer(output, xType, outputCount, outputScratch);
    args.finalState = outputBuffer(finalState, xType, stateCount, stateScratch);
    args.batch = shape.batch;
    args.length = shape.length;
    args.channels = shape.channels;
    args.ndim = shape.ndim;
    args.bidirectional = attributes.bidirectional;
    args.truncation = attributes.truncation;
    throwIfFailed(cpu::megaEma(args, ortParallelFor(context)), C::kOP_TYPE);
    if (xType != ElementType::kFLOAT32)
    {
        storeFromFloat32(outputScratch.data(), outputScratch.size(), xType, output.GetTensorMutableRawData());
        storeFromFloat32(stateScratch.data(), stateScratch.size(), xType, finalState.GetTensorMutableRawData());
    }
}

} // namespace

OrtStatus* MegaEmaKernel::ComputeV2(OrtKernelContext* raw) noexcept
{
    return statusOf(C::kOP_TYPE, [&]() {
        Ort::KernelContext context(raw);
        if (device == Device::kCUDA)
        {
            computeMegaEmaCuda(context, attributes);
        }
        else
        {
            computeCpu(context, attributes);
        }
    });
}

MegaEmaOp::MegaEmaOp(ElementType type, Device device) noexcept
    : mType(type)
    , mDevice(device)
{
}

OrtStatus* MegaEmaOp::CreateKernelV2(OrtApi const& /*api*/, OrtKernelInfo const* info, void** kernel) const noexcept
{
    return statusOf(C::kOP_TYPE, [&]() {
        NodeAttributes const fields(info, C::kATTRIBUTE_NAMES);
        plugin::MegaEmaAttributes const attributes = plugin::parseMegaEmaAttributes(fields.reader(C::kOP_TYPE));
        plugin::validateMegaEmaAttributes(attributes);
        *kernel = new MegaEmaKernel{attributes, mDevice};
    });
}

char const* MegaEmaOp::GetName() const noexcept
{
    return C::kOP_TYPE;
}

char const* MegaEmaOp::GetExecutionProviderType() const noexcept
{
    return executionProviderName(mDevice);
}

std::size_t MegaEmaOp::GetInputTypeCount() const noexcept
{
    return C::kNB_INPUTS;
}

ONNXTensorElementDataType MegaEmaOp::GetInputType(std::size_t index) const noexcept
{
    // The four parameters may each be any float type of their own: left free, converted in the kernel. x and
    // prev_state share the main type.
    auto const position = static_cast<int32_t>(index);
    bool const main = position == C::kIN_X || position == C::kIN_PREV_STATE;
    return main ? toOrtType(mType) : ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
}

OrtCustomOpInputOutputCharacteristic MegaEmaOp::GetInputCharacteristic(std::size_t index) const noexcept
{
    return static_cast<int32_t>(index) < C::kNB_REQUIRED_INPUTS ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
}

std::size_t MegaEmaOp::GetOutputTypeCount() const noexcept
{
    return C::kNB_OUTPUTS;
}

ONNXTensorElementDataType MegaEmaOp::GetOutputType(std::size_t /*index*/) const noexcept
{
    return toOrtType(mType);
}

} // namespace tensorkiln::ort
