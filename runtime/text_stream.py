"""Incremental detokenisation: the text of a growing token sequence, emitted piece by piece, never wrong.

Torch-free. Decoding each new token on its own is wrong in two ways: a byte-level BPE token can hold part of a
UTF-8 character (decoded alone it is U+FFFD), and many decoders drop or merge spaces by context (WordPiece's
``##``, SentencePiece's leading space). So each step decodes a short window of the sequence twice, with and
without the tokens not yet emitted, and emits the difference, holding it back while it ends in an incomplete
character (U+FFFD); the window then slides past what was emitted. The pieces of a finished stream concatenate to
the decoded text of the whole generated sequence (tests/test_text.py checks it across multi-byte characters and
merged tokens). The window starts with the prompt's last tokens, so the first generated token gets the spacing it
has after the prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .tokenizer import Tokenizer

REPLACEMENT = "\ufffd"
#: Prompt tokens kept as context for the first generated token's spacing.
CONTEXT_TOKENS = 5


class IncrementalDecoder:
    """``push(token)`` -> the new stable text (possibly ""); ``flush()`` -> whatever is left at the end."""

    def __init__(self, tokenizer: Tokenizer, context: Sequence[int] = ()):
        self.tokenizer = tokenizer
        self.ids = [int(i) for i in context][-CONTEXT_TOKENS:]
        self.prefix = 0  # the window's start: tokens before it are emitted and no longer affect the text
        self.read = len(self.ids)  # tokens before this one are emitted

    def _texts(self) -> tuple[str, str]:
        emitted = self.tokenizer.decode(self.ids[self.prefix:self.read])
        return emitted, self.tokenizer.decode(self.ids[self.prefix:])

    def push(self, token: int) -> str:
        self.ids.append(int(token))
        emitted, text = self._texts()
        if len(text) <= len(emitted) or text.endswith(REPLACEMENT) or not text.startswith(emitted):
            return ""  # an incomplete character, or a token that adds no text yet (a special token, a merge)
        self.prefix, self.read = self.read, len(self.ids)
        return text[len(emitted):]

    def flush(self) -> str:
        """The text still held back (an incomplete character at the very end comes out as U+FFFD, as a full
        decode gives it)."""
        emitted, text = self._texts()
        self.prefix = self.read = len(self.ids)
        if text.startswith(emitted):
            return text[len(emitted):]
        return text[_common_prefix(emitted, text):]


def _common_prefix(a: str, b: str) -> int:
    size = min(len(a), len(b))
    return next((i for i in range(size) if a[i] != b[i]), size)
