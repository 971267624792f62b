"""Text generation over an exported causal LM: greedy or sampled, stopping at EOS, streaming if asked.

Torch-free. Decoders exported with a cache (GPT-NeoX's KV cache, Mega's keys, values and EMA state) prefill the
prompt once and then feed one token per step, each step's ``present.*`` outputs becoming the next step's
``past_key_values.*`` inputs as the manifest's cache layout says. Causal LMs exported without a cache (a chunked
Mega, a MegatronBERT that is not a decoder) recompute the whole sequence each step: slower, same tokens.

Batches of prompts of different lengths are padded on the left with attention_mask 0 there, as HF's generate
expects; the runtime derives GPT-NeoX's positions from the mask. Rows that reached EOS emit ``pad_token_id``
until every row is done.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import CheckFailed, RuntimeInputError

if TYPE_CHECKING:
    from .session import Session


def _validate(session: Session, ids: np.ndarray, mask: np.ndarray, max_new_tokens: int) -> None:
    manifest = session.manifest
    if not session.is_causal_lm:
        raise RuntimeInputError(f"generate needs a causal LM export; this one is {manifest.hf_class} "
                                f"({manifest.task}). Export the checkpoint with --task ForCausalLM")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise RuntimeInputError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if np.any(np.diff(mask, axis=1) < 0):
        raise RuntimeInputError("the prompts are padded on the right (a 1 before a 0 in attention_mask); pad them on "
                                "the left for generation, as HF's generate expects")
    if not np.all(mask[:, -1] == 1):
        raise RuntimeInputError("every prompt needs at least one real token (attention_mask 1)")
    limit = manifest.length_rules.max_length
    if ids.shape[1] + max_new_tokens > limit:
        raise RuntimeInputError(f"prompt length {ids.shape[1]} + max_new_tokens {max_new_tokens} exceeds the model's "
                                f"maximum of {limit} tokens; shorten the prompt or ask for fewer tokens")


def _prompt(input_ids: Any) -> np.ndarray:
    """The prompts as int64 (batch, length): non-empty, integer token ids."""
    try:
        ids = np.asarray(input_ids)
    except Exception as exc:  # ragged lists
        raise RuntimeInputError(f"input_ids could not be made an array ({exc}): pad the prompts to one length, on "
                                "the left") from None
    if ids.size == 0:
        raise RuntimeInputError(f"the prompt is empty (input_ids of shape {ids.shape}): generation needs at least one "
                                "token per row")
    if ids.ndim != 2:
        raise RuntimeInputError(f"input_ids must be (batch, prompt length), got shape {ids.shape}")
    if ids.dtype == np.bool_ or not np.issubdtype(ids.dtype, np.integer):
        raise RuntimeInputError(f"input_ids must hold integer token ids, got dtype {ids.dtype}")
    return ids.astype(np.int64)


def _mask(attention_mask: Any, ids: np.ndarray) -> np.ndarray:
    """The attention mask as int64, all ones when not given; it must match the prompts and hold only 0 and 1."""
    if attention_mask is None:
        return np.ones_like(ids)
    try:
        mask = np.asarray(attention_mask)
    except Exception as exc:
        raise RuntimeInputError(f"attention_mask could not be made an array ({exc})") from None
    if mask.shape != ids.shape:
        raise RuntimeInputError(f"attention_mask has shape {mask.shape}; it must match input_ids' {ids.shape}")
    if mask.dtype.kind not in "biuf" or not np.isin(mask, (0, 1)).all():
        shown = np.unique(mask)[:5] if mask.dtype.kind in "biufc" else mask.dtype
        raise RuntimeInputError(f"attention_mask must be 0/1 (1 for a real token, 0 for padding), got {shown}")
    return mask.astype(np.int64)


def _real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _integer(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_ids(name: str, value: Any) -> None:
    values = value if isinstance(value, (list, tuple, np.ndarray)) else [value]
    if value is not None and not all(_integer(v) and v >= 0 for v in values):
        raise RuntimeInputError(f"{name} must be a token id (an integer >= 0) or a list of them, got {value!r}")


class NonFiniteLogitsError(CheckFailed):
    """The model's logits hold NaN or +Inf (or only -Inf) for a row: no token can be chosen from them."""


def _token_ids(value: int | Sequence[int] | None) -> np.ndarray:
    if value is None:
        return np.zeros(0, dtype=np.int64)
    return np.atleast_1d(np.asarray(value, dtype=np.int64))


class Sampler:
    """Picks the next token from the last position's logits: greedy (argmax), or sampled after ``temperature``,
    ``top_k`` and nucleus ``top_p`` filtering, with a seeded numpy generator."""

    def __init__(self, do_sample: bool = False, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, seed: int | None = None):
        if not isinstance(do_sample, (bool, np.bool_)):
            raise RuntimeInputError(f"do_sample must be True or False, got {do_sample!r}")
        if not _real(temperature) or not math.isfinite(temperature) or temperature <= 0:
            raise RuntimeInputError(f"temperature must be a finite number > 0, got {temperature!r}; use "
                                    "do_sample=False for greedy decoding")
        if top_k is not None and (not _integer(top_k) or top_k < 0):
            raise RuntimeInputError(f"top_k must be an integer >= 0 (0 keeps every token), got {top_k!r}")
        if top_p is not None and (not _real(top_p) or not 0 < top_p <= 1):  # NaN fails the comparison too
            raise RuntimeInputError(f"top_p must be a number in (0, 1], got {top_p!r}")
        if seed is not None and (not _integer(seed) or seed < 0):
            raise RuntimeInputError(f"seed must be an integer >= 0 or None, got {seed!r}")
        self.do_sample, self.temperature, self.top_p = bool(do_sample), float(temperature), top_p
        self.top_k = int(top_k) if top_k else None  # 0 keeps every token, as in HF's generate
        self.rng = np.random.default_rng(seed)

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        scores = logits.astype(np.float64)  # (B, V)
        broken = np.isnan(scores).any(axis=-1) | np.isposinf(scores).any(axis=-1) | np.isneginf(scores).all(axis=-1)
        if broken.any():
            raise NonFiniteLogitsError(f"the model returned NaN or infinite logits for prompt row(s) "
                                       f"{np.flatnonzero(broken).tolist()[:8]}: its weights or the export are broken "
                                       "(`kiln parity` checks an export against its checkpoint)")
        if not self.do_sample:
            return scores.argmax(axis=-1)
        scores = scores / self.temperature
        if self.top_k is not None and self.top_k < scores.shape[-1]:
            kth = np.partition(scores, -self.top_k, axis=-1)[:, -self.top_k, None]
            scores = np.where(scores < kth, -np.inf, scores)
        probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        if self.top_p is not None and self.top_p < 1:
            order = np.argsort(-probs, axis=-1, kind="stable")
            sorted_probs = np.take_along_axis(probs, order, axis=-1)
            # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
            drop = np.cumsum(sorted_probs, axis=-1) - sorted_probs >= self.top_p
            np.put_along_axis(probs, order, np.where(drop, 0.0, sorted_probs), axis=-1)
            probs /= probs.sum(axis=-1, keepdims=True)
        cumulative = np.cumsum(probs, axis=-1)
        draws = self.rng.random((probs.shape[0], 1)) * cumulative[:, -1:]
        return np.minimum((cumulative <= draws).sum(axis=-1), probs.shape[-1] - 1)


class _Decoder:
    """Feeds the model one step at a time, through the exported cache or by recomputing the sequence."""

    def __init__(self, session: Session):
        self.session = session
        self.layout = session.manifest.cache
        self.past: dict[str, np.ndarray] = {}

    def __call__(self, ids: np.ndarray, mask: np.ndarray, new: int) -> np.ndarray:
        """``ids`` and ``mask``: the whole sequence so far; ``new``: how many of its tokens the model has not seen.
        Returns the last position's logits, (B, V)."""
        if self.layout is None:
            return self.session.run(input_ids=ids, attention_mask=mask)["logits"][:, -1]
        out = self.session.run(input_ids=ids[:, -new:], attention_mask=mask, **self.past)
        self.past = {entry.input: out[entry.output] for entry in self.layout.entries}
        return out["logits"][:, -1]


def stream(session: Session, input_ids: Any, max_new_tokens: int, *, attention_mask: Any = None,
           do_sample: bool = False, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
           seed: int | None = None, eos_token_id: int | Sequence[int] | None = None, ignore_eos: bool = False,
           pad_token_id: int | None = None) -> Iterator[np.ndarray]:
    """Yield each step's new tokens, shape (batch,), until ``max_new_tokens`` or every row has emitted EOS.

    ``eos_token_id`` defaults to the config's; ``ignore_eos`` generates all ``max_new_tokens``. Finished rows
    emit ``pad_token_id`` (default: the config's, else the first EOS id).
    """
    ids = _prompt(input_ids)
    mask = _mask(attention_mask, ids)
    _validate(session, ids, mask, max_new_tokens)
    sampler = Sampler(do_sample, temperature, top_k, top_p, seed)
    _check_ids("eos_token_id", eos_token_id)
    _check_ids("pad_token_id", pad_token_id)
    eos = _token_ids(None if ignore_eos else eos_token_id if eos_token_id is not None
                     else session.config.get("eos_token_id"))
    pad = pad_token_id if pad_token_id is not None else session.config.get("pad_token_id")
    if pad is None:
        pad = int(eos[0]) if eos.size else 0
    decoder = _Decoder(session)
    done = np.zeros(ids.shape[0], dtype=bool)
    new = ids.shape[1]
    for _ in range(max_new_tokens):
        tokens = sampler(decoder(ids, mask, new))
        tokens = np.where(done, pad, tokens).astype(np.int64)
        done |= np.isin(tokens, eos)
        yield tokens
        if done.all():
            return
        ids = np.concatenate([ids, tokens[:, None]], axis=1)
        mask = np.concatenate([mask, np.ones_like(tokens)[:, None]], axis=1)
        new = 1


def generate(session: Session, input_ids: Any, max_new_tokens: int, *,
             streamer: Callable[[np.ndarray], None] | None = None, **options: Any) -> np.ndarray:
    """The prompts followed by their generated tokens, shape (batch, prompt + generated). ``streamer`` is called
    with each step's tokens (batch,) as they come. Options as :func:`stream`."""
    prompt = _prompt(input_ids)
    steps = []
    for tokens in stream(session, input_ids, max_new_tokens, **options):
        steps.append(tokens)
        if streamer is not None:
            streamer(tokens)
    return np.concatenate([prompt, np.stack(steps, axis=1)], axis=1)
