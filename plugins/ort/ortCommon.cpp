/*
 * ortCommon.cpp: attributes, tensor views, dtype conversion, ParallelFor and the status boundary of the ORT ops.
 */
#include "ort/ortCommon.h"

#include "common/status.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <functional>
#include <mutex>
#include <string_view>
#include <thread>

namespace tensorkiln::ort
{
namespace
{

using plugin::FieldType;

//! Below this many flops a chunk is not worth waking a pool thread for (a wake-up costs a few microseconds).
constexpr double kMIN_FLOPS_PER_CHUNK = 32768.0;
//! Enough chunks for ORT to balance them over any intra-op pool: its threads claim them one at a time.
constexpr int64_t kMAX_CHUNKS = 256;

//! Release an OrtStatus the caller only wants to know the absence of.
bool succeeded(OrtStatus* status) noexcept
{
    if (status == nullptr)
    {
        return true;
    }
    Ort::GetApi().ReleaseStatus(status);
    return false;
}

template <typename T, typename Convert>
void convertToFloat32(void const* data, int64_t count, float* out, Convert&& convert)
{
    auto const* values = static_cast<T const*>(data);
    for (int64_t i = 0; i < count; ++i)
    {
        out[i] = convert(values[i]);
    }
}

struct ChunkedTask
{
    ChunkedTask(int64_t itemCount, int64_t chunkCount, std::function<void(int64_t, int64_t)> const& body)
        : count(itemCount)
        , chunks(chunkCount)
        , task(&body)
    {
    }

    int64_t count;
    int64_t chunks;
    std::function<void(int64_t, int64_t)> const* task;
    std::atomic<bool> failed{false};
    std::mutex errorMutex;
    std::string error;

    void run(std::size_t chunk) noexcept
    {
        auto const index = static_cast<int64_t>(chunk);
        int64_t const begin = index * count / chunks;
        int64_t const end = (index + 1) * count / chunks;
        try
        {
            (*task)(begin, end);
        }
        catch (std::exception const& exception)
        {
            record(exception.what());
        }
        catch (...)
        {
            record("unknown exception in a parallel task");
        }
    }

    void record(char const* message) noexcept
    {
        std::lock_guard<std::mutex> lock(errorMutex);
        if (!failed.exchange(true))
        {
            error = message;
        }
    }
};

void runChunk(void* data, std::size_t chunk)
{
    static_cast<ChunkedTask*>(data)->run(chunk);
}

#if ORT_API_VERSION < 17
//! Headers older than ORT 1.17 have no KernelContext::ParallelFor: one std::thread per core instead.
void fallbackParallelFor(ChunkedTask& work)
{
    auto const threads = std::min<int64_t>(work.chunks, std::max(1U, std::thread::hardware_concurrency()));
    std::atomic<int64_t> next{0};
    auto const worker = [&work, &next]() {
        for (int64_t chunk = next++; chunk < work.chunks; chunk = next++)
        {
            work.run(static_cast<std::size_t>(chunk));
        }
    };
    std::vector<std::thread> pool;
    for (int64_t i = 1; i < threads; ++i)
    {
        pool.emplace_back(worker);
    }
    worker();
    for (auto& thread : pool)
    {
        thread.join();
    }
}
#endif

} // namespace

ONNXTensorElementDataType toOrtType(ElementType type) noexcept
{
    switch (type)
    {
    case ElementType::kFLOAT32: return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    case ElementType::kFLOAT16: return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
    case ElementType::kBFLOAT16: return ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16;
    case ElementType::kFLOAT64: return ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE;
    }
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
}

std::optional<ElementType> fromOrtType(ONNXTensorElementDataType type) noexcept
{
    switch (type)
    {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return ElementType::kFLOAT32;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return ElementType::kFLOAT16;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: return ElementType::kBFLOAT16;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return ElementType::kFLOAT64;
    default: return std::nullopt;
    }
}

NodeAttributes::NodeAttributes(OrtKernelInfo const* info, std::vector<char const*> const& names)
{
    OrtApi const& api = Ort::GetApi();
    for (char const* name : names)
    {
        // Each attribute is read with the type the node gave it; the parsers reject a wrong one by name.
        int64_t integer = 0;
        float real = 0.0F;
        std::size_t size = 0;
        if (succeeded(api.KernelInfoGetAttribute_int64(info, name, &integer)))
        {
            mInts.push_back(integer);
            mFields.push_back({name, FieldType::kINT64, &mInts.back(), 1});
        }
        else if (succeeded(api.KernelInfoGetAttribute_float(info, name, &real)))
        {
            mFloats.push_back(real);
            mFields.push_back({name, FieldType::kFLOAT32, &mFloats.back(), 1});
        }
        else if (succeeded(api.KernelInfoGetAttribute_string(info, name, nullptr, &size)))
        {
            std::string text(size, '\0');
            Ort::ThrowOnError(api.KernelInfoGetAttribute_string(info, name, text.data(), &size));
            text.resize(std::strlen(text.c_str()));
            mStrings.push_back(std::move(text));
            mFields.push_back(
                {name, FieldType::kCHAR, mStrings.back().data(), static_cast<int32_t>(mStrings.back().size())});
        }
    }
}

plugin::FieldReader NodeAttributes::reader(std::string owner) const
{
    return plugin::FieldReader(std::move(owner), mFields);
}

int64_t TensorView::elementCount() const noexcept
{
    int64_t count = 1;
    for (int64_t extent : extents)
    {
        count *= extent;
    }
    return count;
}

std::optional<TensorView> inputView(Ort::KernelContext& context, std::size_t index, char const* owner,
    char const* inputName)
{
    if (index >= context.GetInputCount())
    {
        return std::nullopt;
    }
    Ort::ConstValue const value = context.GetInput(index);
    if (value == nullptr)
    {
        return std::nullopt; // an optional input the node leaves empty
    }
    Ort::TensorTypeAndShapeInfo const info = value.GetTensorTypeAndShapeInfo();
    std::optional<ElementType> const type = fromOrtType(info.GetElementType());
    TK_CHECK(type.has_value(), owner << ": input " << inputName << " has ONNX element type "
                                     << static_cast<int32_t>(info.GetElementType())
                                     << "; the node takes float, float16, bfloat16 or double");
    return TensorView{*type, info.GetShape(), value.GetTensorRawData()};
}

float const* asFloat32(TensorView const& view, std::vector<float>& storage)
{
    if (view.type == ElementType::kFLOAT32)
    {
        return static_cast<float const*>(view.data);
    }
    int64_t const count = view.elementCount();
    storage.resize(static_cast<std::size_t>(count));
    switch (view.type)
    {
    case ElementType::kFLOAT16:
        convertToFloat32<Ort::Float16_t>(view.data, count, storage.data(), [](Ort::Float16_t v) { return v.ToFloat(); });
        break;
    case ElementType::kBFLOAT16:
        convertToFloat32<Ort::BFloat16_t>(
            view.data, count, storage.data(), [](Ort::BFloat16_t v) { return v.ToFloat(); });
        break;
    case ElementType::kFLOAT64:
        // The op reads a double mask or parameter as the torch op does: .float() first.
        convertToFloat32<double>(view.data, count, storage.data(), [](double v) { return static_cast<float>(v); });
        break;
    case ElementType::kFLOAT32: break;
    }
    return storage.data();
}

void storeFromFloat32(float const* source, std::size_t count, ElementType type, void* destination)
{
    switch (type)
    {
    case ElementType::kFLOAT32: std::memcpy(destination, source, count * sizeof(float)); return;
    case ElementType::kFLOAT16:
        std::transform(source, source + count, static_cast<Ort::Float16_t*>(destination),
            [](float v) { return Ort::Float16_t(v); });
        return;
    case ElementType::kBFLOAT16:
        std::transform(source, source + count, static_cast<Ort::BFloat16_t*>(destination),
            [](float v) { return Ort::BFloat16_t(v); });
        return;
    case ElementType::kFLOAT64:
        std::transform(source, source + count, static_cast<double*>(destination),
            [](float v) { return static_cast<double>(v); });
        return;
    }
}

cpu::ParallelFor ortParallelFor(Ort::KernelContext& context)
{
    return [&context](int64_t count, double cost, std::function<void(int64_t, int64_t)> const& task) {
        if (count <= 0)
        {
            return;
        }
        double const work = static_cast<double>(count) * std::max(cost, 1.0);
        auto const wanted = static_cast<int64_t>(std::min(work / kMIN_FLOPS_PER_CHUNK, 1e9));
        int64_t const chunks = std::clamp<int64_t>(wanted, 1, std::min(count, kMAX_CHUNKS));
        if (chunks == 1)
        {
            task(0, count);
            return;
        }
        ChunkedTask chunked(count, chunks, task);
#if ORT_API_VERSION >= 17
        // num_batch 0: ORT's threads take the chunks one at a time (dynamic balance for uneven rows); without an
        // intra-op pool the calling thread runs them all.
        context.ParallelFor(&runChunk, static_cast<std::size_t>(chunks), 0, &chunked);
#else
        static_cast<void>(context);
        fallbackParallelFor(chunked);
#endif
        if (chunked.failed)
        {
            plugin::throwPluginError(chunked.error);
        }
    };
}

void throwIfFailed(cpu::Status const& status, char const* owner)
{
    if (!status.ok)
    {
        std::string_view const message(status.message);
        // The kernels name the node themselves in most messages; add it where they do not.
        plugin::throwPluginError(message.rfind(owner, 0) == 0 ? status.message
                                                              : std::string(owner) + ": " + status.message);
    }
}

OrtStatus* currentExceptionStatus(char const* owner) noexcept
{
    OrtErrorCode code = ORT_RUNTIME_EXCEPTION;
    std::string message;
    try
    {
        try
        {
            throw;
        }
        catch (plugin::PluginError const& error)
        {
            code = ORT_INVALID_ARGUMENT;
            message = error.what();
        }
        catch (Ort::Exception const& error)
        {
            code = error.GetOrtErrorCode();
            message = error.what();
        }
        catch (std::exception const& error)
        {
            message = error.what();
        }
        catch (...)
        {
            message = "unknown exception";
        }
        if (std::string_view(message).rfind(owner, 0) != 0)
        {
            message = std::string(owner) + ": " + message;
        }
        return Ort::GetApi().CreateStatus(code, ("tensorkiln::" + message).c_str());
    }
    catch (...)
    {
        return Ort::GetApi().CreateStatus(ORT_RUNTIME_EXCEPTION, "tensorkiln: out of memory reporting an error");
    }
}

} // namespace tensorkiln::ort
