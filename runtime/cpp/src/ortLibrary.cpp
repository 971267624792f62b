/*
 * ortLibrary.cpp: finding and loading libonnxruntime (see ortLibrary.h).
 */
#include "ortLibrary.h"

#include "ortApi.h"
#include "tensorkiln/error.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <mutex>

#ifndef TK_DEFAULT_ONNXRUNTIME_LIBRARY
#define TK_DEFAULT_ONNXRUNTIME_LIBRARY ""
#endif

namespace tensorkiln
{
namespace
{

namespace fs = std::filesystem;

char const* const kENV_LIBRARY = "TENSORKILN_ONNXRUNTIME_LIBRARY";

//! libonnxruntime.so.1.* in the onnxruntime wheel of $VIRTUAL_ENV, newest Python first.
std::vector<std::string> wheelLibraries()
{
    std::vector<std::string> found;
    char const* venv = std::getenv("VIRTUAL_ENV");
    std::error_code ec;
    if (venv == nullptr || !fs::is_directory(fs::path(venv) / "lib", ec))
    {
        return found;
    }
    std::vector<fs::path> pythons;
    for (auto const& entry : fs::directory_iterator(fs::path(venv) / "lib", ec))
    {
        if (entry.path().filename().string().rfind("python3", 0) == 0)
        {
            pythons.push_back(entry.path());
        }
    }
    std::sort(pythons.rbegin(), pythons.rend());
    for (auto const& python : pythons)
    {
        fs::path const capi = python / "site-packages" / "onnxruntime" / "capi";
        for (auto const& entry : fs::directory_iterator(capi, ec))
        {
            if (entry.path().filename().string().rfind("libonnxruntime.so.1", 0) == 0)
            {
                found.push_back(entry.path().string());
            }
        }
    }
    return found;
}

} // namespace

std::vector<std::string> ortLibraryCandidates(std::string const& requested)
{
    if (!requested.empty())
    {
        return {requested};
    }
    if (char const* chosen = std::getenv(kENV_LIBRARY); chosen != nullptr && *chosen != '\0')
    {
        return {chosen};
    }
    std::vector<std::string> candidates = wheelLibraries();
    if (std::string(TK_DEFAULT_ONNXRUNTIME_LIBRARY).size() > 0)
    {
        candidates.emplace_back(TK_DEFAULT_ONNXRUNTIME_LIBRARY);
    }
    candidates.emplace_back("libonnxruntime.so");
    candidates.emplace_back("libonnxruntime.so.1");
    return candidates;
}

OrtRuntime const& ortRuntime(std::string const& requested)
{
    static std::mutex mutex;
    static OrtRuntime loaded;
    std::lock_guard<std::mutex> lock(mutex);
    std::vector<std::string> const candidates = ortLibraryCandidates(requested);
    if (!loaded.path.empty())
    {
        if (!requested.empty() && fs::weakly_canonical(requested) != fs::weakly_canonical(loaded.path))
        {
            throw Error(ErrorKind::kBACKEND_UNAVAILABLE, "ONNX Runtime is already loaded from " + loaded.path
                    + " in this process; one process runs one ONNX Runtime, so " + requested + " cannot be loaded");
        }
        return loaded;
    }
    std::string failures;
    for (auto const& candidate : candidates)
    {
        void* handle = ::dlopen(candidate.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (handle == nullptr)
        {
            char const* why = ::dlerror();
            failures += "; " + candidate + ": " + (why ? why : "cannot be loaded");
            continue;
        }
        using GetApiBase = OrtApiBase const* (*) ();
        auto getApiBase = reinterpret_cast<GetApiBase>(::dlsym(handle, "OrtGetApiBase"));
        if (getApiBase == nullptr)
        {
            failures += "; " + candidate + ": no OrtGetApiBase (not ONNX Runtime)";
            ::dlclose(handle);
            continue;
        }
        OrtApiBase const* base = getApiBase();
        std::string const version = base->GetVersionString();
        OrtApi const* api = base->GetApi(ORT_API_VERSION);
        if (api == nullptr)
        {
            throw Error(ErrorKind::kBACKEND_UNAVAILABLE, "ONNX Runtime " + version + " at " + candidate
                    + " does not serve C API " + std::to_string(ORT_API_VERSION)
                    + " (the headers this runtime was built with): use onnxruntime >= 1."
                    + std::to_string(ORT_API_VERSION));
        }
        Ort::InitApi(api);
        Dl_info info{};
        std::string path = candidate;
        if (::dladdr(reinterpret_cast<void*>(getApiBase), &info) != 0 && info.dli_fname != nullptr)
        {
            path = info.dli_fname;
        }
        std::size_t const dot = version.find('.');
        loaded = OrtRuntime{path, version, dot == std::string::npos ? 0 : std::atoi(version.c_str() + dot + 1)};
        return loaded;
    }
    throw Error(ErrorKind::kBACKEND_UNAVAILABLE, "cannot load ONNX Runtime's shared library (" + failures.substr(2)
            + "): pass its path as LoadOptions::onnxruntimeLibrary (kiln-run --onnxruntime-library), set "
            + kENV_LIBRARY + ", or activate a virtual environment with `pip install onnxruntime`");
}

} // namespace tensorkiln
