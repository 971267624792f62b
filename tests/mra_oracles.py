"""Independent MRA oracles shared by the op tests and the GPU kernel tests: a right-padding mask and dense
masked softmax attention (what MRA must equal when its block budget covers every block)."""

from __future__ import annotations

import torch


def right_padding(batch: int, length: int, real_lengths) -> torch.Tensor:
    """(B, L) float mask: 1.0 for the first ``real_lengths[b]`` tokens of row b, 0.0 after."""
    mask = torch.zeros(batch, length)
    for b, n in enumerate(real_lengths):
        mask[b, :n] = 1.0
    return mask


def dense_attention(q, k, v, mask, scale) -> torch.Tensor:
    """softmax(q k^T * scale + mask bias) v in fp64, zero at padded query rows."""
    logits = torch.einsum("bhqd,bhkd->bhqk", q.double(), k.double()) * scale
    logits = logits.masked_fill(mask[:, None, None, :] == 0, float("-inf"))
    out = torch.einsum("bhqk,bhkd->bhqd", torch.softmax(logits, dim=-1), v.double())
    return out * mask[:, None, :, None]
