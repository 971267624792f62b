/*
 * session.cpp: load() and Session::run: runtime/session.py's load and Session in C++. The checks run in the Python
 * order: the folder, the kernels choice, the backend, the manifest (names inside the folder, every sha256), the
 * external data, config.json, the inputs every export takes, config.json's limits, the backend's session, and the
 * graph's inputs and outputs against the manifest.
 */
#include "sessionImpl.h"

#include "exportFolder.h"
#include "nativeKernels.h"
#include "ortApi.h"
#include "ortBackend.h"
#include "ortLibrary.h"
#include "paths.h"
#include "pyFormat.h"
#include "trt/trtLoader.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#ifndef TK_VERSION
#define TK_VERSION "0+unknown"
#endif

namespace tensorkiln
{
namespace
{

namespace fs = std::filesystem;

std::vector<std::string> names(std::vector<TensorInfo> const& infos)
{
    std::vector<std::string> out;
    for (auto const& info : infos)
        out.push_back(info.name);
    return out;
}

void checkGraph(Backend const& backend, Manifest const& manifest)
{
    std::vector<std::string> const graphInputs = backend.inputNames();
    if (graphInputs != names(manifest.inputs))
    {
        throw Error(ErrorKind::kMANIFEST, "the graph's inputs " + pyStringList(graphInputs)
                + " differ from the manifest's " + pyStringList(names(manifest.inputs)) + ": re-export the model");
    }
    std::vector<std::string> graphOutputs = backend.outputNames();
    std::vector<std::string> manifestOutputs = names(manifest.outputs);
    std::vector<std::string> const shown = graphOutputs;
    std::sort(graphOutputs.begin(), graphOutputs.end());
    std::sort(manifestOutputs.begin(), manifestOutputs.end());
    if (graphOutputs != manifestOutputs)
    {
        throw Error(ErrorKind::kMANIFEST, "the graph's outputs " + pyStringList(shown) + " differ from the manifest's "
                + pyStringList(names(manifest.outputs)) + ": re-export the model");
    }
}

} // namespace

NamedTensors Session::Impl::run(NamedTensors const& inputs) const
{
    Prepared const prepared = prepare(manifest, limits, inputs);
    return trim(manifest, prepared, backend->run(prepared.feeds));
}

Json const& Session::Impl::defaults() const
{
    std::lock_guard<std::mutex> lock(generationDefaultsMutex);
    if (!generationDefaults)
    {
        if (!manifest.generationConfig)
        {
            generationDefaults = Json::object();
        }
        else
        {
            std::string const path = pyPath(folder + "/" + *manifest.generationConfig);
            std::ifstream file(path, std::ios::binary);
            std::stringstream text;
            text << file.rdbuf();
            Json data;
            try
            {
                if (!file)
                {
                    throw std::runtime_error("cannot be opened");
                }
                data = Json::parse(text.str());
            }
            catch (std::exception const& error)
            {
                throw Error(ErrorKind::kMANIFEST, pyRepr(path) + " cannot be read as JSON: " + error.what());
            }
            if (!data.is_object())
            {
                throw Error(ErrorKind::kMANIFEST, pyRepr(path) + " must hold a JSON object");
            }
            generationDefaults = data;
        }
    }
    return *generationDefaults;
}

Session::Session(std::shared_ptr<Impl const> impl)
    : mImpl(std::move(impl))
{
}

NamedTensors Session::run(NamedTensors const& inputs) const
{
    return mImpl->run(inputs);
}

std::vector<std::string> Session::inputNames() const
{
    return names(mImpl->manifest.inputs);
}

std::vector<std::string> Session::outputNames() const
{
    return names(mImpl->manifest.outputs);
}

std::string const& Session::exportDir() const
{
    return mImpl->folder;
}

std::string const& Session::modelType() const
{
    return mImpl->manifest.modelType;
}

std::string const& Session::hfClass() const
{
    return mImpl->manifest.hfClass;
}

std::string const& Session::precision() const
{
    return mImpl->manifest.precision;
}

bool Session::isCausalLm() const
{
    return mImpl->manifest.head == "ForCausalLM";
}

int64_t Session::maxLength() const
{
    return mImpl->manifest.lengthRules.maxLength;
}

std::string const& Session::backend() const
{
    return mImpl->backendName;
}

std::vector<std::string> Session::providers() const
{
    return mImpl->backend->providers();
}

std::map<std::string, std::string> Session::customNodeImplementations() const
{
    return mImpl->backend->customNodeImplementations();
}

Session load(std::string const& exportDir, LoadOptions const& options)
{
    std::string const folder = pyPath(exportDir);
    std::error_code ec;
    if (!fs::is_directory(folder, ec))
    {
        throw Error(ErrorKind::kMANIFEST, pyRepr(folder) + " is not a folder; pass the OUT_DIR that `kiln export` wrote."
                + hubHint(folder, true));
    }
    checkKernelsChoice(options.kernels);
    std::string const& backend = options.backend;
    if (backend != "auto" && backend != "onnxruntime" && backend != "tensorrt")
    {
        throw Error(ErrorKind::kUSAGE, "unknown backend " + pyRepr(backend)
                + "; choose one of auto, onnxruntime, tensorrt");
    }
    OrtRuntime ort;
    std::vector<std::string> providers;
    if (backend == "tensorrt")
    {
        requireTensorRtBackend();
    }
    else
    {
        ort = ortRuntime(options.onnxruntimeLibrary);
        providers = chooseProviders(options.providers);
    }
    auto impl = std::make_shared<Session::Impl>();
    impl->folder = folder;
    impl->manifest = readManifest(folder, options.checkFiles);
    std::string const model = checkModelFiles(folder, impl->manifest);
    impl->config = readJsonObject(filePath(folder, impl->manifest, impl->manifest.configFile), ErrorKind::kMANIFEST,
        "the export's config");
    for (char const* name : {"input_ids", "attention_mask"})
    {
        if (!impl->manifest.hasInput(name))
        {
            throw Error(ErrorKind::kMANIFEST, pyRepr(folder) + ": the manifest has no input " + pyRepr(name)
                    + ", which every export takes: re-export the model");
        }
    }
    impl->limits = modelLimits(impl->config);
    if (backend == "tensorrt")
    {
        impl->backendName = "tensorrt";
        impl->backend = openTensorRtBackend(model, impl->manifest, options);
    }
    else
    {
        impl->backendName = "onnxruntime";
        impl->backend = openOrtBackend(model, impl->manifest, providers, options.threads, options.kernels, ort.version);
    }
    checkGraph(*impl->backend, impl->manifest);
    return Session(std::move(impl));
}

char const* version() noexcept
{
    return TK_VERSION;
}

} // namespace tensorkiln
