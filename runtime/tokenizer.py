"""The export's tokenizer, through Hugging Face's ``tokenizers`` library (the ``tensorkiln[text]`` extra).

Torch-free; ``tokenizers`` is imported inside functions, so the runtime-only install works without it until text
is asked for, and then says how to install it. Nothing here tokenizes by hand: the tokenizer is ``tokenizer.json``
as HF's fast tokenizers save it or, for older checkpoints, HF's BPE / WordPiece models built from
``vocab.json`` + ``merges.txt`` or ``vocab.txt`` with the library's own components (the pieces HF's converters
use). ``tokenizer_config.json`` and ``special_tokens_map.json`` name the special tokens, the maximum length and
the decoding clean-up, as in ``transformers``; encodings and decodings equal ``transformers.AutoTokenizer``'s on
the same folder (tests/test_text.py).

Truncation: an input longer than the model's maximum (the export's length rule, or ``model_max_length`` if that is
smaller) is truncated to it with a :class:`KilnWarning`; nothing is silently cut. Padding is done by the callers
(left for generation, the tokenizer's side for encoders), with the pad id the model's config resolves.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import manifest as mf
from .errors import KilnWarning, ManifestError, TokenizerUnavailableError

INSTALL_HINT = "pip install 'tensorkiln[text]'"
#: HF writes this for "no limit" (int(1e30)); anything this large is no limit either.
NO_LIMIT = 10**12
ROLES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
#: tokenizer classes whose vocab.json + merges.txt wrap a sequence as <s> A </s> (RoBERTa's template).
ROBERTA_CLASSES = ("RobertaTokenizer", "BartTokenizer", "LongformerTokenizer", "MegaTokenizer", "MraTokenizer")


def import_tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise TokenizerUnavailableError(f"text needs Hugging Face's tokenizers library, which is not installed: "
                                        f"{INSTALL_HINT} (or pass token ids)") from None
    return tokenizers


@dataclasses.dataclass(frozen=True)
class Batch:
    """Encoded texts, padded: ``input_ids``, ``attention_mask``, ``token_type_ids`` (N, L), and the library's
    ``encodings`` (tokens, offsets into the text, which segment each token belongs to)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray
    encodings: list[Any]


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{str(path)!r} cannot be read as JSON: {exc}") from None
    return data if isinstance(data, dict) else {}


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):  # HF's AddedToken form
        value = value.get("content")
    return value if isinstance(value, str) else None


def _from_vocab_files(folder: Path, source: str, settings: Mapping[str, Any], special: Mapping[str, str]):
    """A tokenizer from the files of an older checkpoint, with the library's BPE or WordPiece model."""
    tokenizers = import_tokenizers()
    from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

    if source == mf.BPE_FILES[0]:
        tokenizer = tokenizers.Tokenizer(models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt")))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=bool(settings.get("add_prefix_space")))
        tokenizer.decoder = decoders.ByteLevel()
        cls, sep = special.get("cls", special.get("bos")), special.get("sep", special.get("eos"))
        if settings.get("tokenizer_class", "").replace("Fast", "") in ROBERTA_CLASSES and cls and sep:
            tokenizer.post_processor = processors.RobertaProcessing(  # positional: tokenizers 0.23 renamed cls=
                (sep, tokenizer.token_to_id(sep)), (cls, tokenizer.token_to_id(cls)))
        else:
            tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
        return tokenizer
    unk = special.get("unk", "[UNK]")
    tokenizer = tokenizers.Tokenizer(models.WordPiece.from_file(str(folder / "vocab.txt"), unk_token=unk))
    tokenizer.normalizer = normalizers.BertNormalizer(
        lowercase=bool(settings.get("do_lower_case", True)), strip_accents=settings.get("strip_accents"),
        handle_chinese_chars=bool(settings.get("tokenize_chinese_chars", True)))
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    cls, sep = special.get("cls", "[CLS]"), special.get("sep", "[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, tokenizer.token_to_id(cls)), (sep, tokenizer.token_to_id(sep))])
    return tokenizer


def clean_up_tokenization(text: str) -> str:
    """HF's ``clean_up_tokenization_spaces`` (a decode option of BERT-era tokenizers): no space before
    punctuation and English contractions."""
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                          (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(before, after)
    return text


class Tokenizer:
    """An export's tokenizer. Build it with :meth:`load` (or use ``session.tokenizer``)."""

    def __init__(self, backend: Any, settings: Mapping[str, Any], model_config: Mapping[str, Any], max_length: int):
        self.backend = backend
        self.settings = dict(settings)
        backend.no_padding()
        backend.no_truncation()
        limit = settings.get("model_max_length")
        self.max_length = min(max_length, int(limit)) if isinstance(limit, (int, float)) and 0 < limit < NO_LIMIT \
            else max_length
        self._truncating = type(backend).from_str(backend.to_str())
        self._truncating.enable_truncation(self.max_length)
        self.special_tokens = {role: token for role in ROLES
                               if (token := _token_text(settings.get(f"{role}_token"))) is not None
                               and backend.token_to_id(token) is not None}
        self.padding_side = settings.get("padding_side", "right")
        self.clean_up = bool(settings.get("clean_up_tokenization_spaces", False))
        config_pad = model_config.get("pad_token_id")
        self.pad_token_id: int | None = self.token_id("pad")
        if self.pad_token_id is None:
            self.pad_token_id = config_pad if isinstance(config_pad, int) else self.token_id("eos")

    @classmethod
    def load(cls, folder: Path, text: mf.TextFiles, model_config: Mapping[str, Any], max_length: int) -> Tokenizer:
        """The tokenizer an export carries; :class:`TokenizerUnavailableError` when it has none."""
        if text.tokenizer is None:
            raise TokenizerUnavailableError(
                f"the export {str(folder)!r} has no tokenizer: its checkpoint folder had no tokenizer.json (or "
                "vocab.json + merges.txt, or vocab.txt). Copy the model's tokenizer files into the checkpoint folder "
                "and export again, or pass token ids")
        tokenizers = import_tokenizers()
        settings = {**_read_json(folder / "tokenizer_config.json"), **_read_json(folder / "special_tokens_map.json")}
        if text.tokenizer == mf.TOKENIZER_JSON:
            try:
                backend = tokenizers.Tokenizer.from_file(str(folder / mf.TOKENIZER_JSON))
            except Exception as exc:  # the library's own exception type for every parse problem
                raise ManifestError(f"{str(folder / mf.TOKENIZER_JSON)!r} cannot be loaded: {exc}") from None
        else:
            special = {role: t for role in ROLES if (t := _token_text(settings.get(f"{role}_token"))) is not None}
            backend = _from_vocab_files(folder, text.tokenizer, settings, special)
        tokens = [t for role in ROLES if (t := _token_text(settings.get(f"{role}_token")))
                  and backend.token_to_id(t) is not None]
        backend.add_special_tokens(list(dict.fromkeys(tokens)))  # known ids only: matched whole, skipped in decode
        return cls(backend, settings, model_config, max_length)

    # ------------------------------------------------------------------------------------------- vocabulary

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def vocab_size(self) -> int:
        return len(self)

    def token_id(self, role: str) -> int | None:
        """The id of the ``role`` special token ("bos", "eos", "pad", "unk", "mask", "cls", "sep"), or None."""
        token = self.special_tokens.get(role)
        return None if token is None else self.backend.token_to_id(token)

    @property
    def eos_token_id(self) -> int | None:
        return self.token_id("eos")

    @property
    def mask_token(self) -> str | None:
        return self.special_tokens.get("mask")

    @property
    def mask_token_id(self) -> int | None:
        return self.token_id("mask")

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self.backend.id_to_token(int(token_id))

    # ------------------------------------------------------------------------------------------- text

    def encode(self, text: str, text_pair: str | None = None, *, add_special_tokens: bool = True,
               truncation: bool = True) -> Any:
        """One text (and optionally its pair) as the library's ``Encoding``; truncated to :attr:`max_length` with
        a warning when longer (unless ``truncation=False``)."""
        encoding = self.backend.encode(text, text_pair, add_special_tokens=add_special_tokens)
        if truncation and len(encoding.ids) > self.max_length:
            warnings.warn(f"the text is {len(encoding.ids)} tokens long; truncated to the model's maximum of "
                          f"{self.max_length}", KilnWarning, stacklevel=3)
            encoding = self._truncating.encode(text, text_pair, add_special_tokens=add_special_tokens)
        return encoding

    def encode_batch(self, texts: Sequence[str], pairs: Sequence[str] | None = None, *, padding_side: str | None = None,
                     add_special_tokens: bool = True, truncation: bool = True) -> Batch:
        """Texts (and pairs) encoded and padded to the longest with the pad id, attention_mask 0 there;
        ``padding_side`` "left" or "right" (default: the tokenizer's)."""
        pairs = [None] * len(texts) if pairs is None else list(pairs)
        encodings = [self.encode(text, pair, add_special_tokens=add_special_tokens, truncation=truncation)
                     for text, pair in zip(texts, pairs)]
        width = max(len(e.ids) for e in encodings)
        pad = self.pad_token_id if self.pad_token_id is not None else 0
        ids = np.full((len(encodings), width), pad, dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        left = (padding_side or self.padding_side) == "left"
        for row, encoding in enumerate(encodings):
            size = len(encoding.ids)
            span = slice(width - size, width) if left else slice(0, size)
            ids[row, span], mask[row, span], types[row, span] = encoding.ids, 1, encoding.type_ids
        return Batch(ids, mask, types, encodings)

    def decode(self, ids: Sequence[int] | np.ndarray, *, skip_special_tokens: bool = True) -> str:
        text = self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)
        return clean_up_tokenization(text) if self.clean_up else text

    def batch_decode(self, rows: Sequence[Sequence[int]] | np.ndarray, *,
                     skip_special_tokens: bool = True) -> list[str]:
        return [self.decode(row, skip_special_tokens=skip_special_tokens) for row in rows]

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={len(self)}, max_length={self.max_length}, special={self.special_tokens})"
