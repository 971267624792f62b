"""Checking and completing a session's named numpy inputs against an export's manifest.

Torch-free. What a caller may leave out is filled the way HF's models fill it: ``attention_mask`` all ones,
``token_type_ids`` zeros, GPT-NeoX's ``position_ids`` from the attention mask (HF generate's rule: the count of
real tokens before each token, pads take 1), and a decoder's ``past_key_values.*`` empty (a prefill). Models
exported at a fixed length (Nystromformer's landmarks) get their inputs padded on the right with ``pad_token_id``
and mask 0, and :meth:`Prepared.trim` slices per-token outputs back to the real length.

Every problem is a :class:`RuntimeInputError` naming the input and what to do; nothing is silently truncated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import manifest as mf
from .errors import RuntimeInputError

#: Inputs that carry token ids, masks or positions: any integer (or bool) array is accepted and cast to int64.
INTEGER_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
PAST_PREFIX = "past_key_values."


@dataclasses.dataclass(frozen=True)
class ModelLimits:
    """What the model's config.json bounds: token ids below ``vocab_size``, types below ``type_vocab_size``."""

    vocab_size: int
    type_vocab_size: int | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ModelLimits:
        """The limits of an export's config.json; a :class:`ManifestError` names a key that is missing or wrong."""
        from .errors import ManifestError
        from .jsonfile import Fields

        fields = Fields(config, label="the export's config.json", error=ManifestError)
        return cls(vocab_size=fields.integer("vocab_size", minimum=1),
                   type_vocab_size=fields.integer("type_vocab_size", None, minimum=1))


@dataclasses.dataclass(frozen=True)
class Prepared:
    """The feeds for the graph, and the real sequence length when the inputs were padded to a fixed one."""

    feeds: dict[str, np.ndarray]
    real_length: int | None = None

    def trim(self, manifest: mf.Manifest, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.real_length is None:
            return outputs
        trimmed = {}
        for info in manifest.outputs:
            value = outputs[info.name]
            if info.token_axis is not None:
                value = np.take(value, np.arange(self.real_length), axis=info.token_axis)
            trimmed[info.name] = value
        return trimmed


def position_ids_from_mask(attention_mask: np.ndarray) -> np.ndarray:
    """HF generate's positions: the count of real tokens before each token; padded slots take 1."""
    positions = np.cumsum(attention_mask, axis=-1) - 1
    return np.where(attention_mask == 0, 1, positions).astype(np.int64)


def _float_dtype(manifest: mf.Manifest) -> np.dtype:
    return np.dtype(np.float16 if manifest.precision == "fp16" else np.float32)


def _as_array(name: str, value: Any) -> np.ndarray:
    try:
        return np.asarray(value)
    except Exception as exc:  # ragged lists and objects numpy cannot hold
        raise RuntimeInputError(f"input {name!r} could not be made a numpy array: {exc}") from None


def _integer(name: str, array: np.ndarray) -> np.ndarray:
    if array.dtype == np.bool_ or np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int64, copy=False)
    raise RuntimeInputError(f"input {name!r} must hold integers (token ids, mask or positions), got dtype "
                            f"{array.dtype}; cast it, e.g. np.asarray(x, dtype=np.int64)")


def _check_range(name: str, array: np.ndarray, low: int, high: int | None, what: str) -> None:
    if array.size == 0:
        return
    lo, hi = int(array.min()), int(array.max())
    if lo < low or (high is not None and hi >= high):
        bound = f"[{low}, {high})" if high is not None else f">= {low}"
        raise RuntimeInputError(f"input {name!r} holds {lo if lo < low else hi}, outside {what} {bound}")


class _Sizes:
    """Symbolic dim sizes bound from the inputs' shapes, with an error naming both inputs on a conflict."""

    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}
        self.source: dict[str, str] = {}

    def bind(self, name: str, info: mf.TensorInfo, shape: tuple[int, ...]) -> None:
        if len(shape) != len(info.dims):
            raise RuntimeInputError(f"input {name!r} has rank {len(shape)} (shape {shape}); the model expects rank "
                                    f"{len(info.dims)}: {_describe(info.dims)}")
        for axis, (dim, size) in enumerate(zip(info.dims, shape)):
            if isinstance(dim, int):
                if dim != size:
                    raise RuntimeInputError(f"input {name!r} axis {axis} is {size}; the model fixes it at {dim}")
            elif "+" not in dim:
                if dim in self.sizes and self.sizes[dim] != size:
                    raise RuntimeInputError(f"input {name!r} has {dim} = {size} (axis {axis}) but "
                                            f"{self.source[dim]!r} has {self.sizes[dim]}; their shapes must agree")
                self.sizes.setdefault(dim, size)
                self.source.setdefault(dim, name)

    def check_sum(self, name: str, info: mf.TensorInfo, shape: tuple[int, ...]) -> None:
        for axis, dim in enumerate(info.dims):
            if isinstance(dim, str) and "+" in dim:
                want = mf.resolve_dim(dim, self.sizes)
                if shape[axis] != want:
                    raise RuntimeInputError(f"input {name!r} axis {axis} is {shape[axis]}; it must be {dim} = {want} "
                                            "(the cached tokens plus the new ones)")


def _describe(dims: tuple[mf.Dim, ...]) -> str:
    return "(" + ", ".join(str(d) for d in dims) + ")"


def prepare(manifest: mf.Manifest, limits: ModelLimits, inputs: Mapping[str, Any]) -> Prepared:
    """Check ``inputs`` against the manifest and complete them into the graph's feeds."""
    known = _check_names(manifest, inputs)
    arrays = {name: _as_array(name, value) for name, value in inputs.items()}
    for name in INTEGER_INPUTS:
        if name in arrays:
            arrays[name] = _integer(name, arrays[name])

    rules = manifest.length_rules
    real_length = None
    if rules.fixed_length is not None:
        arrays, real_length = _pad_fixed(manifest, arrays, rules)

    sizes = _Sizes()
    ids = arrays["input_ids"]
    sizes.bind("input_ids", manifest.input("input_ids"), ids.shape)
    if ids.shape[0] == 0 or ids.shape[-1] == 0:
        raise RuntimeInputError(f"input 'input_ids' has shape {ids.shape}: the batch and the sequence need at least "
                                "one token each")
    _check_range("input_ids", ids, 0, limits.vocab_size, "the vocabulary")
    past_names, past = _cache_inputs(manifest, arrays, sizes)
    mask = _attention_mask(manifest, arrays, sizes, ids, past)
    _token_types_and_positions(manifest, limits, arrays, sizes, set(known), ids, mask, past)

    float_dtype = _float_dtype(manifest)
    for name in past_names:  # a prefill: every cache input empty along its sequence axis
        if name not in arrays:
            info = manifest.input(name)
            arrays[name] = np.zeros(info.resolve(sizes.sizes), dtype=float_dtype)

    return Prepared(feeds={name: arrays[name] for name in known}, real_length=real_length)


def _check_names(manifest: mf.Manifest, inputs: Mapping[str, Any]) -> list[str]:
    """The export's input names, in order; an error for an unknown input or a missing ``input_ids``."""
    known = [info.name for info in manifest.inputs]
    unknown = sorted(set(inputs) - set(known))
    if unknown:
        raise RuntimeInputError(f"unknown input{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                                f"this {manifest.hf_class} export takes {', '.join(known)}")
    if "input_ids" not in inputs:
        raise RuntimeInputError(f"input 'input_ids' is required; this {manifest.hf_class} export takes "
                                f"{', '.join(known)}")
    return known


def _cache_inputs(manifest: mf.Manifest, arrays: dict[str, np.ndarray], sizes: _Sizes) -> tuple[list[str], int]:
    """Check and cast the given ``past_key_values.*`` inputs (all or none) and bind their sizes; returns the
    export's cache input names and the cached length (0 for a prefill or a model without a cache)."""
    past_names = [info.name for info in manifest.inputs if info.name.startswith(PAST_PREFIX)]
    given_past = [name for name in past_names if name in arrays]
    if given_past and len(given_past) != len(past_names):
        missing = [name for name in past_names if name not in arrays]
        raise RuntimeInputError(f"pass all of the cache inputs or none (a prefill); missing: {', '.join(missing[:4])}"
                                + (f" and {len(missing) - 4} more" if len(missing) > 4 else ""))
    float_dtype = _float_dtype(manifest)
    for name in given_past:
        array = arrays[name]
        if not np.issubdtype(array.dtype, np.floating):
            raise RuntimeInputError(f"cache input {name!r} must be floating point, got dtype {array.dtype}")
        arrays[name] = array.astype(float_dtype, copy=False)
        sizes.bind(name, manifest.input(name), array.shape)
    if past_names and not given_past:
        sizes.sizes[mf.PAST] = 0
    return past_names, sizes.sizes.get(mf.PAST, 0)


def _attention_mask(manifest: mf.Manifest, arrays: dict[str, np.ndarray], sizes: _Sizes, ids: np.ndarray,
                    past: int) -> np.ndarray:
    """Refuse a sequence past the model's maximum; check the mask, or fill it with ones over past + new tokens."""
    rules = manifest.length_rules
    length = ids.shape[-1]
    if past + length > rules.max_length:
        what = f"{past} cached + {length} new tokens" if past else f"{length} tokens"
        raise RuntimeInputError(f"the sequence is too long: {what} > the model's maximum of {rules.max_length}; "
                                "truncate the input or split it")
    total_width = length + past
    if "attention_mask" not in arrays:
        lead = ids.shape[:-1]
        arrays["attention_mask"] = np.ones((*lead, total_width), dtype=np.int64)
    mask = arrays["attention_mask"]
    mask_info = manifest.input("attention_mask")
    if "+" in str(mask_info.dims[-1]):
        sizes.bind("attention_mask", mask_info, mask.shape)
        sizes.check_sum("attention_mask", mask_info, mask.shape)
    else:
        sizes.bind("attention_mask", mask_info, mask.shape)
    if mask.size and (mask.min() < 0 or mask.max() > 1):
        raise RuntimeInputError("input 'attention_mask' must hold 0 (padding) or 1 (a real token)")
    return mask


def _token_types_and_positions(manifest: mf.Manifest, limits: ModelLimits, arrays: dict[str, np.ndarray],
                               sizes: _Sizes, names: set[str], ids: np.ndarray, mask: np.ndarray, past: int) -> None:
    """Check ``token_type_ids`` and ``position_ids`` where the export takes them, or fill them as HF does."""
    if "token_type_ids" in names:
        if "token_type_ids" not in arrays:
            arrays["token_type_ids"] = np.zeros_like(ids)
        sizes.bind("token_type_ids", manifest.input("token_type_ids"), arrays["token_type_ids"].shape)
        _check_range("token_type_ids", arrays["token_type_ids"], 0, limits.type_vocab_size, "the token types")
    if "position_ids" in names:
        if "position_ids" not in arrays:
            arrays["position_ids"] = position_ids_from_mask(mask)[..., past:]
        sizes.bind("position_ids", manifest.input("position_ids"), arrays["position_ids"].shape)
        _check_range("position_ids", arrays["position_ids"], 0, manifest.length_rules.max_length, "the positions")


def _pad_fixed(manifest: mf.Manifest, arrays: dict[str, np.ndarray],
               rules: mf.LengthRules) -> tuple[dict[str, np.ndarray], int | None]:
    """A graph of one fixed length: right-pad shorter inputs to it (ids with the pad id, the mask and token types
    with 0) and return the real length to trim outputs back to; refuse longer ones."""
    ids = arrays["input_ids"]
    length, fixed = ids.shape[-1], rules.fixed_length
    if length > fixed:
        raise RuntimeInputError(f"the sequence is too long: {length} tokens > the model's maximum of {fixed} "
                                f"({rules.note or 'a fixed-length graph'}); truncate the input or split it")
    for name in ("attention_mask", "token_type_ids"):
        if name in arrays and arrays[name].shape != ids.shape:
            raise RuntimeInputError(f"input {name!r} has shape {arrays[name].shape}; it must match input_ids' "
                                    f"shape {ids.shape}")
    if length == fixed:
        return arrays, None
    arrays = dict(arrays)
    arrays.setdefault("attention_mask", np.ones_like(ids))
    if "token_type_ids" in [info.name for info in manifest.inputs]:
        arrays.setdefault("token_type_ids", np.zeros_like(ids))
    widths = [(0, 0)] * (ids.ndim - 1) + [(0, fixed - length)]
    padded = {}
    for name, array in arrays.items():
        value = (rules.pad_token_id or 0) if name == "input_ids" else 0
        padded[name] = np.pad(array, widths, constant_values=value)
    return padded, length
