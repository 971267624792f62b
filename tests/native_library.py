"""``libtensorkiln_ort.so`` for the tests: built once per test session with ``kiln build-kernels``' own function
(warnings as errors, CPU kernels), into ``build/test-native/`` of the checkout, whose build tree and fetched ORT
headers persist, so later sessions only recompile what changed. Plus small helpers that open ORT sessions over a
model with and without the library.

The tests skip only where the build truly cannot run here: no C++ compiler, no CMake/Ninja, or ONNX Runtime's
headers unreachable. Under CI (``CI`` set) even that fails, so that CI always runs the native tests.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tensorkiln.runtime import native
from tensorkiln.runtime.errors import BackendUnavailableError

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "build" / "test-native"
LIBRARY = CACHE / "ort" / native.LIBRARY_NAME

_built: Path | None = None


def _cannot_build_here(error: BackendUnavailableError) -> str | None:
    """Why the build could not even start on this machine (a skip), or None for a real failure."""
    text = str(error)
    if not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        return "no C++ compiler"
    if "needs cmake" in text or "needs ninja" in text or "cannot get ONNX Runtime" in text:
        return text.splitlines()[0]
    return None


def build_once() -> Path:
    """The library, built on first use in this session (a no-op rebuild when nothing changed)."""
    global _built
    if _built is None:
        from tensorkiln.runtime.native_build import build_kernels

        try:
            _built = build_kernels(cuda="off", destination=LIBRARY, cache=CACHE, warnings_as_errors=True,
                                   jobs=2, log=lambda message: None)
        except BackendUnavailableError as error:
            reason = _cannot_build_here(error)
            if reason is None or os.environ.get("CI"):
                raise
            pytest.skip(f"libtensorkiln_ort.so cannot be built here: {reason}")
    return _built


def session(model: onnx.ModelProto, library: Path | None, threads: int = 2,
            profile_prefix: str | None = None) -> ort.InferenceSession:
    """An ORT CPU session over ``model``, with the native kernels registered when ``library`` is given."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    if library is not None:
        options.register_custom_ops_library(str(library))
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run(sess: ort.InferenceSession, arrays) -> list[np.ndarray]:
    names = [i.name for i in sess.get_inputs()]
    return sess.run(None, {name: np.asarray(a) for name, a in zip(names, arrays)})
