"""The export manifest: what ``kiln export`` writes next to ``model.onnx`` so that a runtime can drive the model.

Torch-free (the runtime reads it). ``manifest.json`` records the architecture (``model_type``), the head (HF class
name), the inputs and outputs with their dtypes and dims (symbolic dims are names such as ``"batch_size"``), the
opset and precision, the length rules the runtime must apply before feeding the model, the custom nodes in the
graph, the cache layout of decoders (which output feeds which input on the next step), the errors measured against
the reference model at export time, and the sha256 of every file written beside it.

Format versions: 1 is the first; 2 adds ``text`` (the tokenizer and generation-config files the export carries) and
``verification.atol`` (an ``--atol`` the check was held to). A format-1 manifest reads as one without either (no
tokenizer, the policy's bounds). A reader refuses a manifest from a newer format with a clear error rather than
guess at fields it does not know.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .atomic import write_text
from .errors import ManifestError
from .hub import hub_hint

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

PRECISIONS = ("fp32", "fp16")
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
    #: ``--atol``: a max abs bound the check was held to besides the policy (it can only tighten it); None: none.
    atol: float | None = None


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


# ----------------------------------------------------------------------------------------------- (de)serialising


def to_dict(manifest: Manifest) -> dict[str, Any]:
    out = dataclasses.asdict(manifest)
    out["files"] = dict(sorted(manifest.files.items()))
    return out


def _tensor(d: Mapping[str, Any]) -> TensorInfo:
    return TensorInfo(name=d["name"], dtype=d["dtype"], dims=tuple(d["dims"]), token_axis=d.get("token_axis"))


def from_dict(data: Mapping[str, Any]) -> Manifest:
    """Parse and check a manifest; a :class:`ManifestError` names the first missing or bad key."""
    if not isinstance(data, Mapping):
        raise ManifestError("a manifest must be a JSON object")
    version = data.get("format_version")
    if not isinstance(version, int):
        raise ManifestError("manifest key 'format_version' is missing or not an integer")
    if version > FORMAT_VERSION:
        raise ManifestError(f"manifest format_version {version} is newer than this reader's ({FORMAT_VERSION}); "
                            "upgrade tensorkiln to read it")
    try:
        cache = data["cache"]
        verification = data["verification"]
        manifest = Manifest(
            format_version=version,
            model_type=data["model_type"],
            task=data["task"],
            head=data["head"],
            hf_class=data["hf_class"],
            opset=int(data["opset"]),
            precision=data["precision"],
            inputs=tuple(_tensor(t) for t in data["inputs"]),
            outputs=tuple(_tensor(t) for t in data["outputs"]),
            length_rules=LengthRules(**data["length_rules"]),
            custom_nodes=tuple(CustomNode(**n) for n in data["custom_nodes"]),
            cache=None if cache is None else CacheLayout(
                past_dim=cache["past_dim"],
                entries=tuple(CacheEntry(**{**e, "dims": tuple(e["dims"])}) for e in cache["entries"]),
                position_ids=cache.get("position_ids"),
                note=cache.get("note", ""),
            ),
            verification=Verification(
                status=_LEGACY_STATUSES.get(verification["status"], verification["status"]),
                rule=verification["rule"],
                provider=verification["provider"],
                reason=verification.get("reason", ""),
                atol=verification.get("atol"),
                checks=tuple(
                    CheckResult(shape=c["shape"], errors=tuple(OutputError(**e) for e in c["errors"]),
                                torch_half_max_abs=c.get("torch_half_max_abs"))
                    for c in verification["checks"]
                ),
            ),
            files=dict(data["files"]),
            model_file=data.get("model_file", MODEL_NAME),
            config_file=data.get("config_file", CONFIG_NAME),
            producer=dict(data.get("producer", {})),
            text=_text_files(data.get("text")),
        )
    except KeyError as exc:
        raise ManifestError(f"manifest is missing the key {exc.args[0]!r}") from None
    except TypeError as exc:
        raise ManifestError(f"manifest has a malformed entry: {exc}") from None
    if manifest.verification.status not in (PASSED, UNVERIFIED):
        raise ManifestError(f"manifest verification status {manifest.verification.status!r} is not one of "
                            f"{PASSED!r}, {UNVERIFIED!r}")
    if manifest.precision not in PRECISIONS:
        raise ManifestError(f"manifest key 'precision' is {manifest.precision!r}; expected one of {PRECISIONS}")
    for tensor in manifest.inputs + manifest.outputs:
        if tensor.dtype not in DTYPES:
            raise ManifestError(f"manifest tensor {tensor.name!r} has dtype {tensor.dtype!r}; expected one of {DTYPES}")
    for name in (*manifest.text.files, manifest.text.generation_config):
        if name is not None and name not in manifest.files:
            raise ManifestError(f"manifest key 'text' names {name!r}, which 'files' does not list")
    if manifest.model_file not in manifest.files:
        raise ManifestError(f"manifest key 'files' does not list the model file {manifest.model_file!r}")
    return manifest


def _text_files(data: Mapping[str, Any] | None) -> TextFiles:
    """The ``text`` entry; absent in format 1 (no tokenizer, no generation config)."""
    if data is None:
        return TextFiles()
    return TextFiles(tokenizer=data.get("tokenizer"), files=tuple(data.get("files", ())),
                     generation_config=data.get("generation_config"))


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_files(folder: str | os.PathLike) -> dict[str, str]:
    """sha256 of every file in ``folder`` (recursively, posix relative names) except the manifest itself."""
    root = Path(folder)
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME
    }


def write_manifest(manifest: Manifest, folder: str | os.PathLike) -> Path:
    """Write ``folder/manifest.json`` atomically (a temporary file renamed over it)."""
    path = Path(folder) / MANIFEST_NAME
    write_text(path, json.dumps(to_dict(manifest), indent=2) + "\n")
    return path


def read_manifest(folder: str | os.PathLike, *, check_files: bool = True) -> Manifest:
    """Read ``folder/manifest.json``; with ``check_files`` also check every listed file's sha256."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{str(path)!r} is missing: is {str(folder)!r} a folder written by `kiln export`?"
                            + hub_hint(folder, export=True))
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{str(path)!r} is not valid JSON: {exc}") from None
    manifest = from_dict(data)
    if check_files:
        problems = verify_files(folder, manifest)
        if problems:
            raise ManifestError(f"{str(folder)!r} does not match its manifest: " + "; ".join(problems))
    return manifest


def verify_files(folder: str | os.PathLike, manifest: Manifest) -> list[str]:
    """Every problem with the listed files: missing, or a sha256 that differs."""
    problems = []
    for name, expected in sorted(manifest.files.items()):
        path = Path(folder) / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif sha256_file(path) != expected:
            problems.append(f"{name} has sha256 {sha256_file(path)[:12]}..., the manifest says {expected[:12]}...")
    return problems
