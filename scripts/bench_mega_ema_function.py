"""Times candidate time-domain bodies for the ``tensorkiln::MegaEma`` function in ONNX Runtime (CPU).

Run: ``python scripts/bench_mega_ema_function.py [--out FILE]``. Each candidate is a one-node model whose
local function computes the unidirectional EMA of x (B=1, L, D) with N=16 and its final state, as
``export/mega_ema_function.py`` does:

* ``conv``: materialise the L-tap kernel k (D, L) = sum_n g w q^l and run a causal depthwise Conv (group = D). Its
  ``group`` attribute must be the literal D and TensorRT needs the kernel size at build time, so as a function body it
  would have to be specialised per model and length; measured here to know what it would cost.
* ``toeplitz``: the per-channel L x L lower-triangular Toeplitz matrix of k and one batched MatMul; K L^2 floats.
* ``chunked-C``: the shipped body (``build_mega_ema_function``) with chunk length C.

Both non-chunked candidates also compute final_state with the (D, L, N) powers matmul, as the torch op does.
The figures and the choice they led to are in ``export/mega_ema_function.py``'s docstring.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort
from onnx import TensorProto, helper

from tensorkiln.export.local_function import Body, build_function
from tensorkiln.export.mega_ema_function import _tri, build_mega_ema_function, ema_coefficients
from tensorkiln.runtime.contract import MEGA_EMA

__all__ = ["candidate_function", "time_candidate", "main"]

_FLOAT = TensorProto.FLOAT
#: Toeplitz candidates with more than this many matrix entries (K L^2) are skipped: they do not fit in memory.
_TOEPLITZ_LIMIT = 2**27


def _kernel_and_state(b: Body, x: str, w: str, q: str, g: str):
    """(kernel (K, 1, L), z (K, B, L), final (K, B, N)) for the non-chunked candidates."""
    length = b.dim(x, 1)
    steps = b.Cast(b.Range(b.i64(0), b.Squeeze(length, b.i64([0])), b.i64(1)), to=_FLOAT)  # (L,)
    powers = b.Pow(q, steps)  # (K, N, L)
    g3 = b.Unsqueeze(g, b.i64([2]))
    kernel = b.ReduceSum(b.Mul(b.Mul(g3, w), powers), b.i64([1]), keepdims=1)  # (K, 1, L)
    z = b.Transpose(x, perm=[2, 0, 1])  # (K, B, L)
    last = b.Sub(b.Cast(length, to=_FLOAT), b.f32(1.0))
    into_state = b.Transpose(b.Mul(w, b.Pow(q, b.Sub(last, steps))), perm=[0, 2, 1])  # (K, L, N)
    return kernel, z, b.MatMul(z, into_state)


def candidate_function(name: str, channels: int) -> onnx.FunctionProto:
    """The MegaEma FunctionProto (no prev_state) of one candidate; ``channels`` is baked into ``conv``'s group."""
    if name.startswith("chunked-"):
        return build_mega_ema_function(with_state=False, chunk=int(name.split("-")[1]))

    def body(b: Body):
        x, delta, alpha, beta, gamma = MEGA_EMA.input_names[:5]
        w, q, g = ema_coefficients(b, delta, alpha, beta, gamma)
        kernel, z, final = _kernel_and_state(b, x, w, q, g)
        if name == "conv":
            weight = b.Slice(kernel, b.i64([-1]), b.i64([-(2**63)]), b.i64([2]), b.i64([-1]))  # flipped taps
            taps_minus_one = b.Sub(b.dim(x, 1), b.i64([1]))
            xt = b.Transpose(x, perm=[0, 2, 1])  # (B, D, L)
            xt = b.Pad(xt, b.Concat(b.i64([0, 0]), taps_minus_one, b.i64([0, 0, 0]), axis=0))
            y = b.Transpose(b.Conv(xt, weight, group=channels), perm=[0, 2, 1])  # (B, L, D)
        elif name == "toeplitz":
            diff, lower = _tri(b, b.dim(x, 1))
            toeplitz = b.Mul(b.Squeeze(b.Gather(kernel, b.Max(diff, b.i64(0)), axis=2), b.i64([1])), lower)  # (K, L, L)
            y = b.Transpose(b.MatMul(z, b.Transpose(toeplitz, perm=[0, 2, 1])), perm=[1, 2, 0])  # (B, L, D)
        else:
            raise ValueError(f"unknown candidate {name!r}")
        return y, b.Transpose(final, perm=[1, 0, 2])

    return build_function(MEGA_EMA, body, MEGA_EMA.input_names[:5])


def _model(function: onnx.FunctionProto, params: dict[str, np.ndarray]) -> onnx.ModelProto:
    """x is the input; the parameters are initializers, as in an exported model (so ORT folds what depends on them
    alone: the chunk Toeplitz matrices, not the L-tap kernel)."""
    names = list(MEGA_EMA.input_names[:5])
    node = helper.make_node("MegaEma", names, ["output", "final_state"], domain=MEGA_EMA.domain)
    inputs = [helper.make_tensor_value_info("x", _FLOAT, [None] * 3)]
    outputs = [helper.make_tensor_value_info(n, _FLOAT, [None] * 3) for n in ("output", "final_state")]
    initializers = [onnx.numpy_helper.from_array(value, name) for name, value in params.items()]
    graph = helper.make_graph([node], "bench", inputs, outputs, initializer=initializers)
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid(MEGA_EMA.domain, MEGA_EMA.domain_version)]
    return helper.make_model(graph, opset_imports=opsets, functions=[function], ir_version=10)


def time_candidate(name: str, channels: int, length: int, ndim: int = 16, repeats: int = 5) -> float:
    """CPU time (ms) of one single-threaded ORT run of candidate ``name`` at B=1, the best of ``repeats``.

    CPU time of one thread, not wall time: on a shared machine other load stretches wall time but not this."""
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((1, length, channels), dtype=np.float32)}
    params = {
        "damping_factor": rng.standard_normal((channels, ndim, 1), dtype=np.float32) * 0.5,
        "decay_factor": rng.standard_normal((channels, ndim, 1), dtype=np.float32) * 0.5,
        "ema_expansion_matrix": rng.standard_normal((channels, ndim, 1), dtype=np.float32),
        "kernel_projection_matrix": rng.standard_normal((channels, ndim), dtype=np.float32),
    }
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(_model(candidate_function(name, channels), params).SerializeToString(),
                                   options, providers=["CPUExecutionProvider"])
    session.run(None, feeds)
    times = []
    for _ in range(repeats):
        start = time.process_time()
        session.run(None, feeds)
        times.append((time.process_time() - start) * 1e3)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, nargs="+", default=[128, 512, 1024])
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 1024, 4096])
    parser.add_argument("--candidates", nargs="+", default=["conv", "toeplitz", "chunked-32", "chunked-64",
                                                             "chunked-128"])
    args = parser.parse_args(argv)
    print("| D | L | " + " | ".join(args.candidates) + " |")
    print("|---|---|" + "---|" * len(args.candidates))
    for channels in args.channels:
        for length in args.lengths:
            cells = []
            for name in args.candidates:
                if name == "toeplitz" and channels * length * length > _TOEPLITZ_LIMIT:
                    cells.append("-")
                    continue
                cells.append(f"{time_candidate(name, channels, length):.1f}")
            print(f"| {channels} | {length} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
