"""A small recorder for ONNX function bodies, and the bare custom node that torch's exporter records.

The bodies of the custom nodes (``export/mra_attention_function.py``, ``export/mega_ema_function.py``) are plain
Python that calls ``Body`` methods named after ONNX ops (``b.MatMul(x, y)``); each call records one NodeProto and
returns its output name. Python-level reuse (helpers, a variant chosen by a flag) then costs nothing in the graph,
and ``build_function`` gives an ``onnx.FunctionProto`` whose nodes are exactly the ones written: only the default
ONNX domain, attribute references (``Ref``) for the node's attributes, no initializers.

``node_op`` is an onnxscript ``Op`` with an ``onnx.defs.OpSchema`` made from the contract: called inside a
``custom_translation_table`` entry of ``torch.onnx.export(dynamo=True)``, it records one node ``domain::op_type``
and nothing else. The function is added after export (``export/custom_ops.py``): torch 2.13 runs onnxscript's
version converter on every export, and it inlines all model-local functions first, so a function attached during
translation would replace the node by its body.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Sequence

import onnx
import onnxscript
from onnx import TensorProto, helper

from tensorkiln.runtime.contract import NodeContract

__all__ = ["Body", "Ref", "build_function", "op_schema", "node_op", "MIN_OPSET", "VARIANT_KEY"]

#: The oldest default-domain opset the bodies are written for (ScatterElements reduction="max" is new in 18). Every
#: op they use means the same up to opset 23 (later versions only add types or attributes they do not set).
MIN_OPSET = 18

#: metadata_props key of a function body's variant (what it fixed that a node's attributes or inputs could vary).
VARIANT_KEY = "tensorkiln.variant"

_ATTRIBUTE_TYPES = {
    "INT": onnx.AttributeProto.INT,
    "FLOAT": onnx.AttributeProto.FLOAT,
    "STRING": onnx.AttributeProto.STRING,
}
_CONSTANT_FIELD = {"INT": "value_int", "FLOAT": "value_float", "STRING": "value_string"}


@dataclasses.dataclass(frozen=True)
class Ref:
    """A reference to an attribute of the enclosing function (``ref_attr_name``), of ONNX type ``onnx_type``."""

    name: str
    onnx_type: str


class Body:
    """Records nodes; ``b.Op(*inputs, outputs=1, **attributes)`` returns the output name (or a tuple of them).

    An input may be ``""`` (an omitted optional input). Attribute values are Python values, ``Ref`` for
    references to the function's attributes, or ``onnx.GraphProto`` for subgraphs.
    """

    def __init__(self, prefix: str = "") -> None:
        self.nodes: list[onnx.NodeProto] = []
        self._prefix = prefix
        self._count = 0

    def _fresh(self, hint: str) -> str:
        self._count += 1
        return f"{self._prefix}{hint}_{self._count}"

    def __getattr__(self, op_type: str) -> Callable[..., typing.Any]:
        if op_type.startswith("_") or not op_type[:1].isupper():
            raise AttributeError(op_type)

        def emit(*inputs: str, outputs: int = 1, **attributes: typing.Any):
            return self.op(op_type, inputs, outputs, attributes)

        return emit

    def op(self, op_type: str, inputs: Sequence[str], outputs: int, attributes: dict[str, typing.Any]):
        for value in inputs:
            if not isinstance(value, str):
                raise TypeError(f"{op_type}: inputs are value names, got {value!r}; use b.const(...) for constants")
        names = [self._fresh(op_type) for _ in range(outputs)]
        protos = []
        for key, value in attributes.items():
            if isinstance(value, Ref):
                attribute_type = _ATTRIBUTE_TYPES[value.onnx_type]
                protos.append(helper.make_attribute_ref(key, attribute_type, ref_attr_name=value.name))
            else:
                protos.append(helper.make_attribute(key, value))
        node = helper.make_node(op_type, list(inputs), names, name=self._fresh(f"n_{op_type}"))
        node.attribute.extend(protos)
        self.nodes.append(node)
        return names[0] if outputs == 1 else tuple(names)

    # Constants: every one is a Constant node, since function bodies have no initializers.
    def const(self, value, dtype: int = TensorProto.FLOAT) -> str:
        """A Constant of ``value`` (a Python scalar gives a scalar, a list a 1-D tensor) and ONNX ``dtype``."""
        dims = [] if not isinstance(value, (list, tuple)) else [len(value)]
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        return self.Constant(value=helper.make_tensor(self._fresh("c"), dtype, dims, values))

    def f32(self, value) -> str:
        return self.const(value, TensorProto.FLOAT)

    def i64(self, value) -> str:
        return self.const(value, TensorProto.INT64)

    def attribute(self, ref: Ref) -> str:
        """The value of a function attribute as a scalar tensor (INT -> int64, FLOAT -> float)."""
        return self.Constant(**{_CONSTANT_FIELD[ref.onnx_type]: ref})

    def dim(self, x: str, axis: int) -> str:
        """``x.shape[axis]`` (axis >= 0) as a 1-D int64 tensor of one element."""
        return self.Shape(x, start=axis, end=axis + 1)


def build_function(
    contract: NodeContract,
    body: Callable[[Body], Sequence[str]],
    input_names: Sequence[str] | None = None,
    doc: str = "",
    variant: str = "",
    opset: int = MIN_OPSET,
) -> onnx.FunctionProto:
    """The FunctionProto ``contract.domain::contract.op_type`` whose nodes ``body`` records.

    ``body`` gets a ``Body`` and returns the output names (in the contract's order). The function's inputs are the
    contract's (or ``input_names``); its attributes are the contract's with their defaults. ``variant`` names what
    the body fixed that a node could vary (e.g. "approx_mode=full"); it is stored under ``VARIANT_KEY`` in the
    function's metadata_props, so a model can be checked for nodes that the function does not fit. ``opset`` is the
    default-domain version the body imports: the model's own, since the checker wants the two to agree.
    """
    if opset < MIN_OPSET:
        raise ValueError(f"{contract.op_type}: the function bodies need ONNX opset >= {MIN_OPSET}, got {opset}")
    recorder = Body()
    outputs = list(body(recorder))
    if len(outputs) != len(contract.outputs):
        raise ValueError(f"{contract.op_type}: body returned {len(outputs)} outputs, the contract has "
                         f"{len(contract.outputs)}")
    # Rename the returned values to the contract's output names: readable, and stable across body changes.
    renames = dict(zip(outputs, contract.output_names))
    for node in recorder.nodes:
        node.output[:] = [renames.get(name, name) for name in node.output]
        node.input[:] = [renames.get(name, name) for name in node.input]
    for name in outputs:
        if name in contract.input_names:
            raise ValueError(f"{contract.op_type}: an output may not be an input of the function")
    required = [spec.name for spec in contract.attributes if spec.required]
    defaults = [helper.make_attribute(spec.name, spec.default) for spec in contract.attributes if not spec.required]
    function = helper.make_function(
        contract.domain,
        contract.op_type,
        list(input_names or contract.input_names),
        list(contract.output_names),
        recorder.nodes,
        [helper.make_opsetid("", opset)],
        attributes=required,
        attribute_protos=defaults,
        doc_string=doc,
    )
    if variant:
        function.metadata_props.add(key=VARIANT_KEY, value=variant)
    return function


def op_schema(contract: NodeContract) -> onnx.defs.OpSchema:
    """An ``onnx.defs.OpSchema`` of the node, built from the contract (not registered anywhere).

    Inputs and outputs whose dtype must match share a type variable; every other tensor has its own.
    """
    type_vars: dict[str, str] = {}
    constraints: list[tuple[str, list[str], str]] = []

    def type_var(spec) -> str:
        if spec.same_dtype_as is not None:
            return type_vars[spec.same_dtype_as]
        name = f"T_{spec.name}"
        type_vars[spec.name] = name
        constraints.append((name, list(spec.dtypes), f"dtype of {spec.name}"))
        return name

    option = onnx.defs.OpSchema.FormalParameterOption
    inputs = [
        onnx.defs.OpSchema.FormalParameter(spec.name, type_var(spec), spec.doc,
                                           param_option=option.Optional if spec.optional else option.Single)
        for spec in contract.inputs
    ]
    outputs = [onnx.defs.OpSchema.FormalParameter(spec.name, type_var(spec), spec.doc) for spec in contract.outputs]
    attributes = [
        onnx.defs.OpSchema.Attribute(spec.name, _SCHEMA_ATTRIBUTE_TYPES[spec.onnx_type], spec.doc, required=True)
        if spec.required else
        onnx.defs.OpSchema.Attribute(spec.name, helper.make_attribute(spec.name, spec.default), spec.doc)
        for spec in contract.attributes
    ]
    return onnx.defs.OpSchema(contract.op_type, contract.domain, contract.domain_version, contract.doc,
                              inputs=inputs, outputs=outputs, type_constraints=constraints, attributes=attributes)


_SCHEMA_ATTRIBUTE_TYPES = {
    "INT": onnx.defs.OpSchema.AttrType.INT,
    "FLOAT": onnx.defs.OpSchema.AttrType.FLOAT,
    "STRING": onnx.defs.OpSchema.AttrType.STRING,
}


def node_op(contract: NodeContract) -> onnxscript.values.Op:
    """The onnxscript ``Op`` that records one bare ``contract`` node when called under torch's exporter."""
    return onnxscript.values.Op(onnxscript.values.Opset(contract.domain, contract.domain_version),
                                contract.op_type, op_schema(contract))
