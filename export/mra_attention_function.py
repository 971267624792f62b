"""The body of the ``tensorkiln::MraAttention`` model-local function: MRA-2 attention in standard ONNX ops.

It is ``_mra_attention_op`` and ``_mra_attention_fp32`` of ``reference/ops/mra_attention.py`` step for step, for any
sequence length and batch: L is padded inside to a multiple of 32 with mask 0 and the output sliced back; the block
budget is ``Min(num_blocks, nb^2)``, the blocks that exist. The node's attributes reach the body as attribute
references (``num_blocks``, ``scale``, the two priors), so one function serves every value of them.

``approx_mode`` is a string: turning it into a number inside a function needs string tensors, which TensorRT cannot
parse when it inlines the body (no plugin loaded). So each mode has its own body (``build_mra_attention_function``),
and ``export/custom_ops.py`` puts the one that the model's nodes use into the model.

Op by op: block means (ReduceSum over a (.., nb, 32, D) view), low-resolution logits (MatMul), top-k of the
block logits with HF's priors (TopK, k = min(num_blocks, nb^2)), the selected 32 x 32 tiles (Gather of whole tiles,
MatMul), the per-row stabiliser over the selected tiles (``scatter_reduce(amax, include_self=False)`` as
ScatterElements with reduction "max" into -FLT_MAX plus a Where for rows no tile reached), the tile sums gathered
per block row (a MatMul with the tiles' one-hot block rows: no scatter over repeated indices, which races in ONNX
Runtime), and for "full" the low-resolution remainder of the blocks not covered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from onnx import TensorProto

from tensorkiln.runtime.contract import MRA_ATTENTION

from .local_function import MIN_OPSET, Body, Ref, build_function

__all__ = ["build_mra_attention_function", "mra_variant", "BLOCK"]

BLOCK = 32
_FLOAT = TensorProto.FLOAT
# The torch op's constants (HF's): top-k bonus of the prior blocks, the "removed" offset, the normaliser epsilon.
_PRIOR_BONUS = 5e3
_REMOVED = 1e4
_EPS = 1e-6
_LOWEST = -3.4028234663852886e38  # -FLT_MAX: below every logit, finite so no inf can reach arithmetic


def _select_blocks(b: Body, low_logit: str, row_max: str, n_blocks: str, approx_mode: str):
    """Top-k block indices (BH, K) with HF's priors, and for "full" the covered-block 0/1 mask (BH, nb, nb)."""
    logit = b.Sub(low_logit, row_max)  # (BH, nb, nb)
    nb = b.Squeeze(n_blocks, b.i64([0]))
    idx = b.Range(b.i64(0), nb, b.i64(1))  # (nb,)
    # Diagonal band |i - j| <= n // 2, only when n > 0 (adding 0 leaves a float unchanged, so no branch is needed).
    diagonal_n = b.attribute(Ref("initial_prior_diagonal_n_blocks", "INT"))
    offset = b.Div(diagonal_n, b.i64(2))
    distance = b.Abs(b.Sub(b.Unsqueeze(idx, b.i64([1])), b.Unsqueeze(idx, b.i64([0]))))  # (nb, nb)
    band = b.And(b.LessOrEqual(distance, offset), b.Greater(diagonal_n, b.i64(0)))
    logit = b.Add(logit, b.Mul(b.Cast(band, to=_FLOAT), b.f32(_PRIOR_BONUS)))
    # First n block rows, then columns, added separately as HF does (block (0, 0) gets the bonus twice).
    first_n = b.attribute(Ref("initial_prior_first_n_blocks", "INT"))
    first = b.Mul(b.Cast(b.Less(idx, first_n), to=_FLOAT), b.f32(_PRIOR_BONUS))  # (nb,)
    logit = b.Add(logit, b.Unsqueeze(first, b.i64([1])))
    logit = b.Add(logit, b.Unsqueeze(first, b.i64([0])))

    budget = b.Min(b.Unsqueeze(b.attribute(Ref("num_blocks", "INT")), b.i64([0])), b.Mul(n_blocks, n_blocks))  # (1,)
    flat = b.Reshape(logit, b.i64([0, -1]))  # (BH, nb*nb)
    values, indices = b.TopK(flat, budget, axis=-1, largest=1, sorted=1, outputs=2)  # (BH, K)
    covered = None
    if approx_mode == "full":
        # Every block at or above the k-th value, ties included, is covered at high resolution.
        threshold = b.Unsqueeze(b.ReduceMin(values, b.i64([-1]), keepdims=1), b.i64([2]))  # (BH, 1, 1)
        covered = b.Cast(b.GreaterOrEqual(logit, threshold), to=_FLOAT)  # (BH, nb, nb)
    return indices, covered


class _LowResolution(NamedTuple):
    """The block-level pass: one mean vector per block of 32 tokens, nb blocks per (batch*head) row."""

    token_count: str  # (BH, nb): the real tokens of each block
    block_mean: Callable[[str], str]  # (BH, Lp, D) -> (BH, nb, D): the mean over each block's real tokens
    logit: str  # (BH, nb, nb): block logits, empty block pairs lowered by _REMOVED
    row_max: str  # (BH, nb, 1): the row max taken before empty blocks are removed (top-k ranks against it)
    stabiliser: str  # (BH, nb, 1): the row max without empty blocks


class _Tiles(NamedTuple):
    """The selected 32 x 32 tiles, K per (batch*head) row, flattened over the rows."""

    batch_heads: str  # (1,): BH
    rows: str  # (BH*K,): each tile's block row, offset by its (batch*head) row's first block
    logit: str  # (BH*K, 32, 32): exact q.k / scale, padded keys lowered by _REMOVED
    values: str  # (BH*K, 32, D)


def _low_resolution(b: Body, query: str, key: str, mask: str, n_blocks: str, dim: str, block: str,
                    inv_scale: str) -> _LowResolution:
    """Block means of the real tokens and the (BH, nb, nb) logits between them."""
    token_count = b.ReduceSum(b.Reshape(mask, b.Concat(b.i64([0]), n_blocks, block, axis=0)), b.i64([-1]),
                              keepdims=0)  # (BH, nb)
    denominator = b.Add(b.Unsqueeze(token_count, b.i64([2])), b.f32(_EPS))  # (BH, nb, 1)
    blocks_shape = b.Concat(b.i64([0]), n_blocks, block, dim, axis=0)  # (BH, nb, 32, D)

    def block_mean(t: str) -> str:
        return b.Div(b.ReduceSum(b.Reshape(t, blocks_shape), b.i64([2]), keepdims=0), denominator)  # (BH, nb, D)

    query_hat, key_hat = block_mean(query), block_mean(key)
    low_logit = b.Div(b.MatMul(query_hat, b.Transpose(key_hat, perm=[0, 2, 1])), inv_scale)  # (BH, nb, nb)
    # Top-k ranks by logit minus the row max taken before empty blocks are removed (HF's order).
    low_row_max = b.ReduceMax(low_logit, b.i64([-1]), keepdims=1)  # (BH, nb, 1)
    pair_count = b.Mul(b.Unsqueeze(token_count, b.i64([1])), b.Unsqueeze(token_count, b.i64([2])))
    empty = b.Cast(b.Less(pair_count, b.f32(0.5)), to=_FLOAT)  # (BH, nb, nb)
    low_logit = b.Sub(low_logit, b.Mul(empty, b.f32(_REMOVED)))
    low_max = b.ReduceMax(low_logit, b.i64([-1]), keepdims=1)  # (BH, nb, 1): stabiliser without empty blocks
    return _LowResolution(token_count, block_mean, low_logit, low_row_max, low_max)


def _selected_tiles(b: Body, query: str, key: str, value: str, mask: str, indices: str, n_blocks: str, dim: str,
                    block: str, inv_scale: str) -> _Tiles:
    """High resolution: exact 32 x 32 tiles of q.k for the selected blocks ``indices`` (BH, K)."""
    # A selected index is block_row * nb + block_col; offset both by the (batch*head) row's first block.
    batch_heads = b.dim(query, 0)
    base = b.Unsqueeze(b.Mul(b.Range(b.i64(0), b.Squeeze(batch_heads, b.i64([0])), b.i64(1)), n_blocks),
                       b.i64([1]))  # (BH, 1)
    flat_rows = b.Reshape(b.Add(b.Div(indices, n_blocks), base), b.i64([-1]))  # (BH*K,)
    flat_cols = b.Reshape(b.Add(b.Mod(indices, n_blocks), base), b.i64([-1]))
    tiles_shape = b.Concat(b.i64([-1]), block, dim, axis=0)  # (BH*nb, 32, D)

    q_tiles = b.Gather(b.Reshape(query, tiles_shape), flat_rows, axis=0)  # (BH*K, 32, D)
    k_tiles = b.Gather(b.Reshape(key, tiles_shape), flat_cols, axis=0)
    v_tiles = b.Gather(b.Reshape(value, tiles_shape), flat_cols, axis=0)
    key_mask = b.Gather(b.Reshape(mask, b.Concat(b.i64([-1]), block, axis=0)), flat_cols, axis=0)  # (BH*K, 32)
    logit = b.Div(b.MatMul(q_tiles, b.Transpose(k_tiles, perm=[0, 2, 1])), inv_scale)  # (BH*K, 32, 32)
    logit = b.Sub(logit, b.Mul(b.Sub(b.f32(1.0), b.Unsqueeze(key_mask, b.i64([1]))), b.f32(_REMOVED)))
    return _Tiles(batch_heads, flat_rows, logit, v_tiles)


def _tile_row_max(b: Body, tiles: _Tiles, low_max: str, indices: str, n_blocks: str, block: str):
    """The tiles' one-hot block rows (BH, nb, K) and each query row's stabiliser (BH*nb, 32)."""
    # Several selected tiles share a block row, so gathering their results per row is a reduction over repeated
    # indices. ScatterND with a reduction races on repeated indices in ONNX Runtime's CPU kernel (its threads
    # split the index list; measured: outputs that change from run to run). ScatterElements runs its reduction
    # in order, and the sums are a batched MatMul with the tiles' one-hot block rows, so the body is deterministic.
    rows_shape = b.Concat(b.i64([-1]), block, axis=0)  # (BH*nb, 32)
    low_max_rows = b.Reshape(b.Expand(low_max, b.i64([1, 1, BLOCK])), rows_shape)  # (BH*nb, 32)
    block_rows = b.Reshape(b.Range(b.i64(0), b.Squeeze(n_blocks, b.i64([0])), b.i64(1)),
                           b.i64([1, -1, 1]))  # (1, nb, 1)
    one_hot = b.Cast(b.Equal(b.Unsqueeze(b.Div(indices, n_blocks), b.i64([1])), block_rows),
                     to=_FLOAT)  # (BH, nb, K): tile k lies in block row r

    # Each query row's stabiliser: the max over its selected tiles, where a tile reached it; otherwise the
    # low-resolution row max (scatter_reduce(amax, include_self=False) in the op).
    tile_max = b.ReduceMax(tiles.logit, b.i64([-1]), keepdims=0)  # (BH*K, 32)
    lowest = b.Expand(b.f32(_LOWEST), b.Shape(low_max_rows))
    rows_at = b.Expand(b.Unsqueeze(tiles.rows, b.i64([1])), b.Shape(tile_max))  # (BH*K, 32)
    reached_max = b.ScatterElements(lowest, rows_at, tile_max, axis=0, reduction="max")  # (BH*nb, 32)
    reached = b.Reshape(b.ReduceMax(one_hot, b.i64([-1]), keepdims=0), b.i64([-1]))  # (BH*nb,): 1 if reached
    row_max = b.Where(b.Unsqueeze(b.Greater(reached, b.f32(0.5)), b.i64([1])), reached_max, low_max_rows)
    return one_hot, row_max


def _high_resolution(b: Body, tiles: _Tiles, row_max: str, one_hot: str, block: str, dim: str):
    """The tiles' exp-weighted values and weight sums gathered per query row: (BH, Lp, D) and (BH, Lp)."""
    batch_heads = tiles.batch_heads
    attn = b.Exp(b.Sub(tiles.logit, b.Unsqueeze(b.Gather(row_max, tiles.rows, axis=0), b.i64([2]))))  # (BH*K, 32, 32)
    per_bh = b.Concat(batch_heads, b.i64([-1]), b.i64([BLOCK]), axis=0)
    tile_out = b.Reshape(b.MatMul(attn, tiles.values),
                         b.Concat(batch_heads, b.i64([-1]), b.Mul(block, dim), axis=0))  # (BH, K, 32*D)
    high_out = b.MatMul(one_hot, tile_out)  # (BH, nb, K) @ (BH, K, 32*D) -> (BH, nb, 32*D)
    high_out = b.Reshape(high_out, b.Concat(batch_heads, b.i64([-1]), dim, axis=0))  # (BH, Lp, D)
    tile_norm = b.Reshape(b.ReduceSum(attn, b.i64([-1]), keepdims=0), per_bh)  # (BH, K, 32)
    high_norm = b.Reshape(b.MatMul(one_hot, tile_norm), b.Concat(batch_heads, b.i64([-1]), axis=0))  # (BH, Lp)
    return high_out, high_norm


def _with_low_resolution(b: Body, low: _LowResolution, value: str, covered: str, high_out: str, high_norm: str,
                         row_max: str, batch_heads: str, mask: str, dim: str) -> str:
    """For "full": the high-resolution part plus the low-resolution remainder of the blocks not covered, (BH, Lp, D)."""
    # Low resolution for the blocks not covered at high resolution, weighted by their token counts.
    low_attn = b.Exp(b.Sub(b.Sub(low.logit, low.stabiliser), b.Mul(covered, b.f32(_REMOVED))))
    low_attn = b.Mul(low_attn, b.Unsqueeze(low.token_count, b.i64([1])))  # (BH, nb, nb)
    low_out = b.Unsqueeze(b.MatMul(low_attn, low.block_mean(value)), b.i64([2]))  # (BH, nb, 1, D)
    seq_shape = b.Concat(b.i64([0]), b.i64([-1]), dim, axis=0)  # (BH, Lp, D)
    low_out = b.Reshape(b.Expand(low_out, b.i64([1, 1, BLOCK, 1])), seq_shape)
    per_token = b.i64([0, -1])
    low_norm = b.Reshape(b.Expand(b.ReduceSum(low_attn, b.i64([-1]), keepdims=1), b.i64([1, 1, BLOCK])),
                         per_token)  # (BH, Lp)
    # Bring both parts to the larger of their two stabilisers before adding them.
    row_max = b.Reshape(row_max, b.Concat(batch_heads, b.i64([-1]), axis=0))  # (BH, Lp)
    low_max_tokens = b.Reshape(b.Expand(low.stabiliser, b.i64([1, 1, BLOCK])), per_token)  # (BH, Lp)
    log_correction = b.Mul(b.Sub(low_max_tokens, row_max), mask)
    low_corr = b.Exp(b.Mul(log_correction, b.Cast(b.LessOrEqual(log_correction, b.f32(0.0)), to=_FLOAT)))
    high_corr = b.Exp(b.Mul(b.Neg(log_correction), b.Cast(b.Greater(log_correction, b.f32(0.0)), to=_FLOAT)))
    numerator = b.Add(b.Mul(high_out, b.Unsqueeze(high_corr, b.i64([2]))),
                      b.Mul(low_out, b.Unsqueeze(low_corr, b.i64([2]))))
    normaliser = b.Add(b.Mul(high_norm, high_corr), b.Mul(low_norm, low_corr))
    return b.Div(numerator, b.Unsqueeze(b.Add(normaliser, b.f32(_EPS)), b.i64([2])))


def _mra_fp32(b: Body, query: str, key: str, value: str, mask: str, n_blocks: str, dim: str, approx_mode: str):
    """``_mra_attention_fp32``: query/key/value (BH, Lp, D) fp32, mask (BH, Lp); returns (BH, Lp, D)."""
    scale = b.attribute(Ref("scale", "FLOAT"))
    # As the op: divide by 1/scale, which rounds like HF's division by sqrt(head_dim).
    inv_scale = b.Div(b.f32(1.0), scale)
    block = b.i64([BLOCK])
    mask3 = b.Unsqueeze(mask, b.i64([2]))  # (BH, Lp, 1)
    query, key, value = (b.Mul(t, mask3) for t in (query, key, value))

    low = _low_resolution(b, query, key, mask, n_blocks, dim, block, inv_scale)
    indices, covered = _select_blocks(b, low.logit, low.row_max, n_blocks, approx_mode)
    tiles = _selected_tiles(b, query, key, value, mask, indices, n_blocks, dim, block, inv_scale)
    one_hot, row_max = _tile_row_max(b, tiles, low.stabiliser, indices, n_blocks, block)
    high_out, high_norm = _high_resolution(b, tiles, row_max, one_hot, block, dim)
    if approx_mode == "sparse":
        context = b.Div(high_out, b.Unsqueeze(b.Add(high_norm, b.f32(_EPS)), b.i64([2])))
    else:
        context = _with_low_resolution(b, low, value, covered, high_out, high_norm, row_max, tiles.batch_heads,
                                       mask, dim)
    return b.Mul(context, mask3)


def build_mra_attention_function(approx_mode: str, opset: int = MIN_OPSET):
    """The FunctionProto ``tensorkiln::MraAttention`` for one ``approx_mode`` ("full" or "sparse"), importing ONNX
    ``opset``."""
    choices = MRA_ATTENTION.attribute("approx_mode").choices
    if approx_mode not in choices:
        raise ValueError(f"MraAttention: approx_mode must be one of {choices}, got {approx_mode!r}")

    def body(b: Body):
        query, key, value, attention_mask = MRA_ATTENTION.input_names
        shape = b.Shape(query)  # (4,): B, H, L, D
        batch, heads, length, dim = (b.Slice(shape, b.i64([i]), b.i64([i + 1])) for i in range(4))
        block = b.i64([BLOCK])
        pad = b.Mod(b.Sub(block, b.Mod(length, block)), block)  # (1,)
        padded = b.Add(length, pad)
        n_blocks = b.Div(padded, block)  # (1,)

        def rows(t: str) -> str:  # (B, H, L, D) -> (B*H, Lp, D) fp32
            t = b.Pad(b.Cast(t, to=_FLOAT), b.Concat(b.i64([0, 0, 0, 0, 0, 0]), pad, b.i64([0]), axis=0))
            return b.Reshape(t, b.Concat(b.i64([-1]), padded, dim, axis=0))

        mask = b.Pad(b.Cast(attention_mask, to=_FLOAT), b.Concat(b.i64([0, 0, 0]), pad, axis=0))  # (B, Lp)
        mask = b.Expand(b.Unsqueeze(mask, b.i64([1])), b.Concat(batch, heads, padded, axis=0))  # (B, H, Lp)
        mask = b.Reshape(mask, b.Concat(b.i64([-1]), padded, axis=0))  # (B*H, Lp)
        context = _mra_fp32(b, rows(query), rows(key), rows(value), mask, n_blocks, dim, approx_mode)
        context = b.Reshape(context, b.Concat(batch, heads, padded, dim, axis=0))  # (B, H, Lp, D)
        context = b.Slice(context, b.i64([0]), length, b.i64([2]))  # (B, H, L, D)
        return (b.CastLike(context, query),)

    return build_function(MRA_ATTENTION, body, doc=f"MRA-2 attention, approx_mode={approx_mode!r}.",
                          variant=mra_variant(approx_mode), opset=opset)


def mra_variant(approx_mode: str) -> str:
    """The variant label of the body a node with this ``approx_mode`` needs."""
    return f"approx_mode={approx_mode}"
