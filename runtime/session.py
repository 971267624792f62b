"""A session over one ``kiln export`` folder: HF-named numpy inputs in, HF-named numpy outputs out.

Torch-free. ``load`` reads and checks the manifest (and, by default, every file's sha256), builds the backend
session, and returns a :class:`Session`:

    session = load("exports/pythia")                      # ONNX Runtime, CPU (CUDA where onnxruntime-gpu is)
    out = session.run(input_ids=ids, attention_mask=mask)  # {"logits": ...}
    tokens = session.generate(ids, max_new_tokens=20)      # causal LMs, with the exported KV cache
    session = load("exports/mra", kernels="native")       # the custom nodes on libtensorkiln_ort.so's kernels
    session = load("exports/mra", backend="tensorrt")     # a TensorRT engine (tensorrt_session.py; needs a GPU)
    session.custom_node_implementations                   # {"tensorkiln::MraAttention": "native (avx2+fma)"}
    text = session.generate(text="The river", max_new_tokens=20)   # through the export's tokenizer
    out = session.run(text=["a sentence", "another"])      # encoders: tokenized, padded, truncated with a warning

``run`` is safe to call from several threads at once: it keeps no state between calls, ONNX Runtime's
``InferenceSession.run`` is thread-safe, and a TensorRT session runs one call at a time. Text needs HF's
``tokenizers`` (``pip install 'tensorkiln[text]'``) and an export that carries a tokenizer; ``session.tokenizer`` is
loaded on first use.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import backends, native
from . import manifest as mf
from .errors import ManifestError, RuntimeInputError, UsageError
from .hub import hub_hint
from .inputs import ModelLimits, prepare
from .jsonfile import read_json_object

if TYPE_CHECKING:
    from .tokenizer import Tokenizer


class Session:
    """One loaded export. Build it with :func:`load`."""

    def __init__(self, folder: Path, manifest: mf.Manifest, config: dict[str, Any], backend: str,
                 providers: Sequence[str], threads: int | None, kernels: str = "auto",
                 tensorrt: Mapping[str, Any] | None = None):
        self.folder = folder
        self.manifest = manifest
        self.config = config
        self.limits = ModelLimits.from_config(config)
        self.backend = backend
        self.kernels = kernels
        #: TensorRT sessions: the cached engine file (None when the cache could not be written).
        self.engine_path: Path | None = None
        custom_ops = [f"{node.domain}::{node.op_type}" for node in manifest.custom_nodes]
        if backend == "tensorrt":
            from .tensorrt_session import open_engine

            self._session = open_engine(folder / manifest.model_file, manifest, kernels=kernels, **(tensorrt or {}))
            self.engine_path = self._session.path
            self.providers: tuple[str, ...] = ()
            #: Which implementation runs each custom node, e.g. {"tensorkiln::MegaEma": "native (avx2+fma)"} or
            #: "function body (...why...)"; TensorRT: "plugin (libtensorkiln_plugins.so)" or "function body (...)";
            #: empty for an export without custom nodes.
            self.custom_node_implementations: dict[str, str] = dict(self._session.custom_node_implementations)
            graph_inputs, self._output_names = self._session.input_names, self._session.output_names
            # TensorRT drops inputs the graph never reads; every one it keeps must be the manifest's
            mismatch = any(name not in self.input_names for name in graph_inputs)
        else:
            self._session, plan = _open(folder / manifest.model_file, manifest, providers, threads, kernels)
            self.providers = tuple(self._session.get_providers())
            self.custom_node_implementations = native.describe(
                self._session.get_session_options(), self.providers, custom_ops, plan)
            graph_inputs = [i.name for i in self._session.get_inputs()]
            self._output_names = [o.name for o in self._session.get_outputs()]
            mismatch = graph_inputs != self.input_names
        if mismatch:
            raise ManifestError(f"the graph's inputs {graph_inputs} differ from the manifest's {self.input_names}: "
                                "re-export the model")
        if sorted(self._output_names) != sorted(o.name for o in manifest.outputs):
            raise ManifestError(f"the graph's outputs {self._output_names} differ from the manifest's "
                                f"{[o.name for o in manifest.outputs]}: re-export the model")
        self._tokenizer: Tokenizer | None = None
        self._generation_defaults: dict[str, Any] | None = None

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.manifest.inputs]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.manifest.outputs]

    @property
    def is_causal_lm(self) -> bool:
        return self.manifest.head == "ForCausalLM"

    @property
    def tokenizer(self) -> Tokenizer:
        """The export's tokenizer (HF ``tokenizers``); :class:`TokenizerUnavailableError` when the export has
        none or the library is not installed."""
        if self._tokenizer is None:
            from .tokenizer import Tokenizer

            rules = self.manifest.length_rules
            self._tokenizer = Tokenizer.load(self.folder, self.manifest.text, self.config,
                                             rules.fixed_length or rules.max_length)
        return self._tokenizer

    @property
    def generation_defaults(self) -> dict[str, Any]:
        """The export's ``generation_config.json`` (empty without one): the defaults of ``generate``."""
        if self._generation_defaults is None:
            from .generation_config import read_generation_config

            self._generation_defaults = read_generation_config(self.folder, self.manifest.text.generation_config)
        return self._generation_defaults

    def run(self, text: Any = None, *, text_pair: Any = None, **inputs: Any) -> dict[str, np.ndarray]:
        """Run the model on HF-named inputs (``input_ids`` and optionally ``attention_mask``,
        ``token_type_ids``, ``position_ids``, ``past_key_values.{layer}.{kind}``); return HF-named outputs.
        ``text`` (a string or a list; ``text_pair`` for pairs such as question and context) is tokenized with the
        export's tokenizer instead (see :mod:`tensorkiln.runtime.text`)."""
        if text is not None or text_pair is not None:
            if inputs:
                raise RuntimeInputError(f"give text or HF-named inputs, not both (got text and {sorted(inputs)})")
            if text is None:
                raise RuntimeInputError("text_pair needs text (the first segment)")
            from .text import encode_inputs

            inputs = encode_inputs(self, text, text_pair)[0]
        prepared = prepare(self.manifest, self.limits, inputs)
        values = self._session.run(self._output_names, prepared.feeds)
        return prepared.trim(self.manifest, dict(zip(self._output_names, values)))

    def generate(self, input_ids: Any = None, max_new_tokens: int | None = None, **options: Any) -> Any:
        """Continue each prompt by up to ``max_new_tokens`` tokens: ids in, ids out, or ``text=...`` in, text out;
        see :func:`tensorkiln.runtime.generate.generate`."""
        from .generate import generate

        return generate(self, input_ids, max_new_tokens, **options)

    def stream(self, input_ids: Any = None, max_new_tokens: int | None = None, **options: Any) -> Iterator[Any]:
        """Yield each step's new tokens, shape (batch,), or with ``text=...`` the generated text in pieces; see
        :func:`tensorkiln.runtime.generate.stream`."""
        from .generate import stream

        return stream(self, input_ids, max_new_tokens, **options)

    def __repr__(self) -> str:
        kernels = "".join(f", {name}: {label}" for name, label in self.custom_node_implementations.items())
        tensorrt = self.backend == "tensorrt"
        where = f"engine={str(self.engine_path)!r}" if tensorrt else f"providers={list(self.providers)}"
        return (f"Session({self.manifest.hf_class}, {self.manifest.precision}, backend={self.backend!r}, "
                f"{where}{kernels})")


def _open(model_path: Path, manifest: mf.Manifest, providers: Sequence[str], threads: int | None, kernels: str):
    """(the ORT session, the kernel plan it was opened with). Under kernels="auto" a library that ORT refuses
    leaves the function bodies in charge, and the plan says why; "native" lets the error through."""
    plan = native.plan_kernels(kernels, bool(manifest.custom_nodes))
    if plan.library is None:
        return backends.ort_session(model_path, providers, threads, manifest.precision), plan
    try:
        return backends.ort_session(model_path, providers, threads, manifest.precision, plan.library), plan
    except Exception as exc:
        if kernels == "native":
            raise
        reason = f"ONNX Runtime refused the native kernels: {str(exc).splitlines()[0]}"
        fallback = native.KernelPlan(kernels, None, reason)
        return backends.ort_session(model_path, providers, threads, manifest.precision), fallback


def load(export_dir: str | Path, backend: str = "auto", *, providers: Sequence[str] | None = None,
         threads: int | None = None, check_files: bool = True, kernels: str = "auto",
         engine_cache: str | Path | None = None, tensorrt_plugins: str | Path | None = None) -> Session:
    """Load a ``kiln export`` folder.

    ``backend``: "auto" or "onnxruntime" (ONNX Runtime; CUDA execution provider first where installed), or
    "tensorrt" (a TensorRT engine built for the export, or loaded from the engine cache; needs the ``tensorrt``
    and ``polygraphy`` packages and an NVIDIA GPU, see :mod:`tensorkiln.runtime.tensorrt_session`).
    ``providers`` overrides ORT's execution providers. ``threads``: ORT's intra-op threads (default: ORT's
    choice). ``check_files``: verify every file's sha256 against the manifest.
    ``kernels``: how the custom nodes (MraAttention, MegaEma) run: "auto" on the native kernels of
    libtensorkiln_ort.so where it is built (``kiln build-kernels``), else on their function bodies; "native" on
    the native kernels or a BackendUnavailableError; "function" on the function bodies (standard ONNX ops). Under
    TensorRT the native kernels are the plugins of libtensorkiln_plugins.so.
    ``Session.custom_node_implementations`` says which ran.
    ``engine_cache`` (TensorRT): the engine cache folder (default: the tensorkiln cache folder's ``engines/``).
    ``tensorrt_plugins`` (TensorRT): libtensorkiln_plugins.so (default: ``$TENSORKILN_TRT_PLUGINS``, else the
    source checkout's build/plugins/, else none: the custom nodes' function bodies are inlined).
    """
    folder = Path(export_dir)
    if not folder.is_dir():
        raise ManifestError(f"{str(folder)!r} is not a folder; pass the OUT_DIR that `kiln export` wrote."
                            + hub_hint(folder, export=True))
    if kernels not in native.KERNEL_CHOICES:
        raise UsageError(f"kernels must be one of {', '.join(native.KERNEL_CHOICES)}, got {kernels!r}")
    chosen = backends.choose_providers(backend, providers)
    manifest = mf.read_manifest(folder, check_files=check_files)
    mf.model_files(folder, manifest)  # the graph's external data: inside the folder and hashed, or refused
    config = read_json_object(mf.file_path(folder, manifest, manifest.config_file), error=ManifestError,
                              what="the export's config")
    for name in ("input_ids", "attention_mask"):
        if name not in [i.name for i in manifest.inputs]:
            raise ManifestError(f"{str(folder)!r}: the manifest has no input {name!r}, which every export takes: "
                                "re-export the model")
    if backend == "tensorrt":
        options = {"engine_cache": engine_cache, "plugins": tensorrt_plugins}
        return Session(folder, manifest, config, "tensorrt", (), threads, kernels, tensorrt=options)
    return Session(folder, manifest, config, "onnxruntime", chosen, threads, kernels)


__all__ = ["RuntimeInputError", "Session", "load"]
