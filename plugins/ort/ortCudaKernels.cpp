/*
 * ortCudaKernels.cpp: the CUDA execution provider's MraAttention and MegaEma, compiled only into a library built
 * with CUDA. They call the TensorRT plugins' launchers (mraAttentionKernel.h, megaEmaKernel.h) with the same
 * parameters and workspace layouts the plugins use, on the stream ORT gives the kernel. The workspace is taken
 * stream-ordered (cudaMallocAsync / cudaFreeAsync on that stream), so it is never freed under a running kernel and
 * needs no ORT allocator. Every input type of the contract is read natively (no conversion copies).
 */
#include "ort/ortOps.h"

#include "common/cudaCheck.h"
#include "common/status.h"
#include "megaEmaPlugin/megaEmaKernel.h"
#include "mraAttentionPlugin/mraAttentionKernel.h"

#include <cuda_runtime_api.h>

#include <vector>

namespace tensorkiln::ort
{
namespace
{

//! Stream-ordered scratch memory: allocated and freed on the kernel's stream.
class StreamWorkspace
{
public:
    StreamWorkspace(std::size_t bytes, cudaStream_t stream)
        : mStream(stream)
    {
        if (bytes > 0)
        {
            TK_CHECK_CUDA(cudaMallocAsync(&mData, bytes, stream));
        }
    }
    ~StreamWorkspace()
    {
        if (mData != nullptr)
        {
            static_cast<void>(cudaFreeAsync(mData, mStream));
        }
    }
    StreamWorkspace(StreamWorkspace const&) = delete;
    StreamWorkspace& operator=(StreamWorkspace const&) = delete;

    void* data() const noexcept
    {
        return mData;
    }

private:
    cudaStream_t mStream;
    void* mData{nullptr};
};

cudaStream_t streamOf(Ort::KernelContext& context)
{
    // ORT hands the CUDA EP's compute stream (nullptr: the legacy default stream, still correctly ordered).
    return static_cast<cudaStream_t>(context.GetGPUComputeStream());
}

std::vector<TensorView> requiredInputs(Ort::KernelContext& context, int32_t required, int32_t total,
    char const* owner, char const* const* names)
{
    std::vector<TensorView> inputs;
    for (int32_t i = 0; i < total; ++i)
    {
        std::optional<TensorView> view = inputView(context, static_cast<std::size_t>(i), owner, names[i]);
        if (!view.has_value())
        {
            TK_CHECK(i >= required, owner << ": input " << names[i] << " is required");
            break;
        }
        inputs.push_back(*view);
    }
    return inputs;
}

} // namespace

void computeMraAttentionCuda(Ort::KernelContext& context, plugin::MraAttributes const& attributes)
{
    using C = plugin::contract::MraAttention;
    std::vector<TensorView> const in
        = requiredInputs(context, C::kNB_INPUTS, C::kNB_INPUTS, C::kOP_TYPE, C::kINPUT_NAMES.data());
    plugin::checkMraTypes({in[0].type, in[1].type, in[2].type, in[3].type});
    plugin::MraShape const shape = plugin::checkMraShapes({in[0].extents, in[1].extents, in[2].extents,
        in[3].extents});
    Ort::UnownedValue output = context.GetOutput(C::kOUT_OUTPUT, in[C::kIN_QUERY].extents);
    if (in[C::kIN_QUERY].elementCount() == 0)
    {
        return;
    }
    plugin::MraAttentionKernelParams params;
    params.batch = static_cast<int32_t>(shape.batch);
    params.heads = static_cast<int32_t>(shape.heads);
    params.length = static_cast<int32_t>(shape.length);
    params.headDim = static_cast<int32_t>(shape.headDim);
    params.query = in[C::kIN_QUERY].data;
    params.key = in[C::kIN_KEY].data;
    params.value = in[C::kIN_VALUE].data;
    params.mask = in[C::kIN_ATTENTION_MASK].data;
    params.output = output.GetTensorMutableRawData();
    plugin::MraStrides const strides = plugin::mraContiguousStrides(shape.heads, shape.length, shape.headDim);
    params.queryStrides = strides;
    params.keyStrides = strides;
    params.valueStrides = strides;
    params.outputStrides = strides;
    params.maskBatchStride = shape.length;
    params.dataType = in[C::kIN_QUERY].type;
    params.maskType = in[C::kIN_ATTENTION_MASK].type;
    params.numBlocks = attributes.numBlocks;
    params.scale = attributes.scale;
    params.approxMode = attributes.approxMode;
    params.priorFirstNBlocks = attributes.priorFirstNBlocks;
    params.priorDiagonalNBlocks = attributes.priorDiagonalNBlocks;
    params.workspaceBytes = plugin::mraWorkspaceBytes(shape, attributes);
    cudaStream_t const stream = streamOf(context);
    StreamWorkspace const workspace(params.workspaceBytes, stream);
    params.workspace = workspace.data();
    TK_CHECK_CUDA(plugin::launchMraAttention(params, stream));
}

void computeMegaEmaCuda(Ort::KernelContext& context, plugin::MegaEmaAttributes const& attributes)
{
    using C = plugin::contract::MegaEma;
    std::vector<TensorView> const in
        = requiredInputs(context, C::kNB_REQUIRED_INPUTS, C::kNB_INPUTS, C::kOP_TYPE, C::kINPUT_NAMES.data());
    std::vector<ElementType> types;
    std::vector<std::vector<int64_t>> extents;
    for (TensorView const& view : in)
    {
        types.push_back(view.type);
        extents.push_back(view.extents);
    }
    plugin::checkMegaEmaTypes(types, false);
    plugin::MegaEmaShape const shape = plugin::checkMegaEmaShapes(extents, attributes);
    std::array<std::vector<int64_t>, 2> const outputExtents = plugin::megaEmaOutputExtents(shape);
    Ort::UnownedValue output = context.GetOutput(C::kOUT_OUTPUT, outputExtents[C::kOUT_OUTPUT]);
    Ort::UnownedValue finalState = context.GetOutput(C::kOUT_FINAL_STATE, outputExtents[C::kOUT_FINAL_STATE]);

    plugin::MegaEmaLaunchParams params;
    params.x = in[C::kIN_X].data;
    params.xType = in[C::kIN_X].type;
    params.xStrides[0] = shape.length * shape.channels; // contiguous (B, L, D)
    params.xStrides[1] = shape.channels;
    params.xStrides[2] = 1;
    int32_t const parameterInputs[4] = {C::kIN_DAMPING_FACTOR, C::kIN_DECAY_FACTOR, C::kIN_EMA_EXPANSION_MATRIX,
        C::kIN_KERNEL_PROJECTION_MATRIX};
    for (int32_t i = 0; i < 4; ++i)
    {
        params.params[i] = in[static_cast<std::size_t>(parameterInputs[i])].data;
        params.paramTypes[i] = in[static_cast<std::size_t>(parameterInputs[i])].type;
    }
    if (shape.hasPrevState)
    {
        params.prevState = in[C::kIN_PREV_STATE].data;
        params.prevStateType = in[C::kIN_PREV_STATE].type;
    }
    params.output = output.GetTensorMutableRawData();
    params.finalState = finalState.GetTensorMutableRawData();
    params.layout = plugin::megaEmaScanLayout(shape, attributes, params.xType);
    params.workspaceBytes = params.layout.workspaceBytes;
    cudaStream_t const stream = streamOf(context);
    StreamWorkspace const workspace(params.workspaceBytes, stream);
    params.workspace = workspace.data();
    TK_CHECK_CUDA(plugin::launchMegaEma(params, stream));
}

} // namespace tensorkiln::ort
