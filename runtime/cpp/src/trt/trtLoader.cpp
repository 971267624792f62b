/*
 * trtLoader.cpp: finding and loading libtensorkiln_runtime_tensorrt.so (see trtLoader.h).
 */
#include "trt/trtLoader.h"

#include "nativeKernels.h"
#include "trt/trtEntry.h"

#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>

namespace tensorkiln
{
namespace
{

char const* const kTRT_LIBRARY = "libtensorkiln_runtime_tensorrt.so";

struct Loaded
{
    void* handle{nullptr};
    TensorkilnTrtCreate create{nullptr};
    std::string error;
};

Loaded const& loaded()
{
    static std::once_flag once;
    static Loaded state;
    std::call_once(once, [] {
        std::string const path = tensorRtBackendLibrary();
        state.handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (state.handle == nullptr)
        {
            char const* why = ::dlerror();
            state.error = "looked for " + path + ": " + (why ? why : "cannot be loaded");
            return;
        }
        state.create = reinterpret_cast<TensorkilnTrtCreate>(::dlsym(state.handle, TK_TRT_ENTRY_POINT));
        if (state.create == nullptr)
        {
            state.error = path + " has no " TK_TRT_ENTRY_POINT;
        }
    });
    return state;
}

} // namespace

std::string tensorRtBackendLibrary()
{
    if (char const* chosen = std::getenv("TENSORKILN_RUNTIME_TENSORRT_LIBRARY"); chosen != nullptr && *chosen)
    {
        return chosen;
    }
    Dl_info info{};
    if (::dladdr(reinterpret_cast<void*>(&tensorRtBackendLibrary), &info) != 0 && info.dli_fname != nullptr)
    {
        return (std::filesystem::path(info.dli_fname).parent_path() / kTRT_LIBRARY).string();
    }
    return kTRT_LIBRARY;
}

void requireTensorRtBackend()
{
    Loaded const& state = loaded();
    if (state.create == nullptr)
    {
        throw Error(ErrorKind::kBACKEND_UNAVAILABLE, std::string("backend 'tensorrt' needs ") + kTRT_LIBRARY
                + ", which is built only where TensorRT is installed (kiln build-runtime --tensorrt-root "
                  "/path/to/TensorRT); "
                + state.error);
    }
}

std::unique_ptr<Backend> openTensorRtBackend(std::string const& modelPath, Manifest const& manifest,
    LoadOptions const& options)
{
    requireTensorRtBackend();
    std::string const cache = cacheDir();
    TrtRequest const request{&modelPath, &manifest, &options, &cache};
    Backend* backend = nullptr;
    char message[4096] = {0};
    int const status = loaded().create(&request, &backend, message, sizeof(message));
    if (status != 0 || backend == nullptr)
    {
        throw Error(static_cast<ErrorKind>(status == 0 ? static_cast<int>(ErrorKind::kBACKEND_UNAVAILABLE) : status - 1),
            message);
    }
    return std::unique_ptr<Backend>(backend);
}

} // namespace tensorkiln
