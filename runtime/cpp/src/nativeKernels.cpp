/*
 * nativeKernels.cpp: runtime/native.py's discovery and plan in C++ (see nativeKernels.h).
 */
#include "nativeKernels.h"

#include "jsonFile.h"
#include "pyFormat.h"
#include "tensorkiln/error.h"
#include "tensorkiln/session.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace tensorkiln
{
namespace
{

namespace fs = std::filesystem;

char const* const kLIBRARY_NAME = "libtensorkiln_ort.so";
char const* const kBUILD_INFO_NAME = "libtensorkiln_ort.json";
char const* const kENV_LIBRARY = "TENSORKILN_ORT_LIBRARY";
char const* const kBUILD_COMMAND = "kiln build-kernels";

std::string expandUser(std::string const& path)
{
    char const* home = std::getenv("HOME");
    if (!path.empty() && path[0] == '~' && (path.size() == 1 || path[1] == '/') && home != nullptr)
    {
        return home + path.substr(1);
    }
    return path;
}

std::string env(char const* name)
{
    char const* value = std::getenv(name);
    return value == nullptr ? "" : value;
}

std::string defaultLibraryPath()
{
    return pyPath(cacheDir() + "/ort/" + kLIBRARY_NAME);
}

Json readBuildInfo(std::string const& library)
{
    std::ifstream file(fs::path(library).parent_path() / kBUILD_INFO_NAME);
    if (!file)
    {
        return Json::object();
    }
    std::stringstream text;
    text << file.rdbuf();
    Json data = Json::parse(text.str(), nullptr, false);
    return data.is_object() ? data : Json::object();
}

int minorVersion(std::string const& version)
{
    std::size_t const dot = version.find('.');
    return dot == std::string::npos ? 0 : std::atoi(version.c_str() + dot + 1);
}

//! Why a library that exists cannot serve this runtime, or "".
std::string unusableReason(Json const& info, std::string const& ortVersion)
{
    auto const builtFor = info.find("tensorkiln_version");
    if (builtFor != info.end() && builtFor->is_string() && builtFor->get<std::string>() != version())
    {
        return "it was built for tensorkiln " + builtFor->get<std::string>() + ", this is " + version();
    }
    auto const api = info.find("ort_api_version");
    if (api != info.end() && api->is_number_integer() && api->get<int>() > minorVersion(ortVersion))
    {
        std::string const n = std::to_string(api->get<int>());
        return "it was built with ONNX Runtime API " + n + " headers and this onnxruntime is " + ortVersion
            + ": upgrade onnxruntime to 1." + n + "+, or rebuild with older headers";
    }
    return "";
}

} // namespace

std::string cacheDir()
{
    if (!env("TENSORKILN_CACHE_DIR").empty())
    {
        return pyPath(expandUser(env("TENSORKILN_CACHE_DIR")));
    }
    std::string base = env("XDG_CACHE_HOME");
    if (base.empty())
    {
        base = env("HOME") + "/.cache";
    }
    return pyPath(expandUser(base) + "/tensorkiln");
}

void checkKernelsChoice(std::string const& kernels)
{
    if (kernels != "auto" && kernels != "native" && kernels != "function")
    {
        throw Error(ErrorKind::kUSAGE, "kernels must be one of auto, native, function, got " + pyRepr(kernels));
    }
}

KernelPlan planKernels(std::string const& kernels, bool hasCustomNodes, std::string const& ortVersion)
{
    checkKernelsChoice(kernels);
    if (kernels == "function")
    {
        return KernelPlan{kernels, std::nullopt, "kernels='function'"};
    }
    if (!hasCustomNodes)
    {
        return KernelPlan{kernels, std::nullopt, "the export has no custom nodes"};
    }
    std::string const chosen = env(kENV_LIBRARY);
    std::string const path = chosen.empty() ? defaultLibraryPath() : pyPath(expandUser(chosen));
    std::error_code ec;
    if (!chosen.empty() && !fs::is_regular_file(path, ec))
    {
        throw Error(ErrorKind::kBACKEND_UNAVAILABLE, std::string(kENV_LIBRARY) + "=" + pyRepr(path)
                + " is not a file: point it at a built " + kLIBRARY_NAME + ", or unset it to use "
                + defaultLibraryPath());
    }
    std::string reason;
    if (!fs::is_regular_file(path, ec))
    {
        reason = "no native library at " + path + ": build it with `" + kBUILD_COMMAND + "`";
    }
    else if (std::string const problem = unusableReason(readBuildInfo(path), ortVersion); !problem.empty())
    {
        reason = "the native library at " + path + " is unusable (" + problem + "): rebuild it with `"
            + kBUILD_COMMAND + "`";
    }
    if (reason.empty())
    {
        return KernelPlan{kernels, path, ""};
    }
    if (kernels == "native")
    {
        throw Error(ErrorKind::kBACKEND_UNAVAILABLE, "kernels='native' cannot be served: " + reason);
    }
    return KernelPlan{kernels, std::nullopt, reason};
}

} // namespace tensorkiln
