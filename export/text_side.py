"""The text side of an export: the checkpoint's tokenizer files and ``generation_config.json``, copied beside
``model.onnx`` (and so hashed in the manifest) and checked against ``config.json``.

What is copied: every tokenizer file HF writes (``tokenizer.json``, ``tokenizer_config.json``,
``special_tokens_map.json``, ``added_tokens.json``, ``vocab.json`` + ``merges.txt``, ``vocab.txt``, SentencePiece
models) and ``generation_config.json``. The manifest's ``text`` entry says which file the runtime builds its
tokenizer from (``tokenizer.json`` first; a byte-level BPE's ``vocab.json`` with ``merges.txt``; a WordPiece
``vocab.txt``), or that there is none (a SentencePiece-only checkpoint: save it with a fast tokenizer's
``save_pretrained`` to get ``tokenizer.json``).

Checks, with HF's ``tokenizers`` (an export dependency): the tokenizer loads (an error otherwise); a warning when
it has ids at or beyond the model's ``vocab_size`` (text that encodes to them is refused at run time, by name), and
when ``tokenizer_config.json`` names a bos, eos or pad token whose id differs from ``config.json``'s (generation
follows ``generation_config.json`` / ``config.json``, as HF's ``generate`` does). Malformed JSON is an error naming
the file.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tensorkiln.runtime import manifest as mf
from tensorkiln.runtime.errors import KilnWarning

from .specs import ExportError

SPECIAL_ROLES = ("bos", "eos", "pad")


def tokenizer_source(names: set[str]) -> str | None:
    """The file a runtime builds the tokenizer from, among the copied ``names``; None when none can."""
    if mf.TOKENIZER_JSON in names:
        return mf.TOKENIZER_JSON
    if all(name in names for name in mf.BPE_FILES):
        return mf.BPE_FILES[0]
    if all(name in names for name in mf.WORDPIECE_FILES):
        return mf.WORDPIECE_FILES[0]
    return None


def _json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{str(path)!r} cannot be read as JSON: {exc}; fix or remove it and export again") from None
    if not isinstance(data, dict):
        raise ExportError(f"{str(path)!r} must hold a JSON object; fix or remove it and export again")
    return data


def _token_text(value: Any) -> str | None:
    """A special token in tokenizer_config.json: a string, or HF's AddedToken dict with ``content``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _check_tokenizer_json(folder: Path, config: Mapping[str, Any]) -> None:
    from tokenizers import Tokenizer

    path = folder / mf.TOKENIZER_JSON
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises its own Exception type for every parse problem
        raise ExportError(f"{str(path)!r} cannot be loaded by HF tokenizers: {exc}") from None
    vocab_size = int(config["vocab_size"])
    largest = max(tokenizer.get_vocab(with_added_tokens=True).values(), default=-1)
    if largest >= vocab_size:
        warnings.warn(f"the tokenizer has ids up to {largest}, beyond the model's vocab_size {vocab_size}: text that "
                      "encodes to them will be refused at run time", KilnWarning, stacklevel=2)
    settings_path = folder / "tokenizer_config.json"
    settings = _json_object(settings_path) if settings_path.is_file() else {}
    for role in SPECIAL_ROLES:
        token, want = _token_text(settings.get(f"{role}_token")), config.get(f"{role}_token_id")
        if token is None or not isinstance(want, int):
            continue
        got = tokenizer.token_to_id(token)
        if got != want:
            warnings.warn(f"the tokenizer's {role} token {token!r} has id {got}, config.json's {role}_token_id is "
                          f"{want}: generation uses config.json's (or generation_config.json's), as HF does",
                          KilnWarning, stacklevel=2)


def copy_text_side(checkpoint_dir: Path, out: Path, config: Mapping[str, Any]) -> mf.TextFiles:
    """Copy the tokenizer files and generation_config.json from ``checkpoint_dir`` into ``out``; check them."""
    copied = [name for name in mf.TOKENIZER_FILES if (checkpoint_dir / name).is_file()]
    for name in copied:
        if name.endswith(".json"):
            _json_object(checkpoint_dir / name)
        shutil.copyfile(checkpoint_dir / name, out / name)
    generation = None
    if (checkpoint_dir / mf.GENERATION_CONFIG_NAME).is_file():
        _json_object(checkpoint_dir / mf.GENERATION_CONFIG_NAME)
        shutil.copyfile(checkpoint_dir / mf.GENERATION_CONFIG_NAME, out / mf.GENERATION_CONFIG_NAME)
        generation = mf.GENERATION_CONFIG_NAME
    source = tokenizer_source(set(copied))
    if source == mf.TOKENIZER_JSON:
        _check_tokenizer_json(out, config)
    return mf.TextFiles(tokenizer=source, files=tuple(copied), generation_config=generation)
