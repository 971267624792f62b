"""TensorRT header sets for the compile-only tests (no TensorRT library or GPU is ever needed).

TensorRT cannot be installed on these machines, but its public headers can be compiled against. The sets come from
``TK_TRT_HEADER_ROOTS`` (``os.pathsep``-separated folders, each holding the headers or an ``include/`` with them, e.g.
the NVIDIA/TensorRT repository's ``include/`` for 10.x and 11.x) and, always where pip can reach PyPI, TensorRT
10.14's ``NvInfer*.h`` from the wheel ``kernel-lens==2.0.1`` (it has no ``NvOnnxParser.h``), fetched once into
``build/test-trt-headers/`` of the checkout. Under CI a test with no set at all fails instead of skipping.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "build" / "test-trt-headers"
KERNEL_LENS_VERSION = "2.0.1"
KERNEL_LENS = f"kernel-lens=={KERNEL_LENS_VERSION}"


def kernel_lens_headers() -> Path | None:
    """The folder of kernel-lens's TensorRT headers, downloaded and extracted on first use; None if pip cannot."""
    headers = CACHE / "kernel_lens" / "include" / "tensorrt"
    if not (headers / "NvInfer.h").is_file():
        download = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(CACHE),
                                   KERNEL_LENS], capture_output=True, text=True)
        wheels = sorted(CACHE.glob(f"kernel_lens-{KERNEL_LENS_VERSION}-*.whl"))
        if download.returncode != 0 or not wheels:
            return None
        with zipfile.ZipFile(wheels[0]) as wheel:
            wheel.extractall(CACHE, [n for n in wheel.namelist() if n.startswith("kernel_lens/include/tensorrt/")])
    return headers


def header_folder(root: Path) -> Path | None:
    """The folder holding ``NvInferRuntime.h`` under a header root (the root itself or its ``include/``)."""
    for folder in (root, root / "include"):
        if (folder / "NvInferRuntime.h").is_file():
            return folder
    return None


def header_roots(*extra: str) -> dict[str, Path]:
    """Label -> header folder for every set found: ``extra`` roots (e.g. ``$TensorRT_ROOT``), TK_TRT_HEADER_ROOTS,
    then kernel-lens. Skips the calling test when there is none (fails it under CI, where kernel-lens must come)."""
    named = [*extra, *os.environ.get("TK_TRT_HEADER_ROOTS", "").split(os.pathsep)]
    roots = {}
    for entry in filter(None, named):
        folder = header_folder(Path(entry))
        if folder is None:
            pytest.fail(f"{entry} holds no NvInferRuntime.h (itself or in include/): fix TK_TRT_HEADER_ROOTS or "
                        "TensorRT_ROOT")
        roots[re.sub(r"[^A-Za-z0-9._-]+", "_", entry).strip("_")[-60:]] = folder  # a build folder's name
    lens = kernel_lens_headers()
    if lens is not None:
        roots[f"kernel-lens-{KERNEL_LENS_VERSION}"] = lens
    if not roots:
        message = f"no TensorRT headers: set TK_TRT_HEADER_ROOTS or let pip fetch {KERNEL_LENS}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return roots
