"""The CUDA kernels of ``plugins/`` as the CUDA implementation of the ``tensorkiln`` custom ops.

``torch.library.custom_op`` registers each op's pure-PyTorch implementation under the ``CompositeExplicitAutograd``
dispatch key. The extension built here registers C++ kernels for the ``CUDA`` key
(``TORCH_LIBRARY_IMPL(tensorkiln, CUDA, m)`` in ``plugins/torch/registration.cpp``); the dispatcher prefers a
backend key's own kernel over the composite default, so once it is loaded CUDA tensors run the scan / MRA kernels
and every other device keeps the pure implementation (``tests/test_plugins_build.py`` checks that precedence with a
CPU-key kernel; ``tests/test_kernels_gpu.py`` checks the kernels against the pure ops on a GPU).

Loading happens only where CUDA is available, from a prebuilt library or by building the sources with
``torch.utils.cpp_extension.load`` (ninja; the first build takes a few minutes, later ones reuse the build
directory). ``TENSORKILN_CUDA_KERNELS`` chooses: unset or ``auto`` builds or reuses the cached build, a path loads
that prebuilt ``.so``, ``0`` keeps the pure implementation.

    from tensorkiln.reference.ops import cuda_kernels
    cuda_kernels.load()             # explicit: raises if the kernels cannot be built or loaded
    cuda_kernels.load_if_available()  # for import hooks: warns and keeps the pure ops on failure
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch

__all__ = ["PLUGINS_DIR", "extension_sources", "is_loaded", "load", "load_if_available"]

#: The repository's plugins/ folder (present in a source checkout or an editable install).
PLUGINS_DIR = Path(__file__).resolve().parents[2] / "plugins"
ENV_VAR = "TENSORKILN_CUDA_KERNELS"
EXTENSION_NAME = "tensorkiln_cuda_kernels"

_loaded: str | None = None


def extension_sources() -> list[Path]:
    """The extension's sources: the launchers, their host logic and the bindings, from ``plugins/sources.json``
    (the list CMake builds from too)."""
    groups = json.loads((PLUGINS_DIR / "sources.json").read_text())
    return [PLUGINS_DIR / name for group in ("host", "kernels", "torch") for name in groups[group]]


def is_loaded() -> bool:
    return _loaded is not None


def _has_cuda_kernel(op: str) -> bool:
    return "\nCUDA:" in torch._C._dispatch_dump(f"tensorkiln::{op}")


def load(*, verbose: bool = False) -> str | None:
    """Register the CUDA kernels (once). Returns what was loaded, or None when CUDA is unavailable or disabled.

    Raises RuntimeError when the sources are missing or the build fails: an explicit call wants the kernels.
    """
    global _loaded
    if _loaded is not None:
        return _loaded
    choice = os.environ.get(ENV_VAR, "auto").strip()
    if choice == "0" or not torch.cuda.is_available():
        return None
    from . import mega_ema, mra_attention  # noqa: F401  (the op schemas the kernels implement)

    if choice not in ("", "auto", "1"):
        library = Path(choice)
        if not library.is_file():
            raise RuntimeError(f"{ENV_VAR}={choice!r} is neither 0, auto nor an existing prebuilt library")
        torch.ops.load_library(str(library))
        _loaded = str(library)
    else:
        sources = extension_sources()
        missing = [str(path) for path in sources if not path.exists()]
        if missing:
            raise RuntimeError(f"tensorkiln CUDA kernels: sources not found (needs a source checkout): {missing}")
        from torch.utils import cpp_extension

        # No -std: torch chooses the standard its headers need (C++20 for torch 2.13); the sources are C++17-clean.
        flags = ["-O3"]
        cpp_extension.load(
            name=EXTENSION_NAME,
            sources=[str(path) for path in sources],
            extra_include_paths=[str(PLUGINS_DIR)],
            extra_cflags=flags,
            extra_cuda_cflags=flags,
            is_python_module=False,
            verbose=verbose,
        )
        _loaded = f"built {EXTENSION_NAME} from {PLUGINS_DIR}"
    if not _has_cuda_kernel("mega_ema"):
        raise RuntimeError("tensorkiln CUDA kernels loaded but tensorkiln::mega_ema has no CUDA kernel")
    return _loaded


def load_if_available(*, verbose: bool = False) -> str | None:
    """load(), but a failure warns (naming the cause) and leaves the pure-PyTorch implementation in place."""
    try:
        return load(verbose=verbose)
    except Exception as error:  # a missing toolchain must not break the models: they still run, in pure PyTorch
        warnings.warn(
            f"tensorkiln: CUDA kernels unavailable ({error}); the custom ops use their pure-PyTorch implementation "
            f"on CUDA. Set {ENV_VAR}=0 to silence this.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
