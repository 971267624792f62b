"""Text generation over an exported causal LM: greedy, sampled or beam search, with ``transformers.generate``'s
options and semantics, from ids or (through the export's tokenizer) from text.

Torch-free. The pieces, one job each:

* :mod:`.generation_config`: the options (``generation_config.json`` as defaults, arguments overriding), checked.
* :mod:`.decoding`: the model, step by step, through the exported cache (or recomputing without one).
* :mod:`.logits_processors`: repetition penalty, n-gram ban, min_new_tokens; temperature, top-k, top-p sampling.
* :mod:`.beam_search`: beam search over the cache, reordered per step by the manifest's cache layout.
* :mod:`.stopping`: stop strings; :mod:`.text` and :mod:`.text_stream`: text in, text out, streamed.

Greedy decoding and beam search give the tokens ``transformers.generate`` gives on the same weights
(tests/test_generation_hf.py); sampling is reproducible with ``seed`` (numpy's generator, not torch's).

Batches of prompts of different lengths are padded on the left with attention_mask 0 there, as HF's generate
expects (``generate(text=[...])`` pads for you); the runtime derives GPT-NeoX's positions from the mask. Rows that
finished (an EOS id, a stop string) emit ``pad_token_id`` until every row is done.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .beam_search import beam_search
from .decoding import Decoder
from .errors import RuntimeInputError
from .generation_config import GenerationOptions, resolve
from .logits_processors import LogitsProcessors, NonFiniteLogitsError, Sampler, check_finite, sample, warp
from .stopping import StopStrings

if TYPE_CHECKING:
    from .session import Session

__all__ = ["NonFiniteLogitsError", "Sampler", "generate", "generate_ids", "stream", "stream_steps"]


def _validate(session: Session, ids: np.ndarray, mask: np.ndarray, max_new_tokens: int) -> None:
    manifest = session.manifest
    if not session.is_causal_lm:
        raise RuntimeInputError(f"generate needs a causal LM export; this one is {manifest.hf_class} "
                                f"({manifest.task}). Export the checkpoint with --task ForCausalLM")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise RuntimeInputError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] == 0:
        raise RuntimeInputError(f"input_ids must be (batch, prompt length) with at least one token, got shape "
                                f"{ids.shape}")
    if mask.shape != ids.shape:
        raise RuntimeInputError(f"attention_mask has shape {mask.shape}; it must match input_ids' {ids.shape}")
    if np.any(np.diff(mask, axis=1) < 0):
        raise RuntimeInputError("the prompts are padded on the right (a 1 before a 0 in attention_mask); pad them on "
                                "the left for generation, as HF's generate expects")
    if not np.all(mask[:, -1] == 1):
        raise RuntimeInputError("every prompt needs at least one real token (attention_mask 1)")
    limit = manifest.length_rules.max_length
    if ids.shape[1] + max_new_tokens > limit:
        raise RuntimeInputError(f"prompt length {ids.shape[1]} + max_new_tokens {max_new_tokens} exceeds the model's "
                                f"maximum of {limit} tokens; shorten the prompt or ask for fewer tokens")


def _prompt(input_ids: Any, attention_mask: Any) -> tuple[np.ndarray, np.ndarray]:
    if input_ids is None:
        raise RuntimeInputError("give the prompt as input_ids (token ids) or as text=...")
    try:
        ids = np.asarray(input_ids)
    except Exception as exc:  # ragged lists
        raise RuntimeInputError(f"input_ids could not be made an array ({exc}): pad the prompts to one length, on "
                                "the left") from None
    if ids.size == 0:
        raise RuntimeInputError(f"the prompt is empty (input_ids of shape {ids.shape}): generation needs at least one "
                                "token per row")
    if ids.dtype == np.bool_ or not np.issubdtype(ids.dtype, np.integer):
        raise RuntimeInputError(f"input_ids must hold integer token ids, got dtype {ids.dtype}; for text, call "
                                "generate(text=...)")
    ids = ids.astype(np.int64)
    if attention_mask is None:
        return ids, np.ones_like(ids)
    try:
        mask = np.asarray(attention_mask)
    except Exception as exc:
        raise RuntimeInputError(f"attention_mask could not be made an array ({exc})") from None
    if mask.dtype.kind not in "biuf" or not np.isin(mask, (0, 1)).all():
        shown = np.unique(mask)[:5] if mask.dtype.kind in "biufc" else mask.dtype
        raise RuntimeInputError(f"attention_mask must be 0/1 (1 for a real token, 0 for padding), got {shown}")
    return ids, mask.astype(np.int64)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """One generation call, checked and ready: the prompts, the options and what applies them."""

    ids: np.ndarray
    mask: np.ndarray
    options: GenerationOptions
    processors: LogitsProcessors
    stop: StopStrings | None


def _plan(session: Session, input_ids: Any, max_new_tokens: Any, attention_mask: Any, options: Mapping[str, Any],
          tokenizer_pad: int | None) -> _Plan:
    ids, mask = _prompt(input_ids, attention_mask)
    given = {**options, "max_new_tokens": max_new_tokens}
    resolved = resolve(given, session.generation_defaults, session.config, ids.shape[1] if ids.ndim == 2 else 0,
                       tokenizer_pad)
    _validate(session, ids, mask, resolved.max_new_tokens)
    processors = LogitsProcessors(resolved.repetition_penalty, resolved.no_repeat_ngram_size,
                                  resolved.min_new_tokens, resolved.eos_token_ids, ids.shape[1])
    stop = StopStrings(session.tokenizer, resolved.stop_strings) if resolved.stop_strings else None
    return _Plan(ids, mask, resolved, processors, stop)


def _steps(session: Session, plan: _Plan) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Greedy or sampled decoding: yield each step's tokens (B,) and which rows were still running for it."""
    options, ids, mask = plan.options, plan.ids, plan.mask
    decoder = Decoder(session)
    rng = np.random.default_rng(options.seed)
    eos = np.asarray(options.eos_token_ids, dtype=np.int64)
    done = np.zeros(ids.shape[0], dtype=bool)
    new = ids.shape[1]
    for _ in range(options.max_new_tokens):
        logits = decoder(ids, mask, new).astype(np.float64)  # (B, V)
        check_finite(logits)
        scores = plan.processors(ids, logits)
        if options.do_sample:
            tokens = sample(warp(scores, options.temperature, options.top_k, options.top_p), rng)
        else:
            tokens = scores.argmax(axis=-1)
        live = ~done
        tokens = np.where(done, options.pad_token_id, tokens).astype(np.int64)
        ids = np.concatenate([ids, tokens[:, None]], axis=1)
        mask = np.concatenate([mask, np.ones_like(tokens)[:, None]], axis=1)
        done = done | np.isin(tokens, eos)
        if plan.stop is not None:
            done |= live & plan.stop(ids, mask)
        yield tokens, live
        if done.all():
            return
        new = 1


def stream_steps(session: Session, input_ids: Any, max_new_tokens: Any, attention_mask: Any,
                 options: Mapping[str, Any], tokenizer_pad: int | None = None) -> Iterator[tuple[np.ndarray,
                                                                                                 np.ndarray]]:
    """Checked now, run lazily: each step's (tokens, rows still running for them). Greedy or sampling only."""
    plan = _plan(session, input_ids, max_new_tokens, attention_mask, options, tokenizer_pad)
    if plan.options.num_beams > 1:
        raise RuntimeInputError(f"streaming needs num_beams=1 (got {plan.options.num_beams}): beam search only knows "
                                "its result at the end; call generate() instead")
    return _steps(session, plan)


def stream(session: Session, input_ids: Any = None, max_new_tokens: int | None = None, *, text: Any = None,
           attention_mask: Any = None, **options: Any) -> Iterator[np.ndarray] | Iterator[str]:
    """Yield each step's new tokens, shape (batch,), until ``max_new_tokens`` or every row has finished; with
    ``text=...`` yield the generated text in pieces instead (see :mod:`.text`). Options as
    :class:`~.generation_config.GenerationOptions` (``ignore_eos`` generates all ``max_new_tokens``); invalid
    arguments raise here, not at the first step."""
    if text is not None:
        if input_ids is not None:
            raise RuntimeInputError("give the prompt as input_ids or as text, not both")
        from .text import stream_text

        return stream_text(session, text, max_new_tokens, **options)
    steps = stream_steps(session, input_ids, max_new_tokens, attention_mask, options)
    return (tokens for tokens, _ in steps)


def generate_ids(session: Session, input_ids: Any, max_new_tokens: Any, attention_mask: Any,
                 streamer: Callable[[np.ndarray], None] | None, options: Mapping[str, Any],
                 tokenizer_pad: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The prompts followed by their generated tokens (B, prompt + generated), and each row's generated length
    (the tokens up to its EOS or stop string; pads after it)."""
    plan = _plan(session, input_ids, max_new_tokens, attention_mask, options, tokenizer_pad)
    if plan.options.num_beams > 1:
        if streamer is not None:
            raise RuntimeInputError("a streamer needs num_beams=1: beam search only knows its result at the end")
        return beam_search(Decoder(session), plan.ids, plan.mask, plan.options, plan.processors, plan.stop,
                           int(session.config["vocab_size"]))
    steps, lengths = [], np.zeros(plan.ids.shape[0], dtype=np.int64)
    for tokens, live in _steps(session, plan):
        steps.append(tokens)
        lengths += live
        if streamer is not None:
            streamer(tokens)
    return np.concatenate([plan.ids, np.stack(steps, axis=1)], axis=1), lengths


def generate(session: Session, input_ids: Any = None, max_new_tokens: int | None = None, *, text: Any = None,
             streamer: Callable[[Any], None] | None = None, attention_mask: Any = None,
             **options: Any) -> np.ndarray | str | list[str]:
    """The prompts followed by their generated tokens, shape (batch, prompt + generated); with ``text=...`` the
    generated text (see :mod:`.text`; ``return_full_text=False`` for the continuation alone). ``streamer`` is called
    with each step's tokens (batch,) as they come, or with each text piece. Options as :func:`stream`."""
    if text is not None:
        if input_ids is not None:
            raise RuntimeInputError("give the prompt as input_ids or as text, not both")
        if streamer is None:
            from .text import generate_text

            return generate_text(session, text, max_new_tokens, **options)
        from .text import stream_text

        full = options.pop("return_full_text", True)
        pieces = []
        for piece in stream_text(session, text, max_new_tokens, **options):
            pieces.append(piece)
            streamer(piece)
        if isinstance(text, str):
            return (text if full else "") + "".join(pieces)
        return [(t if full else "") + "".join(p[i] for p in pieces) for i, t in enumerate(text)]
    tokens, _ = generate_ids(session, input_ids, max_new_tokens, attention_mask, streamer, options)
    return tokens
