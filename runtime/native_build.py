"""``kiln build-kernels``: build ``libtensorkiln_ort.so`` from a source checkout's ``plugins/`` with CMake and Ninja,
and install it where the runtime looks (:func:`tensorkiln.runtime.native.default_library_path`).

Torch-free. It needs a C++17 compiler, CMake >= 3.24 and Ninja (from PATH, or the ``cmake`` / ``ninja`` PyPI
packages: ``pip install 'tensorkiln[kernels]'``) and ONNX Runtime's headers (:mod:`.ort_headers` fetches them).
The build tree is kept in the cache folder, so a second run only recompiles what changed. The library is copied in
atomically, with a build record beside it (``libtensorkiln_ort.json``: the headers' ORT API version, whether it has
CUDA kernels, the tensorkiln version and the sources' digest, which the runtime checks before loading it).

CUDA kernels (for onnxruntime-gpu's CUDA execution provider) are added with ``--cuda on``, or by default where
onnxruntime offers the CUDA provider and nvcc is found; ``CMAKE_CUDA_ARCHITECTURES`` defaults to 80;90.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import native, ort_headers
from .atomic import write_text
from .errors import BackendUnavailableError, UsageError
from .version import package_version

CUDA_CHOICES = ("auto", "on", "off")
TARGET = "tensorkiln_ort"
Log = Callable[[str], None]


def _pypi_bin_dir(name: str) -> str | None:
    """The bin folder of the cmake / ninja PyPI package, when installed (optional: PATH comes first)."""
    try:
        if name == "cmake":
            import cmake

            return cmake.CMAKE_BIN_DIR
        import ninja

        return ninja.BIN_DIR
    except (ImportError, AttributeError):
        return None


def _tool(name: str) -> str | None:
    """``name`` from PATH, else from its PyPI package when installed."""
    found = shutil.which(name)
    if found:
        return found
    folder = _pypi_bin_dir(name)
    candidate = Path(folder) / name if folder else None
    return str(candidate) if candidate is not None and candidate.exists() else None


def build_tools() -> tuple[str, str]:
    """(cmake, ninja), or a BackendUnavailableError saying how to get them."""
    cmake, ninja = _tool("cmake"), _tool("ninja")
    if cmake is None or ninja is None:
        missing = " and ".join(n for n, t in (("cmake", cmake), ("ninja", ninja)) if t is None)
        raise BackendUnavailableError(f"building the native kernels needs {missing}: pip install "
                                      "'tensorkiln[kernels]' (or install them from your system's packages)")
    return cmake, ninja


def nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    candidate = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc"
    return str(candidate) if candidate.exists() else None


def wants_cuda(choice: str) -> bool:
    """Whether to add the CUDA kernels: "on", "off", or "auto" (onnxruntime has the CUDA provider and nvcc exists)."""
    if choice not in CUDA_CHOICES:
        raise UsageError(f"--cuda must be one of {', '.join(CUDA_CHOICES)}, got {choice!r}")
    if choice == "off":
        return False
    if choice == "on":
        if nvcc() is None:
            raise BackendUnavailableError("--cuda on needs nvcc (a CUDA toolkit; set CUDA_HOME)")
        return True
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers() and nvcc() is not None


def configure_args(include_dir: Path, ninja: str, cuda: bool, warnings_as_errors: bool) -> list[str]:
    """CMake's configure arguments for the library alone."""
    args = [f"-DCMAKE_MAKE_PROGRAM={ninja}", "-DCMAKE_BUILD_TYPE=Release", f"-DONNXRUNTIME_INCLUDE_DIR={include_dir}",
            f"-DTK_WARNINGS_AS_ERRORS={'ON' if warnings_as_errors else 'OFF'}"]
    if cuda:
        args += [f"-DCMAKE_CUDA_COMPILER={nvcc()}", "-DTK_ORT_CUDA=ON"]
    else:
        args += ["-DCMAKE_CUDA_COMPILER=CMAKE_CUDA_COMPILER-NOTFOUND", "-DTK_ORT_CUDA=OFF"]
    return args


def _run_step(what: str, command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
        raise BackendUnavailableError(f"{what} failed (exit {result.returncode}):\n{tail}")


def _install(built: Path, destination: Path, record: dict[str, Any]) -> None:
    """Copy the library in atomically (a running process keeps the file it mapped) and write its build record."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{destination.name}.", dir=destination.parent)
    os.close(fd)
    try:
        shutil.copy2(built, tmp)
        os.chmod(tmp, 0o755)
        os.replace(tmp, destination)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    write_text(destination.with_name(native.BUILD_INFO_NAME), json.dumps(record, indent=2) + "\n")


def build_kernels(*, cuda: str = "auto", ort_include: Path | None = None, destination: Path | None = None,
                  jobs: int | None = None, warnings_as_errors: bool = False, cache: Path | None = None,
                  log: Log = print) -> Path:
    """Build and install the library; returns where it was installed (default: where the runtime looks). ``cache``
    holds the fetched headers and the build tree (default: the runtime's cache folder). Raises
    BackendUnavailableError when a tool, the headers or the sources are missing, or the build fails (with the
    compiler's last lines)."""
    plugins = native.PLUGINS_DIR
    if not (plugins / "sources.json").is_file():
        raise BackendUnavailableError(f"`{native.BUILD_COMMAND}` builds from a source checkout's plugins/ folder, "
                                      f"and there is none at {plugins}: clone the repository and install it with "
                                      "pip install -e")
    cmake, ninja = build_tools()
    with_cuda = wants_cuda(cuda)
    given = ort_include or (Path(os.environ["ONNXRUNTIME_INCLUDE_DIR"]) if os.environ.get("ONNXRUNTIME_INCLUDE_DIR")
                            else None)
    cache = cache or native.cache_dir()
    include_dir = ort_headers.ort_headers(cache / "onnxruntime-headers", given, log)
    build = cache / "build" / ("ort-cuda" if with_cuda else "ort-cpu")
    log(f"building {native.LIBRARY_NAME} ({'CPU + CUDA' if with_cuda else 'CPU'} kernels, ONNX Runtime API "
        f"{ort_headers.api_version(include_dir)} headers) in {build}")
    _run_step("CMake configure", [cmake, "-G", "Ninja", "-S", str(plugins), "-B", str(build),
                                  *configure_args(include_dir, ninja, with_cuda, warnings_as_errors)])
    _run_step("the build", [cmake, "--build", str(build), "--target", TARGET, "-j", str(jobs or os.cpu_count() or 2)])
    built = build / native.LIBRARY_NAME
    if not built.is_file():
        raise BackendUnavailableError(f"the build finished without {built}: see {build}/CMakeCache.txt for "
                                      "whether CMake found the ONNX Runtime headers")
    target = destination or native.default_library_path()
    record = {"library": native.LIBRARY_NAME, "tensorkiln_version": package_version(),
              "ort_api_version": ort_headers.api_version(include_dir), "cuda": with_cuda,
              "sources_sha256": native.sources_digest(plugins), "ort_include_dir": str(include_dir)}
    _install(built, target, record)
    log(f"installed {target}")
    return target


__all__ = ["CUDA_CHOICES", "build_kernels", "build_tools", "configure_args", "nvcc", "wants_cuda"]
