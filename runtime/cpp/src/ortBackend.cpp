/*
 * ortBackend.cpp: the ONNX Runtime backend (see ortBackend.h). Run is called concurrently from many threads: ORT's
 * Session::Run is thread-safe and this class keeps no per-call state.
 */
#include "ortBackend.h"

#include "nativeKernels.h"
#include "ortApi.h"
#include "pyFormat.h"

#include <algorithm>
#include <mutex>

namespace tensorkiln
{
namespace
{

char const* const kCPU = "CPUExecutionProvider";
char const* const kCUDA = "CUDAExecutionProvider";

Ort::Env& ortEnv()
{
    static std::once_flag once;
    static std::unique_ptr<Ort::Env> env;
    std::call_once(once, [] { env = std::make_unique<Ort::Env>(ORT_LOGGING_LEVEL_ERROR, "tensorkiln"); });
    return *env;
}

//! How the Python binding spells an ORT error: "[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : message".
std::string pythonText(Ort::Exception const& error)
{
    static char const* const kNAMES[] = {"OK", "FAIL", "INVALID_ARGUMENT", "NO_SUCHFILE", "NO_MODEL", "ENGINE_ERROR",
        "RUNTIME_EXCEPTION", "INVALID_PROTOBUF", "MODEL_LOADED", "NOT_IMPLEMENTED", "INVALID_GRAPH", "EP_FAIL"};
    int const code = static_cast<int>(error.GetOrtErrorCode());
    std::string const name = code >= 0 && code < 12 ? kNAMES[code] : "FAIL";
    return "[ONNXRuntimeError] : " + std::to_string(code) + " : " + name + " : " + error.what();
}

std::string firstLine(std::string const& text)
{
    return text.substr(0, text.find('\n'));
}

ONNXTensorElementDataType ortType(DType dtype)
{
    switch (dtype)
    {
    case DType::kBOOL: return ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL;
    case DType::kINT8: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8;
    case DType::kUINT8: return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
    case DType::kINT16: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16;
    case DType::kUINT16: return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16;
    case DType::kINT32: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32;
    case DType::kUINT32: return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32;
    case DType::kINT64: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
    case DType::kUINT64: return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64;
    case DType::kFLOAT16: return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
    case DType::kFLOAT32: return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    case DType::kFLOAT64: return ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE;
    }
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
}

DType fromOrtType(ONNXTensorElementDataType type)
{
    for (DType dtype : {DType::kBOOL, DType::kINT8, DType::kUINT8, DType::kINT16, DType::kUINT16, DType::kINT32,
             DType::kUINT32, DType::kINT64, DType::kUINT64, DType::kFLOAT16, DType::kFLOAT32, DType::kFLOAT64})
    {
        if (ortType(dtype) == type)
        {
            return dtype;
        }
    }
    throw Error(ErrorKind::kBACKEND_UNAVAILABLE, "the graph returns an element type the C++ runtime cannot hold ("
            + std::to_string(static_cast<int>(type)) + ")");
}

class OrtBackend : public Backend
{
public:
    OrtBackend(std::string const& modelPath, Manifest const& manifest, std::vector<std::string> providers,
        int threads, std::string const& kernels, std::string const& ortVersion)
        : mProviders(std::move(providers))
    {
        KernelPlan plan = planKernels(kernels, !manifest.customNodes.empty(), ortVersion);
        if (plan.library)
        {
            try
            {
                open(modelPath, manifest, threads, plan.library);
            }
            catch (Error const& error)
            {
                if (kernels == "native" || error.kind() == ErrorKind::kMANIFEST)
                {
                    throw;
                }
                plan = KernelPlan{kernels, std::nullopt,
                    "ONNX Runtime refused the native kernels: " + firstLine(error.what())};
                open(modelPath, manifest, threads, std::nullopt);
            }
        }
        else
        {
            open(modelPath, manifest, threads, std::nullopt);
        }
        describe(manifest, plan);
        Ort::AllocatorWithDefaultOptions allocator;
        for (std::size_t i = 0; i < mSession->GetInputCount(); ++i)
        {
            mInputNames.emplace_back(mSession->GetInputNameAllocated(i, allocator).get());
        }
        for (std::size_t i = 0; i < mSession->GetOutputCount(); ++i)
        {
            mOutputNames.emplace_back(mSession->GetOutputNameAllocated(i, allocator).get());
        }
    }

    std::vector<std::string> inputNames() const override
    {
        return mInputNames;
    }
    std::vector<std::string> outputNames() const override
    {
        return mOutputNames;
    }
    std::vector<std::string> providers() const override
    {
        return mProviders;
    }
    std::map<std::string, std::string> customNodeImplementations() const override
    {
        return mImplementations;
    }

    NamedTensors run(std::vector<std::pair<std::string, Tensor>> const& feeds) const override
    {
        Ort::MemoryInfo memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
        std::vector<char const*> inputNames;
        std::vector<Ort::Value> inputs;
        for (auto const& [name, tensor] : feeds)
        {
            inputNames.push_back(name.c_str());
            // ORT reads the feeds only; the const_cast is its C API's signature, not a write.
            inputs.push_back(Ort::Value::CreateTensor(memory, const_cast<void*>(tensor.raw()), tensor.byteSize(),
                tensor.shape().data(), tensor.shape().size(), ortType(tensor.dtype())));
        }
        std::vector<char const*> outputNames;
        for (auto const& name : mOutputNames)
        {
            outputNames.push_back(name.c_str());
        }
        std::vector<Ort::Value> values;
        try
        {
            values = mSession->Run(Ort::RunOptions{nullptr}, inputNames.data(), inputs.data(), inputs.size(),
                outputNames.data(), outputNames.size());
        }
        catch (Ort::Exception const& error)
        {
            throw Error(ErrorKind::kRUNTIME_INPUT, "ONNX Runtime could not run the model: " + firstLine(error.what()));
        }
        NamedTensors outputs;
        for (std::size_t i = 0; i < values.size(); ++i)
        {
            auto const info = values[i].GetTensorTypeAndShapeInfo();
            DType const dtype = fromOrtType(info.GetElementType());
            std::vector<int64_t> const shape = info.GetShape();
            Tensor out(dtype, shape);
            if (out.byteSize() != 0)
            {
                std::memcpy(out.raw(), values[i].GetTensorRawData(), out.byteSize());
            }
            outputs.emplace(mOutputNames[i], std::move(out));
        }
        return outputs;
    }

private:
    void open(std::string const& modelPath, Manifest const& manifest, int threads,
        std::optional<std::string> const& library)
    {
        mOptions = std::make_unique<Ort::SessionOptions>();
        mOptions->SetLogSeverityLevel(3); // errors only: notes on unused initializers are not the user's concern
        mOptions->SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
        if (threads > 0)
        {
            mOptions->SetIntraOpNumThreads(threads);
        }
        if (library)
        {
            try
            {
                mOptions->RegisterCustomOpsLibrary(library->c_str());
            }
            catch (Ort::Exception const& error)
            {
                throw Error(ErrorKind::kBACKEND_UNAVAILABLE, "ONNX Runtime could not load the native kernels "
                        + *library + ": " + firstLine(pythonText(error)) + ". Rebuild them with `kiln build-kernels`");
            }
        }
        if (!mProviders.empty() && mProviders.front() == kCUDA)
        {
            OrtCUDAProviderOptionsV2* cuda = nullptr;
            Ort::ThrowOnError(Ort::GetApi().CreateCUDAProviderOptions(&cuda));
            try
            {
                mOptions->AppendExecutionProvider_CUDA_V2(*cuda);
            }
            catch (Ort::Exception const& error)
            {
                Ort::GetApi().ReleaseCUDAProviderOptions(cuda);
                throw Error(ErrorKind::kBACKEND_UNAVAILABLE, "ONNX Runtime's CUDA execution provider cannot start: "
                        + firstLine(error.what()));
            }
            Ort::GetApi().ReleaseCUDAProviderOptions(cuda);
        }
        try
        {
            mSession = std::make_unique<Ort::Session>(ortEnv(), modelPath.c_str(), *mOptions);
        }
        catch (Ort::Exception const& error)
        {
            std::string const text = pythonText(error);
            if (manifest.precision == "fp16"
                && (error.GetOrtErrorCode() == ORT_NOT_IMPLEMENTED
                    || text.find("Could not find an implementation") != std::string::npos))
            {
                throw Error(ErrorKind::kBACKEND_UNAVAILABLE, "ONNX Runtime's " + join(mProviders, ", ")
                        + " cannot run this fp16 export (" + firstLine(text)
                        + "). fp16 exports are meant for GPUs: install onnxruntime-gpu, or export with --precision "
                          "fp32 for CPU");
            }
            OrtErrorCode const code = error.GetOrtErrorCode();
            if (code == ORT_INVALID_PROTOBUF || code == ORT_INVALID_GRAPH || code == ORT_NO_SUCHFILE)
            {
                throw Error(ErrorKind::kMANIFEST, "ONNX Runtime cannot load " + pyRepr(modelPath) + " ("
                        + firstLine(text)
                        + "): the file is damaged or not the export's model; load it with check_files=True to "
                          "compare it with its manifest, or re-export it");
            }
            throw Error(ErrorKind::kBACKEND_UNAVAILABLE, "ONNX Runtime cannot open " + pyRepr(modelPath) + ": "
                    + firstLine(text));
        }
    }

    void describe(Manifest const& manifest, KernelPlan const& plan)
    {
        std::string label;
        if (!plan.library)
        {
            label = "function body" + (plan.kernels == "auto" && !plan.reason.empty() ? " (" + plan.reason + ")" : "");
        }
        else
        {
            std::string isa = mOptions->GetConfigEntryOrDefault("tensorkiln.native.cpu_isa", "");
            isa = isa.empty() ? "cpu" : isa;
            bool const withCuda = mOptions->GetConfigEntryOrDefault("tensorkiln.native.cuda", "") == "1";
            if (!mProviders.empty() && mProviders.front() == kCUDA)
            {
                label = withCuda ? "native (cuda)" : "native (" + isa + ", on the CPU: the library has no CUDA kernels)";
            }
            else
            {
                label = "native (" + isa + ")";
            }
        }
        for (auto const& node : manifest.customNodes)
        {
            mImplementations[node.domain + "::" + node.opType] = label;
        }
    }

    std::vector<std::string> mProviders;
    std::unique_ptr<Ort::SessionOptions> mOptions;
    std::unique_ptr<Ort::Session> mSession;
    std::vector<std::string> mInputNames;
    std::vector<std::string> mOutputNames;
    std::map<std::string, std::string> mImplementations;
};

} // namespace

std::vector<std::string> chooseProviders(std::vector<std::string> const& providers)
{
    std::vector<std::string> const available = Ort::GetAvailableProviders();
    auto has = [&](std::string const& name) { return std::find(available.begin(), available.end(), name) != available.end(); };
    if (!providers.empty())
    {
        std::vector<std::string> missing;
        for (auto const& provider : providers)
        {
            if (!has(provider))
            {
                missing.push_back(provider);
            }
        }
        if (!missing.empty())
        {
            bool const cuda = std::find(missing.begin(), missing.end(), kCUDA) != missing.end();
            throw Error(ErrorKind::kBACKEND_UNAVAILABLE, "execution provider " + join(missing, ", ")
                    + " is not in this onnxruntime build" + (cuda ? " (pip install onnxruntime-gpu)" : "")
                    + "; available: " + join(available, ", "));
        }
        return providers;
    }
    if (has(kCUDA))
    {
        return {kCUDA, kCPU};
    }
    return {kCPU};
}

std::unique_ptr<Backend> openOrtBackend(std::string const& modelPath, Manifest const& manifest,
    std::vector<std::string> const& providers, int threads, std::string const& kernels, std::string const& ortVersion)
{
    return std::make_unique<OrtBackend>(modelPath, manifest, providers, threads, kernels, ortVersion);
}

} // namespace tensorkiln
