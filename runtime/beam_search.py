"""Beam search over the exported cache, with the semantics of ``transformers.generate(num_beams=K)`` (4.57.6).

Torch-free; checked token for token against HF's on the same weights (tests/test_generation_hf.py). Per prompt:

* Each step scores every continuation of every running beam: the beam's sum of log-probabilities plus the
  processed log-softmax of the model's logits (repetition penalty, n-gram ban and min_new_tokens act on the
  log-probabilities, as in HF). Before the first step only beam 0 is live (the others start at -1e9), so the beams
  never duplicate each other.
* The best ``2K`` continuations (``(1 + number of EOS ids) K`` with several EOS ids) are kept, sorted; with
  ``do_sample`` they are drawn without replacement from the softmax of the scores instead (beam sampling).
* A continuation that ends in EOS, completes a stop string or reaches the length limit is a finished hypothesis
  (only those among the first K count), scored by its sum of log-probabilities divided by its generated length to
  the power ``length_penalty``; the K best finished hypotheses are kept. The K best others keep running, and the
  cache is reordered to follow them (:meth:`Decoder.reorder`).
* ``early_stopping``: False stops a prompt once its best running beam, normalised at the current length, cannot
  beat its worst kept hypothesis (HF's default heuristic); True stops once it has K finished hypotheses;
  ``"never"`` uses the longest possible length for that bound when ``length_penalty > 0``.

The result is each prompt's best hypothesis, padded with ``pad_token_id`` to the longest; scores are float64
(HF's float32 can only break ties differently on candidates within its rounding).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .decoding import Decoder
from .errors import RuntimeInputError
from .generation_config import GenerationOptions
from .logits_processors import LogitsProcessors, check_finite, log_softmax, softmax, warp
from .stopping import StopStrings

#: HF's score of a dead beam or an empty hypothesis slot.
DEAD = -1.0e9


@dataclasses.dataclass
class _Finished:
    """Each prompt's K best finished hypotheses: ids padded to the full length, scores, generated lengths."""

    ids: np.ndarray  # (B, K, max_length)
    scores: np.ndarray  # (B, K)
    lengths: np.ndarray  # (B, K)
    done: np.ndarray  # (B, K) whether the slot holds a hypothesis

    @classmethod
    def empty(cls, batch: int, beams: int, max_length: int, pad: int) -> _Finished:
        return cls(np.full((batch, beams, max_length), pad, dtype=np.int64), np.full((batch, beams), DEAD),
                   np.zeros((batch, beams), dtype=np.int64), np.zeros((batch, beams), dtype=bool))


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest per row, best first (ties keep the lower index)."""
    return np.argsort(-scores, axis=-1, kind="stable")[:, :k]


def _candidates(acc: np.ndarray, keep: int, options: GenerationOptions, rng: np.random.Generator) -> np.ndarray:
    """The ``keep`` continuations per prompt, as flat (beam * V + token) indices: the best, sorted, or sampled."""
    if not options.do_sample:
        return _top(acc, keep)
    probs = softmax(acc)
    picks = []
    for row in probs:
        if np.count_nonzero(row) < keep:
            raise RuntimeInputError(f"beam sampling needs {keep} tokens with probability > 0 per step; top_k / top_p "
                                    "leave fewer: raise top_k or top_p, or lower num_beams")
        picks.append(rng.choice(row.size, size=keep, replace=False, p=row / row.sum()))
    return np.stack(picks)


class _Search:
    """The state of one beam search over B prompts with K beams."""

    def __init__(self, ids: np.ndarray, options: GenerationOptions, vocab_size: int):
        self.options = options
        self.batch, self.prompt = ids.shape
        self.beams, self.vocab = options.num_beams, vocab_size
        self.eos = np.asarray(options.eos_token_ids, dtype=np.int64)
        self.keep = max(2, 1 + self.eos.size) * self.beams
        self.max_length = self.prompt + options.max_new_tokens
        self.running = np.repeat(ids, self.beams, axis=0).reshape(self.batch, self.beams, self.prompt)
        self.scores = np.zeros((self.batch, self.beams))
        self.scores[:, 1:] = DEAD
        self.finished = _Finished.empty(self.batch, self.beams, self.max_length, options.pad_token_id)
        self.improvable = np.ones(self.batch, dtype=bool)

    @property
    def length(self) -> int:
        return self.running.shape[-1]

    def step(self, logprobs: np.ndarray, rng: np.random.Generator,
             stop: StopStrings | None, mask: np.ndarray) -> tuple[np.ndarray, bool]:
        """Advance by one token given the processed log-probs (B*K, V); return the parent rows of the new running
        beams (flat, for the cache) and whether the search is over."""
        b, k, v = self.batch, self.beams, self.vocab
        acc = (logprobs.reshape(b, k, v) + self.scores[..., None]).reshape(b, k * v)
        chosen = _candidates(acc, self.keep, self.options, rng)  # (B, keep)
        cand_scores = np.take_along_axis(acc, chosen, axis=1)
        parent, token = chosen // v, chosen % v
        cand = np.concatenate([np.take_along_axis(self.running, parent[..., None], axis=1), token[..., None]], axis=2)
        hits = np.isin(token, self.eos) | (self.length + 1 >= self.max_length)
        if stop is not None:
            cand_mask = np.concatenate([np.repeat(mask[::k], self.keep, axis=0), np.ones((b * self.keep, 1))], axis=1)
            hits |= stop(cand.reshape(b * self.keep, -1), cand_mask).reshape(b, self.keep)

        running_scores = cand_scores + hits * DEAD
        order = _top(running_scores, k)
        self.running = np.take_along_axis(cand, order[..., None], axis=1)
        self.scores = np.take_along_axis(running_scores, order, axis=1)
        parents = np.take_along_axis(parent, order, axis=1) + np.arange(b)[:, None] * k  # (B, K) flat rows

        self._finish(cand, cand_scores, hits)
        self._update_heuristic()
        over = not self.improvable.any() or bool(hits.all())
        if self.options.early_stopping is True and self.finished.done.all():
            over = True
        return parents.reshape(-1), over

    def _finish(self, cand: np.ndarray, cand_scores: np.ndarray, hits: np.ndarray) -> None:
        """Merge the just-finished hypotheses among the first K candidates into the K best kept."""
        generated = self.length - self.prompt  # candidates hold one token more than the running beams did
        just = hits & (np.arange(self.keep) < self.beams)[None, :]
        scores = cand_scores / (generated ** self.options.length_penalty)
        full = self.finished.done.all(axis=1) & (self.options.early_stopping is True)
        scores = scores + (full | ~self.improvable)[:, None] * DEAD + ~just * DEAD
        padded = np.full((self.batch, self.keep, self.max_length), self.options.pad_token_id, dtype=np.int64)
        padded[:, :, : cand.shape[2]] = cand
        merged_scores = np.concatenate([self.finished.scores, scores], axis=1)
        pick = _top(merged_scores, self.beams)
        lengths = np.concatenate([self.finished.lengths, np.full((self.batch, self.keep), generated)], axis=1)
        done = np.concatenate([self.finished.done, just], axis=1)
        ids = np.concatenate([self.finished.ids, padded], axis=1)
        self.finished = _Finished(np.take_along_axis(ids, pick[..., None], axis=1),
                                  np.take_along_axis(merged_scores, pick, axis=1),
                                  np.take_along_axis(lengths, pick, axis=1), np.take_along_axis(done, pick, axis=1))

    def _update_heuristic(self) -> None:
        """Whether each prompt's best running beam could still beat its worst kept hypothesis (HF's bound)."""
        penalty, generated = self.options.length_penalty, self.length - self.prompt
        if self.options.early_stopping == "never" and penalty > 0:
            generated = self.max_length - self.prompt
        best = self.scores[:, 0] / (generated ** penalty)
        worst = np.where(self.finished.done, self.finished.scores.min(axis=1, keepdims=True), DEAD)
        self.improvable &= np.any(best[:, None] > worst, axis=1)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        lengths = self.finished.lengths[:, 0]
        return self.finished.ids[:, 0, : self.prompt + int(lengths.max())], lengths


def beam_search(decoder: Decoder, ids: np.ndarray, mask: np.ndarray, options: GenerationOptions,
                processors: LogitsProcessors, stop: StopStrings | None, vocab_size: int) -> tuple[np.ndarray,
                                                                                                     np.ndarray]:
    """Each prompt's best hypothesis, (B, prompt + generated) padded with pad_token_id, and its generated length."""
    search = _Search(ids, options, vocab_size)
    rng = np.random.default_rng(options.seed)
    beams = options.num_beams
    logits = np.repeat(decoder(ids, mask, ids.shape[1]), beams, axis=0)  # one prefill per prompt, shared by beams
    decoder.reorder(np.repeat(np.arange(ids.shape[0]), beams))
    mask = np.repeat(mask, beams, axis=0)
    min_keep = len(options.eos_token_ids) + 1
    while True:
        flat = search.running.reshape(-1, search.length)
        check_finite(logits)
        scores = processors(flat, log_softmax(logits.astype(np.float64)))
        if options.do_sample:
            scores = warp(scores, options.temperature, options.top_k, options.top_p, min_keep)
        parents, over = search.step(scores, rng, stop, mask)
        if over:
            return search.result()
        decoder.reorder(parents)
        mask = np.concatenate([mask, np.ones((mask.shape[0], 1), dtype=mask.dtype)], axis=1)
        logits = decoder(search.running.reshape(-1, search.length), mask, 1)
