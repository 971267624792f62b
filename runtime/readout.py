"""``kiln run``'s readout: an encoder's outputs on one text, in the form a person reads them.

Torch-free. One function per kind of head, each following what HF's pipelines report for that task:

* masked LM (``ForMaskedLM``, ``ForPreTraining``): the top tokens and probabilities at every mask token (and, for
  pre-training with a second segment, the next-sentence verdict);
* causal LM: the top next tokens after the text;
* sequence classification, next-sentence prediction, multiple choice: labels (``config.json``'s ``id2label``) or
  choices with softmax scores, best first (sigmoid for ``multi_label_classification``, the raw value for a
  regression head with one label);
* token classification: each token with its best label and score;
* question answering: the answer HF's pipeline gives (spans of at most :data:`MAX_ANSWER_TOKENS` tokens inside the
  context scored by start x end probability, widened to whole words, equal texts adding up), with its characters;
* a bare model: each output's shape and statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import UsageError
from .logits_processors import softmax

if TYPE_CHECKING:
    from .session import Session

#: HF's question-answering pipeline's default max_answer_len, and how many token spans it weighs for one answer.
MAX_ANSWER_TOKENS = 15
ANSWER_CANDIDATES = 12
NEXT_SENTENCE_LABELS = {0: "is the next sentence", 1: "is not the next sentence"}


def _labels(config: dict[str, Any], count: int) -> list[str]:
    id2label = config.get("id2label") or {}
    return [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(count)]


def _ranked(names: Sequence[str], scores: np.ndarray, top: int | None = None) -> list[str]:
    order = np.argsort(-scores, kind="stable")[: top or len(names)]
    width = max(len(names[i]) for i in order)
    return [f"  {names[i]:<{width}}  {scores[i]:.4f}" for i in order]


def _token_text(session: Session, token_id: int) -> str:
    text = session.tokenizer.decode([token_id], skip_special_tokens=False)
    return repr(text) if text.strip() != text or not text else text


def _top_tokens(session: Session, logits: np.ndarray, top: int) -> list[str]:
    probs = softmax(logits.astype(np.float64))
    order = np.argsort(-probs, kind="stable")[:top]
    names = [_token_text(session, int(i)) for i in order]
    width = max(len(n) for n in names)
    return [f"  {name:<{width}}  {probs[i]:.4f}" for name, i in zip(names, order)]


def _masked(session: Session, ids: np.ndarray, logits: np.ndarray, top: int) -> list[str]:
    tokenizer = session.tokenizer
    mask_id = tokenizer.mask_token_id
    if mask_id is None:
        raise UsageError("this export's tokenizer has no mask token, so a masked LM has nothing to fill")
    positions = np.flatnonzero(ids == mask_id)
    if positions.size == 0:
        raise UsageError(f"the text has no {tokenizer.mask_token} token: write it where a word should be predicted, "
                         f"e.g. \"The kiln is {tokenizer.mask_token} tonight.\"")
    lines = []
    for position in positions:
        lines.append(f"{tokenizer.mask_token} at token {int(position)}:")
        lines += _top_tokens(session, logits[position], top)
    return lines


def _classification(session: Session, logits: np.ndarray, labels: list[str]) -> list[str]:
    config = session.config
    if len(labels) == 1:
        return [f"  {labels[0]}  {float(logits[0]):.4f} (regression)"]
    if config.get("problem_type") == "multi_label_classification":
        return _ranked(labels, 1 / (1 + np.exp(-logits.astype(np.float64))))
    return _ranked(labels, softmax(logits.astype(np.float64)))


def _token_labels(session: Session, text: str, encoding: Any, logits: np.ndarray) -> list[str]:
    labels = _labels(session.config, logits.shape[-1])
    probs = softmax(logits.astype(np.float64))
    rows = []
    for index, (special, (start, end)) in enumerate(zip(encoding.special_tokens_mask, encoding.offsets)):
        if special or index >= probs.shape[0]:
            continue
        best = int(probs[index].argmax())
        rows.append((text[start:end] or encoding.tokens[index], labels[best], probs[index, best]))
    width = max((len(r[0]) for r in rows), default=5)
    label_width = max((len(r[1]) for r in rows), default=5)
    return [f"  {token:<{width}}  {label:<{label_width}}  {score:.4f}" for token, label, score in rows]


def _word_chars(encoding: Any, token: int) -> tuple[int, int]:
    """The characters of the context word holding ``token`` (its own offsets where the tokenizer has no words)."""
    word = encoding.token_to_word(token)
    return encoding.offsets[token] if word is None else encoding.word_to_chars(word, 1)


def _answer(context: str, encoding: Any, start_logits: np.ndarray, end_logits: np.ndarray) -> list[str]:
    """HF's question-answering pipeline's answer: token spans scored by start x end probability over the context
    (the CLS token takes part in the normalisation, then is dropped), the best :data:`ANSWER_CANDIDATES`, each
    widened to whole words, candidates with the same text (any case) adding their scores."""
    length = start_logits.shape[0]
    in_context = np.array([sequence == 1 for sequence in encoding.sequence_ids[:length]])
    if not in_context.any():
        raise UsageError("the context was truncated away: shorten the question or the context")
    normalised = in_context.copy()
    normalised[0] |= bool(encoding.special_tokens_mask[0])  # the CLS token, as HF's pipeline keeps it
    start = softmax(np.where(normalised, start_logits.astype(np.float64), -np.inf))
    end = softmax(np.where(normalised, end_logits.astype(np.float64), -np.inf))
    start[0] = end[0] = 0.0
    spans = np.triu(np.outer(start, end)) - np.triu(np.outer(start, end), MAX_ANSWER_TOKENS)  # 0 <= j - i < max
    answers: dict[str, list[Any]] = {}
    for flat in np.argsort(-spans, axis=None, kind="stable")[:ANSWER_CANDIDATES]:
        first, last = np.unravel_index(int(flat), spans.shape)
        if not (in_context[first] and in_context[last]):
            continue
        begin, finish = _word_chars(encoding, first)[0], _word_chars(encoding, last)[1]
        entry = answers.setdefault(context[begin:finish].lower(), [context[begin:finish], begin, finish, 0.0])
        entry[3] += float(spans[first, last])
    text, begin, finish, score = max(answers.values(), key=lambda a: a[3])
    return [f"answer: {text!r}", f"score: {score:.4f} (characters {begin}-{finish} of the context)"]


def _statistics(outputs: dict[str, np.ndarray]) -> list[str]:
    return [f"{name}: shape {tuple(value.shape)}, mean {float(value.mean()):.4g}, std {float(value.std()):.4g}"
            for name, value in outputs.items()]


def describe(session: Session, text: str, pair: str | None = None, choices: Sequence[str] = (),
             top: int = 5) -> str:
    """The readout of ``session`` on ``text`` (``pair``: a second segment, the context for question answering;
    ``choices``: for multiple choice)."""
    from .text import encode_inputs

    head = session.manifest.head
    if head == "ForMultipleChoice":
        if not choices:
            raise UsageError("a multiple-choice model needs the choices: --choice A --choice B ...")
        outputs = session.run(text=text, text_pair=list(choices))
        return "\n".join(["choices, best first:", *_ranked(list(choices), softmax(outputs["logits"][0]))])
    if head == "ForQuestionAnswering" and pair is None:
        raise UsageError("question answering needs the context: kiln run EXPORT 'question' --pair 'context'")
    inputs, batch = encode_inputs(session, text, pair)
    outputs = session.run(**inputs)
    ids, encoding = batch.input_ids[0], batch.encodings[0]
    if head == "ForMaskedLM":
        return "\n".join(_masked(session, ids, outputs["logits"][0], top))
    if head == "ForPreTraining":
        lines = _masked(session, ids, outputs["prediction_logits"][0], top)
        if pair is not None:
            lines += ["next sentence:", *_ranked(list(NEXT_SENTENCE_LABELS.values()),
                                                 softmax(outputs["seq_relationship_logits"][0]))]
        return "\n".join(lines)
    if head == "ForCausalLM":
        real = int(batch.attention_mask[0].sum())
        return "\n".join(["next token:", *_top_tokens(session, outputs["logits"][0, real - 1], top)])
    if head == "ForNextSentencePrediction":
        if pair is None:
            raise UsageError("next-sentence prediction needs the second sentence: --pair 'next sentence'")
        return "\n".join(_ranked(list(NEXT_SENTENCE_LABELS.values()), softmax(outputs["logits"][0])))
    if head == "ForSequenceClassification":
        logits = outputs["logits"][0]
        return "\n".join(_classification(session, logits, _labels(session.config, logits.shape[-1])))
    if head == "ForTokenClassification":
        return "\n".join(_token_labels(session, text, encoding, outputs["logits"][0]))
    if head == "ForQuestionAnswering":
        return "\n".join(_answer(pair, encoding, outputs["start_logits"][0], outputs["end_logits"][0]))
    return "\n".join(_statistics(outputs))
