/*
 * ortEntry.cpp: RegisterCustomOps, the one symbol libtensorkiln_ort.so exports (ortExports.map), which ONNX Runtime
 * calls from SessionOptions.register_custom_ops_library / RegisterCustomOpsLibrary.
 *
 * It initialises the ORT C++ API from the OrtApiBase the loading onnxruntime hands over (ORT_API_MANUAL_INIT: the
 * library links against no libonnxruntime), adds the "tensorkiln" custom-op domain with both ops (CPU, and CUDA in a
 * library built with CUDA) to the session options, and records what it registered as session config entries, which
 * the Python runtime reads back (SessionOptions.get_session_config_entry) to report which implementation each custom
 * node runs:
 *
 *   tensorkiln.native.cpu_isa      "avx2+fma" or "portable": the CPU kernels' instruction set on this machine
 *   tensorkiln.native.cuda         "1" when the CUDA execution provider's kernels are in the library, else "0"
 *   tensorkiln.native.api_version  the ORT API version of the headers the library was built with
 *
 * A registered kernel takes precedence over the model-local function of the same domain and name, so the same
 * export runs these kernels where the library is loaded and the function bodies everywhere else.
 */
#include "ort/ortOps.h"

#include "common/nodeContract.h"
#include "common/status.h"

#include <deque>
#include <mutex>
#include <string>

namespace tensorkiln::ort
{
namespace
{

constexpr ElementType kMAIN_TYPES[] = {ElementType::kFLOAT32, ElementType::kFLOAT16, ElementType::kBFLOAT16};

#ifdef TK_ORT_WITH_CUDA
constexpr bool kWITH_CUDA = true;
#else
constexpr bool kWITH_CUDA = false;
#endif

//! The ops and their domain, made once per process and never freed: every session registered with the library
//! points at them for as long as it lives.
struct Registry
{
    std::deque<MraAttentionOp> mraOps;
    std::deque<MegaEmaOp> emaOps;
    OrtCustomOpDomain* domain{nullptr};
};

Registry* buildRegistry()
{
    OrtApi const& api = Ort::GetApi();
    auto* registry = new Registry();
    Ort::ThrowOnError(api.CreateCustomOpDomain(plugin::contract::kDOMAIN, &registry->domain));
    for (Device device : {Device::kCPU, Device::kCUDA})
    {
        if (device == Device::kCUDA && !kWITH_CUDA)
        {
            continue;
        }
        for (ElementType type : kMAIN_TYPES)
        {
            registry->mraOps.emplace_back(type, device);
            Ort::ThrowOnError(api.CustomOpDomain_Add(registry->domain, &registry->mraOps.back()));
            registry->emaOps.emplace_back(type, device);
            Ort::ThrowOnError(api.CustomOpDomain_Add(registry->domain, &registry->emaOps.back()));
        }
    }
    return registry;
}

Registry& registry()
{
    static std::once_flag once;
    static Registry* instance = nullptr;
    std::call_once(once, []() { instance = buildRegistry(); });
    return *instance;
}

void registerWith(OrtSessionOptions* options)
{
    OrtApi const& api = Ort::GetApi();
    Ort::ThrowOnError(api.AddCustomOpDomain(options, registry().domain));
    Ort::ThrowOnError(api.AddSessionConfigEntry(options, "tensorkiln.native.cpu_isa", cpu::cpuKernelIsa()));
    Ort::ThrowOnError(api.AddSessionConfigEntry(options, "tensorkiln.native.cuda", kWITH_CUDA ? "1" : "0"));
    Ort::ThrowOnError(
        api.AddSessionConfigEntry(options, "tensorkiln.native.api_version", std::to_string(ORT_API_VERSION).c_str()));
}

} // namespace

char const* executionProviderName(Device device) noexcept
{
    return device == Device::kCUDA ? "CUDAExecutionProvider" : "CPUExecutionProvider";
}

#ifndef TK_ORT_WITH_CUDA
// Never called: without CUDA no op is registered for the CUDA execution provider.
void computeMraAttentionCuda(Ort::KernelContext& /*context*/, plugin::MraAttributes const& /*attributes*/)
{
    plugin::throwPluginError("MraAttention: libtensorkiln_ort.so was built without CUDA");
}

void computeMegaEmaCuda(Ort::KernelContext& /*context*/, plugin::MegaEmaAttributes const& /*attributes*/)
{
    plugin::throwPluginError("MegaEma: libtensorkiln_ort.so was built without CUDA");
}
#endif

} // namespace tensorkiln::ort

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL RegisterCustomOps(
    OrtSessionOptions* options, OrtApiBase const* apiBase)
{
    if (apiBase == nullptr || options == nullptr)
    {
        return nullptr; // nothing to register with, and no API to report through
    }
    OrtApi const* api = apiBase->GetApi(ORT_API_VERSION);
    if (api == nullptr)
    {
        // An onnxruntime older than these headers: report through the oldest API every version has.
        std::string const message = "libtensorkiln_ort.so was built with the ONNX Runtime API " + std::to_string(
            ORT_API_VERSION) + " headers, but this onnxruntime is " + apiBase->GetVersionString()
            + ": upgrade onnxruntime to 1." + std::to_string(ORT_API_VERSION) + " or newer, or rebuild the library "
            "with older headers (kiln build-kernels --ort-include DIR)";
        OrtApi const* oldest = apiBase->GetApi(1);
        return oldest == nullptr ? nullptr : oldest->CreateStatus(ORT_FAIL, message.c_str());
    }
    Ort::InitApi(api);
    return tensorkiln::ort::statusOf("RegisterCustomOps", [options]() { tensorkiln::ort::registerWith(options); });
}
