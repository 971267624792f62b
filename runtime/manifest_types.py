"""The export manifest's vocabulary: file names, symbolic dims, precisions, and the frozen dataclasses a manifest
parses into (``runtime/manifest.py`` reads, checks and writes them; import them from there).

Torch-free.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from .errors import ManifestError

FORMAT_VERSION = 2
MANIFEST_NAME = "manifest.json"
MODEL_NAME = "model.onnx"
#: Weights go to this file beside the model when the graph is too big for one protobuf (2 GB).
EXTERNAL_DATA_NAME = "model.onnx.data"
CONFIG_NAME = "config.json"
GENERATION_CONFIG_NAME = "generation_config.json"
#: How the runtime builds a tokenizer from the files an export carries, in order of preference.
TOKENIZER_JSON = "tokenizer.json"
BPE_FILES = ("vocab.json", "merges.txt")
WORDPIECE_FILES = ("vocab.txt",)
#: Every tokenizer file a checkpoint may hold that an export copies (HF's names).
TOKENIZER_FILES = (TOKENIZER_JSON, "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   *BPE_FILES, *WORDPIECE_FILES, "spiece.model", "sentencepiece.bpe.model", "tokenizer.model")

#: Symbolic dim names shared by specs, graphs and manifests.
BATCH = "batch_size"
SEQUENCE = "sequence_length"
CHOICES = "num_choices"
PAST = "past_sequence_length"
TOTAL = "past_sequence_length + sequence_length"

#: int8: ONNX Runtime's quantization of an fp32 export (``kiln quantize``); its inputs and outputs keep their dtypes.
PRECISIONS = ("fp32", "fp16", "int8")
#: Verification statuses. Format 1 manifests written before ``--no-verify`` existed say "skipped" for unverified.
PASSED = "passed"
UNVERIFIED = "unverified"
_LEGACY_STATUSES = {"skipped": UNVERIFIED}
#: ONNX element type names used in manifests (``onnx.helper.tensor_dtype_to_np_dtype`` spelling of numpy).
DTYPES = ("int64", "int32", "float32", "float16", "bool")

Dim = int | str




@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One graph input or output: its HF name, element type and dims (ints are fixed, strings symbolic).

    ``token_axis``: for outputs, the axis that runs over the input's tokens (a runtime that pads inputs to a fixed
    length slices that axis back); None for pooled outputs and inputs.
    """

    name: str
    dtype: str
    dims: tuple[Dim, ...]
    token_axis: int | None = None

    def resolve(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        """The concrete shape for the given symbolic sizes (``"a + b"`` sums its names)."""
        return tuple(d if isinstance(d, int) else resolve_dim(d, sizes) for d in self.dims)


def resolve_dim(dim: str, sizes: Mapping[str, int]) -> int:
    total = 0
    for part in dim.split("+"):
        name = part.strip()
        if name not in sizes:
            raise ManifestError(f"dim {dim!r} needs a size for {name!r}; known: {sorted(sizes)}")
        total += sizes[name]
    return total


@dataclasses.dataclass(frozen=True)
class LengthRules:
    """What the runtime must do with a sequence before feeding it.

    ``max_length``: the longest sequence (cached plus new tokens for decoders) the model accepts.
    ``fixed_length``: when set, the graph's sequence dim is this fixed size: pad every input on the right to it
    with ``pad_token_id`` and attention_mask 0, then slice per-token outputs back to the real length.
    ``pad_multiple``: informational; the model pads internally to this multiple (MRA's 32-token blocks), so any
    length up to ``max_length`` works as it is.
    """

    max_length: int
    fixed_length: int | None = None
    pad_token_id: int | None = None
    pad_multiple: int | None = None
    note: str = ""


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    """One cached tensor: ``output`` of step t is fed as ``input`` of step t + 1.

    ``sequence_axis``: the axis that grows by the new tokens each step (past -> past + new), or None for a state
    of fixed size that is replaced (Mega's EMA state). ``dims`` are the input's dims.
    """

    layer: int
    kind: str
    input: str
    output: str
    dims: tuple[Dim, ...]
    sequence_axis: int | None


@dataclasses.dataclass(frozen=True)
class CacheLayout:
    """How a generic runtime decodes: start with every ``input`` empty along its sequence axis (zeros of size
    0 there, zeros elsewhere), then feed each step's outputs back as the next step's inputs.

    ``attention_mask`` covers cached and new tokens (``TOTAL`` wide). ``position_ids``: when named, the input
    that takes the new tokens' positions, each the count of real (unmasked) tokens before it.
    """

    past_dim: str
    entries: tuple[CacheEntry, ...]
    position_ids: str | None = None
    note: str = ""


@dataclasses.dataclass(frozen=True)
class OutputError:
    """One output's error against the reference at one check shape."""

    output: str
    max_abs: float
    nmse: float
    cosine: float
    #: int8, outputs of class scores: how many rows' top-1 agree with the reference's, of how many (real tokens).
    agree: int | None = None
    total: int | None = None


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """The export-time check at one input shape. ``reference_dtype`` is the oracle's precision (always fp32);
    ``torch_half_max_abs`` is PyTorch's own error in the exported precision (fp16 only), the reduced-precision rule
    being ORT's max abs error <= 2x that."""

    shape: Mapping[str, int]
    errors: tuple[OutputError, ...]
    torch_half_max_abs: Mapping[str, float] | None = None


@dataclasses.dataclass(frozen=True)
class Verification:
    """``status``: :data:`PASSED`, or :data:`UNVERIFIED` with ``reason`` (written with ``--no-verify``) - never a
    failure, since a failed check writes nothing. ``rule`` says which tolerance applies."""

    status: str
    rule: str
    provider: str
    checks: tuple[CheckResult, ...] = ()
    reason: str = ""
    #: int8: what the check compared against ("reference (PyTorch fp32)" or the fp32 export), and per output of
    #: per-token class scores the top-1 agreement over the whole evaluation set: {"agree", "total", "min_fraction"}.
    oracle: str = ""
    agreement: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)

    #: ``--atol``: a max abs bound the check was held to besides the policy (it can only tighten it); None: none.
    atol: float | None = None


@dataclasses.dataclass(frozen=True)
class Quantization:
    """How an int8 export was made from its fp32 export: the method and the tool (ONNX Runtime's quantizer and its
    version), the weight and activation formats, which op types were quantized (node counts), what was left in
    fp32, and the sha256 of the fp32 ``model.onnx`` it came from."""

    method: str
    tool: str
    tool_version: str
    weights: str
    activations: str
    quantized: Mapping[str, int]
    kept_fp32: tuple[str, ...]
    source_sha256: str


@dataclasses.dataclass(frozen=True)
class TextFiles:
    """The text side an export carries (format 2).

    ``tokenizer``: the file the runtime builds its tokenizer from (``tokenizer.json``; or ``vocab.json`` for a
    byte-level BPE with ``merges.txt``, ``vocab.txt`` for a WordPiece), None when the export has no tokenizer.
    ``files``: every tokenizer file copied from the checkpoint (all hashed in the manifest's ``files``).
    ``generation_config``: ``generation_config.json`` when the checkpoint had one (generation defaults).
    """

    tokenizer: str | None = None
    files: tuple[str, ...] = ()
    generation_config: str | None = None


@dataclasses.dataclass(frozen=True)
class CustomNode:
    domain: str
    op_type: str
    count: int


@dataclasses.dataclass(frozen=True)
class Manifest:
    model_type: str
    task: str
    head: str
    hf_class: str
    opset: int
    precision: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    length_rules: LengthRules
    custom_nodes: tuple[CustomNode, ...]
    cache: CacheLayout | None
    verification: Verification
    files: Mapping[str, str]
    model_file: str = MODEL_NAME
    config_file: str = CONFIG_NAME
    producer: Mapping[str, str] = dataclasses.field(default_factory=dict)
    text: TextFiles = TextFiles()
    format_version: int = FORMAT_VERSION
    #: int8 exports: how they were quantized (None for fp32 and fp16).
    quantization: Quantization | None = None

    @property
    def has_tokenizer(self) -> bool:
        return self.text.tokenizer is not None

    def input(self, name: str) -> TensorInfo:
        return _by_name(self.inputs, name, "input")

    def output(self, name: str) -> TensorInfo:
        return _by_name(self.outputs, name, "output")


def _by_name(items, name: str, kind: str) -> TensorInfo:
    for item in items:
        if item.name == name:
            return item
    raise KeyError(f"the model has no {kind} {name!r}; it has {[i.name for i in items]}")
