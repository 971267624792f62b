"""Generation options: ``generation_config.json`` as the defaults, the caller's arguments overriding, each checked.

Torch-free. The names and meanings are HF's ``GenerationConfig``'s, so a checkpoint's ``generation_config.json``
means here what it means to ``transformers.generate``. Precedence, per option: the argument given to
``generate``/``stream``; else the export's ``generation_config.json``; else, for the special ids, ``config.json``;
else HF's default. Two differences, both documented in the README: without any length setting we generate
:data:`DEFAULT_MAX_NEW_TOKENS` new tokens (HF's default is ``max_length=20`` *including* the prompt), and
``pad_token_id`` falls back to the tokenizer's pad token before the first EOS id.

Every bad value is a :class:`RuntimeInputError` that names the argument and says what it accepts.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ManifestError, RuntimeInputError

DEFAULT_MAX_NEW_TOKENS = 20
#: HF's GenerationConfig defaults for the options we support.
HF_DEFAULTS: dict[str, Any] = {"do_sample": False, "temperature": 1.0, "top_k": 50, "top_p": 1.0, "num_beams": 1,
                               "length_penalty": 1.0, "early_stopping": False, "repetition_penalty": 1.0,
                               "no_repeat_ngram_size": 0}
#: Every keyword ``generate``/``stream`` take besides the prompt.
OPTION_NAMES = ("max_new_tokens", "max_length", "min_new_tokens", "min_length", "do_sample", "temperature", "top_k",
                "top_p", "seed", "num_beams", "length_penalty", "early_stopping", "repetition_penalty",
                "no_repeat_ngram_size", "eos_token_id", "pad_token_id", "stop_strings", "ignore_eos")


@dataclasses.dataclass(frozen=True)
class GenerationOptions:
    """The resolved options of one ``generate`` call (HF's names; lengths counted in new tokens).

    ``top_k`` 0 and ``top_p`` 1.0 turn those filters off; ``eos_token_ids`` empty never stops early.
    ``early_stopping``: False (HF's heuristic), True (stop a prompt's beam search once it has ``num_beams``
    finished hypotheses) or ``"never"`` (the canonical beam search).
    """

    max_new_tokens: int
    min_new_tokens: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    seed: int | None = None
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int = 0
    stop_strings: tuple[str, ...] = ()


def read_generation_config(folder: Path, name: str | None) -> dict[str, Any]:
    """The export's ``generation_config.json`` as a dict; empty when the export has none."""
    if name is None:
        return {}
    path = folder / name
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{str(path)!r} cannot be read as JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{str(path)!r} must hold a JSON object")
    return data


# ----------------------------------------------------------------------------------------------- checks


def _integer(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        what = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise RuntimeInputError(f"{name} must be {what}, got {value!r}")
    return int(value)


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(
            value):
        raise RuntimeInputError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _positive(name: str, value: Any, hint: str = "") -> float:
    finite = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
    if not finite or not math.isfinite(value) or value <= 0:
        raise RuntimeInputError(f"{name} must be a finite number > 0, got {value!r}{hint}")
    return float(value)


def _token_ids(name: str, value: Any, vocab_size: int) -> tuple[int, ...]:
    values = [value] if not isinstance(value, (list, tuple, np.ndarray)) else list(np.asarray(value).ravel())
    if not values or not all(not isinstance(v, bool) and isinstance(v, (int, np.integer)) and v >= 0 for v in values):
        raise RuntimeInputError(f"{name} must be a token id (an integer >= 0) or a list of them, got {value!r}")
    ids = tuple(int(v) for v in values)
    for token in ids:
        if token >= vocab_size:
            raise RuntimeInputError(f"{name} holds {token}, outside the vocabulary [0, {vocab_size})")
    return ids


def _stop_strings(value: Any) -> tuple[str, ...]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, Sequence) or not all(isinstance(s, str) and s for s in values):
        raise RuntimeInputError(f"stop_strings must be a non-empty string or a list of them, got {value!r}")
    return tuple(values)


def _early_stopping(value: Any) -> bool | str:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if value == "never":
        return "never"
    raise RuntimeInputError(f"early_stopping must be True, False or 'never', got {value!r}")


# ----------------------------------------------------------------------------------------------- resolution


def _lengths(given: Mapping[str, Any], defaults: Mapping[str, Any], prompt_length: int) -> tuple[int, int]:
    """max_new_tokens and min_new_tokens: the argument, else generation_config.json's; ``max_length`` and
    ``min_length`` (HF's total lengths, prompt included) where the new-token form is absent at that level."""
    maximum = minimum = None
    for source in (given, defaults):
        if maximum is None and source.get("max_new_tokens") is not None:
            maximum = _integer("max_new_tokens", source["max_new_tokens"], 1)
        elif maximum is None and source.get("max_length") is not None:
            total = _integer("max_length", source["max_length"], 1)
            if total <= prompt_length:
                raise RuntimeInputError(f"max_length {total} leaves no room after the prompt of {prompt_length} "
                                        "tokens; ask for max_new_tokens instead")
            maximum = total - prompt_length
        if minimum is None and source.get("min_new_tokens") is not None:
            minimum = _integer("min_new_tokens", source["min_new_tokens"], 0)
        elif minimum is None and source.get("min_length") is not None:
            minimum = max(0, _integer("min_length", source["min_length"], 0) - prompt_length)
    return (maximum if maximum is not None else DEFAULT_MAX_NEW_TOKENS), minimum or 0


def _special_ids(given: Mapping[str, Any], defaults: Mapping[str, Any], config: Mapping[str, Any],
                 tokenizer_pad: int | None) -> tuple[tuple[int, ...], int]:
    vocab_size = int(config["vocab_size"])
    eos: tuple[int, ...] = ()
    if not given.get("ignore_eos"):
        for source in (given, defaults, config):
            if source.get("eos_token_id") is not None:
                eos = _token_ids("eos_token_id", source["eos_token_id"], vocab_size)
                break
    pad = next((s["pad_token_id"] for s in (given, defaults, config) if s.get("pad_token_id") is not None), None)
    if pad is None:
        pad = tokenizer_pad if tokenizer_pad is not None else (eos[0] if eos else 0)
    return eos, _token_ids("pad_token_id", pad, vocab_size)[0]


def resolve(given: Mapping[str, Any], defaults: Mapping[str, Any], config: Mapping[str, Any], prompt_length: int,
            tokenizer_pad: int | None = None) -> GenerationOptions:
    """The options of one call: ``given`` (the caller's arguments; None means not given) over ``defaults`` (the
    export's generation_config.json) over ``config`` (config.json's special ids) over HF's defaults."""
    unknown = sorted(set(given) - set(OPTION_NAMES))
    if unknown:
        raise RuntimeInputError(f"unknown generation option{'s' if len(unknown) > 1 else ''} "
                                f"{', '.join(map(repr, unknown))}; the options are {', '.join(OPTION_NAMES)}")
    given = {k: v for k, v in given.items() if v is not None}

    def pick(name: str) -> Any:
        if name in given:
            return given[name]
        return defaults[name] if defaults.get(name) is not None else HF_DEFAULTS.get(name)

    maximum, minimum = _lengths(given, defaults, prompt_length)
    eos, pad = _special_ids(given, defaults, config, tokenizer_pad)
    do_sample = pick("do_sample")
    if not isinstance(do_sample, (bool, np.bool_)):
        raise RuntimeInputError(f"do_sample must be True or False, got {do_sample!r}")
    top_p = pick("top_p")
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float, np.integer, np.floating)) or not 0 < top_p <= 1:
        raise RuntimeInputError(f"top_p must be a number in (0, 1], got {top_p!r}")  # NaN fails the comparison too
    top_p = float(top_p)
    seed = given.get("seed")
    return GenerationOptions(
        max_new_tokens=maximum, min_new_tokens=minimum, do_sample=bool(do_sample),
        temperature=_positive("temperature", pick("temperature"), "; use do_sample=False for greedy decoding"),
        top_k=_integer("top_k", pick("top_k"), 0), top_p=top_p,
        seed=None if seed is None else _integer("seed", seed, 0),
        num_beams=_integer("num_beams", pick("num_beams"), 1),
        length_penalty=_number("length_penalty", pick("length_penalty")),
        early_stopping=_early_stopping(pick("early_stopping")),
        repetition_penalty=_positive("repetition_penalty", pick("repetition_penalty")),
        no_repeat_ngram_size=_integer("no_repeat_ngram_size", pick("no_repeat_ngram_size"), 0),
        eos_token_ids=eos, pad_token_id=pad,
        stop_strings=_stop_strings(pick("stop_strings")) if pick("stop_strings") else (),
    )
