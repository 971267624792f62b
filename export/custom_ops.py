"""The ONNX translation of the two custom ops: one ``tensorkiln`` node each, backed by a model-local function.

Use::

    program = torch.onnx.export(model, args, dynamo=True, custom_translation_table=TRANSLATION_TABLE, ...)
    add_local_functions(program.model)     # before program.save(...); also takes an onnx.ModelProto
    check_custom_nodes(program.model_proto)

Each call of ``torch.ops.tensorkiln.mra_attention`` / ``mega_ema`` becomes ONE node ``tensorkiln::MraAttention`` /
``tensorkiln::MegaEma`` carrying every attribute of the contract (``runtime/contract.py``; ``prev_state`` only when
given). ``add_local_functions`` then adds, for each op_type in the model, a local function of the same domain and
name whose body uses only standard ONNX ops at the model's opset (no DFT; ``export/mra_attention_function.py``,
``export/mega_ema_function.py``). ONNX Runtime inlines it, so the file runs anywhere; TensorRT's parser prefers a
registered plugin of the same name.

Why after export: torch 2.13's exporter always ends with onnxscript's version converter, which inlines every
model-local function before converting, so a function attached during translation would replace the node by its
body. A bare node passes the converter and the optimizer untouched (they skip unknown domains).

Two choices cannot be made inside a function body from a node's attributes and inputs without string tensors or
tests for an omitted input, which TensorRT cannot parse: MRA's ``approx_mode`` and whether MegaEma got
``prev_state``. So each has one body per case (its variant, stored in the function's metadata_props), and
``add_local_functions`` gives a model the one its nodes need; nodes of one op_type that need two variants cannot
share one function name, and it raises.
"""

from __future__ import annotations

from collections.abc import Iterator

import onnx
import onnx_ir as ir
import torch

import tensorkiln.reference.ops  # noqa: F401  (registers torch.ops.tensorkiln.*, the table's keys)
from tensorkiln.runtime.contract import CONTRACTS, DOMAIN, DOMAIN_VERSION, MEGA_EMA, MRA_ATTENTION
from tensorkiln.runtime.errors import KilnError

from . import local_function
from .mega_ema_function import build_mega_ema_function, mega_ema_variant
from .mra_attention_function import build_mra_attention_function, mra_variant

__all__ = ["TRANSLATION_TABLE", "add_local_functions", "check_custom_nodes", "CustomNodeError"]

_IR_VERSION = 10
_ONNX_ATTRIBUTE_TYPE = {"INT": onnx.AttributeProto.INT, "FLOAT": onnx.AttributeProto.FLOAT,
                        "STRING": onnx.AttributeProto.STRING}


class CustomNodeError(KilnError, ValueError):
    """A model's tensorkiln nodes do not match the contract or their local functions."""


_MRA_NODE = local_function.node_op(MRA_ATTENTION)
_MEGA_EMA_NODE = local_function.node_op(MEGA_EMA)


def mra_attention(
    query, key, value, attention_mask, *, num_blocks: int, scale: float, approx_mode: str = "full",
    initial_prior_first_n_blocks: int = 0, initial_prior_diagonal_n_blocks: int = 0,
):
    """Translation of ``tensorkiln::mra_attention``: one ``MraAttention`` node with every attribute set."""
    choices = MRA_ATTENTION.attribute("approx_mode").choices
    if approx_mode not in choices:
        raise CustomNodeError(f"mra_attention: approx_mode must be one of {choices}, got {approx_mode!r}")
    return _MRA_NODE(
        query, key, value, attention_mask,
        num_blocks=int(num_blocks), scale=float(scale), approx_mode=str(approx_mode),
        initial_prior_first_n_blocks=int(initial_prior_first_n_blocks),
        initial_prior_diagonal_n_blocks=int(initial_prior_diagonal_n_blocks),
    )


def mega_ema(
    x, damping_factor, decay_factor, ema_expansion_matrix, kernel_projection_matrix, prev_state=None, *,
    bidirectional: bool = False, truncation: int = 0,
):
    """Translation of ``tensorkiln::mega_ema``: one ``MegaEma`` node (prev_state only when given), both outputs."""
    inputs = [x, damping_factor, decay_factor, ema_expansion_matrix, kernel_projection_matrix]
    if prev_state is not None:
        inputs.append(prev_state)
    return _MEGA_EMA_NODE(*inputs, bidirectional=int(bool(bidirectional)), truncation=int(truncation))


TRANSLATION_TABLE: dict = {
    torch.ops.tensorkiln.mra_attention.default: mra_attention,
    torch.ops.tensorkiln.mega_ema.default: mega_ema,
}


def _build_function(op_type: str, variant: str, opset: int) -> onnx.FunctionProto:
    if op_type == MRA_ATTENTION.op_type:
        return build_mra_attention_function(variant.split("=", 1)[1], opset=opset)
    return build_mega_ema_function(variant == mega_ema_variant(True), opset=opset)


def add_local_functions(model: ir.Model | onnx.ModelProto) -> None:
    """Add (or replace) the local function of every tensorkiln op_type in ``model``, in place.

    The body is the variant the model's nodes need, importing the model's default-domain opset (>= 18); the model
    imports the tensorkiln domain at version 1. Raises ``CustomNodeError`` when nodes of one op_type need two
    variants, or the model's opset is older than 18.
    """
    needed: dict[str, set[str]] = {}
    for op_type, variant in _custom_node_variants(model):
        needed.setdefault(op_type, set()).add(variant)
    for op_type, variants in needed.items():
        if len(variants) > 1:
            raise CustomNodeError(
                f"{DOMAIN}::{op_type}: the model's nodes need {len(variants)} bodies ({sorted(variants)}) but a model "
                "holds one function per name. Export the parts separately, or make every call agree."
            )
    if isinstance(model, onnx.ModelProto):
        opset = {o.domain: o.version for o in model.opset_import}.get("", local_function.MIN_OPSET)
    else:
        opset = model.opset_imports.get("", local_function.MIN_OPSET)
    functions = [_build_function(op_type, variants.pop(), opset) for op_type, variants in needed.items()]
    if isinstance(model, onnx.ModelProto):
        kept = [f for f in model.functions if not (f.domain == DOMAIN and f.name in needed)]
        del model.functions[:]
        model.functions.extend(kept + functions)
        if needed and not any(o.domain == DOMAIN for o in model.opset_import):
            model.opset_import.append(onnx.helper.make_opsetid(DOMAIN, DOMAIN_VERSION))
    else:
        for function in functions:
            ir_function = ir.serde.deserialize_function(function)
            model.functions[ir_function.identifier()] = ir_function
        if needed:
            model.opset_imports.setdefault(DOMAIN, DOMAIN_VERSION)
    if needed:  # function metadata_props (the variant) are IR version 10
        model.ir_version = max(model.ir_version, _IR_VERSION)


def _walk(where: str, nodes) -> Iterator[tuple[str, list[onnx.NodeProto]]]:
    """(where, nodes) of one node list and of every subgraph inside it."""
    yield where, list(nodes)
    for node in nodes:
        for attribute in node.attribute:
            for graph in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                yield from _walk(f"{where}/{node.name or node.op_type}.{attribute.name}", graph.node)


def _graphs(model: onnx.ModelProto) -> Iterator[tuple[str, list[onnx.NodeProto]]]:
    """(where, nodes) of the main graph, every local function, and their subgraphs."""
    yield from _walk("graph", model.graph.node)
    for function in model.functions:
        yield from _walk(f"function {function.domain}::{function.name}", function.node)


def _variant(op_type: str, approx_mode: str | None, has_state: bool) -> str:
    """The body variant a node needs, from its approx_mode attribute (MraAttention) or its prev_state (MegaEma)."""
    if op_type == MRA_ATTENTION.op_type:
        return mra_variant(approx_mode or MRA_ATTENTION.attribute("approx_mode").default)
    return mega_ema_variant(has_state)


def _node_variant(node: onnx.NodeProto) -> str:
    modes = [onnx.helper.get_attribute_value(a).decode() for a in node.attribute if a.name == "approx_mode"]
    return _variant(node.op_type, modes[0] if modes else None, len(node.input) > 5 and node.input[5] != "")


def _custom_node_variants(model: ir.Model | onnx.ModelProto) -> Iterator[tuple[str, str]]:
    """(op_type, variant) of every tensorkiln node of the model, its functions and subgraphs."""
    if isinstance(model, onnx.ModelProto):
        for _, nodes in _graphs(model):
            for node in nodes:
                if node.domain == DOMAIN and node.op_type in CONTRACTS:
                    yield node.op_type, _node_variant(node)
        return
    # Walk the IR rather than serialising it: a proto would copy every weight.
    for graph in [model.graph, *model.functions.values()]:
        for node in ir.traversal.RecursiveGraphIterator(graph):
            if node.domain == DOMAIN and node.op_type in CONTRACTS:
                mode = node.attributes.get("approx_mode")
                has_state = len(node.inputs) > 5 and node.inputs[5] is not None
                yield node.op_type, _variant(node.op_type, mode.value if mode is not None else None, has_state)


def check_custom_nodes(model: onnx.ModelProto) -> int:
    """Check every ``tensorkiln`` node of ``model`` against the contract and its local function.

    Each node must be a known op_type with exactly the contract's attributes (names and ONNX types) and an allowed
    number of inputs; the model must import the domain at version 1 and hold a local function of the same domain
    and name whose body (subgraphs included) uses only the default domain, and whose variant fits the node.
    Returns the number of custom nodes; raises ``CustomNodeError`` listing every problem.
    """
    problems: list[str] = []
    functions = {(f.domain, f.name): f for f in model.functions}
    count = 0
    for where, nodes in _graphs(model):
        for node in nodes:
            if node.domain != DOMAIN:
                continue
            count += 1
            label = f"{where}: node {node.name or '?'} ({DOMAIN}::{node.op_type})"
            contract = CONTRACTS.get(node.op_type)
            if contract is None:
                problems.append(f"{label}: unknown op_type; known: {sorted(CONTRACTS)}")
                continue
            names = [a.name for a in node.attribute]
            if sorted(names) != sorted(contract.attribute_names):
                problems.append(f"{label}: attributes {sorted(names)}, the contract has "
                                f"{sorted(contract.attribute_names)}")
            for attribute in node.attribute:
                if attribute.name in contract.attribute_names:
                    spec = contract.attribute(attribute.name)
                    if attribute.type != _ONNX_ATTRIBUTE_TYPE[spec.onnx_type]:
                        problems.append(f"{label}: attribute {attribute.name} has type "
                                        f"{onnx.AttributeProto.AttributeType.Name(attribute.type)}, the contract says "
                                        f"{spec.onnx_type}")
                    elif spec.choices and attribute.s.decode() not in spec.choices:
                        problems.append(f"{label}: {attribute.name}={attribute.s.decode()!r}, allowed: {spec.choices}")
            required = sum(not spec.optional for spec in contract.inputs)
            if not required <= len(node.input) <= len(contract.inputs) or "" in node.input[:required]:
                problems.append(f"{label}: {len(node.input)} inputs {list(node.input)}, the contract has "
                                f"{required} required and {len(contract.inputs) - required} optional")
            if len(node.output) != len(contract.outputs):
                problems.append(f"{label}: {len(node.output)} outputs, the contract has {len(contract.outputs)}")
            function = functions.get((DOMAIN, node.op_type))
            if function is None:
                problems.append(f"{label}: the model has no local function {DOMAIN}::{node.op_type}")
                continue
            variants = {p.key: p.value for p in function.metadata_props}
            variant = variants.get(local_function.VARIANT_KEY)
            if variant is not None and variant != _node_variant(node):
                problems.append(f"{label}: needs the {_node_variant(node)!r} body, the model's function is {variant!r}")
    for (domain, name), function in functions.items():
        if domain != DOMAIN:
            continue
        for where, nodes in _walk(f"function {domain}::{name}", function.node):
            for node in nodes:
                if node.domain not in ("", "ai.onnx"):
                    problems.append(f"{where}: body node {node.op_type} is in domain {node.domain!r}; bodies use "
                                    "only standard ONNX ops")
    if count:
        imported = {o.domain: o.version for o in model.opset_import}
        if imported.get(DOMAIN) != DOMAIN_VERSION:
            problems.append(f"the model imports {DOMAIN} at version {imported.get(DOMAIN)}, expected {DOMAIN_VERSION}")
    if problems:
        raise CustomNodeError("custom nodes do not match the contract:\n  " + "\n  ".join(problems))
    return count
