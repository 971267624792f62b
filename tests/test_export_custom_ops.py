"""The custom ONNX nodes against their oracle, the torch ops, run in ONNX Runtime through the model-local functions.

Tiny modules that call ``tensorkiln::mra_attention`` / ``mega_ema`` are exported with ``torch.onnx.export(dynamo=True,
custom_translation_table=TRANSLATION_TABLE)`` and dynamic batch and sequence, completed by ``add_local_functions``,
checked (one custom node per call, a local function of the same domain and name with a standard-ops body,
``onnx.checker`` full check), and run in ORT (CPU) at shapes other than the traced one. Each output is compared
with the torch op on the same inputs: fp32 max abs error <= 1e-4 (measured: <= 3e-7 for MRA, <= 2e-6 for the EMA).

MRA's top-k has exact ties by construction (each block row's best block scores exactly 0 after the row max is
subtracted, and the priors add exact multiples of 5e3). ONNX's TopK breaks ties by the lower index, and so does
the torch op (a stable sort); most budgets here are still chosen so the k-th block is never tied (as in the real
configs, where the budget is at least one block per row).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import onnxscript
import pytest
import torch
from onnx import TensorProto, helper

import tensorkiln.reference.ops  # noqa: F401  (registers the ops)
from tensorkiln.export.custom_ops import TRANSLATION_TABLE, CustomNodeError, add_local_functions, check_custom_nodes
from tensorkiln.export.local_function import VARIANT_KEY
from tensorkiln.export.mega_ema_function import build_mega_ema_function
from tensorkiln.export.mra_attention_function import build_mra_attention_function
from tensorkiln.reference.ops import mega_ema, mra_attention
from tensorkiln.runtime.contract import DOMAIN, MEGA_EMA, MRA_ATTENTION
from tensorkiln.runtime.tolerances import FP32_MAX_ABS as FP32_TOL

BATCH, LENGTH = torch.export.Dim("batch"), torch.export.Dim("length")


def _export(module: torch.nn.Module, args: tuple, dynamic_shapes) -> onnx.ModelProto:
    program = torch.onnx.export(module.eval(), args, dynamo=True, custom_translation_table=TRANSLATION_TABLE,
                                dynamic_shapes=dynamic_shapes, verbose=False)
    add_local_functions(program.model)
    return program.model_proto


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _run(session: ort.InferenceSession, tensors) -> list[np.ndarray]:
    names = [i.name for i in session.get_inputs()]
    return session.run(None, {name: t.numpy() for name, t in zip(names, tensors)})


def _max_error(got: np.ndarray, want: torch.Tensor) -> float:
    return float(np.abs(got.astype(np.float64) - want.detach().double().numpy()).max())


def _assert_structure(model: onnx.ModelProto, op_type: str, calls: int, variant: str) -> None:
    nodes = [n for n in model.graph.node if n.domain == DOMAIN]
    assert [n.op_type for n in nodes] == [op_type] * calls
    functions = [f for f in model.functions if f.domain == DOMAIN]
    assert [(f.domain, f.name) for f in functions] == [(DOMAIN, op_type)]
    body_domains = {n.domain for n in functions[0].node}
    assert body_domains <= {""}, body_domains
    assert not any(n.op_type in ("DFT", "STFT") for n in functions[0].node)
    assert {p.key: p.value for p in functions[0].metadata_props}[VARIANT_KEY] == variant
    assert check_custom_nodes(model) == calls
    onnx.checker.check_model(model, full_check=True)


def _padding_mask(batch: int, length: int) -> torch.Tensor:
    """Row 0 full; row b > 0 loses its last (b * 23) % length tokens (at least one token stays)."""
    mask = torch.ones(batch, length)
    for row in range(1, batch):
        mask[row, max(1, length - (row * 23) % length):] = 0.0
    return mask


# ------------------------------------------------------------------------------------------------- MraAttention

#: (head dim, num_blocks, first_n, diagonal_n) per call. Budget 4 covers one block per row up to L = 128; 3 with
#: both priors takes the three bonus-ranked blocks (0, 0), (0, 1), (1, 0); 10**6 covers every block (exact).
MRA_CALLS = ((8, 4, 0, 0), (40, 3, 1, 2), (8, 10**6, 0, 0))


class _Mra(torch.nn.Module):
    def __init__(self, approx_mode: str):
        super().__init__()
        self.approx_mode = approx_mode

    def forward(self, q8, k8, v8, q40, k40, v40, mask):
        tensors = {8: (q8, k8, v8), 40: (q40, k40, v40)}
        return tuple(
            mra_attention(*tensors[dim], mask, num_blocks=blocks, scale=1.0 / math.sqrt(max(dim, 32)),
                          approx_mode=self.approx_mode, initial_prior_first_n_blocks=first,
                          initial_prior_diagonal_n_blocks=diagonal)
            for dim, blocks, first, diagonal in MRA_CALLS
        )


def _mra_inputs(batch: int, length: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    qkv = [torch.randn(batch, 2, length, dim, generator=g) for dim in (8, 8, 8, 40, 40, 40)]
    return (*qkv, _padding_mask(batch, length))


@pytest.fixture(scope="module", params=["full", "sparse"])
def mra_model(request):
    mode = request.param
    seq = {0: BATCH, 2: LENGTH}
    model = _export(_Mra(mode), _mra_inputs(2, 64, seed=0), dynamic_shapes=(seq,) * 6 + ({0: BATCH, 1: LENGTH},))
    return mode, model, _session(model)


def test_mra_export_structure(mra_model):
    mode, model, _ = mra_model
    _assert_structure(model, "MraAttention", len(MRA_CALLS), f"approx_mode={mode}")
    for node, (_dim, blocks, first, diagonal) in zip(model.graph.node, MRA_CALLS):
        if node.domain == DOMAIN:
            values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            assert values["num_blocks"] == blocks and values["approx_mode"] == mode.encode()
            assert values["initial_prior_first_n_blocks"] == first
            assert values["initial_prior_diagonal_n_blocks"] == diagonal


@pytest.mark.parametrize("batch, length", [(1, 20), (3, 70), (2, 128), (2, 1)])
def test_mra_ort_matches_torch_op(mra_model, batch, length):
    mode, _, session = mra_model
    inputs = _mra_inputs(batch, length, seed=length)
    got = _run(session, inputs)
    want = _Mra(mode)(*inputs)
    errors = [_max_error(g, w) for g, w in zip(got, want)]
    assert max(errors) <= FP32_TOL, errors
    # Padded positions are zero, as in the op.
    mask = inputs[-1].numpy().astype(bool)
    for output in got:
        assert np.all(output.transpose(0, 2, 1, 3)[~mask] == 0.0)


@pytest.mark.parametrize("mode", ["full", "sparse"])
def test_mra_body_has_no_racy_scatter(mode):
    """Many selected tiles share a block row. ONNX Runtime's CPU ScatterND with a reduction splits repeated
    indices across threads and loses updates (measured: mra-base-4096-8's logits changed from run to run by up
    to 0.1 with 2 threads, and ORT issue #23396), so no body may reduce through ScatterND; ScatterElements
    reduces in order."""
    function = build_mra_attention_function(mode, 18)
    racy = [n.op_type for n in function.node if n.op_type == "ScatterND"
            and any(a.name == "reduction" and a.s not in (b"", b"none") for a in n.attribute)]
    assert not racy
    assert "ScatterElements" in {n.op_type for n in function.node}


# ------------------------------------------------------------------------------------------------------ MegaEma

#: (bidirectional, truncation, slow decay) per stateless call: slow decay keeps q near 1 (memory of ~40 steps).
EMA_CALLS = ((False, 0, False), (True, 0, False), (False, 7, True), (True, 70, False))
EMA_CHANNELS, EMA_NDIM = 6, 4


def _ema_params(bidirectional: bool, seed: int, slow: bool = False):
    g = torch.Generator().manual_seed(seed)
    rows = 2 * EMA_CHANNELS if bidirectional else EMA_CHANNELS
    delta = torch.randn(rows, EMA_NDIM, 1, generator=g) * 0.5 - (3.0 if slow else 0.0)
    alpha = torch.randn(rows, EMA_NDIM, 1, generator=g) * 0.5
    beta = torch.randn(rows, EMA_NDIM, 1, generator=g)
    gamma = torch.randn(rows, EMA_NDIM, generator=g)
    return [torch.nn.Parameter(t) for t in (delta, alpha, beta, gamma)]


class _Ema(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.params = torch.nn.ModuleList()
        for i, (bidirectional, _, slow) in enumerate(EMA_CALLS):
            holder = torch.nn.Module()
            holder.p = torch.nn.ParameterList(_ema_params(bidirectional, seed=i, slow=slow))
            self.params.append(holder)

    def forward(self, x):
        outputs = []
        for holder, (bidirectional, truncation, _) in zip(self.params, EMA_CALLS):
            outputs.extend(mega_ema(x, *holder.p, None, bidirectional=bidirectional, truncation=truncation))
        return tuple(outputs)


class _EmaState(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.p = torch.nn.ParameterList(_ema_params(False, seed=7))

    def forward(self, x, prev_state):
        return mega_ema(x, *self.p, prev_state)


@pytest.fixture(scope="module")
def ema_model():
    model = _export(_Ema(), (torch.randn(2, 64, EMA_CHANNELS),), dynamic_shapes=({0: BATCH, 1: LENGTH},))
    return model, _session(model)


@pytest.fixture(scope="module")
def ema_state_model():
    args = (torch.randn(2, 64, EMA_CHANNELS), torch.randn(2, EMA_CHANNELS, EMA_NDIM))
    model = _export(_EmaState(), args, dynamic_shapes=({0: BATCH, 1: LENGTH}, {0: BATCH}))
    return model, _session(model)


def test_ema_export_structure(ema_model, ema_state_model):
    _assert_structure(ema_model[0], "MegaEma", len(EMA_CALLS), "prev_state=absent")
    _assert_structure(ema_state_model[0], "MegaEma", 1, "prev_state=present")
    assert [len(n.input) for n in ema_state_model[0].graph.node if n.domain == DOMAIN] == [6]


@pytest.mark.parametrize("batch, length", [(2, 1), (1, 5), (3, 77), (2, 300)])  # 300: three chunks, padded
def test_ema_ort_matches_torch_op(ema_model, ema_state_model, batch, length):
    g = torch.Generator().manual_seed(length)
    x = torch.randn(batch, length, EMA_CHANNELS, generator=g)
    errors = [_max_error(o, w) for o, w in zip(_run(ema_model[1], [x]), _Ema()(x))]
    prev = torch.randn(batch, EMA_CHANNELS, EMA_NDIM, generator=g)
    errors += [_max_error(o, w) for o, w in zip(_run(ema_state_model[1], [x, prev]), _EmaState()(x, prev))]
    assert max(errors) <= FP32_TOL, errors


class _Fp16(torch.nn.Module):
    """One MraAttention and one MegaEma (with prev_state) call, for an fp16 export."""

    def __init__(self):
        super().__init__()
        self.ema = _EmaState()

    def forward(self, q, k, v, mask, x, prev_state):
        attention = mra_attention(q, k, v, mask, num_blocks=4, scale=0.2)
        return (attention, *self.ema(x, prev_state))


def _fp16_inputs(batch: int, length: int, seed: int) -> tuple:
    g = torch.Generator().manual_seed(seed)
    qkv = [torch.randn(batch, 2, length, 8, generator=g) for _ in range(3)]
    return (*qkv, _padding_mask(batch, length), torch.randn(batch, length, EMA_CHANNELS, generator=g),
            torch.randn(batch, EMA_CHANNELS, EMA_NDIM, generator=g))


def test_fp16_in_ort():
    """fp16 inputs and outputs run in ORT CPU (the bodies cast to fp32 inside, so ORT needs only fp16 Cast)."""
    seq = {0: BATCH, 2: LENGTH}
    dynamic = (seq, seq, seq, {0: BATCH, 1: LENGTH}, {0: BATCH, 1: LENGTH}, {0: BATCH})
    model = _export(_Fp16(), tuple(t.half() for t in _fp16_inputs(2, 64, seed=0)), dynamic_shapes=dynamic)
    inputs = _fp16_inputs(3, 50, seed=4)
    half = tuple(t.half() for t in inputs)
    got = _run(_session(model), half)
    for g, exact, torch_half in zip(got, _Fp16()(*inputs), _Fp16()(*half)):
        assert g.dtype == np.float16
        # The body computes in fp32 and rounds once, as the op does: at most the op's own fp16 error, doubled.
        assert _max_error(g, exact) <= 2 * _max_error(torch_half.detach().numpy(), exact) + 1e-7


# ------------------------------------------------------------------------------- functions at other opsets, checks


def _single_node_model(op_type: str, inputs: list[str], ranks: list[int], outputs: int, opset: int, **attributes):
    node = helper.make_node(op_type, inputs, [f"out{i}" for i in range(outputs)], domain=DOMAIN, **attributes)
    graph = helper.make_graph(
        [node], "one_node",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None] * r) for n, r in zip(inputs, ranks)],
        [helper.make_tensor_value_info(f"out{i}", TensorProto.FLOAT, [None] * 3 + [None] * (op_type == "MraAttention"))
         for i in range(outputs)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


@pytest.mark.parametrize("opset", [18, 23])
def test_bodies_at_model_opset(opset):
    """add_local_functions on a hand-built ModelProto: the bodies import the model's opset and still match the op."""
    attributes = dict(num_blocks=2, scale=0.2, approx_mode="sparse", initial_prior_first_n_blocks=0,
                      initial_prior_diagonal_n_blocks=0)
    model = _single_node_model("MraAttention", list(MRA_ATTENTION.input_names), [4, 4, 4, 2], 1, opset, **attributes)
    add_local_functions(model)
    assert {o.domain: o.version for o in model.functions[0].opset_import} == {"": opset}
    onnx.checker.check_model(model, full_check=True)
    inputs = _mra_inputs(2, 45, seed=1)[:3] + (_padding_mask(2, 45),)
    want = torch.ops.tensorkiln.mra_attention(*inputs, **attributes)
    assert _max_error(_run(_session(model), inputs)[0], want) <= FP32_TOL

    names = list(MEGA_EMA.input_names)
    model = _single_node_model("MegaEma", names, [3, 3, 3, 3, 2, 3], 2, opset, bidirectional=0, truncation=0)
    add_local_functions(model)
    onnx.checker.check_model(model, full_check=True)
    x, prev = torch.randn(2, 33, EMA_CHANNELS), torch.randn(2, EMA_CHANNELS, EMA_NDIM)
    params = [p.detach() for p in _ema_params(False, seed=3)]
    want = torch.ops.tensorkiln.mega_ema(x, *params, prev)
    got = _run(_session(model), [x, *params, prev])
    assert max(_max_error(g, w) for g, w in zip(got, want)) <= FP32_TOL


def test_add_local_functions_then_optimizer_keeps_nodes(ema_state_model):
    """The exporter's flow: onnxscript's optimizer without inlining leaves the node and its function working."""
    model = onnxscript.ir.serde.deserialize_model(ema_state_model[0])
    onnxscript.optimizer.optimize_ir(model, inline=False)
    proto = onnxscript.ir.serde.serialize_model(model)
    assert check_custom_nodes(proto) == 1
    x, prev = torch.randn(2, 40, EMA_CHANNELS), torch.randn(2, EMA_CHANNELS, EMA_NDIM)
    got = _run(_session(proto), [x, prev])
    assert max(_max_error(g, w) for g, w in zip(got, _EmaState()(x, prev))) <= FP32_TOL


def test_mixed_variants_are_refused():
    attributes = dict(num_blocks=2, scale=0.2, initial_prior_first_n_blocks=0, initial_prior_diagonal_n_blocks=0)
    names = list(MRA_ATTENTION.input_names)
    nodes = [helper.make_node("MraAttention", names, [f"out_{mode}"], domain=DOMAIN, approx_mode=mode, **attributes)
             for mode in ("full", "sparse")]
    graph = helper.make_graph(
        nodes, "mixed", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None] * r) for n, r in
                         zip(names, [4, 4, 4, 2])],
        [helper.make_tensor_value_info(f"out_{m}", TensorProto.FLOAT, [None] * 4) for m in ("full", "sparse")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    with pytest.raises(CustomNodeError, match="2 bodies"):
        add_local_functions(model)


def test_check_custom_nodes_reports_problems():
    names = list(MEGA_EMA.input_names)
    model = _single_node_model("MegaEma", names, [3, 3, 3, 3, 2, 3], 2, 18, bidirectional=0)  # no truncation
    with pytest.raises(CustomNodeError) as error:
        check_custom_nodes(model)
    message = str(error.value)
    assert "attributes ['bidirectional']" in message and "no local function" in message

    model = _single_node_model("MegaEma", names, [3, 3, 3, 3, 2, 3], 2, 18, bidirectional=0, truncation=0)
    model.functions.append(build_mega_ema_function(with_state=False))
    model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    with pytest.raises(CustomNodeError, match="prev_state=present"):
        check_custom_nodes(model)

    model = _single_node_model("MraAttention", list(MRA_ATTENTION.input_names), [4, 4, 4, 2], 1, 18, num_blocks=1,
                               scale=1.0, approx_mode="full", initial_prior_first_n_blocks=0,
                               initial_prior_diagonal_n_blocks=0)
    model.functions.append(build_mra_attention_function("full"))
    model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    assert check_custom_nodes(model) == 1
    next(a for a in model.graph.node[0].attribute if a.name == "approx_mode").s = b"Full"
    with pytest.raises(CustomNodeError, match="approx_mode='Full', allowed"):
        check_custom_nodes(model)


# ------------------------------------------------------------------------- numpy reference ops (onnx.reference)


def test_numpy_reference_ops_match_torch_op():
    """The bare nodes evaluated by onnx.reference with export/numpy_reference_function.py, against the torch ops."""
    from onnx.reference import ReferenceEvaluator

    from tensorkiln.export.numpy_reference_function import CUSTOM_OPS

    for mode, blocks, first, diagonal in (("full", 3, 0, 0), ("sparse", 3, 1, 2), ("full", 100, 0, 0)):
        attributes = dict(num_blocks=blocks, scale=0.2, approx_mode=mode, initial_prior_first_n_blocks=first,
                          initial_prior_diagonal_n_blocks=diagonal)
        model = _single_node_model("MraAttention", list(MRA_ATTENTION.input_names), [4, 4, 4, 2], 1, 18,
                                   **attributes)
        model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
        inputs = _mra_inputs(2, 70, seed=blocks)[:3] + (_padding_mask(2, 70),)
        got = ReferenceEvaluator(model, new_ops=CUSTOM_OPS).run(None, dict(zip(MRA_ATTENTION.input_names,
                                                                               (t.numpy() for t in inputs))))
        assert _max_error(got[0], torch.ops.tensorkiln.mra_attention(*inputs, **attributes)) <= FP32_TOL

    names = list(MEGA_EMA.input_names)
    for bidirectional, truncation, state in ((False, 0, True), (True, 0, False), (True, 9, False), (False, 4, False)):
        count = 6 if state else 5
        model = _single_node_model("MegaEma", names[:count], [3, 3, 3, 3, 2, 3][:count], 2, 18,
                                   bidirectional=int(bidirectional), truncation=truncation)
        model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
        x, prev = torch.randn(2, 30, EMA_CHANNELS), torch.randn(2, EMA_CHANNELS, EMA_NDIM)
        params = [p.detach() for p in _ema_params(bidirectional, seed=truncation)]
        tensors = [x, *params] + ([prev] if state else [])
        want = torch.ops.tensorkiln.mega_ema(x, *params, prev if state else None, bidirectional=bidirectional,
                                             truncation=truncation)
        got = ReferenceEvaluator(model, new_ops=CUSTOM_OPS).run(None, {n: t.numpy() for n, t in zip(names, tensors)})
        assert max(_max_error(g, w) for g, w in zip(got, want)) <= FP32_TOL


@pytest.mark.parametrize("mode", ["full", "sparse"])
def test_mra_ties_follow_onnx_topk(mode):
    """A budget below the block rows (4 < 11 at L = 333) leaves the k-th block tied at logit 0. The function body
    takes the lower flat index first (ONNX TopK), as the contract says; so do the numpy reference and the torch op
    (a stable sort), so all three agree."""
    from onnx.reference import ReferenceEvaluator

    from tensorkiln.export.numpy_reference_function import CUSTOM_OPS

    attributes = dict(num_blocks=4, scale=0.2, approx_mode=mode, initial_prior_first_n_blocks=0,
                      initial_prior_diagonal_n_blocks=0)
    model = _single_node_model("MraAttention", list(MRA_ATTENTION.input_names), [4, 4, 4, 2], 1, 18, **attributes)
    model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    inputs = _mra_inputs(2, 333, seed=5)[:3] + (_padding_mask(2, 333),)
    want = ReferenceEvaluator(model, new_ops=CUSTOM_OPS).run(
        None, dict(zip(MRA_ATTENTION.input_names, (t.numpy() for t in inputs))))[0]
    torch_op = torch.ops.tensorkiln.mra_attention(*inputs, **attributes)
    assert _max_error(want, torch_op) <= FP32_TOL
    add_local_functions(model)
    assert _max_error(_run(_session(model), inputs)[0], torch.from_numpy(want)) <= FP32_TOL
