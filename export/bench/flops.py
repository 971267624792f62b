"""Matmul FLOPs of one reference forward, the numerator of the latency section's GFLOP/s and compute efficiencies.

Only matmul FLOPs are counted, on the reference forward, by ``torch.utils.flop_counter.FlopCounterMode`` (mm, addmm,
bmm, baddbmm, convolution, scaled_dot_product_attention) at batch 1 and scaled by the batch, so the count does not
depend on the backend. MRA's attention op is counted from its block budget (its tile matmuls); torch's CPU flash
attention, which torch's table leaves out, is counted here too. Mega's EMA (an FFT convolution), elementwise ops,
norms and softmax are not counted.
"""

from __future__ import annotations

from typing import Any

from .backends import token_ids


def mra_flops(query, key, value, mask, *, num_blocks, scale, approx_mode="full", initial_prior_first_n_blocks=0,
              initial_prior_diagonal_n_blocks=0, out_shape=None, **_: Any) -> int:
    """Matmul FLOPs of ``tensorkiln::mra_attention`` (shapes in): the block means' logits, the selected 32 x 32
    tiles' q.k and attn.v, and (mode "full") the low-resolution attn.v of the block means."""
    batch, heads, length, dim = query
    bh, nb = batch * heads, -(-length // 32)
    selected = min(num_blocks, nb * nb)
    flops = 2 * bh * nb * nb * dim + 2 * 2 * bh * selected * 32 * 32 * dim
    if approx_mode == "full":
        flops += 2 * bh * nb * nb * dim
    return flops


def cpu_sdpa_flops(query, key, value, *args: Any, out_shape=None, **_: Any) -> int:
    """``aten._scaled_dot_product_flash_attention_for_cpu``, which torch's table leaves out: q.k^T and attn.v."""
    batch, heads, length, dim = query
    keys, value_dim = key[-2], value[-1]
    return 2 * batch * heads * length * keys * (dim + value_dim)


def count_matmul_flops(model: Any, batch: int, seq: int, vocab_size: int) -> int:
    """Matmul FLOPs of one reference forward at (batch, seq): counted at batch 1, scaled by the batch."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from tensorkiln.reference.ops import mra_attention  # noqa: F401  (registers the op)

    ids = torch.from_numpy(token_ids(vocab_size, 1, seq))
    counter = FlopCounterMode(display=False, custom_mapping={
        torch.ops.tensorkiln.mra_attention: mra_flops,  # keyed by the op packet, as torch keys its table
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa_flops})
    with torch.inference_mode(), counter:
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    return counter.get_total_flops() * batch
