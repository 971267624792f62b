"""The TensorRT backend of a session (``load(..., backend="tensorrt")``): the thin part that calls TensorRT.

It loads ``libtensorkiln_plugins.so`` into TensorRT's plugin registry, parses ``model.onnx`` with the ONNX parser's
``kENABLE_PLUGIN_OVERRIDE`` flag where that TensorRT has it (else TensorRT inlines the custom nodes' model-local
function bodies), builds one engine for the profile of :mod:`.tensorrt_engine` (a strongly typed network, so the
export's own precision; TF32 off for fp32), caches it under the shared key, and runs it through Polygraphy's
``TrtRunner``, which owns the CUDA buffers. Everything that needs no TensorRT (profile, key, cache, plugin
decision) is in :mod:`.tensorrt_engine` and tested everywhere; this module is verified only where TensorRT and an
NVIDIA GPU are installed (tests/test_tensorrt_engine.py, marked gpu), which this project's CI is not.

TensorRT and Polygraphy are optional imports, made inside functions: the runtime stays numpy + onnxruntime.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import manifest as mf
from .errors import BackendUnavailableError
from .tensorrt_engine import (
    INSTALL_HINT,
    EngineCache,
    EngineKeyFields,
    InputProfile,
    PluginDecision,
    check_feeds,
    file_sha256,
    find_plugin_library,
    plugin_decision,
    profile_text,
    profiles_from_manifest,
    tensorrt_version_text,
)

#: cuDeviceGetAttribute's CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR / _MINOR.
_CC_MAJOR, _CC_MINOR = 75, 76
#: Plugin libraries loaded into TensorRT's registry in this process, by sha256: each is loaded once.
_LOADED_PLUGINS: dict[str, Any] = {}
_PLUGINS_LOCK = threading.Lock()


def require_tensorrt() -> Any:
    """The ``tensorrt`` module, or a BackendUnavailableError saying what to install."""
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendUnavailableError(f"backend 'tensorrt' needs NVIDIA TensorRT's Python package ({exc}): "
                                      f"{INSTALL_HINT}; or use backend='onnxruntime'") from None
    try:
        import polygraphy.backend.trt  # noqa: F401  (TrtRunner: the engine's CUDA buffers and stream)
    except ImportError as exc:
        raise BackendUnavailableError(f"backend 'tensorrt' runs engines through Polygraphy's TrtRunner ({exc}): "
                                      "pip install polygraphy") from None
    return tensorrt


def gpu_device() -> tuple[str, str]:
    """(name, compute capability "major.minor") of CUDA device 0, from the NVIDIA driver's libcuda; a
    BackendUnavailableError where there is no driver or no GPU."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        raise BackendUnavailableError("backend 'tensorrt' needs an NVIDIA GPU and its driver: libcuda.so.1 is not on "
                                      "this machine. Use backend='onnxruntime' here") from None
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
        raise BackendUnavailableError("backend 'tensorrt' needs an NVIDIA GPU: the driver sees none (check "
                                      "nvidia-smi and CUDA_VISIBLE_DEVICES). Use backend='onnxruntime' here")
    device, major, minor = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
    name = ctypes.create_string_buffer(256)
    status = [cuda.cuDeviceGet(ctypes.byref(device), 0), cuda.cuDeviceGetName(name, len(name), device),
              cuda.cuDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, device),
              cuda.cuDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, device)]
    if any(status):
        raise BackendUnavailableError(f"the NVIDIA driver could not describe CUDA device 0 (CUresult {max(status)})")
    return name.value.decode(errors="replace"), f"{major.value}.{minor.value}"


def _load_plugins(trt: Any, library: Path, digest: str) -> str | None:
    """Load ``library`` into TensorRT's plugin registry (once a process); None, or why TensorRT refused it."""
    with _PLUGINS_LOCK:
        if digest in _LOADED_PLUGINS:
            return None
        try:
            handle = trt.get_plugin_registry().load_library(str(library))
        except Exception as exc:  # TensorRT's binding raises its own error types
            return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if handle is None:
            return "IPluginRegistry.load_library returned no library (TensorRT's log above says why)"
        _LOADED_PLUGINS[digest] = handle
        return None


def _plugins(trt: Any, manifest: mf.Manifest, kernels: str, explicit: str | Path | None,
             version: str) -> tuple[str, PluginDecision]:
    """(the key's plugins field: the loaded library's sha256 or "none", what the custom nodes run on)."""
    if not manifest.custom_nodes:
        return "none", PluginDecision(False, "")
    if kernels == "function":
        return "none", PluginDecision(False, "function body (kernels='function')")
    library = find_plugin_library(explicit)
    digest, problem = "none", None
    if library is not None:
        digest = file_sha256(library)
        problem = _load_plugins(trt, library, digest)
    has_flag = hasattr(trt.OnnxParserFlag, "ENABLE_PLUGIN_OVERRIDE")
    decision = plugin_decision(True, library is not None and problem is None, has_flag, version)
    if problem is not None:
        digest = "none"
        decision = PluginDecision(False, f"function body (TensorRT could not load {library}: {problem}; rebuild it "
                                         f"against TensorRT {version})")
    if kernels == "native" and not decision.set_override_flag:
        raise BackendUnavailableError("kernels='native' cannot be served by TensorRT: the custom nodes would run on "
                                      f"their {decision.custom_nodes_run_on}")
    return digest, decision


def _build(trt: Any, logger: Any, model_path: Path, precision: str, profiles: Sequence[InputProfile],
           override: bool) -> bytes:
    """A serialised engine of ``model_path`` for one optimisation profile."""
    builder = trt.Builder(logger)
    # Strongly typed, as the C++ runtime builds it (one cache key, one kind of engine): the export's own precision
    # decides each layer's type. TensorRT 11 types every network strongly and drops the flag.
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(0 if strongly_typed is None else 1 << int(strongly_typed))
    parser = trt.OnnxParser(network, logger)
    if override:
        parser.set_flag(trt.OnnxParserFlag.ENABLE_PLUGIN_OVERRIDE)
    if not parser.parse_from_file(str(model_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendUnavailableError(f"TensorRT's ONNX parser cannot read {str(model_path)!r}: {errors}")
    config = builder.create_builder_config()
    if precision == "fp32":  # TensorRT rounds fp32 matmuls to TF32 by default, which breaks the fp32 rule
        config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    network_inputs = {network.get_input(i).name for i in range(network.num_inputs)}
    for shapes in profiles:
        if shapes.name in network_inputs:  # an input the graph never reads is not the network's
            profile.set_shape(shapes.name, shapes.min, shapes.opt, shapes.max)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendUnavailableError(f"TensorRT could not build an engine for {str(model_path)!r} (its log above "
                                      "says why); backend='onnxruntime' runs the export meanwhile")
    return bytes(serialized)


class TensorRtEngine:
    """One engine and its runner; ``run`` is serialised by a lock (one execution context)."""

    def __init__(self, trt: Any, runtime: Any, engine: Any, path: Path | None, profiles: Sequence[InputProfile],
                 decision: PluginDecision, custom_ops: Sequence[str]):
        from polygraphy.backend.trt import TrtRunner

        self._runtime, self._engine, self.path, self.profiles = runtime, engine, path, list(profiles)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if n not in self.input_names]
        self.custom_node_implementations = {name: decision.custom_nodes_run_on for name in custom_ops}
        self._lock = threading.Lock()
        self._runner = TrtRunner(engine)
        self._runner.activate()

    def run(self, output_names: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        check_feeds(self.profiles, feeds)
        with self._lock:
            outputs = self._runner.infer({name: np.ascontiguousarray(feeds[name]) for name in self.input_names})
            # TrtRunner reuses its host buffers from call to call: copy before the next run overwrites them
            return [np.array(outputs[name], copy=True) for name in output_names]

    def close(self) -> None:
        if getattr(self, "_runner", None) is not None and self._runner.is_active:
            self._runner.deactivate()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: CUDA may already be gone
            pass


def open_engine(model_path: Path, manifest: mf.Manifest, *, kernels: str = "auto",
                plugins: str | Path | None = None, engine_cache: str | Path | None = None) -> TensorRtEngine:
    """The export's engine, loaded from the engine cache or built (and cached)."""
    if manifest.precision == "int8":
        raise BackendUnavailableError("int8 exports are ONNX Runtime's dynamic quantization (MatMulInteger), which "
                                      "TensorRT does not run: load the fp32 or fp16 export with backend='tensorrt', "
                                      "or this one with backend='onnxruntime'")
    trt = require_tensorrt()
    device, capability = gpu_device()
    version = tensorrt_version_text(trt.__version__)
    logger = trt.Logger(trt.Logger.WARNING)
    plugins_sha256, decision = _plugins(trt, manifest, kernels, plugins, version)
    profiles = profiles_from_manifest(manifest)
    fields = EngineKeyFields(model_sha256=manifest.files[manifest.model_file], tensorrt_version=version,
                             device_name=device, compute_capability=capability, precision=manifest.precision,
                             plugins_sha256=plugins_sha256, plugin_override=decision.set_override_flag,
                             profile=profile_text(profiles))
    runtime = trt.Runtime(logger)
    cached = EngineCache(engine_cache).load_or_build(
        fields, lambda: _build(trt, logger, model_path, manifest.precision, profiles, decision.set_override_flag),
        runtime.deserialize_cuda_engine)
    custom_ops = [f"{node.domain}::{node.op_type}" for node in manifest.custom_nodes]
    return TensorRtEngine(trt, runtime, cached.engine, cached.path, profiles, decision, custom_ops)


__all__ = ["TensorRtEngine", "gpu_device", "open_engine", "require_tensorrt"]
