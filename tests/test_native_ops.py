"""The native kernels of libtensorkiln_ort.so against the function bodies and the torch ops, one node at a time.

Each case is a one-node ONNX model completed by ``add_local_functions`` (exactly what an export holds), run in ONNX
Runtime twice: with the library registered (the native kernel takes the node) and without it (ORT inlines the
function body). Both are compared with the oracle, the torch op ``tensorkiln::mra_attention`` / ``mega_ema`` on the
same inputs, and with each other: fp32 max abs <= OP_VS_ORACLE_MAX_ABS. The cases cover the MRA configurations of
tests/test_parity_mra.py and the presets (budgets, both approx modes, both priors, head dims 8 to 128), Mega's
(bidirectional, truncation, chunk lengths, prev_state: the decoder cache), odd lengths, batch > 1 with padding,
ties at the budget's edge, other dtypes, omitted attributes, and errors that must come back as ORT errors.
"""

from __future__ import annotations

import glob
import json
import math

import numpy as np
import onnxruntime as ort
import pytest
import torch
from native_library import run, session
from onnx import TensorProto, helper

import tensorkiln.reference.ops  # noqa: F401  (registers the torch ops)
from tensorkiln.export.custom_ops import add_local_functions
from tensorkiln.runtime.contract import DOMAIN, MEGA_EMA, MRA_ATTENTION
from tensorkiln.runtime.tolerances import OP_VS_ORACLE_MAX_ABS as TOL

_ONNX = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16, np.float64: TensorProto.DOUBLE}


def _model(op_type: str, arrays: list[np.ndarray], outputs: int, with_function: bool = True, **attributes):
    names = list((MRA_ATTENTION if op_type == "MraAttention" else MEGA_EMA).input_names)[:len(arrays)]
    node = helper.make_node(op_type, names, [f"out{i}" for i in range(outputs)], domain=DOMAIN, **attributes)
    out_type = _ONNX[arrays[0].dtype.type]
    graph = helper.make_graph(
        [node], "one_node",
        [helper.make_tensor_value_info(n, _ONNX[a.dtype.type], [None] * a.ndim) for n, a in zip(names, arrays)],
        [helper.make_tensor_value_info(f"out{i}", out_type, None) for i in range(outputs)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(DOMAIN, 1)],
                              ir_version=10)
    if with_function:
        add_local_functions(model)
    return model


def _max_abs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) if np.size(a) else 0.0


def _padding_mask(batch: int, length: int) -> np.ndarray:
    """Row 0 full; row b > 0 loses its last (b * 23) % length tokens (at least one token stays)."""
    mask = np.ones((batch, length), np.float32)
    for row in range(1, batch):
        mask[row, max(1, length - (row * 23) % length):] = 0.0
    return mask


def _three_ways(op_type, arrays, outputs, library, torch_outputs, **attributes):
    """Native, function body and torch op outputs; asserts all pairs within TOL and returns the native ones."""
    model = _model(op_type, arrays, outputs, **attributes)
    native_out = run(session(model, library), arrays)
    function_out = run(session(model, None), arrays)
    for name, got, body, want in zip(range(outputs), native_out, function_out, torch_outputs):
        want = want.detach().numpy()
        assert got.dtype == arrays[0].dtype and got.shape == want.shape
        errors = {"native-torch": _max_abs(got, want), "function-torch": _max_abs(body, want),
                  "native-function": _max_abs(got, body)}
        assert max(errors.values()) <= TOL, (name, errors)
    return native_out


# ------------------------------------------------------------------------------------------------- MraAttention

#: (batch, heads, length, head dim, num_blocks, approx_mode, first_n, diagonal_n).
MRA_CASES = {
    # tests/test_parity_mra.py's configurations (budget = max_position / 32 * block_per_row)
    "full-bpr1-hd32": (2, 2, 128, 32, 4, "full", 0, 0),
    "sparse-bpr2-hd16": (2, 4, 128, 16, 8, "sparse", 0, 0),
    "full-priors-bpr3-hd64": (2, 1, 128, 64, 12, "full", 1, 3),
    "sparse-priors-L64": (2, 2, 64, 32, 2, "sparse", 0, 1),
    "full-maxpos256-first2": (2, 4, 128, 16, 8, "full", 2, 0),
    "full-all-blocks-L64": (2, 2, 64, 32, 4, "full", 0, 0),
    # tiny-mra and the base presets' shapes, scaled down (4 blocks per row)
    "tiny-mra-L100": (3, 2, 100, 16, 16, "full", 0, 0),
    "base-512-4-like": (1, 2, 512, 64, 64, "full", 0, 0),
    # odd lengths, single tokens, ties at the budget's edge, other head dims
    "L1": (2, 2, 1, 8, 1, "full", 0, 0),
    "L20-sparse": (3, 2, 20, 8, 1, "sparse", 0, 0),
    "L70-hd40-priors": (3, 2, 70, 40, 3, "full", 1, 2),
    "L333-ties-full": (2, 2, 333, 8, 4, "full", 0, 0),
    "L333-ties-sparse": (2, 2, 333, 8, 4, "sparse", 0, 0),
    "hd100-full": (2, 1, 96, 100, 5, "full", 0, 1),
    "hd128-sparse": (2, 1, 160, 128, 9, "sparse", 2, 2),
    "budget-over-blocks": (2, 2, 45, 24, 10**6, "full", 0, 0),
}


def _mra_arrays(batch, heads, length, dim, seed):
    rng = np.random.default_rng(seed)
    qkv = [rng.standard_normal((batch, heads, length, dim), dtype=np.float32) for _ in range(3)]
    return [*qkv, _padding_mask(batch, length)]


def _mra_torch(arrays, **attributes):
    tensors = [torch.from_numpy(np.asarray(a)) for a in arrays]
    return [torch.ops.tensorkiln.mra_attention(*tensors, **attributes)]


@pytest.mark.parametrize("case", list(MRA_CASES))
def test_mra_native_matches_function_body_and_torch_op(native_library, case):
    batch, heads, length, dim, blocks, mode, first, diagonal = MRA_CASES[case]
    attributes = dict(num_blocks=blocks, scale=1.0 / math.sqrt(dim), approx_mode=mode,
                      initial_prior_first_n_blocks=first, initial_prior_diagonal_n_blocks=diagonal)
    arrays = _mra_arrays(batch, heads, length, dim, seed=length + dim)
    (out,) = _three_ways("MraAttention", arrays, 1, native_library, _mra_torch(arrays, **attributes), **attributes)
    padded = ~arrays[3].astype(bool)
    assert np.all(out.transpose(0, 2, 1, 3)[padded] == 0.0), "padded positions must be zero"


def test_mra_omitted_attributes_take_the_contract_defaults(native_library):
    arrays = _mra_arrays(2, 2, 96, 16, seed=3)
    model = _model("MraAttention", arrays, 1, with_function=False, num_blocks=5, scale=0.25)
    (got,) = run(session(model, native_library), arrays)
    defaults = MRA_ATTENTION.defaults()
    (want,) = _mra_torch(arrays, num_blocks=5, scale=0.25, **defaults)
    assert _max_abs(got, want.numpy()) <= TOL


@pytest.mark.parametrize("mask_dtype", [np.float64, np.float16])
def test_mra_mask_of_another_dtype(native_library, mask_dtype):
    arrays = _mra_arrays(2, 2, 50, 8, seed=5)
    attributes = dict(num_blocks=3, scale=0.3, approx_mode="full", initial_prior_first_n_blocks=0,
                      initial_prior_diagonal_n_blocks=0)
    arrays[3] = arrays[3].astype(mask_dtype)
    model = _model("MraAttention", arrays, 1, with_function=False, **attributes)
    (got,) = run(session(model, native_library), arrays)
    assert _max_abs(got, _mra_torch(arrays, **attributes)[0].numpy()) <= TOL


# ------------------------------------------------------------------------------------------------------ MegaEma

#: (batch, length, channels D, ndim N, bidirectional, truncation, with prev_state, slow decay).
EMA_CASES = {
    "uni-L1": (2, 1, 6, 4, False, 0, False, False),
    "bi-L5": (1, 5, 6, 4, True, 0, False, False),
    "uni-trunc7-slow": (3, 77, 6, 4, False, 7, False, True),
    "bi-trunc70-L300": (2, 300, 6, 4, True, 70, False, False),
    "trunc-over-length": (3, 129, 8, 4, False, 200, False, False),
    "bi-trunc1": (2, 33, 6, 4, True, 1, False, False),
    "tiny-mega-state-L64": (2, 64, 32, 4, False, 0, True, False),
    "state-L65-slow": (2, 65, 32, 16, False, 0, True, True),
    "state-decode-step": (3, 1, 32, 4, False, 0, True, True),
    "bi-L1000-slow": (1, 1000, 16, 16, True, 0, False, True),
    "chunk8-like": (2, 8, 32, 4, False, 0, False, False),
}


def _ema_arrays(batch, length, channels, ndim, bidirectional, with_state, slow, seed):
    rng = np.random.default_rng(seed)
    rows = 2 * channels if bidirectional else channels
    params = [rng.standard_normal((rows, ndim, 1)).astype(np.float32) * 0.5 - (3.0 if slow else 0.0),
              rng.standard_normal((rows, ndim, 1)).astype(np.float32) * 0.5,
              rng.standard_normal((rows, ndim, 1)).astype(np.float32),
              rng.standard_normal((rows, ndim)).astype(np.float32)]
    arrays = [rng.standard_normal((batch, length, channels)).astype(np.float32), *params]
    if with_state:
        arrays.append(rng.standard_normal((batch, channels, ndim)).astype(np.float32))
    return arrays


def _ema_torch(arrays, bidirectional, truncation):
    tensors = [torch.from_numpy(np.asarray(a)) for a in arrays]
    state = tensors[5] if len(tensors) > 5 else None
    return list(torch.ops.tensorkiln.mega_ema(*tensors[:5], state, bidirectional=bidirectional,
                                              truncation=truncation))


@pytest.mark.parametrize("case", list(EMA_CASES))
def test_ema_native_matches_function_body_and_torch_op(native_library, case):
    batch, length, channels, ndim, bidirectional, truncation, with_state, slow = EMA_CASES[case]
    arrays = _ema_arrays(batch, length, channels, ndim, bidirectional, with_state, slow, seed=length)
    want = _ema_torch(arrays, bidirectional, truncation)
    _three_ways("MegaEma", arrays, 2, native_library, want, bidirectional=int(bidirectional), truncation=truncation)


def test_ema_state_carries_across_calls(native_library):
    """The decoder cache path: a prefill then single-token steps, each fed the last final_state, equals one call."""
    arrays = _ema_arrays(2, 40, 8, 4, False, True, True, seed=11)
    model = _model("MegaEma", arrays, 2, with_function=False, bidirectional=0, truncation=0)
    sess = session(model, native_library)
    full_out, full_state = run(sess, arrays)
    state, pieces = arrays[5], []
    for start, stop in ((0, 30), *((t, t + 1) for t in range(30, 40))):
        out, state = run(sess, [arrays[0][:, start:stop], *arrays[1:5], state])
        pieces.append(out)
    assert _max_abs(np.concatenate(pieces, axis=1), full_out) <= TOL
    assert _max_abs(state, full_state) <= TOL


def test_ema_fp16_and_fp64_parameters(native_library):
    """fp16 x (computed in fp32, returned in fp16, as the contract says) with fp64 parameters of their own."""
    arrays = _ema_arrays(2, 50, 6, 4, True, False, False, seed=2)
    arrays = [arrays[0].astype(np.float16)] + [p.astype(np.float64) for p in arrays[1:]]
    model = _model("MegaEma", arrays, 2, with_function=False, bidirectional=1, truncation=0)
    got = run(session(model, native_library), arrays)
    exact = _ema_torch([arrays[0].astype(np.float32), *arrays[1:]], True, 0)
    half = _ema_torch(arrays, True, 0)
    for g, e, h in zip(got, exact, half):
        assert g.dtype == np.float16
        # One rounding to fp16 of an fp32 result: at most the torch op's own fp16 error, plus one fp16 step.
        assert _max_abs(g, e.numpy()) <= _max_abs(h.numpy(), e.numpy()) + float(np.spacing(np.float16(
            np.abs(e.numpy()).max())))


# --------------------------------------------------------------------------------------- precedence and errors


def test_registered_kernel_runs_instead_of_the_function(native_library, tmp_path):
    """With the library, ORT's profile shows one MraAttention kernel and none of the body's ops; without it, the
    body's standard ops."""
    arrays = _mra_arrays(1, 2, 64, 16, seed=0)
    model = _model("MraAttention", arrays, 1, num_blocks=2, scale=0.25, approx_mode="full",
                   initial_prior_first_n_blocks=0, initial_prior_diagonal_n_blocks=0)
    kernels = {}
    for name, library in (("native", native_library), ("function", None)):
        sess = session(model, library, profile_prefix=str(tmp_path / name))
        run(sess, arrays)
        events = json.loads(open(sess.end_profiling()).read())
        kernels[name] = {e["args"]["op_name"] for e in events if e.get("cat") == "Node" and "op_name" in e["args"]}
    assert kernels["native"] == {"MraAttention"}
    assert "MraAttention" not in kernels["function"] and {"MatMul", "TopK"} <= kernels["function"]
    assert glob.glob(str(tmp_path / "*.json"))


def test_contract_violations_are_ort_errors_not_crashes(native_library):
    arrays = _mra_arrays(2, 2, 40, 8, seed=1)
    model = _model("MraAttention", arrays, 1, with_function=False, num_blocks=0, scale=0.25)
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.RuntimeException,
                       match="tensorkiln::MraAttention: field 'num_blocks' must be at least 1"):
        session(model, native_library)  # refused when ORT creates the kernel, with the plugins' message

    model = _model("MraAttention", arrays, 1, with_function=False, num_blocks=2, scale=0.25, approx_mode="dense")
    with pytest.raises(Exception, match="approx_mode"):
        session(model, native_library)

    arrays = _ema_arrays(2, 10, 6, 4, False, True, False, seed=1)
    model = _model("MegaEma", arrays, 2, with_function=False, bidirectional=0, truncation=0)
    sess = session(model, native_library)
    arrays[4] = arrays[4][:, :3]  # gamma's N disagrees with the others'
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument, match="kernel_projection_matrix"):
        run(sess, arrays)
    model = _model("MegaEma", arrays[:5] + [arrays[5]], 2, with_function=False, bidirectional=0, truncation=3)
    with pytest.raises(Exception, match="prev_state"):
        run(session(model, native_library), _ema_arrays(2, 10, 6, 4, False, True, False, seed=1))
