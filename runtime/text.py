"""Text in, text out: prompts and inputs from strings through the export's tokenizer, generated ids back to text.

Torch-free (the tokenizer is HF's ``tokenizers``, the ``tensorkiln[text]`` extra). What the session's text methods
do:

* ``generate(text=...)``: the prompts are encoded (with the tokenizer's own special tokens, e.g. none for
  GPT-NeoX) and padded on the left for the user, generated with the ids path, and decoded without special tokens.
  The result follows HF's text-generation pipeline: the prompt followed by the continuation
  (``return_full_text=False``: the continuation only); the continuation is the decoded text of prompt and
  generated tokens past the decoded prompt, so spacing and characters that straddle the boundary come out right.
  A string prompt gives a string, a list of prompts a list.
* ``stream(text=...)``: the continuation's text in pieces as tokens are generated (:mod:`.text_stream`); a list of
  prompts yields a list of pieces per step ("" where a row has nothing new).
* ``run(text=...)`` (encoders): the texts (and ``text_pair``, e.g. question and context) encoded, truncated to the
  model's maximum with a warning, padded on the tokenizer's side with ``attention_mask`` 0 and, where the export
  takes them, ``token_type_ids``. Multiple-choice exports take one text and a list of choices as ``text_pair``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import RuntimeInputError
from .text_stream import IncrementalDecoder
from .tokenizer import Batch

if TYPE_CHECKING:
    from .session import Session
    from .tokenizer import Tokenizer


def _texts(name: str, text: Any) -> list[str]:
    texts = [text] if isinstance(text, str) else text
    if not isinstance(texts, Sequence) or not texts or not all(isinstance(t, str) for t in texts):
        raise RuntimeInputError(f"{name} must be a string or a non-empty list of strings, got {type(text).__name__}")
    return list(texts)


def encode_prompts(tokenizer: Tokenizer, texts: list[str]) -> Batch:
    batch = tokenizer.encode_batch(texts, padding_side="left")
    empty = [i for i, e in enumerate(batch.encodings) if not e.ids]
    if empty:
        raise RuntimeInputError(f"prompt {empty[0]} encodes to no tokens; give some text to continue")
    return batch


def continuation(tokenizer: Tokenizer, prompt: Sequence[int], generated: Sequence[int]) -> str:
    """The text ``generated`` adds after ``prompt``: decode both together and drop the prompt's own text."""
    before = tokenizer.decode(prompt)
    whole = tokenizer.decode([*prompt, *generated])
    return whole[len(before):] if whole.startswith(before) else tokenizer.decode(generated)


def generate_text(session: Session, text: str | Sequence[str], max_new_tokens: int | None = None, *,
                  return_full_text: bool = True, **options: Any) -> str | list[str]:
    """Generate from text prompts; see the module docstring."""
    from .generate import generate_ids

    texts = _texts("text", text)
    tokenizer = session.tokenizer
    batch = encode_prompts(tokenizer, texts)
    tokens, lengths = generate_ids(session, batch.input_ids, max_new_tokens, batch.attention_mask, None, options,
                                   tokenizer_pad=tokenizer.pad_token_id)
    width = batch.input_ids.shape[1]
    results = []
    for row, prompt_text in enumerate(texts):
        prompt = batch.input_ids[row][batch.attention_mask[row].astype(bool)]
        added = continuation(tokenizer, prompt.tolist(), tokens[row, width:width + lengths[row]].tolist())
        results.append(prompt_text + added if return_full_text else added)
    return results[0] if isinstance(text, str) else results


def stream_text(session: Session, text: str | Sequence[str], max_new_tokens: int | None = None,
                **options: Any) -> Iterator[str] | Iterator[list[str]]:
    """Yield the continuation's text as it is generated: str pieces for one prompt, lists for several."""
    from .generate import stream_steps

    texts = _texts("text", text)
    tokenizer = session.tokenizer
    batch = encode_prompts(tokenizer, texts)
    steps = stream_steps(session, batch.input_ids, max_new_tokens, batch.attention_mask, options,
                         tokenizer_pad=tokenizer.pad_token_id)
    single = isinstance(text, str)

    def pieces() -> Iterator[Any]:
        decoders = [IncrementalDecoder(tokenizer, ids[mask.astype(bool)].tolist())
                    for ids, mask in zip(batch.input_ids, batch.attention_mask)]
        for tokens, live in steps:
            out = [decoder.push(int(token)) if alive else "" for decoder, token, alive in zip(decoders, tokens, live)]
            if any(out):
                yield out[0] if single else out
        tail = [decoder.flush() for decoder in decoders]
        if any(tail):
            yield tail[0] if single else tail

    return pieces()


def encode_inputs(session: Session, text: Any, text_pair: Any = None) -> tuple[dict[str, np.ndarray], Batch]:
    """The HF-named inputs of an encoder export for ``text`` (and ``text_pair``), and the encoded batch."""
    tokenizer = session.tokenizer
    names = session.input_names
    multiple_choice = len(session.manifest.input("input_ids").dims) == 3
    if multiple_choice:
        if not isinstance(text, str) or text_pair is None:
            raise RuntimeInputError("a multiple-choice export takes one text and its choices: "
                                    "run(text='question', text_pair=['choice 1', 'choice 2', ...])")
        choices = _texts("text_pair", text_pair)
        batch = tokenizer.encode_batch([text] * len(choices), choices)
    else:
        texts = _texts("text", text)
        pairs = None if text_pair is None else _texts("text_pair", text_pair)
        if pairs is not None and len(pairs) != len(texts):
            raise RuntimeInputError(f"text_pair has {len(pairs)} entries for {len(texts)} texts; give one each")
        batch = tokenizer.encode_batch(texts, pairs)
    inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    if "token_type_ids" in names:
        inputs["token_type_ids"] = batch.token_type_ids
    if multiple_choice:
        inputs = {name: value[None] for name, value in inputs.items()}  # (1, choices, L)
    return inputs, batch
