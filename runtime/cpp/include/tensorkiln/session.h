/*
 * tensorkiln/session.h: load a `kiln export` folder and run it from C++, with the Python runtime's contract.
 *
 *   tensorkiln::Session session = tensorkiln::load("exports/pythia");
 *   tensorkiln::NamedTensors out = session.run({{"input_ids", tensorkiln::Tensor::of<int64_t>({1, 3}, {5, 6, 7})}});
 *   tensorkiln::GenerationOptions options;
 *   options.maxNewTokens = 32;
 *   tensorkiln::GenerationResult result = session.generate(ids, nullptr, options, printStep);
 *
 * load() reads manifest.json (nlohmann-json), checks every file's sha256 (OpenSSL), keeps every file name inside the
 * folder (no absolute names, no "..", no symlink out; the model, its config and its external-data files must be
 * hashed), and opens the backend. run() takes HF-named inputs and fills what may be left out as HF's models do
 * (attention_mask all ones, token_type_ids zeros, GPT-NeoX's position_ids from the mask, an empty cache: a
 * prefill; Nystromformer's fixed-length graph padded and its per-token outputs trimmed back). Every problem is a
 * tensorkiln::Error with the Python runtime's message (see error.h).
 *
 * run() and generate() are safe to call from any number of threads at once on one Session: a Session holds no
 * per-call state, and ONNX Runtime's Run is thread-safe. Copies of a Session share the loaded model.
 */
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tensorkiln/error.h"
#include "tensorkiln/generation.h"
#include "tensorkiln/tensor.h"

namespace tensorkiln
{

//! Inputs or outputs by HF name ("input_ids", "logits", "past_key_values.0.key", ...).
using NamedTensors = std::map<std::string, Tensor>;

struct LoadOptions
{
    //! "auto" or "onnxruntime" (ONNX Runtime), or "tensorrt" (an engine built or loaded from the engine cache;
    //! needs libtensorkiln_runtime_tensorrt.so, built where TensorRT is installed).
    std::string backend{"auto"};
    //! ONNX Runtime execution providers ("CPUExecutionProvider", "CUDAExecutionProvider"); empty: CUDA first where
    //! the loaded onnxruntime has it, else CPU.
    std::vector<std::string> providers;
    //! ONNX Runtime's intra-op threads; 0: its own choice.
    int threads{0};
    //! Check every file's sha256 against the manifest (a changed or truncated file is a ManifestError).
    bool checkFiles{true};
    //! How the custom nodes run: "auto" (libtensorkiln_ort.so's native kernels where built, else the model-local
    //! function bodies), "native" (or a BackendUnavailableError), "function".
    std::string kernels{"auto"};
    //! libonnxruntime.so to load; empty: $TENSORKILN_ONNXRUNTIME_LIBRARY, then the onnxruntime wheel of
    //! $VIRTUAL_ENV, then the one recorded at build time, then the system's libonnxruntime.so.
    std::string onnxruntimeLibrary;
    //! TensorRT: where engines are cached; empty: the tensorkiln cache folder's engines/.
    std::string engineCacheDir;
    //! TensorRT: libtensorkiln_plugins.so; empty: $TENSORKILN_TRT_PLUGINS, else the custom nodes are inlined.
    std::string tensorrtPlugins;
};

class Session
{
public:
    //! Run the model on HF-named inputs; returns HF-named outputs (every output of the graph).
    NamedTensors run(NamedTensors const& inputs) const;

    //! Causal LMs: continue each prompt (input_ids (batch, prompt), padded on the left; attentionMask optional,
    //! 0/1 of the same shape) with the exported cache. `onStep` (optional) gets each step's tokens as they come.
    GenerationResult generate(Tensor const& inputIds, Tensor const* attentionMask,
        GenerationOptions const& options = {}, StepCallback const& onStep = {}) const;
    //! The same with the options as a JSON object of HF's names (a service's request body, say).
    GenerationResult generate(Tensor const& inputIds, Tensor const* attentionMask, std::string_view optionsJson,
        StepCallback const& onStep = {}) const;

    std::vector<std::string> inputNames() const;
    std::vector<std::string> outputNames() const;
    std::string const& exportDir() const;
    std::string const& modelType() const;  //!< "gpt_neox", "mra", ...
    std::string const& hfClass() const;    //!< "GPTNeoXForCausalLM", ...
    std::string const& precision() const;  //!< "fp32", "fp16", "int8"
    bool isCausalLm() const;
    int64_t maxLength() const;             //!< the longest sequence (cached + new tokens) the model takes
    std::string const& backend() const;    //!< "onnxruntime" or "tensorrt"
    std::vector<std::string> providers() const;
    //! Which implementation runs each custom node, e.g. {"tensorkiln::MegaEma": "native (avx2+fma)"}, as the
    //! Python Session.custom_node_implementations says.
    std::map<std::string, std::string> customNodeImplementations() const;

    struct Impl;
    explicit Session(std::shared_ptr<Impl const> impl);

private:
    std::shared_ptr<Impl const> mImpl;
};

//! Load a `kiln export` folder (see the top of this file).
Session load(std::string const& exportDir, LoadOptions const& options = {});

//! This library's version (the tensorkiln version it was built from).
char const* version() noexcept;

} // namespace tensorkiln
