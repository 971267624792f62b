"""The body of the ``tensorkiln::MegaEma`` model-local function: Mega's damped EMA in time-domain ONNX ops.

TensorRT has no DFT, so the body cannot convolve by FFT as the torch op does. It uses the EMA's structure instead
(a chunked scan, as in Mamba-2's SSD): per row k and dimension n, h_t = q h_{t-1} + w x_t and y_t = sum_n g_n h_t,n
(w = p beta, g = gamma sqrt(1/N); ``reference/ops/mega_ema.py``). The sequence is cut into chunks of
c = min(CHUNK, L) steps, padded at the front to a multiple of c:

* inside a chunk, y is a c x c lower-triangular Toeplitz matmul with the kernel k_l = sum_n g w q^l, l < c;
* each chunk's own end state is a (c x N) matmul, and the states of all chunks one (nC x nC) lower-triangular
  matmul per (row, n) with entries (q^c)^(i - j);
* the state entering a chunk reaches its outputs through g q^(i+1).

Front padding makes the last chunk end at the last real token, so its state is final_state exactly (no division by
powers of q); prev_state enters chunk 0 at the first real token. The CHUNK x CHUNK matrices depend on the
parameters alone, so ONNX Runtime folds them into constants (K CHUNK^2 floats per node) when the parameters are
initializers; the c x c ones are their leading blocks. The bidirectional form runs rows [D, 2D) on the time-reversed
input and reverses their output back; K (the parameters' rows) tells the forms apart, so the body needs no branch
on ``bidirectional``. Truncation T > 0 subtracts the tail sum_{l >= T} k_l x_{t-l} = sum_n g q^T h_{t-T}: the same
states projected with g q^T and delayed by T steps, computed only when the attribute is positive (an ``If``).

ONNX functions cannot test whether an optional input was given, so ``prev_state`` gives two bodies, without and
with it (``build_mega_ema_function(with_state=...)``); ``export/custom_ops.py`` gives a model the one it needs.

Why this form, and CHUNK = 128: ``python scripts/bench_mega_ema_function.py`` times the body against a
depthwise Conv with the materialised L-tap kernel and a per-channel L x L Toeplitz MatMul, in ONNX Runtime 1.31 CPU,
one thread, B = 1, N = 16, unidirectional, parameters as initializers. CPU ms per run, best of 5 (AMD EPYC; CPU time
because the shared machine's load stretched wall time; "-": the L x L Toeplitz needs K L^2 floats, not run):

    | D    | L    | conv   | toeplitz | chunk 32 | chunk 64 | chunk 128 |
    |------|------|--------|----------|----------|----------|-----------|
    | 128  | 128  | 4.1    | 21.9     | 1.2      | 1.2      | 2.6       |
    | 128  | 512  | 27.5   | 313.2    | 6.8      | 3.5      | 3.9       |
    | 128  | 1024 | 77.9   | 1228.4   | 22.0     | 7.9      | 5.7       |
    | 128  | 4096 | 675.7  | -        | 322.4    | 85.7     | 29.3      |
    | 512  | 128  | 15.2   | 87.7     | 5.2      | 6.1      | 11.3      |
    | 512  | 512  | 107.7  | 1257.1   | 25.8     | 13.3     | 16.7      |
    | 512  | 1024 | 313.0  | -        | 88.6     | 31.4     | 24.8      |
    | 512  | 4096 | 2588.6 | -        | 1276.6   | 345.3    | 124.3     |
    | 1024 | 128  | 31.7   | 180.8    | 10.1     | 12.8     | 22.9      |
    | 1024 | 512  | 209.4  | -        | 52.0     | 27.8     | 34.5      |
    | 1024 | 1024 | 623.0  | -        | 182.1    | 67.7     | 55.3      |
    | 1024 | 4096 | 5104.8 | -        | 2567.2   | 707.6    | 264.9     |

The chunked scan beats the Conv 3-20x and the Toeplitz 20-300x everywhere. Chunk 64 is best up to L = 512 and
128 from L = 1024 (2.7x at 4096), where the absolute cost lies; 128 costs at most 2x at L = 128, a few ms. A chunk
that grows with L (2 sqrt(L) rounded up to a power of two) was slower than the better fixed chunk at every size in
an earlier wall-time run (up to 14x at L = 128): its matrices cannot be folded.
As an ONNX function the Conv would also need ``group`` = D as a literal, and TensorRT the kernel size at build time.
"""

from __future__ import annotations

from typing import NamedTuple

from onnx import TensorProto, helper

from tensorkiln.runtime.contract import MEGA_EMA

from .local_function import MIN_OPSET, Body, Ref, build_function

__all__ = ["CHUNK", "build_mega_ema_function", "mega_ema_variant", "ema_coefficients", "chunked_ema"]

#: The longest chunk of the scan; see the module docstring for the measurement behind it.
CHUNK = 128
_FLOAT = TensorProto.FLOAT
_INT64_MIN = -(2**63)


def ema_coefficients(b: Body, delta: str, alpha: str, beta: str, gamma: str) -> tuple[str, str, str]:
    """(w, q, g) in fp32: w = p beta and q = 1 - p sigmoid(alpha), each (K, N, 1); g = gamma sqrt(1/N), (K, N)."""
    p = b.Sigmoid(b.Cast(delta, to=_FLOAT))
    q = b.Sub(b.f32(1.0), b.Mul(p, b.Sigmoid(b.Cast(alpha, to=_FLOAT))))
    w = b.Mul(p, b.Cast(beta, to=_FLOAT))
    ndim = b.Cast(b.dim(gamma, 1), to=_FLOAT)  # (1,)
    g = b.Mul(b.Cast(gamma, to=_FLOAT), b.Sqrt(b.Div(b.f32(1.0), ndim)))
    return w, q, g


def reverse_time(b: Body, x: str, axis: int) -> str:
    """x reversed along ``axis`` (a Slice with step -1)."""
    return b.Slice(x, b.i64([-1]), b.i64([_INT64_MIN]), b.i64([axis]), b.i64([-1]))


def _tri(b: Body, n: str) -> tuple[str, str]:
    """(i - j) as int64 and the lower-triangular 0/1 float mask (i >= j), both (n, n); ``n`` is a (1,) int64."""
    idx = b.Range(b.i64(0), b.Squeeze(n, b.i64([0])), b.i64(1))  # (n,)
    diff = b.Sub(b.Unsqueeze(idx, b.i64([1])), b.Unsqueeze(idx, b.i64([0])))  # (n, n): i - j
    return diff, b.Cast(b.GreaterOrEqual(diff, b.i64(0)), to=_FLOAT)


def _square(b: Body, t: str, n: str, axes: list[int]) -> str:
    """The leading n x n block of t along ``axes``."""
    return b.Slice(t, b.i64([0, 0]), b.Concat(n, n, axis=0), b.i64(axes))


class _Chunks(NamedTuple):
    """The input cut into chunks of c = min(chunk, L) steps, padded at the front to a multiple of c."""

    length: str  # (1,): L
    full: str  # (1,): the longest chunk
    c: str  # (1,): the chunk length
    c_float: str  # (1,): c in fp32
    pad: str  # (1,): the front padding
    padded: str  # (1,): Lp = L + pad
    n_chunks: str  # (1,): nC
    zc: str  # (K, B*nC, c): the padded input, one row per chunk


def _cut_into_chunks(b: Body, z: str, chunk: int) -> _Chunks:
    """z (K, B, L) front-padded to whole chunks of c = min(chunk, L) steps."""
    length = b.dim(z, 2)  # (1,)
    full = b.i64([chunk])
    c = b.Min(full, length)  # (1,)
    c_float = b.Cast(c, to=_FLOAT)
    pad = b.Mod(b.Sub(c, b.Mod(length, c)), c)  # (1,): front padding to a multiple of c
    zp = b.Pad(z, b.Concat(b.i64([0, 0]), pad, b.i64([0, 0, 0]), axis=0))  # (K, B, Lp)
    padded = b.Add(length, pad)
    n_chunks = b.Div(padded, c)  # (1,)
    zc = b.Reshape(zp, b.Concat(b.i64([0, -1]), c, axis=0))  # (K, B*nC, c)
    return _Chunks(length, full, c, c_float, pad, padded, n_chunks, zc)


def _chunk_end_states(b: Body, chunks: _Chunks, w: str, q: str, steps: str, chunk: int, prev: str | None):
    """The state after each chunk (K, N, nC, B), the final state (K, B, N), and the Pad widths that put a
    (K, B, 1, ...) value into chunk 0 only (None without ``prev``)."""
    c, full, n_chunks = chunks.c, chunks.full, chunks.n_chunks
    # Each chunk's own contribution to its end state: sum_j q^(c-1-j) w z_j (the last c rows of the full chunk's).
    into_state = b.Transpose(b.Mul(w, b.Pow(q, b.Sub(b.f32(float(chunk - 1)), steps))), perm=[0, 2, 1])
    into_state = b.Slice(into_state, b.Sub(full, c), full, b.i64([1]))  # (K, c, N)
    u = b.MatMul(chunks.zc, into_state)  # (K, B*nC, N)
    u = b.Reshape(u, b.Concat(b.i64([0, -1]), n_chunks, b.dim(q, 1), axis=0))  # (K, B, nC, N)
    chunk0_pads = None
    if prev is not None:
        chunk0_pads = b.Concat(b.i64([0, 0, 0, 0, 0, 0]), b.Sub(n_chunks, b.i64([1])), b.i64([0]), axis=0)
        # prev decays over chunk 0's c - pad real steps before chunk 0 ends.
        decay0 = b.Pow(q, b.Cast(b.Sub(c, chunks.pad), to=_FLOAT))  # (K, N, 1)
        inject = b.Mul(prev, b.Transpose(decay0, perm=[0, 2, 1]))  # (K, B, N)
        u = b.Add(u, b.Pad(b.Unsqueeze(inject, b.i64([2])), chunk0_pads))  # into chunk 0 only

    # Chunk end states: S_c = sum_{c' <= c} (q^c)^(c - c') u_c', a lower-triangular matmul per (row, n); the
    # powers (q^c)^d, d < nC, are gathered into the matrix (nC Pows per (row, n) instead of nC^2).
    chunk_steps = b.Cast(b.Range(b.i64(0), b.Squeeze(n_chunks, b.i64([0])), b.i64(1)), to=_FLOAT)  # (nC,)
    carry_pow = b.Pow(b.Pow(q, chunks.c_float), chunk_steps)  # (K, N, nC)
    cdiff, clower = _tri(b, n_chunks)
    carry = b.Mul(b.Gather(carry_pow, b.Max(cdiff, b.i64(0)), axis=2), clower)  # (K, N, nC, nC)
    states = b.MatMul(carry, b.Transpose(u, perm=[0, 3, 2, 1]))  # (K, N, nC, B)
    final = b.Transpose(b.Gather(states, b.i64(-1), axis=2), perm=[0, 2, 1])  # (K, B, N) after the last chunk
    return states, final, chunk0_pads


def _from_prev(b: Body, chunks: _Chunks, q: str, g3: str, prev: str, chunk0_pads: str) -> str:
    """prev's contribution to the outputs, (K, B*nC, c): nonzero in chunk 0 only."""
    c, pad = chunks.c, chunks.pad
    # Chunk 0's outputs after the first real token see prev through g q^(i+1-pad); the padded ones are cut.
    first_steps = b.Cast(b.Range(b.i64(0), b.Squeeze(c, b.i64([0])), b.i64(1)), to=_FLOAT)  # (c,)
    first = b.Pow(q, b.Relu(b.Sub(b.Add(first_steps, b.f32(1.0)), b.Cast(pad, to=_FLOAT))))  # (K, N, c)
    from_prev = b.Pad(b.Unsqueeze(b.MatMul(prev, b.Mul(g3, first)), b.i64([2])), chunk0_pads)  # (K, B, nC, c)
    return b.Reshape(from_prev, b.Concat(b.i64([0, -1]), c, axis=0))  # (K, B*nC, c)


def chunked_ema(b: Body, z: str, w: str, q: str, g: str, prev: str | None, chunk: int = CHUNK):
    """The EMA of z (K, B, L) fp32 along L with per-row (w, q, g); prev (K, B, N) or None is the state before z[0].

    The chunk length is c = min(chunk, L), so a short input (a decoding step) is one chunk of its own length. The
    c x c matrices are the leading blocks of chunk x chunk ones that depend on the parameters alone, which ONNX
    Runtime folds into constants when the parameters are initializers.

    Returns (y (K, B, L), final (K, B, N), tail): ``tail(r, taps)`` records into ``r`` (an If branch, which reads
    this body's values by name) the part of y from lags >= taps, for truncation.
    """
    chunks = _cut_into_chunks(b, z, chunk)
    length, c, pad, padded, zc = chunks.length, chunks.c, chunks.pad, chunks.padded, chunks.zc

    # Powers of q over a full chunk, (K, N, chunk): q^i and q^(i+1).
    steps = b.Cast(b.Range(b.i64(0), b.i64(chunk), b.i64(1)), to=_FLOAT)  # (chunk,)
    q_pow = b.Pow(q, steps)
    q_pow_next = b.Pow(q, b.Add(steps, b.f32(1.0)))
    g3 = b.Unsqueeze(g, b.i64([2]))  # (K, N, 1)
    diff, lower = _tri(b, chunks.full)

    def toeplitz(gain: str, r: Body) -> str:
        """The c x c lower-triangular Toeplitz matrix of the kernel sum_n gain w q^l, transposed: (K, c, c)."""
        kernel = r.ReduceSum(r.Mul(r.Mul(gain, w), q_pow), r.i64([1]), keepdims=1)  # (K, 1, chunk)
        matrix = r.Gather(kernel, r.Max(diff, r.i64(0)), axis=2)  # (K, 1, chunk, chunk): k_{i-j}
        matrix = r.Mul(r.Reshape(matrix, r.i64([0, chunk, chunk])), lower)
        return _square(r, r.Transpose(matrix, perm=[0, 2, 1]), c, [1, 2])

    y = b.MatMul(zc, toeplitz(g3, b))  # (K, B*nC, c)
    states, final, chunk0_pads = _chunk_end_states(b, chunks, w, q, steps, chunk, prev)

    # The state entering each chunk (S_{c-1}; zero before chunk 0) reaches its outputs through g q^(i+1).
    entering = b.Slice(b.Pad(states, b.i64([0, 0, 1, 0, 0, 0, 0, 0])), b.i64([0]), chunks.n_chunks, b.i64([2]))
    entering = b.Reshape(b.Transpose(entering, perm=[0, 3, 2, 1]),  # (K, B, nC, N)
                         b.Concat(b.i64([0, -1]), b.dim(q, 1), axis=0))  # (K, B*nC, N)

    def from_entering(gain: str, r: Body) -> str:  # (K, B*nC, c)
        return r.MatMul(entering, r.Slice(r.Mul(gain, q_pow_next), r.i64([0]), c, r.i64([2])))

    y = b.Add(y, from_entering(g3, b))
    if prev is not None:
        y = b.Add(y, _from_prev(b, chunks, q, g3, prev, chunk0_pads))

    def unpad(r: Body, values: str) -> str:  # (K, B*nC, c) -> (K, B, L)
        values = r.Reshape(values, r.Concat(r.i64([0, -1]), padded, axis=0))  # (K, B, Lp)
        return r.Slice(values, pad, padded, r.i64([2]))

    def tail(r: Body, taps: str) -> str:
        """sum_{l >= taps} k_l z_{t-l} = sum_n g q^taps h_{t-taps}: the states projected with g q^taps, delayed."""
        gain = r.Mul(g3, r.Pow(q, r.Cast(taps, to=_FLOAT)))  # (K, N, 1)
        y_tail = unpad(r, r.Add(r.MatMul(zc, toeplitz(gain, r)), from_entering(gain, r)))  # (K, B, L), undelayed
        delayed = r.Pad(y_tail, r.Concat(r.i64([0, 0]), taps, r.i64([0, 0, 0]), axis=0))  # (K, B, L + taps)
        return r.Slice(delayed, r.i64([0]), length, r.i64([2]))

    return unpad(b, y), final, tail


def _if_graph(b: Body, name: str, output: str, rank: int) -> object:
    """The nodes recorded in ``b`` as an If branch producing ``output`` (outer values are read by name)."""
    # The checker wants the rank of a graph output; the dims stay symbolic.
    return helper.make_graph(b.nodes, name, [], [helper.make_tensor_value_info(output, _FLOAT, [None] * rank)])


def build_mega_ema_function(with_state: bool, chunk: int = CHUNK, opset: int = MIN_OPSET):
    """The FunctionProto ``tensorkiln::MegaEma`` importing ONNX ``opset``; ``with_state`` selects the body that
    reads ``prev_state``."""

    def body(b: Body):
        x, delta, alpha, beta, gamma, prev_state = MEGA_EMA.input_names
        w, q, g = ema_coefficients(b, delta, alpha, beta, gamma)
        rows = b.dim(delta, 0)  # (1,): K = D or 2D
        channels = b.dim(x, 2)  # (1,): D
        xt = b.Transpose(b.Cast(x, to=_FLOAT), perm=[2, 0, 1])  # (D, B, L)
        # Rows [D, 2D) see time reversed; with K = D the slice keeps only the forward rows.
        z = b.Slice(b.Concat(xt, reverse_time(b, xt, 2), axis=0), b.i64([0]), rows, b.i64([0]))  # (K, B, L)
        prev = None
        if with_state:
            prev = b.Transpose(b.Cast(prev_state, to=_FLOAT), perm=[1, 0, 2])  # (D, B, N)
            prev = b.Pad(prev, b.Concat(b.i64([0, 0, 0]), b.Sub(rows, channels), b.i64([0, 0]), axis=0))  # (K, B, N)
        y, final, tail = chunked_ema(b, z, w, q, g, prev, chunk)

        # Truncation: only when the attribute is positive; the kernel then has min(truncation, L) taps.
        truncation = b.Unsqueeze(b.attribute(Ref("truncation", "INT")), b.i64([0]))  # (1,)
        then = Body(prefix="trunc_")
        taps = then.Min(truncation, b.dim(x, 1))
        then_out = then.Sub(y, tail(then, taps))
        keep = Body(prefix="full_")
        keep_out = keep.Identity(y)
        y = b.If(b.Squeeze(b.Greater(truncation, b.i64([0])), b.i64([0])),
                 then_branch=_if_graph(then, "truncated", then_out, 3),
                 else_branch=_if_graph(keep, "untruncated", keep_out, 3))

        # Bidirectional: add the backward rows, reversed back, to the forward ones (zeros when K = D).
        y = b.Pad(y, b.Concat(b.i64([0, 0, 0]), b.Sub(b.Mul(channels, b.i64([2])), rows), b.i64([0, 0]), axis=0))
        forward = b.Slice(y, b.i64([0]), channels, b.i64([0]))  # (D, B, L)
        backward = b.Slice(y, channels, b.Mul(channels, b.i64([2])), b.i64([0]))
        y = b.Add(forward, reverse_time(b, backward, 2))
        output = b.CastLike(b.Transpose(y, perm=[1, 2, 0]), x)  # (B, L, D)
        final = b.Slice(final, b.i64([0]), channels, b.i64([0]))  # (D, B, N): forward rows
        final_state = b.CastLike(b.Transpose(final, perm=[1, 0, 2]), x)  # (B, D, N)
        return output, final_state

    inputs = list(MEGA_EMA.input_names) if with_state else list(MEGA_EMA.input_names[:-1])
    state = "with prev_state" if with_state else "without prev_state"
    return build_function(MEGA_EMA, body, inputs, doc=f"Mega's damped EMA, chunked scan (C={chunk}), {state}.",
                          variant=mega_ema_variant(with_state), opset=opset)


def mega_ema_variant(with_state: bool) -> str:
    """The variant label of the body a node with (or without) a prev_state input needs."""
    return f"prev_state={'present' if with_state else 'absent'}"

