"""plugins/ builds and its host logic passes, checked from pytest; the plugins' contract equals runtime/contract.py.

Default run (no GPU, no TensorRT, no nvcc needed): the generated ``plugins/common/nodeContract.h`` equals a fresh
generation from ``runtime/contract.py``; the host-logic library and its ctest (attribute parsing, shape and dtype
rules, workspace sizes, and the EMA scan's per-thread code run on the host against an fp64 recurrence) build with
CMake/Ninja and pass; a backend-key kernel overrides ``torch.library.custom_op``'s default implementation.

``-m slow``: the CUDA kernels compile for sm_80 and sm_90 with -Werror (~1-2 min on 2 cores); the torch binding
compiles against torch's and CUDA's headers (it cannot link on a CPU build of torch); a C++ TORCH_LIBRARY_IMPL for
a backend key overrides a custom_op default; and, against every TensorRT header set (tests/trt_headers.py: always
kernel-lens's 10.14 headers, plus ``TensorRT_ROOT`` and TK_TRT_HEADER_ROOTS), the plugin library builds, needs no
libnvinfer symbol, exports only the two entry points, and passes the dlopen driver.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
import trt_headers

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = ROOT / "plugins"
HEADER = PLUGINS / "common" / "nodeContract.h"
CUDA_HOME = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"))

sys.path.insert(0, str(ROOT / "scripts"))
import gen_plugin_contract  # noqa: E402

from tensorkiln.reference.ops import cuda_kernels  # noqa: E402
from tensorkiln.runtime import contract  # noqa: E402


def _ninja() -> str | None:
    found = shutil.which("ninja")
    if found:
        return found
    try:
        import ninja
    except ImportError:
        return None
    candidate = Path(ninja.BIN_DIR) / "ninja"
    return str(candidate) if candidate.exists() else None


def _nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    candidate = CUDA_HOME / "bin" / "nvcc"
    return str(candidate) if candidate.exists() else None


def _cmake_build(build: Path, *configure_args: str, targets: tuple[str, ...] = ()) -> None:
    cmake, ninja = shutil.which("cmake"), _ninja()
    if cmake is None or ninja is None:
        pytest.skip(f"needs cmake and ninja on PATH (cmake: {cmake}, ninja: {ninja})")
    subprocess.run(
        [cmake, "-G", "Ninja", "-S", str(PLUGINS), "-B", str(build), f"-DCMAKE_MAKE_PROGRAM={ninja}", *configure_args],
        check=True, capture_output=True, text=True,
    )
    command = [cmake, "--build", str(build), "-j2"]
    for target in targets:
        command += ["--target", target]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, f"build failed:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"


def _ctest(build: Path, *args: str) -> str:
    result = subprocess.run(["ctest", "--output-on-failure", *args], cwd=build, capture_output=True, text=True)
    assert result.returncode == 0, f"ctest failed:\n{result.stdout[-6000:]}"
    return result.stdout


# ---- the node contract ----


def test_node_contract_header_is_current():
    assert HEADER.read_text() == gen_plugin_contract.render(), (
        "plugins/common/nodeContract.h is stale: run `python scripts/gen_plugin_contract.py`"
    )


@pytest.mark.parametrize("node", [contract.MEGA_EMA, contract.MRA_ATTENTION], ids=lambda n: n.op_type)
def test_header_states_the_contract(node):
    """Read the names back from the committed header: op_type, version, domain, I/O order, attributes, dtypes."""
    text = HEADER.read_text()
    body = re.search(rf"struct {node.op_type}\n\{{(.*?)\n\}};", text, re.S).group(1)

    def scalar(name):
        return re.search(rf"{name} = \"([^\"]*)\";", body).group(1)

    def names(name):
        block = re.search(rf"{name}\{{(.*?)\}};", body, re.S).group(1)
        return tuple(re.findall(r'"([^"]*)"', block))

    assert scalar("kOP_TYPE") == node.op_type
    assert scalar("kPLUGIN_VERSION") == node.plugin_version == "1"
    assert scalar("kDOMAIN") == node.domain == contract.DOMAIN
    assert names("kINPUT_NAMES") == node.input_names
    assert names("kOUTPUT_NAMES") == node.output_names
    assert names("kATTRIBUTE_NAMES") == node.attribute_names
    masks = re.search(r"kINPUT_DTYPES\{(.*?)\};", body, re.S).group(1)
    bits = {"kDTYPE_FLOAT32": "tensor(float)", "kDTYPE_FLOAT16": "tensor(float16)",
            "kDTYPE_BFLOAT16": "tensor(bfloat16)", "kDTYPE_FLOAT64": "tensor(double)"}
    parsed = [tuple(bits[b.strip()] for b in item.split("|")) for item in masks.replace("\n", "").split(",")]
    assert parsed == [spec.dtypes for spec in node.inputs]
    required = sum(not spec.optional for spec in node.inputs)
    assert f"kNB_REQUIRED_INPUTS = {required};" in body


def test_plugins_take_their_names_from_the_contract_header():
    """The plugins spell no contract name themselves: creator names, versions and fields come from the header."""
    for source in (PLUGINS / "megaEmaPlugin" / "megaEmaPlugin.cpp", PLUGINS / "megaEmaPlugin" / "megaEmaParams.cpp"):
        text = source.read_text()
        for literal in ('"MegaEma"', '"1"', '"bidirectional"', '"truncation"'):
            assert literal not in text, f"{source.name} hard-codes {literal}; use common/nodeContract.h"


def test_one_source_list_for_cmake_the_binding_and_the_tests():
    """plugins/sources.json names every source once; CMake builds from it and the torch binding compiles from it."""
    groups = {key: names for key, names in json.loads((PLUGINS / "sources.json").read_text()).items()
              if key != "about"}
    listed = [name for names in groups.values() for name in names]
    assert len(listed) == len(set(listed))
    on_disk = {p.relative_to(PLUGINS).as_posix() for p in PLUGINS.rglob("*") if p.suffix in (".cpp", ".cu")}
    # The library entry points and the driver are one target each, named in CMakeLists.txt itself.
    entry_points = {"common/pluginEntry.cpp", "common/pluginCreators.cpp", "common/pluginAutoRegister.cpp",
                    "tests/pluginDriver.cpp"}
    assert on_disk - entry_points == set(listed)
    cmake = (PLUGINS / "CMakeLists.txt").read_text()
    assert all(name in cmake for name in entry_points)
    assert not any(name in cmake for name in listed), "CMakeLists.txt lists a source itself; use sources.json"
    assert cuda_kernels.extension_sources() == [PLUGINS / name for group in ("host", "kernels", "torch")
                                                for name in groups[group]]


# ---- host logic ----


def test_host_logic_builds_and_passes(tmp_path):
    # Without CUDA on purpose: the host logic must build and pass on any machine with a C++17 compiler.
    _cmake_build(tmp_path / "build", "-DCMAKE_CUDA_COMPILER=CMAKE_CUDA_COMPILER-NOTFOUND",
                 targets=("tensorkiln_host_tests",))
    output = _ctest(tmp_path / "build", "-R", "host_logic", "-V")
    assert "0 failed" in output and "megaEmaScanMatchesTheRecurrence" in output


# ---- dispatch: a backend kernel wins over custom_op's default ----


def test_backend_key_kernel_overrides_custom_op_default():
    """custom_op registers its function for CompositeExplicitAutograd; a kernel for a backend key takes precedence
    on that backend, which is how plugins/torch's CUDA kernels replace the pure implementation on CUDA tensors."""
    op_name = "tkdispatch_py::plus_one"

    @torch.library.custom_op(op_name, mutates_args=())
    def plus_one(x: torch.Tensor) -> torch.Tensor:
        return x + 1

    dump = torch._C._dispatch_dump(op_name)
    assert "CompositeExplicitAutograd[alias]" in dump
    library = torch.library.Library("tkdispatch_py", "IMPL")
    library.impl("plus_one", lambda x: x * 100, "CPU")
    assert torch.ops.tkdispatch_py.plus_one(torch.ones(2)).tolist() == [100.0, 100.0]
    assert plus_one(torch.ones(2)).tolist() == [100.0, 100.0]


@pytest.mark.slow
def test_cpp_torch_library_impl_overrides_custom_op_default(tmp_path):
    """The same with a C++ TORCH_LIBRARY_IMPL (as plugins/torch/registration.cpp does for CUDA), for the CPU key."""
    from torch.utils import cpp_extension

    if _ninja() is None:
        pytest.skip("needs ninja")

    @torch.library.custom_op("tkdispatch_cpp::twice", mutates_args=())
    def twice(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    source = r"""
    #include <ATen/core/Tensor.h>
    #include <torch/library.h>
    static at::Tensor cpuTwice(at::Tensor const& x) { return x * 100; }
    TORCH_LIBRARY_IMPL(tkdispatch_cpp, CPU, m) { m.impl("twice", &cpuTwice); }
    """
    cpp_extension.load_inline("tkdispatch_cpp_ext", cpp_sources=[source], is_python_module=False,
                              build_directory=str(tmp_path))
    assert twice(torch.ones(3)).tolist() == [100.0] * 3


# ---- CUDA: kernels and the torch binding compile (here: no GPU needed) ----


@pytest.mark.slow
def test_kernels_compile_for_sm80_and_sm90(tmp_path):
    if _nvcc() is None:
        pytest.skip("needs nvcc (CUDA toolkit)")
    _cmake_build(tmp_path / "build", f"-DCMAKE_CUDA_COMPILER={_nvcc()}", targets=("tensorkiln_kernels",))
    ninja_file = (tmp_path / "build" / "build.ninja").read_text()
    assert "code=[compute_80,sm_80]" in ninja_file and "code=[compute_90,sm_90]" in ninja_file
    assert "-Werror=all-warnings" in ninja_file


@pytest.mark.slow
@pytest.mark.parametrize("source", ["megaEmaBinding.cpp", "mraAttentionBinding.cpp", "registration.cpp"])
def test_torch_binding_compiles(source):
    """The binding needs ATen CUDA to link, which a CPU build of torch lacks; it must at least compile (-Werror)
    against torch's headers and the CUDA runtime's. C10_CUDA_NO_CMAKE_CONFIGURE_FILE stands in for the generated
    header that only CUDA builds of torch ship."""
    from torch.utils import cpp_extension

    cuda_include = CUDA_HOME / "include"
    if not (cuda_include / "cuda_runtime_api.h").exists():
        pytest.skip(f"needs the CUDA headers (looked in {cuda_include})")
    compiler = shutil.which(sysconfig.get_config_var("CXX") or "g++") or shutil.which("g++")
    command = [compiler, "-std=c++20", "-fsyntax-only", "-Wall", "-Wextra", "-Werror",
               "-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE", f"-I{PLUGINS}"]
    command += [f"-isystem{path}" for path in cpp_extension.include_paths()] + [f"-isystem{cuda_include}"]
    result = subprocess.run(command + [str(PLUGINS / "torch" / source)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.mark.slow
def test_plugin_library_against_tensorrt_headers(tmp_path):
    """Against every header set (``$TensorRT_ROOT``, TK_TRT_HEADER_ROOTS, and kernel-lens's TensorRT 10.14 headers,
    so CI always compiles the plugins): the library builds with -Werror, needs no libnvinfer symbol, exports only
    the two entry points, and passes the dlopen driver (which stands in for TensorRT's registry)."""
    if _nvcc() is None:
        pytest.skip("needs nvcc (CUDA toolkit)")
    roots = trt_headers.header_roots(os.environ.get("TensorRT_ROOT", ""))
    for label, headers in roots.items():
        build = tmp_path / label
        _cmake_build(build, f"-DTensorRT_ROOT={headers}", f"-DCMAKE_CUDA_COMPILER={_nvcc()}")
        output = _ctest(build, "-V")
        assert "PASSED: 0 check(s) failed" in output, label
        library = build / "libtensorkiln_plugins.so"
        undefined = subprocess.run(["nm", "-D", "--undefined-only", str(library)], capture_output=True,
                                   text=True).stdout
        assert "nvinfer" not in undefined.lower() and "getPluginRegistry" not in undefined, label
        defined = subprocess.run(["nm", "-D", "--defined-only", str(library)], capture_output=True, text=True).stdout
        exported = sorted(line.split()[-1] for line in defined.splitlines() if line.strip())
        assert exported == ["getCreators", "setLoggerFinder"], (label, exported)


@pytest.mark.slow
def test_ort_library_with_cuda_kernels_compiles_for_sm80_and_sm90(tmp_path, native_library):
    """libtensorkiln_ort.so with the CUDA execution provider's kernels (the plugins' launchers on ORT's stream):
    compiled with nvcc for sm_80 and sm_90 and the host compiler, warnings as errors; it still exports only
    RegisterCustomOps and says it holds CUDA kernels. (Running them needs onnxruntime-gpu on a GPU.)"""
    from native_library import CACHE

    from tensorkiln.runtime import native, ort_headers

    if _nvcc() is None:
        pytest.skip("needs nvcc (CUDA toolkit)")
    headers = ort_headers.ort_headers(CACHE / "onnxruntime-headers", log=lambda message: None)
    build = tmp_path / "build"
    _cmake_build(build, f"-DCMAKE_CUDA_COMPILER={_nvcc()}", f"-DONNXRUNTIME_INCLUDE_DIR={headers}", "-DTK_ORT_CUDA=ON",
                 targets=("tensorkiln_ort",))
    ninja_file = (build / "build.ninja").read_text()
    assert "code=[compute_80,sm_80]" in ninja_file and "code=[compute_90,sm_90]" in ninja_file
    assert "-Werror=all-warnings" in ninja_file and "ortCudaKernels.cpp" in ninja_file
    library = build / native.LIBRARY_NAME
    defined = subprocess.run(["nm", "-D", "--defined-only", str(library)], capture_output=True, text=True).stdout
    assert [line.split()[-1] for line in defined.splitlines() if line.strip()] == ["RegisterCustomOps"]
    assert "libcudart" in subprocess.run(["readelf", "-d", str(library)], capture_output=True, text=True).stdout
    if (CUDA_HOME / "lib64").is_dir():  # loadable where the CUDA runtime is: the CPU kernels still serve the CPU
        import ctypes

        ctypes.CDLL(str(next((CUDA_HOME / "lib64").glob("libcudart.so*"))), mode=ctypes.RTLD_GLOBAL)
        assert native.probe(library)["cuda"] == "1"
