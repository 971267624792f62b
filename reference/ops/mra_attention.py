"""``tensorkiln::mra_attention``: MRA-2 multi-resolution block-sparse attention as one custom op.

The op's signature is the node contract of the ONNX node ``tensorkiln::MraAttention`` and its TensorRT plugin
(``runtime/contract.py``), so everything the kernel needs is an input or an attribute, and it runs on any input
length:

==========  =====================  ========================================================================
input       shape                  meaning
==========  =====================  ========================================================================
query       (B, H, L, D)           fp32 / fp16 / bf16, L >= 1, D >= 1; computed in fp32, returned in that dtype
key         (B, H, L, D)           same dtype and shape as query (self-attention)
value       (B, H, L, D)           same dtype and shape as query
attn. mask  (B, L)                 ``attention_mask``: 1.0 = token, 0.0 = padding (any float dtype)
output      (B, H, L, D)           zero at padded positions
==========  =====================  ========================================================================

Attributes: ``num_blocks`` (the block budget, >= 1; clamped to the ``ceil(L/32)**2`` blocks that exist, and when
it covers them all the output is exact masked softmax attention), ``scale`` (multiplies q.k), ``approx_mode``
("full": high-resolution blocks plus the low-resolution remainder, "sparse": high-resolution blocks only),
``initial_prior_first_n_blocks`` and ``initial_prior_diagonal_n_blocks`` (blocks always preferred by top-k).

The block size is fixed at 32, as in the paper's kernels. L is padded inside the op to a multiple of 32 with
mask 0, and the result sliced back.

The math follows ``mra2_attention`` in ``transformers==4.57.6`` (``models/mra/modeling_mra.py``) and its CUDA
kernels (``kernels/mra/cuda_kernel.cu``), checked against them in ``tests/test_parity_mra.py`` and against dense
softmax attention in ``tests/test_mra_attention_op.py``. Paper: Zeng et al., "Multi Resolution Analysis (MRA) for
Approximate Self-Attention", ICML 2022. Differences from HF, all deliberate:

* the mask is a correct 0/1 mask per batch row (HF's model garbles it; see reference/NOTES.md);
* the per-row max used to stabilise the exponentials is exact, where HF's ``index_max`` kernel truncates it to
  1e-3 steps, and it and the low-resolution row max leave out padded keys and empty blocks, which HF counts with
  logit 0. The result does not depend on these stabilisers except through HF's 1e-6 epsilon in the normaliser,
  whose relative effect HF lets grow when a row's real logits are all negative (error 1e-5 seen on a 1-token row);
* ties at the budget's edge go to the lower flat block index (HF's unsorted ``topk`` picks any); ONNX TopK and the
  CUDA kernel break them the same way, so every backend selects the same blocks;
* a block row with no selected block takes its low-resolution row max as stabiliser instead of HF's -1e5
  sentinel; both give the same output (the high-resolution part of such a row is empty).
"""

from __future__ import annotations

import torch

BLOCK_SIZE = 32
APPROX_MODES = ("full", "sparse")
# HF's constants: +5e3 makes the prior blocks win top-k, -1e4 removes blocks and keys (exp(-1e4) == 0 in fp32).
_PRIOR_BONUS = 5e3
_REMOVED = 1e4
_EPS = 1e-6


def _check_inputs(query, key, value, attention_mask, num_blocks, scale, approx_mode, first_n, diagonal_n) -> None:
    if query.dim() != 4:
        raise ValueError(f"mra_attention: query must be (B, H, L, D), got shape {tuple(query.shape)}")
    for name, tensor in (("key", key), ("value", value)):
        if tensor.shape != query.shape:
            raise ValueError(
                f"mra_attention: {name} shape {tuple(tensor.shape)} must equal query shape {tuple(query.shape)}"
            )
        if tensor.dtype != query.dtype:
            raise ValueError(f"mra_attention: {name} dtype {tensor.dtype} must equal query dtype {query.dtype}")
    if query.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"mra_attention: query dtype must be float32, float16 or bfloat16, got {query.dtype}")
    batch, _, length, dim = query.shape
    if length < 1 or dim < 1:
        raise ValueError(f"mra_attention: sequence length and head dim must be >= 1, got shape {tuple(query.shape)}")
    if attention_mask.dim() != 2 or tuple(attention_mask.shape) != (batch, length):
        raise ValueError(
            f"mra_attention: attention_mask must be (B, L) = ({batch}, {length}), got {tuple(attention_mask.shape)}"
        )
    if approx_mode not in APPROX_MODES:
        raise ValueError(f"mra_attention: approx_mode must be 'full' or 'sparse', got {approx_mode!r}")
    if num_blocks < 1:
        raise ValueError(f"mra_attention: num_blocks must be at least 1, got {num_blocks}")
    if not scale > 0:
        raise ValueError(f"mra_attention: scale must be positive, got {scale}")
    if first_n < 0 or diagonal_n < 0:
        raise ValueError(
            "mra_attention: initial_prior_first_n_blocks and initial_prior_diagonal_n_blocks must be >= 0, "
            f"got {first_n} and {diagonal_n}"
        )


def _select_blocks(low_logit, row_max, num_blocks, approx_mode, first_n, diagonal_n):
    """Top-k blocks of the low-resolution logits, with HF's priors; and, for "full", the covered-block mask."""
    nb = low_logit.shape[-1]
    logit = low_logit - row_max  # (BH, nb, nb)
    if diagonal_n > 0:
        offset = diagonal_n // 2
        band = torch.ones(nb, nb, device=logit.device).triu(-offset).tril(offset)
        logit = logit + band * _PRIOR_BONUS
    if first_n > 0:
        # Rows first, then columns, as HF adds them (so block (0, 0) gets the bonus twice, rounded as in HF).
        first = (torch.arange(nb, device=logit.device) < first_n).float()
        logit = logit + first[:, None] * _PRIOR_BONUS
        logit = logit + first[None, :] * _PRIOR_BONUS
    # Ties at the k-th value go to the lower flat index, as ONNX TopK and the CUDA kernel break them: a stable
    # descending sort fixes the choice where torch.topk leaves it unspecified (HF's unsorted topk picks any).
    values, indices = torch.sort(logit.flatten(1), dim=-1, descending=True, stable=True)
    values, indices = values[:, :num_blocks], indices[:, :num_blocks]  # (BH, K)
    covered = None
    if approx_mode == "full":
        # HF marks every block at or above the k-th value, ties included, as covered at high resolution.
        threshold = values[:, -1]
        covered = (logit >= threshold[:, None, None]).float()  # (BH, nb, nb)
    return indices, covered


def _mra_attention_fp32(query, key, value, mask, num_blocks, scale, approx_mode, first_n, diagonal_n):
    """The op on fp32 inputs whose length is a multiple of 32. query/key/value (BH, L, D), mask (BH, L)."""
    bh, length, dim = query.shape
    nb = length // BLOCK_SIZE
    # Dividing by 1/scale (rather than multiplying by scale) rounds exactly as HF's `/ math.sqrt(head_dim)`, so
    # near-ties in top-k resolve as in HF.
    inv_scale = 1.0 / scale

    query = query * mask[:, :, None]
    key = key * mask[:, :, None]
    value = value * mask[:, :, None]

    # Low resolution: one mean vector per block of 32 tokens, over the real tokens only.
    token_count = mask.reshape(bh, nb, BLOCK_SIZE).sum(dim=-1)  # (BH, nb)
    denominator = token_count[:, :, None] + _EPS
    query_hat = query.reshape(bh, nb, BLOCK_SIZE, dim).sum(dim=-2) / denominator  # (BH, nb, D)
    key_hat = key.reshape(bh, nb, BLOCK_SIZE, dim).sum(dim=-2) / denominator
    value_hat = value.reshape(bh, nb, BLOCK_SIZE, dim).sum(dim=-2) / denominator
    low_logit = torch.matmul(query_hat, key_hat.transpose(-1, -2)) / inv_scale  # (BH, nb, nb)
    # HF ranks blocks by logit minus this row max, taken before empty (all-padding) blocks are removed; their
    # logit 0 counts in it. Top-k runs over all rows at once, so the selection depends on it: keep it for that.
    low_row_max = low_logit.max(dim=-1, keepdim=True).values  # (BH, nb, 1)
    empty = (token_count[:, None, :] * token_count[:, :, None]) < 0.5
    low_logit = low_logit - _REMOVED * empty.float()
    # As the low-resolution stabiliser, leave empty blocks out (see the row max below for why).
    low_max = low_logit.max(dim=-1, keepdim=True).values  # (BH, nb, 1)

    with torch.no_grad():
        indices, covered = _select_blocks(low_logit, low_row_max, num_blocks, approx_mode, first_n, diagonal_n)
    k = indices.shape[1]
    # A selected block index is block_row * nb + block_col; flat_* also offset by the (batch*head) row.
    base = (torch.arange(bh, device=indices.device) * nb)[:, None]
    flat_rows = (indices // nb + base).reshape(bh * k)
    flat_cols = (indices % nb + base).reshape(bh * k)

    # High resolution: exact 32x32 tiles of q.k for the selected blocks.
    q_tiles = query.reshape(bh * nb, BLOCK_SIZE, dim).index_select(0, flat_rows)  # (BH*K, 32, D)
    k_tiles = key.reshape(bh * nb, BLOCK_SIZE, dim).index_select(0, flat_cols)
    v_tiles = value.reshape(bh * nb, BLOCK_SIZE, dim).index_select(0, flat_cols)
    key_mask = mask.reshape(bh * nb, BLOCK_SIZE).index_select(0, flat_cols)  # (BH*K, 32)
    logit = torch.matmul(q_tiles, k_tiles.transpose(-1, -2)) / inv_scale  # (BH*K, 32 queries, 32 keys)
    logit = logit - _REMOVED * (1.0 - key_mask[:, None, :])

    # Each query row is stabilised by its max over all its selected tiles (HF's index_max). Unlike HF, padded keys
    # are masked before the max: HF counts their logit 0, and when a row's real logits are all negative its
    # normaliser shrinks below 1 and the 1e-6 epsilon becomes a visible error. A block row with no selected tile
    # keeps the low-resolution row max, so its log-correction below is zero.
    row_max = low_max.expand(bh, nb, BLOCK_SIZE).reshape(bh * nb, BLOCK_SIZE)
    tile_rows = flat_rows[:, None].expand(bh * k, BLOCK_SIZE)
    row_max = row_max.scatter_reduce(0, tile_rows, logit.max(dim=-1).values, "amax", include_self=False)
    attn = torch.exp(logit - row_max.index_select(0, flat_rows)[:, :, None])
    high_out = torch.zeros(bh * nb, BLOCK_SIZE, dim, device=query.device)
    high_out = high_out.index_add(0, flat_rows, torch.matmul(attn, v_tiles)).reshape(bh, length, dim)
    high_norm = torch.zeros(bh * nb, BLOCK_SIZE, device=query.device)
    high_norm = high_norm.index_add(0, flat_rows, attn.sum(dim=-1)).reshape(bh, length)
    row_max = row_max.reshape(bh, length)

    if approx_mode == "sparse":
        context = high_out / (high_norm[:, :, None] + _EPS)
    else:
        # Low resolution for the blocks not covered at high resolution, weighted by their token counts.
        low_attn = torch.exp(low_logit - low_max - _REMOVED * covered) * token_count[:, None, :]  # (BH, nb, nb)
        low_out = torch.matmul(low_attn, value_hat)  # (BH, nb, D)
        low_out = low_out[:, :, None, :].expand(bh, nb, BLOCK_SIZE, dim).reshape(bh, length, dim)
        low_norm = low_attn.sum(dim=-1)[:, :, None].expand(bh, nb, BLOCK_SIZE).reshape(bh, length)
        # Bring both parts to the larger of their two stabilisers before adding them.
        log_correction = low_max.expand(bh, nb, BLOCK_SIZE).reshape(bh, length) - row_max
        log_correction = log_correction * mask
        low_corr = torch.exp(log_correction * (log_correction <= 0).float())
        high_corr = torch.exp(-log_correction * (log_correction > 0).float())
        numerator = high_out * high_corr[:, :, None] + low_out * low_corr[:, :, None]
        normaliser = high_norm * high_corr + low_norm * low_corr
        context = numerator / (normaliser[:, :, None] + _EPS)
    return context * mask[:, :, None]


@torch.library.custom_op("tensorkiln::mra_attention", mutates_args=())
def _mra_attention_op(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    num_blocks: int,
    scale: float,
    approx_mode: str = "full",
    initial_prior_first_n_blocks: int = 0,
    initial_prior_diagonal_n_blocks: int = 0,
) -> torch.Tensor:
    _check_inputs(
        query, key, value, attention_mask, num_blocks, scale, approx_mode,
        initial_prior_first_n_blocks, initial_prior_diagonal_n_blocks,
    )
    batch, heads, length, dim = query.shape
    pad = -length % BLOCK_SIZE
    padded = length + pad
    nb = padded // BLOCK_SIZE

    def rows(t: torch.Tensor) -> torch.Tensor:
        t = torch.nn.functional.pad(t.float(), (0, 0, 0, pad))  # (B, H, Lp, D)
        return t.reshape(batch * heads, padded, dim)  # (B*H, Lp, D)

    mask = torch.nn.functional.pad(attention_mask.float(), (0, pad))  # (B, Lp); padding is masked out
    mask = mask[:, None, :].expand(batch, heads, padded).reshape(batch * heads, padded)  # (B*H, Lp)
    context = _mra_attention_fp32(
        rows(query), rows(key), rows(value), mask,
        min(num_blocks, nb * nb), scale, approx_mode,
        initial_prior_first_n_blocks, initial_prior_diagonal_n_blocks,
    )
    context = context.reshape(batch, heads, padded, dim)[:, :, :length]  # (B, H, L, D)
    return context.to(query.dtype).contiguous()


@_mra_attention_op.register_fake
def _(query, key, value, attention_mask, *, num_blocks, scale, approx_mode="full",
      initial_prior_first_n_blocks=0, initial_prior_diagonal_n_blocks=0):
    torch._check(query.dim() == 4, lambda: "mra_attention: query must be (B, H, L, D)")
    torch._check(key.shape == query.shape and value.shape == query.shape,
                 lambda: "mra_attention: key and value must have query's shape")
    torch._check(attention_mask.dim() == 2, lambda: "mra_attention: attention_mask must be (B, L)")
    return torch.empty_like(query, memory_format=torch.contiguous_format)


def mra_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    num_blocks: int,
    scale: float,
    approx_mode: str = "full",
    initial_prior_first_n_blocks: int = 0,
    initial_prior_diagonal_n_blocks: int = 0,
) -> torch.Tensor:
    """MRA-2 attention of ``(B, H, L, D)`` query/key/value under a ``(B, L)`` 0/1 mask; see the module docstring."""
    return torch.ops.tensorkiln.mra_attention(
        query, key, value, attention_mask,
        num_blocks=num_blocks, scale=scale, approx_mode=approx_mode,
        initial_prior_first_n_blocks=initial_prior_first_n_blocks,
        initial_prior_diagonal_n_blocks=initial_prior_diagonal_n_blocks,
    )
