"""The machine's fp32 sgemm peak, the figure that the latency section's compute efficiencies divide by.

The peak is the best GFLOP/s of an n x n fp32 matmul in numpy, torch and an ORT MatMul graph, each in a fresh
process with its thread count pinned (:func:`~.machine.run_worker`), so the peak is not understated. Each library's
figure is itself the best of a few runs after an untimed one.
"""

from __future__ import annotations

import importlib.util
import time
from typing import Any

import numpy as np

from .machine import run_worker
from .options import BenchError


def sgemm_one(lib: str, size: int, threads: int, runs: int = 3) -> float:
    """GFLOP/s of the best of ``runs`` n x n fp32 matmuls (after one untimed) in ``lib``, in this process."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    if lib == "numpy":
        call = lambda: a @ b  # noqa: E731
    elif lib == "torch":
        import torch

        torch.set_num_threads(threads)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        call = lambda: ta @ tb  # noqa: E731
    elif lib == "onnxruntime":
        call = _ort_matmul(a, b, size, threads)
    else:
        raise ValueError(lib)
    call()
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def _ort_matmul(a: np.ndarray, b: np.ndarray, size: int, threads: int):
    """A call of a one-node ONNX MatMul graph over ``a`` and ``b`` on ORT's CPU execution provider."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "sgemm",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [size, size]) for n in ("a", "b")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"a": a, "b": b})


def sgemm_peak(size: int, threads: int) -> dict[str, Any]:
    """The machine's fp32 matmul peak: best of numpy, torch and ORT, each in a fresh process."""
    libs = ["numpy"]
    libs += [lib for lib, module in (("torch", "torch"), ("onnxruntime", "onnx")) if importlib.util.find_spec(module)]
    gflops, errors = {}, {}
    for lib in libs:
        out = run_worker(["sgemm", lib, str(size), str(threads)], threads)
        if "error" in out:
            errors[lib] = out["error"]
        else:
            gflops[lib] = out["gflops"]
    if not gflops:
        raise BenchError(f"no sgemm measurement succeeded: {errors}")
    best = max(gflops, key=gflops.get)
    return {"size": size, "threads": threads, "gflops": gflops, "best_gflops": gflops[best], "best_by": best,
            "errors": errors}
