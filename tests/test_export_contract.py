"""The node contract (``runtime/contract.py``) against its oracle, the torch op schemas, and against exported nodes.

The contract must mirror ``torch.ops.tensorkiln.mra_attention`` and ``mega_ema`` exactly: inputs in positional
order with the same names and optionality, one attribute per keyword argument with the same name, type and default,
and one output per return. The exported ``tensorkiln`` nodes must carry exactly those attributes with the values the
model passed. The contract module itself must import without torch (the runtime reads it).
"""

from __future__ import annotations

import subprocess
import sys

import onnx
import pytest
import torch

import tensorkiln.reference.ops  # noqa: F401  (registers the ops)
from tensorkiln.reference.ops import mega_ema, mra_attention
from tensorkiln.runtime import contract
from tensorkiln.runtime.contract import CONTRACTS, MEGA_EMA, MRA_ATTENTION, contract_for

# torch schema type -> the contract's ONNX attribute type (ONNX has no bool: 0/1 ints).
_SCHEMA_TYPES = {"int": "INT", "SymInt": "INT", "bool": "INT", "float": "FLOAT", "str": "STRING"}


def _schema(node: contract.NodeContract):
    namespace, name = node.torch_op.split("::")
    return getattr(getattr(torch.ops, namespace), name).default._schema


@pytest.mark.parametrize("node", list(CONTRACTS.values()), ids=list(CONTRACTS))
def test_contract_matches_torch_schema(node):
    schema = _schema(node)
    assert schema.name == node.torch_op
    positional = [a for a in schema.arguments if not a.kwarg_only]
    keywords = [a for a in schema.arguments if a.kwarg_only]

    assert [a.name for a in positional] == list(node.input_names)
    for argument, spec in zip(positional, node.inputs):
        assert str(argument.type) in ("Tensor", "Optional[Tensor]"), argument
        assert (str(argument.type) == "Optional[Tensor]") == spec.optional, spec.name

    assert [a.name for a in keywords] == list(node.attribute_names)
    for argument, spec in zip(keywords, node.attributes):
        assert _SCHEMA_TYPES[str(argument.type)] == spec.onnx_type, spec.name
        assert argument.has_default_value() == (not spec.required), spec.name
        if argument.has_default_value():
            default = argument.default_value
            if isinstance(default, bool):
                default = int(default)
            assert default == spec.default and type(default) is type(spec.default), spec.name

    assert len(schema.returns) == len(node.outputs)


def test_contract_is_consistent():
    for node in CONTRACTS.values():
        assert node.domain == "tensorkiln" and node.domain_version == 1 and node.plugin_version == "1"
        names = [t.name for t in node.inputs + node.outputs]
        assert len(set(node.input_names)) == len(node.inputs) and len(set(node.output_names)) == len(node.outputs)
        for spec in node.inputs + node.outputs:
            assert spec.dtypes and all(t.startswith("tensor(") for t in spec.dtypes)
            assert spec.rank == len(spec.shape.strip("()").split(","))
            if spec.same_dtype_as is not None:
                assert spec.same_dtype_as in names
        # Optional inputs only at the end, so a shorter input list leaves them out.
        flags = [spec.optional for spec in node.inputs]
        assert flags == sorted(flags)
    assert MRA_ATTENTION.attribute("approx_mode").choices == ("full", "sparse")
    assert MEGA_EMA.defaults() == {"bidirectional": 0, "truncation": 0}
    assert contract_for("MegaEma") is MEGA_EMA
    with pytest.raises(KeyError, match="known"):
        contract_for("Nope")
    with pytest.raises(KeyError, match="has no attribute"):
        MRA_ATTENTION.attribute("nope")


def test_contract_imports_without_torch():
    code = (
        "import sys; import tensorkiln.runtime.contract as c; "
        "bad = sorted(m for m in ('torch', 'onnx', 'onnxscript') if m in sys.modules); "
        "assert not bad, bad; print(len(c.CONTRACTS))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2"


class _BothOps(torch.nn.Module):
    """One call of each op with non-default attributes, plus one MegaEma call with prev_state."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.ema = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.randn(*shape, generator=g)) for shape in ((8, 2, 1),) * 3 + ((8, 2),)]
        )

    def forward(self, q, k, v, mask, x, prev):
        attention = mra_attention(q, k, v, mask, num_blocks=3, scale=0.25, approx_mode="sparse",
                                  initial_prior_first_n_blocks=1, initial_prior_diagonal_n_blocks=2)
        y, state = mega_ema(x, *self.ema, None, bidirectional=True, truncation=7)
        y2, state2 = mega_ema(x, *(p[:4] for p in self.ema), prev)
        return attention, y, state, y2, state2


def test_exported_nodes_carry_exactly_the_contract_attributes():
    from tensorkiln.export.custom_ops import TRANSLATION_TABLE

    args = (*(torch.randn(1, 2, 40, 8) for _ in range(3)), torch.ones(1, 40), torch.randn(1, 40, 4),
            torch.randn(1, 4, 2))
    program = torch.onnx.export(_BothOps().eval(), args, dynamo=True, custom_translation_table=TRANSLATION_TABLE,
                                verbose=False)
    nodes = [n for n in program.model_proto.graph.node if n.domain == "tensorkiln"]
    assert sorted(n.op_type for n in nodes) == ["MegaEma", "MegaEma", "MraAttention"]
    expected = {
        "MraAttention": [dict(num_blocks=3, scale=0.25, approx_mode=b"sparse", initial_prior_first_n_blocks=1,
                              initial_prior_diagonal_n_blocks=2)],
        "MegaEma": [dict(bidirectional=1, truncation=7), dict(bidirectional=0, truncation=0)],
    }
    types = {"INT": onnx.AttributeProto.INT, "FLOAT": onnx.AttributeProto.FLOAT, "STRING": onnx.AttributeProto.STRING}
    for node in nodes:
        spec = CONTRACTS[node.op_type]
        assert sorted(a.name for a in node.attribute) == sorted(spec.attribute_names)  # ONNX attributes are unordered
        for attribute in node.attribute:
            assert attribute.type == types[spec.attribute(attribute.name).onnx_type], attribute.name
        values = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert values in expected[node.op_type], values
        expected[node.op_type].remove(values)
        assert len(node.output) == len(spec.outputs)
    ema_inputs = sorted(len(n.input) for n in nodes if n.op_type == "MegaEma")
    assert ema_inputs == [5, 6]  # prev_state only where the model passed one
