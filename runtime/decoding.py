"""Feeding an exported causal LM one step at a time: through its exported cache, or by recomputing the sequence.

Torch-free. Decoders exported with a cache (GPT-NeoX's KV cache, Mega's keys, values and EMA state) prefill the
prompt once and then take only the new tokens, each step's ``present.*`` outputs becoming the next step's
``past_key_values.*`` inputs as the manifest's cache layout says. Causal LMs exported without a cache (a chunked
Mega, a MegatronBERT that is not a decoder) recompute the whole sequence each step: slower, same tokens.

Beam search reorders the cache between steps: every cached tensor is gathered along its batch axis (the
``batch_size`` dim of its entry in the manifest's layout) by the rows the surviving beams came from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import manifest as mf

if TYPE_CHECKING:
    from .session import Session


class Decoder:
    """One generation's model state: the cache so far (empty before the prefill)."""

    def __init__(self, session: Session):
        self.session = session
        self.layout = session.manifest.cache
        self.past: dict[str, np.ndarray] = {}

    def __call__(self, ids: np.ndarray, mask: np.ndarray, new: int) -> np.ndarray:
        """``ids`` and ``mask``: the whole sequence so far; ``new``: how many of its tokens the model has not seen.
        Returns the last position's logits, (N, V)."""
        if self.layout is None:
            return self.session.run(input_ids=ids, attention_mask=mask)["logits"][:, -1]
        out = self.session.run(input_ids=ids[:, -new:], attention_mask=mask, **self.past)
        self.past = {entry.input: out[entry.output] for entry in self.layout.entries}
        return out["logits"][:, -1]

    def reorder(self, rows: np.ndarray) -> None:
        """Keep cache row ``rows[i]`` as row i (beam search: each beam continues the one it came from; also the
        prompts' prefill repeated once per beam). A decoder without a cache has nothing to reorder."""
        if self.layout is None or not self.past:
            return
        for entry in self.layout.entries:
            axis = entry.dims.index(mf.BATCH)
            self.past[entry.input] = np.take(self.past[entry.input], rows, axis=axis)
