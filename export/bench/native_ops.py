"""The custom ops alone, for the native section of ``kiln bench``: one MraAttention or MegaEma node timed as the
native kernel of libtensorkiln_ort.so, as its function body (both in ORT, from the same one-node model an export
would hold), as the torch op, and for MRA as dense softmax attention in ORT on the same q, k, v.

Figures: median ms of alternating runs; MRA's GFLOP/s on the FLOPs its selected blocks and low-resolution part
count (:func:`~.flops.mra_flops`, the latency section's count); the EMA's GB/s on the bytes it must move (x read,
the output and final state written, the parameters read once), against this machine's copy bandwidth.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from tensorkiln.runtime import backends as runtime_backends
from tensorkiln.runtime.contract import DOMAIN, MEGA_EMA, MRA_ATTENTION

from .flops import mra_flops
from .timing import alternate, max_abs

_MASKED = 1e4


def copy_bandwidth_gbs(megabytes: int = 256, runs: int = 5) -> float:
    """This machine's memory bandwidth as numpy sees it: bytes read + written by the best of ``runs`` copies."""
    source = np.ones(megabytes * 2**20 // 4, np.float32)
    target = np.empty_like(source)
    np.copyto(target, source)
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - start)
    return 2 * source.nbytes / best / 1e9


def one_node_model(op_type: str, arrays: list[np.ndarray], outputs: int, **attributes: Any):
    """The node as an export holds it: the contract's attributes, with its model-local function body."""
    from onnx import TensorProto, helper

    from tensorkiln.export.custom_ops import add_local_functions

    names = list((MRA_ATTENTION if op_type == MRA_ATTENTION.op_type else MEGA_EMA).input_names)[:len(arrays)]
    node = helper.make_node(op_type, names, [f"out{i}" for i in range(outputs)], domain=DOMAIN, **attributes)
    graph = helper.make_graph(
        [node], op_type,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(a.shape)) for n, a in zip(names, arrays)],
        [helper.make_tensor_value_info(f"out{i}", TensorProto.FLOAT, None) for i in range(outputs)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(DOMAIN, 1)],
                              ir_version=10)
    add_local_functions(model)
    return model


def dense_attention_model(shape: tuple[int, int, int, int], scale: float):
    """Masked softmax attention of standard ops on MRA's inputs: softmax(q.k^T * scale - 1e4 * pad) v, padded
    queries zeroed (MRA's contract), for ORT to run with its own MatMul and Softmax kernels."""
    from onnx import TensorProto, helper

    batch, heads, length, dim = shape
    tensor = lambda name, dims: helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)  # noqa: E731
    constant = lambda name, value: helper.make_node(  # noqa: E731
        "Constant", [], [name], value=helper.make_tensor(name, TensorProto.FLOAT, [], [value]))
    axes = helper.make_node("Constant", [], ["axes"], value=helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2]))
    nodes = [constant("scale", scale), constant("one", 1.0), constant("big", _MASKED), axes,
             helper.make_node("Transpose", ["key"], ["key_t"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["query", "key_t"], ["scores"]),  # (B, H, L, L)
             helper.make_node("Mul", ["scores", "scale"], ["scaled"]),
             helper.make_node("Sub", ["attention_mask", "one"], ["off"]),  # 0 for tokens, -1 for padding
             helper.make_node("Mul", ["off", "big"], ["bias2"]),
             helper.make_node("Unsqueeze", ["bias2", "axes"], ["bias"]),  # (B, 1, 1, L)
             helper.make_node("Add", ["scaled", "bias"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["weights"], axis=-1),
             helper.make_node("MatMul", ["weights", "value"], ["context"]),
             helper.make_node("Unsqueeze", ["attention_mask", "axes"], ["query_mask4"]),  # (B, 1, 1, L)
             helper.make_node("Transpose", ["query_mask4"], ["query_mask"], perm=[0, 1, 3, 2]),  # (B, 1, L, 1)
             helper.make_node("Mul", ["context", "query_mask"], ["output"])]
    qkv = [tensor(n, [batch, heads, length, dim]) for n in ("query", "key", "value")]
    graph = helper.make_graph(nodes, "dense_attention", [*qkv, tensor("attention_mask", [batch, length])],
                              [tensor("output", [batch, heads, length, dim])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def _ort_call(model, path: Path, arrays: list[np.ndarray], threads: int, library: Path | None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    session = runtime_backends.ort_session(path, [runtime_backends.CPU], threads, "fp32", library)
    feeds = {i.name: a for i, a in zip(session.get_inputs(), arrays)}
    return lambda: session.run(None, feeds)


def _torch_call(op: str, arrays: list[np.ndarray | None], threads: int, **attributes: Any):
    import torch

    import tensorkiln.reference.ops  # noqa: F401  (registers the ops)

    torch.set_num_threads(threads)
    tensors = [None if a is None else torch.from_numpy(a) for a in arrays]  # None: an absent optional input
    function = getattr(torch.ops.tensorkiln, op)

    def call():
        with torch.inference_mode():
            out = function(*tensors, **attributes)
        return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]

    return call


def _timed(calls: dict[str, Any], repeats: int) -> tuple[dict[str, float], dict[str, Any]]:
    outputs = {name: call() for name, call in calls.items()}  # also the warm-up
    times = alternate(calls, repeats)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}, outputs


def bench_mra_op(shape: tuple[int, int, int, int], num_blocks: int, work: Path, library: Path, threads: int,
                 repeats: int) -> dict[str, Any]:
    """MraAttention ("full", no priors) at ``shape`` (B, H, L, D), no padding: native, function body, torch op
    and dense attention in ORT."""
    batch, heads, length, dim = shape
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(shape, dtype=np.float32) for _ in range(3)] + [np.ones((batch, length), np.float32)]
    attributes = dict(num_blocks=num_blocks, scale=1.0 / math.sqrt(dim), approx_mode="full",
                      initial_prior_first_n_blocks=0, initial_prior_diagonal_n_blocks=0)
    model = one_node_model(MRA_ATTENTION.op_type, arrays, 1, **attributes)
    folder = work / "native-ops" / f"mra-{batch}x{heads}x{length}x{dim}-{num_blocks}"
    calls = {"native": _ort_call(model, folder / "node.onnx", arrays, threads, library),
             "function": _ort_call(model, folder / "node.onnx", arrays, threads, None),
             "torch": _torch_call("mra_attention", arrays, threads, **attributes),
             "dense_ort": _ort_call(dense_attention_model(shape, attributes["scale"]), folder / "dense.onnx", arrays,
                                    threads, None)}
    ms, outputs = _timed(calls, repeats)
    flops = mra_flops(shape, shape, shape, (batch, length), **attributes)
    return {"op": MRA_ATTENTION.op_type, "shape": list(shape), "num_blocks": num_blocks, "ms": ms,
            "counted_flops": flops, "native_gflops_per_s": flops / ms["native"] / 1e6,
            "speedup_native_vs": {k: v / ms["native"] for k, v in ms.items() if k != "native"},
            "max_abs_vs_torch": {k: max_abs(outputs[k][0], outputs["torch"][0]) for k in ("native", "function")},
            "max_abs_native_vs_dense": max_abs(outputs["native"][0], outputs["dense_ort"][0])}


def bench_ema_op(batch: int, length: int, channels: int, ndim: int, bidirectional: bool, work: Path, library: Path,
                 threads: int, repeats: int) -> dict[str, Any]:
    """MegaEma (no truncation, no prev_state) at (B, L, D) with N dimensions: native, function body, torch op."""
    rng = np.random.default_rng(0)
    rows = 2 * channels if bidirectional else channels
    params = [rng.standard_normal((rows, ndim, 1)).astype(np.float32) * 0.5 for _ in range(3)]
    arrays = [rng.standard_normal((batch, length, channels)).astype(np.float32), *params,
              rng.standard_normal((rows, ndim)).astype(np.float32)]
    attributes = dict(bidirectional=int(bidirectional), truncation=0)
    model = one_node_model(MEGA_EMA.op_type, arrays, 2, **attributes)
    folder = work / "native-ops" / f"ema-{batch}x{length}x{channels}x{ndim}-{'bi' if bidirectional else 'uni'}"
    calls = {"native": _ort_call(model, folder / "node.onnx", arrays, threads, library),
             "function": _ort_call(model, folder / "node.onnx", arrays, threads, None),
             "torch": _torch_call("mega_ema", [*arrays, None], threads, bidirectional=bidirectional, truncation=0)}
    ms, outputs = _timed(calls, repeats)
    moved = 4 * (2 * batch * length * channels + 4 * rows * ndim + batch * channels * ndim)
    return {"op": MEGA_EMA.op_type, "shape": [batch, length, channels, ndim], "bidirectional": bidirectional,
            "ms": ms, "bytes_moved": moved, "native_gb_per_s": moved / ms["native"] / 1e6,
            "speedup_native_vs": {k: v / ms["native"] for k, v in ms.items() if k != "native"},
            "max_abs_vs_torch": {k: max_abs(outputs[k][0], outputs["torch"][0]) for k in ("native", "function")}}
