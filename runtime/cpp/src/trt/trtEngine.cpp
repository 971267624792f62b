/*
 * trtEngine.cpp: run a deserialized engine (see trtEngine.h). run() is thread-safe: each call borrows an execution
 * context from a pool (creating one when all are busy) and its own stream and device buffers.
 */
#include "trt/trtEngine.h"

#include "tensorkiln/error.h"

#include <cuda_runtime_api.h>

#include <iostream>

namespace tensorkiln::trt
{
namespace
{

Error unavailable(std::string const& message)
{
    return Error(ErrorKind::kBACKEND_UNAVAILABLE, message);
}

void checkCuda(cudaError_t status, char const* what)
{
    if (status != cudaSuccess)
        throw unavailable(std::string("CUDA: ") + what + " failed: " + cudaGetErrorString(status));
}

DType dtypeOfTensor(nvinfer1::DataType type)
{
    switch (type)
    {
    case nvinfer1::DataType::kFLOAT: return DType::kFLOAT32;
    case nvinfer1::DataType::kHALF: return DType::kFLOAT16;
    case nvinfer1::DataType::kINT32: return DType::kINT32;
    case nvinfer1::DataType::kINT64: return DType::kINT64;
    case nvinfer1::DataType::kBOOL: return DType::kBOOL;
    case nvinfer1::DataType::kINT8: return DType::kINT8;
    case nvinfer1::DataType::kUINT8: return DType::kUINT8;
    default: throw unavailable("the engine has an output of a type the C++ runtime does not return");
    }
}

//! Device memory freed on scope exit.
struct DeviceBuffer
{
    void* pointer{nullptr};
    explicit DeviceBuffer(std::size_t bytes)
    {
        checkCuda(cudaMalloc(&pointer, bytes == 0 ? 1 : bytes), "cudaMalloc");
    }
    ~DeviceBuffer()
    {
        cudaFree(pointer);
    }
    DeviceBuffer(DeviceBuffer const&) = delete;
    DeviceBuffer& operator=(DeviceBuffer const&) = delete;
};

class EngineBackend : public Backend
{
public:
    EngineBackend(std::shared_ptr<Logger> logger, Manifest const& manifest, std::string customNodesRunOn)
        : mLogger(std::move(logger))
        , mRuntime(nvinfer1::createInferRuntime(*mLogger))
        , mCustomNodesRunOn(std::move(customNodesRunOn))
    {
        for (auto const& node : manifest.customNodes)
            mCustomNodes.push_back(node.domain + "::" + node.opType);
    }

    void deserialize(std::vector<char> const& plan)
    {
        if (!mRuntime)
            throw unavailable("TensorRT could not create a runtime: " + mLogger->lastError());
        mEngine.reset(mRuntime->deserializeCudaEngine(plan.data(), plan.size()));
        if (!mEngine)
            throw unavailable("TensorRT could not deserialize the engine: " + mLogger->lastError());
        for (int32_t i = 0; i < mEngine->getNbIOTensors(); ++i)
        {
            char const* name = mEngine->getIOTensorName(i);
            bool const input = mEngine->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT;
            (input ? mInputs : mOutputs).emplace_back(name);
        }
    }

    std::vector<std::string> inputNames() const override
    {
        return mInputs;
    }
    std::vector<std::string> outputNames() const override
    {
        return mOutputs;
    }
    std::vector<std::string> providers() const override
    {
        return {"TensorRT " + loadedVersion()};
    }
    std::map<std::string, std::string> customNodeImplementations() const override
    {
        std::map<std::string, std::string> out;
        for (auto const& node : mCustomNodes)
            out[node] = mCustomNodesRunOn;
        return out;
    }
    NamedTensors run(std::vector<std::pair<std::string, Tensor>> const& feeds) const override;

private:
    std::unique_ptr<nvinfer1::IExecutionContext> borrow() const;
    void giveBack(std::unique_ptr<nvinfer1::IExecutionContext> context) const;

    std::shared_ptr<Logger> mLogger;
    std::unique_ptr<nvinfer1::IRuntime> mRuntime;
    std::unique_ptr<nvinfer1::ICudaEngine> mEngine;
    std::vector<std::string> mInputs, mOutputs, mCustomNodes;
    std::string mCustomNodesRunOn;
    mutable std::mutex mPoolMutex;
    mutable std::vector<std::unique_ptr<nvinfer1::IExecutionContext>> mPool;
};

std::unique_ptr<nvinfer1::IExecutionContext> EngineBackend::borrow() const
{
    {
        std::lock_guard<std::mutex> lock(mPoolMutex);
        if (!mPool.empty())
        {
            auto context = std::move(mPool.back());
            mPool.pop_back();
            return context;
        }
    }
    std::unique_ptr<nvinfer1::IExecutionContext> context(mEngine->createExecutionContext());
    if (!context)
        throw unavailable("TensorRT could not create an execution context: " + mLogger->lastError());
    return context;
}

void EngineBackend::giveBack(std::unique_ptr<nvinfer1::IExecutionContext> context) const
{
    std::lock_guard<std::mutex> lock(mPoolMutex);
    mPool.push_back(std::move(context));
}

NamedTensors EngineBackend::run(std::vector<std::pair<std::string, Tensor>> const& feeds) const
{
    auto context = borrow();
    std::vector<std::unique_ptr<DeviceBuffer>> buffers;
    for (auto const& [name, tensor] : feeds)
    {
        nvinfer1::Dims dims{};
        dims.nbDims = static_cast<int32_t>(tensor.rank());
        for (std::size_t axis = 0; axis < tensor.rank(); ++axis)
            dims.d[axis] = tensor.shape()[axis];
        if (!context->setInputShape(name.c_str(), dims))
            throw Error(ErrorKind::kRUNTIME_INPUT, "TensorRT refused the shape of input '" + name + "' (outside the "
                    "engine's optimisation profile): " + mLogger->lastError());
        buffers.push_back(std::make_unique<DeviceBuffer>(tensor.byteSize()));
        checkCuda(cudaMemcpy(buffers.back()->pointer, tensor.raw(), tensor.byteSize(), cudaMemcpyHostToDevice),
            "copying an input to the device");
        context->setTensorAddress(name.c_str(), buffers.back()->pointer);
    }
    NamedTensors outputs;
    std::vector<DeviceBuffer*> outputBuffers;
    for (auto const& name : mOutputs)
    {
        nvinfer1::Dims const dims = context->getTensorShape(name.c_str());
        Tensor tensor(dtypeOfTensor(mEngine->getTensorDataType(name.c_str())),
            std::vector<int64_t>(dims.d, dims.d + dims.nbDims));
        buffers.push_back(std::make_unique<DeviceBuffer>(tensor.byteSize()));
        context->setTensorAddress(name.c_str(), buffers.back()->pointer);
        outputBuffers.push_back(buffers.back().get());
        outputs.emplace(name, std::move(tensor));
    }
    cudaStream_t stream{};
    checkCuda(cudaStreamCreate(&stream), "cudaStreamCreate");
    bool const enqueued = context->enqueueV3(stream);
    cudaError_t const synced = cudaStreamSynchronize(stream);
    cudaStreamDestroy(stream);
    if (!enqueued)
        throw unavailable("TensorRT could not run the engine: " + mLogger->lastError());
    checkCuda(synced, "running the engine");
    std::size_t index = 0;
    for (auto const& name : mOutputs)
    {
        Tensor& tensor = outputs.at(name);
        checkCuda(cudaMemcpy(tensor.raw(), outputBuffers[index++]->pointer, tensor.byteSize(), cudaMemcpyDeviceToHost),
            "copying an output to the host");
    }
    giveBack(std::move(context));
    return outputs;
}

} // namespace

void Logger::log(Severity severity, char const* message) noexcept
{
    if (severity > Severity::kWARNING)
        return;
    std::cerr << "TensorRT: " << message << std::endl;
    if (severity <= Severity::kERROR)
    {
        std::lock_guard<std::mutex> lock(mMutex);
        mLastError = message;
    }
}

std::string Logger::lastError() const
{
    std::lock_guard<std::mutex> lock(mMutex);
    return mLastError.empty() ? "no message from TensorRT" : mLastError;
}

std::string loadedVersion()
{
    int32_t const version = getInferLibVersion(); // major * 10000 + minor * 100 + patch (TensorRT >= 10)
    return std::to_string(version / 10000) + "." + std::to_string(version / 100 % 100) + "."
        + std::to_string(version % 100);
}

std::pair<std::string, std::string> currentDevice()
{
    int device = 0;
    checkCuda(cudaGetDevice(&device), "cudaGetDevice");
    cudaDeviceProp properties{};
    checkCuda(cudaGetDeviceProperties(&properties, device), "cudaGetDeviceProperties");
    return {properties.name, std::to_string(properties.major) + "." + std::to_string(properties.minor)};
}

std::unique_ptr<Backend> engineBackend(std::vector<char> const& plan, Manifest const& manifest,
    std::string const& customNodesRunOn, std::shared_ptr<Logger> logger)
{
    auto backend = std::make_unique<EngineBackend>(std::move(logger), manifest, customNodesRunOn);
    backend->deserialize(plan);
    return backend;
}

} // namespace tensorkiln::trt
