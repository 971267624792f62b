/*
 * ortMraAttention.cpp: tensorkiln::MraAttention for ONNX Runtime. The CPU kernel is cpu::mraAttention (plugins/cpu)
 * over ORT's intra-op pool; the CUDA kernel is the TensorRT plugin's launcher on ORT's stream (ortCudaKernels.cpp).
 */
#include "ort/ortOps.h"

#include "common/status.h"

#include <vector>

namespace tensorkiln::ort
{
namespace
{

using C = plugin::contract::MraAttention;

void computeCpu(Ort::KernelContext& context, plugin::MraAttributes const& attributes)
{
    std::vector<TensorView> inputs;
    for (int32_t i = 0; i < C::kNB_INPUTS; ++i)
    {
        std::optional<TensorView> view = inputView(context, static_cast<std::size_t>(i), C::kOP_TYPE,
            C::kINPUT_NAMES[static_cast<std::size_t>(i)]);
        TK_CHECK(view.has_value(), C::kOP_TYPE << ": input " << C::kINPUT_NAMES[static_cast<std::size_t>(i)]
                                               << " is required");
        inputs.push_back(*view);
    }
    plugin::checkMraTypes({inputs[0].type, inputs[1].type, inputs[2].type, inputs[3].type});
    plugin::MraShape const shape
        = plugin::checkMraShapes({inputs[0].extents, inputs[1].extents, inputs[2].extents, inputs[3].extents});
    TensorView const& query = inputs[C::kIN_QUERY];
    Ort::UnownedValue output = context.GetOutput(C::kOUT_OUTPUT, query.extents);
    if (query.elementCount() == 0)
    {
        return;
    }

    std::vector<float> storage[C::kNB_INPUTS];
    cpu::MraAttentionArgs args;
    args.query = asFloat32(inputs[C::kIN_QUERY], storage[C::kIN_QUERY]);
    args.key = asFloat32(inputs[C::kIN_KEY], storage[C::kIN_KEY]);
    args.value = asFloat32(inputs[C::kIN_VALUE], storage[C::kIN_VALUE]);
    args.attentionMask = asFloat32(inputs[C::kIN_ATTENTION_MASK], storage[C::kIN_ATTENTION_MASK]);
    std::vector<float> result;
    if (query.type == ElementType::kFLOAT32)
    {
        args.output = output.GetTensorMutableData<float>();
    }
    else
    {
        result.resize(static_cast<std::size_t>(query.elementCount()));
        args.output = result.data();
    }
    args.batch = shape.batch;
    args.heads = shape.heads;
    args.length = shape.length;
    args.headDim = shape.headDim;
    args.numBlocks = attributes.numBlocks;
    args.scale = static_cast<float>(attributes.scale);
    args.fullMode = attributes.approxMode == plugin::MraApproxMode::kFULL;
    args.initialPriorFirstNBlocks = attributes.priorFirstNBlocks;
    args.initialPriorDiagonalNBlocks = attributes.priorDiagonalNBlocks;
    throwIfFailed(cpu::mraAttention(args, ortParallelFor(context)), C::kOP_TYPE);
    if (!result.empty())
    {
        storeFromFloat32(result.data(), result.size(), query.type, output.GetTensorMutableRawData());
    }
}

} // namespace

OrtStatus* MraAttentionKernel::ComputeV2(OrtKernelContext* raw) noexcept
{
    return statusOf(C::kOP_TYPE, [&]() {
        Ort::KernelContext context(raw);
        if (device == Device::kCUDA)
        {
            computeMraAttentionCuda(context, attributes);
        }
        else
        {
            computeCpu(context, attributes);
        }
    });
}

MraAttentionOp::MraAttentionOp(ElementType type, Device device) noexcept
    : mType(type)
    , mDevice(device)
{
}

OrtStatus* MraAttentionOp::CreateKernelV2(OrtApi const& /*api*/, OrtKernelInfo const* info, void** kernel) const noexcept
{
    return statusOf(C::kOP_TYPE, [&]() {
        NodeAttributes const fields(info, C::kATTRIBUTE_NAMES);
        plugin::MraAttributes const attributes = plugin::parseMraAttributes(fields.reader(C::kOP_TYPE));
        *kernel = new MraAttentionKernel{attributes, mDevice};
    });
}

char const* MraAttentionOp::GetName() const noexcept
{
    return C::kOP_TYPE;
}

char const* MraAttentionOp::GetExecutionProviderType() const noexcept
{
    return executionProviderName(mDevice);
}

std::size_t MraAttentionOp::GetInputTypeCount() const noexcept
{
    return C::kNB_INPUTS;
}

ONNXTensorElementDataType MraAttentionOp::GetInputType(std::size_t index) const noexcept
{
    // The mask may be any float type of its own: left free, converted in the kernel.
    return static_cast<int32_t>(index) == C::kIN_ATTENTION_MASK ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED
                                                                : toOrtType(mType);
}

std::size_t MraAttentionOp::GetOutputTypeCount() const noexcept
{
    return C::kNB_OUTPUTS;
}

ONNXTensorElementDataType MraAttentionOp::GetOutputType(std::size_t /*index*/) const noexcept
{
    return toOrtType(mType);
}

} // namespace tensorkiln::ort
