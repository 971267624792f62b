"""The node contract of the two custom ONNX nodes, ``tensorkiln::MraAttention`` and ``tensorkiln::MegaEma``.

This is the single source of truth that the exporter (``export/custom_ops.py``), the TensorRT plugins
(``plugins/<op>/``) and the torch-free runtime share, so it imports neither torch nor onnx. Each node mirrors its
``torch.library`` op exactly (``reference/ops/mra_attention.py``, ``reference/ops/mega_ema.py``): the inputs in the
op's positional order, the outputs in its return order, and one attribute per keyword argument with the same name,
because the TensorRT ONNX parser matches node attributes to plugin fields by name. ``tests/test_export_contract.py``
compares this module with the torch op schemas.

ONNX has no boolean attribute: ``bidirectional`` is an INT (0/1). ``approx_mode`` is a STRING.
The TensorRT parser finds a plugin by ``op_type`` (the creator's name), ``plugin_version`` and the node's domain
(``plugin_namespace`` empty); the nodes carry no ``plugin_version`` attribute because "1" is the parser's default.
"""

from __future__ import annotations

import dataclasses

__all__ = [
    "DOMAIN",
    "DOMAIN_VERSION",
    "PLUGIN_VERSION",
    "AttributeSpec",
    "TensorSpec",
    "NodeContract",
    "MRA_ATTENTION",
    "MEGA_EMA",
    "CONTRACTS",
    "contract_for",
]

DOMAIN = "tensorkiln"
DOMAIN_VERSION = 1
PLUGIN_VERSION = "1"

# ONNX type strings, as onnx.defs and ONNX Runtime spell them.
FLOAT_TYPES = ("tensor(float)", "tensor(float16)", "tensor(bfloat16)")
ANY_FLOAT_TYPES = ("tensor(float)", "tensor(float16)", "tensor(bfloat16)", "tensor(double)")

# The attribute types used here, as onnx.AttributeProto.AttributeType names.
ATTRIBUTE_TYPES = ("INT", "FLOAT", "STRING")


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One input or output of a node."""

    name: str
    #: Allowed ONNX element types, e.g. ("tensor(float)", "tensor(float16)").
    dtypes: tuple[str, ...]
    #: Shape in symbols, e.g. "(B, H, L, D)"; the node's docstring says what each symbol is.
    shape: str
    doc: str
    #: An optional input may be left out (an empty name in the node's input list, or a shorter list).
    optional: bool = False
    #: For inputs and outputs whose dtype must equal another tensor's (e.g. "query"); None when free.
    same_dtype_as: str | None = None

    @property
    def rank(self) -> int:
        return len([s for s in self.shape.strip("()").split(",") if s.strip()])


@dataclasses.dataclass(frozen=True)
class AttributeSpec:
    """One node attribute: its name equals the torch op's keyword argument."""

    name: str
    #: "INT", "FLOAT" or "STRING" (onnx.AttributeProto type names).
    onnx_type: str
    #: None when the attribute is required (the torch op's keyword has no default).
    default: int | float | str | None
    doc: str
    #: For STRING attributes with a closed set of values.
    choices: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.onnx_type not in ATTRIBUTE_TYPES:
            raise ValueError(f"attribute {self.name}: onnx_type must be one of {ATTRIBUTE_TYPES}, got {self.onnx_type}")

    @property
    def required(self) -> bool:
        return self.default is None


@dataclasses.dataclass(frozen=True)
class NodeContract:
    """The ONNX node (and TensorRT plugin) for one custom op."""

    op_type: str
    #: The torch.library op it mirrors, "namespace::name".
    torch_op: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    attributes: tuple[AttributeSpec, ...]
    doc: str
    domain: str = DOMAIN
    domain_version: int = DOMAIN_VERSION
    plugin_version: str = PLUGIN_VERSION

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.outputs)

    @property
    def attribute_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.attributes)

    def attribute(self, name: str) -> AttributeSpec:
        for spec in self.attributes:
            if spec.name == name:
                return spec
        raise KeyError(f"{self.op_type} has no attribute {name!r}; its attributes are {self.attribute_names}")

    def defaults(self) -> dict[str, int | float | str]:
        """The attributes that have defaults, with them (what a node may leave out)."""
        return {spec.name: spec.default for spec in self.attributes if spec.default is not None}


MRA_ATTENTION = NodeContract(
    op_type="MraAttention",
    torch_op="tensorkiln::mra_attention",
    doc=(
        "MRA-2 block-sparse attention (block size 32). L is padded inside the node to a multiple of 32; the block "
        "budget is clamped to the ceil(L/32)**2 blocks that exist. Computed in fp32, returned in query's dtype."
    ),
    inputs=(
        TensorSpec("query", FLOAT_TYPES, "(B, H, L, D)", "queries; L >= 1, D >= 1"),
        TensorSpec("key", FLOAT_TYPES, "(B, H, L, D)", "keys (self-attention: query's shape)", same_dtype_as="query"),
        TensorSpec("value", FLOAT_TYPES, "(B, H, L, D)", "values", same_dtype_as="query"),
        TensorSpec("attention_mask", ANY_FLOAT_TYPES, "(B, L)", "1.0 = token, 0.0 = padding"),
    ),
    outputs=(
        TensorSpec("output", FLOAT_TYPES, "(B, H, L, D)", "attention output, zero at padded positions",
                   same_dtype_as="query"),
    ),
    attributes=(
        AttributeSpec("num_blocks", "INT", None,
                      "block budget (>= 1), clamped to the blocks that exist; blocks tied at the budget's edge are "
                      "taken lower flat index (row * nb + col) first, as ONNX TopK does"),
        AttributeSpec("scale", "FLOAT", None, "multiplies q.k (> 0)"),
        AttributeSpec("approx_mode", "STRING", "full",
                      "'full': selected blocks plus the low-resolution remainder; 'sparse': selected blocks only",
                      choices=("full", "sparse")),
        AttributeSpec("initial_prior_first_n_blocks", "INT", 0, "block rows/columns always preferred by top-k"),
        AttributeSpec("initial_prior_diagonal_n_blocks", "INT", 0, "diagonal band always preferred by top-k"),
    ),
)

MEGA_EMA = NodeContract(
    op_type="MegaEma",
    torch_op="tensorkiln::mega_ema",
    doc=(
        "Mega's multi-dimensional damped EMA (no residual, no SiLU); K = 2D when bidirectional, else D. Computed in "
        "fp32, returned in x's dtype. final_state is always the exact forward state after x[:, L-1]."
    ),
    inputs=(
        TensorSpec("x", FLOAT_TYPES, "(B, L, D)", "input, already multiplied by the padding mask"),
        TensorSpec("damping_factor", ANY_FLOAT_TYPES, "(K, N, 1)", "delta: p = sigmoid(delta)"),
        TensorSpec("decay_factor", ANY_FLOAT_TYPES, "(K, N, 1)", "alpha: q = 1 - p * sigmoid(alpha)"),
        TensorSpec("ema_expansion_matrix", ANY_FLOAT_TYPES, "(K, N, 1)", "beta, the input expansion"),
        TensorSpec("kernel_projection_matrix", ANY_FLOAT_TYPES, "(K, N)", "gamma, the output projection"),
        TensorSpec("prev_state", FLOAT_TYPES, "(B, D, N)", "EMA state before x[:, 0] (unidirectional, no truncation)",
                   optional=True, same_dtype_as="x"),
    ),
    outputs=(
        TensorSpec("output", FLOAT_TYPES, "(B, L, D)", "the EMA", same_dtype_as="x"),
        TensorSpec("final_state", FLOAT_TYPES, "(B, D, N)", "the forward EMA state after x[:, L-1]",
                   same_dtype_as="x"),
    ),
    attributes=(
        AttributeSpec("bidirectional", "INT", 0, "0/1: rows [D, 2D) run backward, both include the current token"),
        AttributeSpec("truncation", "INT", 0, "0: none; else the kernel is cut to min(truncation, L) taps"),
    ),
)

CONTRACTS: dict[str, NodeContract] = {c.op_type: c for c in (MRA_ATTENTION, MEGA_EMA)}


def contract_for(op_type: str) -> NodeContract:
    """The contract of a custom node by op_type, with a clear error for unknown ones."""
    try:
        return CONTRACTS[op_type]
    except KeyError:
        raise KeyError(
            f"no tensorkiln node contract for op_type {op_type!r}; known: {sorted(CONTRACTS)}"
        ) from None
