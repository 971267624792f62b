"""Execution backends for a session: ONNX Runtime (CPU by default, the CUDA execution provider where
onnxruntime-gpu is installed); TensorRT engines are opened by :mod:`.tensorrt_session`. Torch-free; optional
backends are detected when asked for, and their absence is an error with the install hint.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .errors import BackendUnavailableError, ManifestError, UsageError

BACKENDS = ("auto", "onnxruntime", "tensorrt")
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def choose_providers(backend: str, providers: Sequence[str] | None) -> list[str]:
    """The ORT execution providers for ``backend``: explicit ``providers`` win; "auto" takes CUDA when installed."""
    import onnxruntime as ort

    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "tensorrt":
        if providers:
            raise UsageError("providers are ONNX Runtime's execution providers; backend='tensorrt' takes none")
        return []  # the engine runs on CUDA device 0 (see tensorrt_session.py)
    available = ort.get_available_providers()
    if providers:
        missing = [p for p in providers if p not in available]
        if missing:
            hint = " (pip install onnxruntime-gpu)" if CUDA in missing else ""
            raise BackendUnavailableError(f"execution provider {', '.join(missing)} is not in this onnxruntime "
                                          f"build{hint}; available: {', '.join(available)}")
        return list(providers)
    return [CUDA, CPU] if CUDA in available else [CPU]


def ort_session(model_path: Path, providers: Sequence[str], threads: int | None, precision: str,
                custom_ops_library: Path | None = None):
    """An ORT InferenceSession over the exported file, with every graph optimisation on; ``custom_ops_library``
    (libtensorkiln_ort.so) is registered first when given, so its kernels run the custom nodes."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: notes on unused initializers are not the user's concern
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    if custom_ops_library is not None:
        try:
            options.register_custom_ops_library(str(custom_ops_library))
        except Exception as exc:
            raise BackendUnavailableError(f"ONNX Runtime could not load the native kernels {custom_ops_library}: "
                                          f"{str(exc).splitlines()[0]}. Rebuild them with `kiln build-kernels`"
                                          ) from None
    try:
        return ort.InferenceSession(str(model_path), options, providers=list(providers))
    except Exception as exc:
        text = str(exc)
        if precision == "fp16" and ("NOT_IMPLEMENTED" in text or "Could not find an implementation" in text):
            raise BackendUnavailableError(
                f"ONNX Runtime's {', '.join(providers)} cannot run this fp16 export ({text.splitlines()[0]}). fp16 "
                "exports are meant for GPUs: install onnxruntime-gpu, or export with --precision fp32 for CPU"
            ) from None
        if type(exc).__name__ not in ("InvalidProtobuf", "InvalidGraph", "NoSuchFile"):
            raise
        first = text.splitlines()[0] if text else repr(exc)
        raise ManifestError(f"ONNX Runtime cannot load {str(model_path)!r} ({first}): "
                            "the file is damaged or not the export's model; load it with check_files=True to compare "
                            "it with its manifest, or re-export it") from None
