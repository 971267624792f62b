"""Stop strings: end a sequence once its text shows one of the given strings (HF's ``stop_strings``).

Torch-free; needs the export's tokenizer. HF's ``StopStringCriteria`` stops at the token that completes a stop
string, and only when the match overlaps that last token (a stop string already in the prompt does not stop
generation, one spanning the prompt's end and the first new token does). We apply the same rule on decoded text:
the text of the sequence's last tokens, with and without the newest one; a stop string found in the former that
ends past their common prefix was completed by the newest token. The generated ids keep that token, as HF's do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .tokenizer import Tokenizer


def _common_prefix(a: str, b: str) -> int:
    size = min(len(a), len(b))
    for index in range(size):
        if a[index] != b[index]:
            return index
    return size


class StopStrings:
    """``__call__(ids, mask)`` -> which rows' newest token completed a stop string."""

    def __init__(self, tokenizer: Tokenizer, strings: Sequence[str]):
        self.tokenizer, self.strings = tokenizer, tuple(strings)
        # A character takes at most 4 byte-level tokens; a few more cover a token that overlaps the start.
        self.window = 4 * max(len(s) for s in self.strings) + 4

    def completed(self, tokens: Sequence[int]) -> bool:
        """Whether the last of ``tokens`` (one row's real tokens) completes a stop string."""
        tail = list(tokens[-self.window:])
        before = self.tokenizer.decode(tail[:-1])
        after = self.tokenizer.decode(tail)
        start = _common_prefix(before, after)
        return any(after.find(s, max(0, start - len(s) + 1)) != -1 for s in self.strings)

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``ids``, ``mask`` (N, T): each row's sequence with the newest token last; padding (mask 0) is left out."""
        return np.array([self.completed(row[m.astype(bool)].tolist()) for row, m in zip(ids, mask)], dtype=bool)
