"""The native kernels of the custom nodes: where ``libtensorkiln_ort.so`` lives, whether it can serve an export, and
which implementation each custom node of a session runs.

Torch-free (standard library + onnxruntime). ``kiln build-kernels`` (:mod:`.native_build`) builds the library into
:func:`default_library_path` (``~/.cache/tensorkiln/ort/``, or ``$XDG_CACHE_HOME/tensorkiln/ort/``, or
``$TENSORKILN_CACHE_DIR/ort/``) with a build record beside it; ``TENSORKILN_ORT_LIBRARY`` points at another copy.

``load(..., kernels=...)`` asks :func:`plan_kernels` what to do:

* ``"auto"`` (default): register the library when the export has custom nodes and a usable library is there, else
  run the nodes' model-local function bodies (standard ONNX ops), saying why in the report;
* ``"native"``: register the library or fail with :class:`BackendUnavailableError` naming the build command;
* ``"function"``: never load it.

A registered custom-op kernel takes precedence over the model-local function of the same domain and name, so the
same ``model.onnx`` runs either way. The library reports what it registered through session config entries
(``tensorkiln.native.*``, written by ``RegisterCustomOps``, plugins/ort/ortEntry.cpp), which :func:`describe`
turns into each node's label, e.g. ``"native (avx2+fma)"``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import BackendUnavailableError, UsageError
from .version import package_version

KERNEL_CHOICES = ("auto", "native", "function")
LIBRARY_NAME = "libtensorkiln_ort.so"
#: The build record written beside the library (ORT API version, CUDA, sources hash, tensorkiln version).
BUILD_INFO_NAME = "libtensorkiln_ort.json"
ENV_LIBRARY = "TENSORKILN_ORT_LIBRARY"
ENV_CACHE = "TENSORKILN_CACHE_DIR"
BUILD_COMMAND = "kiln build-kernels"
FUNCTION_BODY = "function body"
#: The repository's plugins/ folder: present in a source checkout or an editable install, absent from a wheel.
PLUGINS_DIR = Path(__file__).resolve().parents[1] / "plugins"
#: What the library's build depends on, under plugins/ (the TensorRT adapters, torch binding and tests excluded).
_SOURCE_SUFFIXES = (".h", ".cpp", ".cu", ".map", ".txt", ".json")
_NOT_LIBRARY_SOURCES = ("tests", "torch", "cpu/testing")


def cache_dir() -> Path:
    """tensorkiln's cache folder: ``$TENSORKILN_CACHE_DIR``, else ``$XDG_CACHE_HOME/tensorkiln``, else
    ``~/.cache/tensorkiln``."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "tensorkiln"


def default_library_path() -> Path:
    """Where ``kiln build-kernels`` puts the library and where the runtime looks for it."""
    return cache_dir() / "ort" / LIBRARY_NAME


def library_path() -> Path:
    """``$TENSORKILN_ORT_LIBRARY`` when set, else :func:`default_library_path` (either may not exist)."""
    chosen = os.environ.get(ENV_LIBRARY)
    return Path(chosen).expanduser() if chosen else default_library_path()


def sources_digest(plugins_dir: Path = PLUGINS_DIR) -> str | None:
    """sha256 over the library's sources in a source checkout (None without one): a build records it, and a
    library built from other sources is stale."""
    if not (plugins_dir / "sources.json").is_file():
        return None
    digest = hashlib.sha256()
    for path in sorted(p for p in plugins_dir.rglob("*") if p.is_file() and p.suffix in _SOURCE_SUFFIXES):
        relative = path.relative_to(plugins_dir)
        if any(relative.as_posix().startswith(folder + "/") for folder in _NOT_LIBRARY_SOURCES):
            continue
        digest.update(relative.as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def read_build_info(library: Path) -> dict[str, Any]:
    """The build record beside ``library``, or {} when there is none (a library built by hand with CMake)."""
    path = library.with_name(BUILD_INFO_NAME)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def ort_api_version() -> int:
    """The C API version of the installed onnxruntime: its minor version (1.21 serves API 21)."""
    import onnxruntime as ort

    match = re.match(r"1\.(\d+)", ort.__version__)
    return int(match.group(1)) if match else 0


def _unusable_reason(library: Path, info: dict[str, Any]) -> str | None:
    """Why a library that exists cannot serve this runtime, or None when it can."""
    built_for = info.get("tensorkiln_version")
    if built_for is not None and built_for != package_version():
        return f"it was built for tensorkiln {built_for}, this is {package_version()}"
    recorded, current = info.get("sources_sha256"), sources_digest()
    if recorded is not None and current is not None and recorded != current:
        return "the kernel sources changed since it was built"
    api = info.get("ort_api_version")
    if api is not None and api > ort_api_version():
        import onnxruntime as ort

        return (f"it was built with ONNX Runtime API {api} headers and this onnxruntime is {ort.__version__}: "
                f"upgrade onnxruntime to 1.{api}+, or rebuild with older headers")
    return None


@dataclasses.dataclass(frozen=True)
class KernelPlan:
    """What a session does with the custom nodes: ``library`` to register (None: the function bodies), and, when
    it is None, why (for the report)."""

    kernels: str
    library: Path | None
    reason: str = ""


def plan_kernels(kernels: str, has_custom_nodes: bool) -> KernelPlan:
    """Decide for ``load(..., kernels=...)``; raises for ``"native"`` when the library cannot be used."""
    if kernels not in KERNEL_CHOICES:
        raise UsageError(f"kernels must be one of {', '.join(KERNEL_CHOICES)}, got {kernels!r}")
    if kernels == "function":
        return KernelPlan(kernels, None, "kernels='function'")
    if not has_custom_nodes:
        return KernelPlan(kernels, None, "the export has no custom nodes")
    path = library_path()
    if os.environ.get(ENV_LIBRARY) and not path.is_file():
        raise BackendUnavailableError(f"{ENV_LIBRARY}={str(path)!r} is not a file: point it at a built "
                                      f"{LIBRARY_NAME}, or unset it to use {default_library_path()}")
    if not path.is_file():
        reason = f"no native library at {path}: build it with `{BUILD_COMMAND}`"
    else:
        problem = _unusable_reason(path, read_build_info(path))
        reason = f"the native library at {path} is unusable ({problem}): rebuild it with `{BUILD_COMMAND}`" \
            if problem else ""
    if not reason:
        return KernelPlan(kernels, path)
    if kernels == "native":
        raise BackendUnavailableError(f"kernels='native' cannot be served: {reason}")
    return KernelPlan(kernels, None, reason)


def probe(library: Path) -> dict[str, str]:
    """What the library registers, from a throwaway SessionOptions: cpu_isa, cuda, api_version."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.register_custom_ops_library(str(library))
    keys = ("cpu_isa", "cuda", "api_version")
    return {key: options.get_session_config_entry(f"tensorkiln.native.{key}") for key in keys}


def auto_summary() -> str:
    """One line for ``kiln info``: what kernels="auto" would run the custom nodes on, here."""
    try:
        plan = plan_kernels("auto", True)
        if plan.library is None:
            return f"{FUNCTION_BODY}s ({plan.reason})"
        found = probe(plan.library)
    except Exception as exc:  # a library ORT refuses: auto falls back, and says why
        return f"{FUNCTION_BODY}s (the native library cannot be loaded: {str(exc).splitlines()[0]})"
    cuda = ", CUDA kernels too" if found["cuda"] == "1" else ""
    return f"native kernels ({found['cpu_isa']}{cuda}) from {plan.library}"


def describe(options: Any, providers: Sequence[str], custom_ops: Sequence[str], plan: KernelPlan) -> dict[str, str]:
    """Which implementation each custom node (``domain::op_type``) runs, from the session options the library was
    registered with (``options``) and the session's execution providers."""
    if plan.library is None:
        label = FUNCTION_BODY + (f" ({plan.reason})" if plan.kernels == "auto" and plan.reason else "")
        return {name: label for name in custom_ops}
    isa = options.get_session_config_entry("tensorkiln.native.cpu_isa") or "cpu"
    with_cuda = options.get_session_config_entry("tensorkiln.native.cuda") == "1"
    if providers and providers[0] == "CUDAExecutionProvider":
        label = "native (cuda)" if with_cuda else f"native ({isa}, on the CPU: the library has no CUDA kernels)"
    else:
        label = f"native ({isa})"
    return {name: label for name in custom_ops}


__all__ = ["BUILD_COMMAND", "BUILD_INFO_NAME", "ENV_CACHE", "ENV_LIBRARY", "FUNCTION_BODY", "KERNEL_CHOICES",
           "KernelPlan", "LIBRARY_NAME", "cache_dir", "default_library_path", "describe", "library_path",
           "ort_api_version", "plan_kernels", "probe", "auto_summary", "read_build_info", "sources_digest"]
