"""Logits processors and sampling for generation, in numpy: what ``transformers.generate`` applies, in its order.

Torch-free. Checked against ``transformers==4.57.6``'s processors by the HF-oracle generation tests
(tests/test_generation_hf.py: the same tokens on the same weights). Processors, applied to each step's scores
(raw logits for greedy and sampling, log-probabilities for beam search, as HF does):

1. ``repetition_penalty`` (CTRL): every token id present in the sequence so far (prompt and padding included, as
   in HF) has its score divided by the penalty when positive, multiplied when negative.
2. ``no_repeat_ngram_size`` n: a token that would complete an n-gram already present in the sequence gets -inf.
3. ``min_new_tokens``: the EOS ids get -inf until that many tokens are generated.

Sampling warpers, in HF's order: temperature, top-k, top-p (nucleus); beam sampling keeps at least one token more
than there are EOS ids. :class:`Sampler` is the earlier one-object API (greedy or sampled), kept for callers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .errors import CheckFailed, RuntimeInputError


def repetition_penalty(ids: np.ndarray, scores: np.ndarray, penalty: float) -> np.ndarray:
    """``scores`` (N, V) with every id in ``ids`` (N, T) penalised."""
    seen = np.take_along_axis(scores, ids, axis=1)  # (N, T)
    penalised = np.where(seen < 0, seen * penalty, seen / penalty)
    out = scores.copy()
    np.put_along_axis(out, ids, penalised, axis=1)
    return out


def no_repeat_ngram(ids: np.ndarray, scores: np.ndarray, size: int) -> np.ndarray:
    """-inf for each token that would repeat an n-gram of ``size`` tokens already in ``ids`` (N, T)."""
    length = ids.shape[1]
    if length < size:  # no n-gram yet, so nothing to repeat
        return scores
    out = scores.copy()
    windows = sliding_window_view(ids, size, axis=1)  # (N, T - size + 1, size): every n-gram so far
    prefix = ids[:, length - size + 1:]  # (N, size - 1): what the next token would extend
    matches = np.all(windows[:, :, : size - 1] == prefix[:, None, :], axis=2)  # (N, T - size + 1)
    rows, starts = np.nonzero(matches)
    out[rows, windows[rows, starts, size - 1]] = -np.inf
    return out


def suppress_eos(scores: np.ndarray, eos: Sequence[int]) -> np.ndarray:
    out = scores.copy()
    out[:, list(eos)] = -np.inf
    return out


class LogitsProcessors:
    """The processors one generate call uses, given its resolved options and the prompt's length."""

    def __init__(self, repetition: float, ngram: int, min_new_tokens: int, eos: Sequence[int], prompt_length: int):
        self.repetition, self.ngram, self.min_new_tokens = repetition, ngram, min_new_tokens
        self.eos, self.prompt_length = tuple(eos), prompt_length

    def __call__(self, ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """``ids`` (N, T): each row's whole sequence (prompt included); ``scores`` (N, V)."""
        if self.repetition != 1.0:
            scores = repetition_penalty(ids, scores, self.repetition)
        if self.ngram > 0:
            scores = no_repeat_ngram(ids, scores, self.ngram)
        if self.eos and ids.shape[1] - self.prompt_length < self.min_new_tokens:
            scores = suppress_eos(scores, self.eos)
        return scores


# ----------------------------------------------------------------------------------------------- sampling


def softmax(scores: np.ndarray) -> np.ndarray:
    top = scores.max(axis=-1, keepdims=True)
    exp = np.exp(scores - np.where(np.isfinite(top), top, 0.0))
    return exp / exp.sum(axis=-1, keepdims=True)


def log_softmax(scores: np.ndarray) -> np.ndarray:
    top = scores.max(axis=-1, keepdims=True)
    shifted = scores - top
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def warp(scores: np.ndarray, temperature: float, top_k: int, top_p: float, min_keep: int = 1) -> np.ndarray:
    """Temperature, then top-k, then top-p (HF's warpers and order); filtered tokens get -inf."""
    scores = scores / temperature if temperature != 1.0 else scores.copy()
    vocab = scores.shape[-1]
    if top_k and top_k < vocab:
        k = max(top_k, min_keep)
        kth = np.partition(scores, -k, axis=-1)[:, -k, None]
        scores = np.where(scores < kth, -np.inf, scores)
    if top_p < 1.0:
        order = np.argsort(scores, axis=-1, kind="stable")  # ascending, as HF sorts
        ascending = np.take_along_axis(scores, order, axis=-1)
        cumulative = np.cumsum(softmax(ascending), axis=-1)
        drop = cumulative <= 1 - top_p  # the low tail holding at most 1 - top_p of the mass
        drop[:, -min_keep:] = False
        np.put_along_axis(scores, order, np.where(drop, -np.inf, ascending), axis=-1)
    return scores


def sample(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One token per row, drawn from softmax(scores) (N, V) by the inverse CDF with ``rng``."""
    probs = softmax(scores.astype(np.float64))
    cumulative = np.cumsum(probs, axis=-1)
    draws = rng.random((probs.shape[0], 1)) * cumulative[:, -1:]
    return np.minimum((cumulative <= draws).sum(axis=-1), probs.shape[-1] - 1)


class NonFiniteLogitsError(CheckFailed):
    """The model's logits hold NaN or +Inf (or only -Inf) for a row: no token can be chosen from them."""


def check_finite(logits: np.ndarray) -> None:
    """Refuse logits (N, V) from which no token can honestly be chosen, rather than return token 0 for them."""
    broken = np.isnan(logits).any(axis=-1) | np.isposinf(logits).any(axis=-1) | np.isneginf(logits).all(axis=-1)
    if broken.any():
        raise NonFiniteLogitsError(f"the model returned NaN or infinite logits for prompt row(s) "
                                   f"{np.flatnonzero(broken).tolist()[:8]}: its weights or the export are broken "
                                   "(`kiln parity` checks an export against its checkpoint)")


class Sampler:
    """Picks the next token from the last position's logits: greedy (argmax), or sampled after ``temperature``,
    ``top_k`` (None or 0: off) and nucleus ``top_p`` filtering, with a seeded numpy generator."""

    def __init__(self, do_sample: bool = False, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, seed: int | None = None):
        if not (isinstance(temperature, (int, float)) and np.isfinite(temperature) and temperature > 0):
            raise RuntimeInputError(f"temperature must be a finite number > 0, got {temperature!r}; use "
                                    "do_sample=False for greedy")
        if top_k is not None and (isinstance(top_k, bool) or int(top_k) != top_k or top_k < 0):
            raise RuntimeInputError(f"top_k must be an integer >= 0, got {top_k!r}")
        if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
            raise RuntimeInputError(f"top_p must be a number in (0, 1], got {top_p!r}")
        self.do_sample, self.temperature = do_sample, float(temperature)
        self.top_k, self.top_p = int(top_k or 0), float(1.0 if top_p is None else top_p)
        self.rng = np.random.default_rng(seed)

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        scores = np.asarray(logits, dtype=np.float64)  # (B, V)
        check_finite(scores)
        if not self.do_sample:
            return scores.argmax(axis=-1)
        return sample(warp(scores, self.temperature, self.top_k, self.top_p), self.rng)
