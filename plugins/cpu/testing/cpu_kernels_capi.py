"""ctypes access to the CPU kernels of plugins/cpu through their test shim (cpuKernelsCApi.cpp), for
tests/test_cpu_kernels.py and scripts/bench_cpu_kernels.py. numpy only.

:func:`build` compiles the kernels and the shim into one shared library with g++, as CMake builds them from the same
lists in plugins/sources.json: C++17, -O3, warnings as errors, the "cpu_avx2" group alone with -mavx2 -mfma (x86-64),
the "cpu" and "cpu_testing" groups with the baseline flags.
:class:`CpuKernels` loads it and takes numpy arrays; an error status of a kernel becomes a RuntimeError with the
kernel's message.
"""

from __future__ import annotations

import ctypes
import json
import platform
import subprocess
from pathlib import Path

import numpy as np

PLUGINS_DIR = Path(__file__).resolve().parent.parent.parent
#: Extra flags of the "cpu_avx2" sources (x86-64 only).
AVX2_FLAGS = ("-mavx2", "-mfma")
COMMON_FLAGS = ("-std=c++17", "-O3", "-Wall", "-Wextra", "-Werror", "-fPIC")
LIBRARY_NAME = "libtensorkiln_cpu_kernels_test.so"


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def build(out_dir: Path, compiler: str = "g++") -> Path:
    """Compile plugins/cpu and the shim into ``out_dir``/LIBRARY_NAME; RuntimeError with the compiler's output."""
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = json.loads((PLUGINS_DIR / "sources.json").read_text())
    jobs = [(PLUGINS_DIR / source, ()) for source in groups["cpu"] + groups["cpu_testing"]]
    jobs += [(PLUGINS_DIR / source, AVX2_FLAGS if is_x86() else ()) for source in groups["cpu_avx2"]]
    objects, running = [], []
    for source, extra in jobs:
        target = out_dir / (source.stem + ".o")
        command = [compiler, *COMMON_FLAGS, *extra, f"-I{PLUGINS_DIR}", "-c", str(source), "-o", str(target)]
        running.append((command, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                  text=True)))
        objects.append(str(target))
    for command, process in running:
        output, _ = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"compiling the CPU kernels failed: {' '.join(command)}\n{output}")
    library = out_dir / LIBRARY_NAME
    link = [compiler, "-shared", "-pthread", "-o", str(library), *objects]
    result = subprocess.run(link, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"linking the CPU kernels failed: {' '.join(link)}\n{result.stdout}{result.stderr}")
    return library


def _float32(array) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32)


def _pointer(array: np.ndarray | None):
    return None if array is None else array.ctypes.data_as(ctypes.c_void_p)


class ThreadPool:
    """The kernels' std::thread pool (plugins/cpu/threadPool.h); close() or use as a context manager."""

    def __init__(self, library: ctypes.CDLL, threads: int):
        self._library = library
        self.handle = library.tkThreadPoolCreate(threads)
        if not self.handle:
            raise RuntimeError(f"could not start a thread pool of {threads} threads")

    def close(self) -> None:
        if self.handle:
            self._library.tkThreadPoolDestroy(self.handle)
            self.handle = None

    def __enter__(self) -> ThreadPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class CpuKernels:
    """The shim's functions over numpy arrays (fp32, contiguous: inputs are converted, outputs are new arrays)."""

    def __init__(self, path: Path):
        lib = ctypes.CDLL(str(path))
        pointer, i64 = ctypes.c_void_p, ctypes.c_int64
        lib.tkCpuSelectIsa.argtypes = [ctypes.c_int]
        lib.tkCpuSelectIsa.restype = ctypes.c_int
        lib.tkCpuSupportsAvx2Fma.restype = ctypes.c_int
        lib.tkCpuKernelIsa.restype = ctypes.c_char_p
        lib.tkThreadPoolCreate.argtypes = [ctypes.c_int]
        lib.tkThreadPoolCreate.restype = pointer
        lib.tkThreadPoolDestroy.argtypes = [pointer]
        lib.tkMraAttention.argtypes = [pointer] * 5 + [i64] * 5 + [ctypes.c_float, ctypes.c_int, i64, i64,
                                                                     pointer, ctypes.c_char_p, i64]
        lib.tkMraAttention.restype = ctypes.c_int
        lib.tkMegaEma.argtypes = [pointer] * 8 + [i64] * 4 + [ctypes.c_int, i64, pointer, ctypes.c_char_p, i64]
        lib.tkMegaEma.restype = ctypes.c_int
        self._lib = lib

    @property
    def supports_avx2(self) -> bool:
        return bool(self._lib.tkCpuSupportsAvx2Fma())

    @property
    def isa(self) -> str:
        """What cpuKernelIsa() reports: "avx2+fma" or "portable"."""
        return self._lib.tkCpuKernelIsa().decode()

    def select_isa(self, isa: str) -> None:
        """Run the "portable" or the "avx2+fma" build from now on; RuntimeError where it cannot run."""
        if isa not in ("portable", "avx2+fma"):
            raise ValueError(f"isa must be 'portable' or 'avx2+fma', got {isa!r}")
        if not self._lib.tkCpuSelectIsa(1 if isa == "avx2+fma" else 0):
            raise RuntimeError(f"the {isa} build cannot run on this CPU")

    def thread_pool(self, threads: int) -> ThreadPool:
        return ThreadPool(self._lib, threads)

    @staticmethod
    def _check(code: int, error: ctypes.Array) -> None:
        if code != 0:
            raise RuntimeError(error.value.decode())

    def mra_attention(self, query, key, value, attention_mask, *, num_blocks: int, scale: float,
                      approx_mode: str = "full", initial_prior_first_n_blocks: int = 0,
                      initial_prior_diagonal_n_blocks: int = 0, pool: ThreadPool | None = None) -> np.ndarray:
        """tensorkiln::MraAttention on (B, H, L, D) query/key/value and a (B, L) mask; returns (B, H, L, D)."""
        query, key, value, mask = (_float32(t) for t in (query, key, value, attention_mask))
        batch, heads, length, dim = query.shape
        if key.shape != query.shape or value.shape != query.shape or mask.shape != (batch, length):
            raise ValueError(f"shapes {query.shape} {key.shape} {value.shape} {mask.shape}: need (B, H, L, D) x 3 "
                             "and a (B, L) mask")
        out = np.empty_like(query)
        error = ctypes.create_string_buffer(1024)
        code = self._lib.tkMraAttention(
            _pointer(query), _pointer(key), _pointer(value), _pointer(mask), _pointer(out),
            batch, heads, length, dim, num_blocks, scale, 1 if approx_mode == "full" else 0,
            initial_prior_first_n_blocks, initial_prior_diagonal_n_blocks,
            pool.handle if pool else None, error, len(error))
        self._check(code, error)
        return out

    def mega_ema(self, x, damping_factor, decay_factor, ema_expansion_matrix, kernel_projection_matrix,
                 prev_state=None, *, bidirectional: bool = False, truncation: int = 0,
                 pool: ThreadPool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """tensorkiln::MegaEma on (B, L, D) x; returns (output (B, L, D), final_state (B, D, N))."""
        arrays = [_float32(t) for t in (x, damping_factor, decay_factor, ema_expansion_matrix,
                                         kernel_projection_matrix)]
        prev = None if prev_state is None else _float32(prev_state)
        batch, length, channels = arrays[0].shape
        rows, ndim = arrays[4].shape
        if rows != (2 if bidirectional else 1) * channels or any(a.shape != (rows, ndim, 1) for a in arrays[1:4]) \
                or (prev is not None and prev.shape != (batch, channels, ndim)):
            raise ValueError("parameter shapes do not match the node contract (K, N, 1) x 3, (K, N), (B, D, N)")
        out = np.empty((batch, length, channels), np.float32)
        final = np.empty((batch, channels, ndim), np.float32)
        error = ctypes.create_string_buffer(1024)
        code = self._lib.tkMegaEma(
            *(_pointer(a) for a in arrays), _pointer(prev), _pointer(out), _pointer(final),
            batch, length, channels, ndim, int(bidirectional), truncation,
            pool.handle if pool else None, error, len(error))
        self._check(code, error)
        return out, final
