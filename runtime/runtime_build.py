"""``kiln build-runtime``: build the C++ runtime (``runtime/cpp``: ``libtensorkiln_runtime.so``, its headers, the
``kiln-run`` tool and the CMake package ``tensorkiln``) from a source checkout, test it with ctest, and install it
into a prefix (default ``CACHE/runtime``) that a C++ service's CMake finds with ``-DCMAKE_PREFIX_PATH``.

Torch-free. Needs a C++17 compiler, CMake and Ninja (PATH, or ``pip install 'tensorkiln[kernels]'``), OpenSSL's
headers (``libssl-dev``) and two header-only dependencies that are fetched when the system lacks them and cached
beside the build: nlohmann-json (Debian's ``nlohmann-json3-dev``, through :mod:`.debian_packages`) and ONNX Runtime's
C/C++ API headers (:mod:`.ort_headers`). Nothing fetched is ever committed. The onnxruntime wheel's library is
recorded in the build as the one to load when neither the caller nor the environment names one.

``tensorrt_root`` (or ``TensorRT_ROOT``) adds the TensorRT backend: built where TensorRT's libraries are, compiled
only (-Werror, no link) where its headers alone are.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from . import debian_packages, native, ort_headers
from .atomic import replace_folder
from .errors import BackendUnavailableError
from .native_build import build_tools
from .version import package_version

SOURCE_DIR = Path(__file__).resolve().parent / "cpp"
JSON_PACKAGE = "nlohmann-json3-dev"
_SYSTEM_JSON = (Path("/usr/share/cmake/nlohmann_json"), Path("/usr/lib/cmake/nlohmann_json"))
Log = Callable[[str], None]


def json_prefix(cache: Path, log: Log) -> Path | None:
    """A prefix holding nlohmann_json's CMake package: None when the system has it, else Debian's, fetched once."""
    if any((folder / "nlohmann_jsonConfig.cmake").is_file() for folder in _SYSTEM_JSON):
        return None
    prefix = cache / "nlohmann-json" / "usr"
    if (prefix / "share" / "cmake" / "nlohmann_json").is_dir():
        return prefix
    cache.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix=".nlohmann-", dir=cache) as scratch:
            root = debian_packages.fetch(JSON_PACKAGE, Path(scratch), log)
            replace_folder(root, cache / "nlohmann-json")
    except (OSError, subprocess.CalledProcessError, BackendUnavailableError) as exc:
        raise BackendUnavailableError(f"cannot get nlohmann-json ({debian_packages.failure_detail(exc)}): install "
                                      f"{JSON_PACKAGE} (or nlohmann_json's CMake package)") from exc
    log(f"nlohmann-json from Debian's {JSON_PACKAGE} cached in {cache / 'nlohmann-json'}")
    return prefix


def onnxruntime_library() -> str:
    """The onnxruntime wheel's libonnxruntime.so.1.x, recorded as the runtime's fallback ("" without one)."""
    try:
        import onnxruntime
    except ImportError:
        return ""
    found = sorted((Path(onnxruntime.__file__).parent / "capi").glob("libonnxruntime.so*"))
    return str(found[-1]) if found else ""


def configure_args(include_dir: Path, ninja: str, json: Path | None, tensorrt_root: str | None,
                   warnings_as_errors: bool) -> list[str]:
    args = [f"-DCMAKE_MAKE_PROGRAM={ninja}", "-DCMAKE_BUILD_TYPE=Release", f"-DONNXRUNTIME_INCLUDE_DIR={include_dir}",
            f"-DTK_VERSION={package_version()}", f"-DTK_DEFAULT_ONNXRUNTIME_LIBRARY={onnxruntime_library()}",
            f"-DTK_WARNINGS_AS_ERRORS={'ON' if warnings_as_errors else 'OFF'}"]
    if json is not None:
        args.append(f"-Dnlohmann_json_DIR={json / 'share' / 'cmake' / 'nlohmann_json'}")
    if tensorrt_root:
        args.append(f"-DTensorRT_ROOT={tensorrt_root}")
    return args


def _run_step(what: str, command: list[str], cwd: Path | None = None) -> None:
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-30:])
        raise BackendUnavailableError(f"{what} failed (exit {result.returncode}):\n{tail}")


def build_runtime(*, ort_include: Path | None = None, prefix: Path | None = None, jobs: int | None = None,
                  tensorrt_root: str | None = None, warnings_as_errors: bool = True, cache: Path | None = None,
                  run_tests: bool = True, log: Log = print) -> Path:
    """Build, test (ctest) and install the C++ runtime; returns the install prefix (default ``CACHE/runtime``).
    ``cache`` holds the fetched headers and the build tree (default: the runtime's cache folder), so a second build
    only recompiles what changed. Raises BackendUnavailableError when a tool or header is missing or a step fails
    (with its last lines)."""
    if not (SOURCE_DIR / "CMakeLists.txt").is_file():
        raise BackendUnavailableError(f"`kiln build-runtime` builds from a source checkout's runtime/cpp folder, and "
                                      f"there is none at {SOURCE_DIR}: clone the repository and install it with "
                                      "pip install -e")
    if shutil.which("c++") is None and shutil.which("g++") is None and shutil.which("clang++") is None:
        raise BackendUnavailableError("building the C++ runtime needs a C++17 compiler (g++ or clang++)")
    cmake, ninja = build_tools()
    cache = cache or native.cache_dir()
    given = ort_include or (Path(os.environ["ONNXRUNTIME_INCLUDE_DIR"]) if os.environ.get("ONNXRUNTIME_INCLUDE_DIR")
                            else None)
    include_dir = ort_headers.ort_headers(cache / "onnxruntime-headers", given, log)
    json = json_prefix(cache, log)
    tensorrt_root = tensorrt_root or os.environ.get("TensorRT_ROOT") or None
    build = cache / "build" / ("runtime-tensorrt" if tensorrt_root else "runtime")
    prefix = prefix or cache / "runtime"
    log(f"building the C++ runtime in {build}")
    _run_step("CMake configure", [cmake, "-G", "Ninja", "-S", str(SOURCE_DIR), "-B", str(build),
                                  *configure_args(include_dir, ninja, json, tensorrt_root, warnings_as_errors)])
    _run_step("the build", [cmake, "--build", str(build), "-j", str(jobs or os.cpu_count() or 2)])
    if run_tests:
        ctest = Path(cmake).with_name("ctest")
        _run_step("the unit tests (ctest)", [str(ctest) if ctest.exists() else "ctest", "--output-on-failure"],
                  cwd=build)
    _run_step("the install", [cmake, "--install", str(build), "--prefix", str(prefix)])
    log(f"installed the C++ runtime into {prefix} (kiln-run: {prefix / 'bin' / 'kiln-run'}; a service's CMake: "
        f"-DCMAKE_PREFIX_PATH={prefix}, find_package(tensorkiln), link tensorkiln::runtime)")
    return prefix


__all__ = ["JSON_PACKAGE", "SOURCE_DIR", "build_runtime", "configure_args", "json_prefix", "onnxruntime_library"]
