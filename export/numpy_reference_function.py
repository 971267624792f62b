"""NumPy implementations of the two custom nodes as ``onnx.reference`` ops, for graphs that hold the bare nodes.

Use: ``onnx.reference.ReferenceEvaluator(model, new_ops=CUSTOM_OPS)`` evaluates a model whose ``tensorkiln`` nodes
have no local function (as onnxruntime-extensions checks its custom ops). Both follow the node contract
(``runtime/contract.py``) and compute in float64, then return the input dtype:

* ``MraAttention`` is ``reference/ops/mra_attention.py`` line for line; block ties at the budget's edge go to the
  lower flat index, as in ONNX TopK (and so the function body) and the torch op.
* ``MegaEma`` runs the recurrence h_t = q h_{t-1} + w x_t one step at a time (the truncated form convolves with the
  truncated kernel), so it shares no code or method with the torch op (FFT) or the function body (chunked scan).
"""

from __future__ import annotations

import numpy as np
from onnx.reference.op_run import OpRun

from tensorkiln.runtime.contract import DOMAIN

__all__ = ["MraAttention", "MegaEma", "CUSTOM_OPS"]

_BLOCK = 32
_PRIOR_BONUS, _REMOVED, _EPS = 5e3, 1e4, 1e-6


def _mra(query, key, value, mask, num_blocks, scale, approx_mode, first_n, diagonal_n):
    """The op on float64 (BH, Lp, D) inputs and a (BH, Lp) mask, Lp a multiple of 32."""
    bh, length, dim = query.shape
    nb = length // _BLOCK
    query, key, value = (t * mask[:, :, None] for t in (query, key, value))
    token_count = mask.reshape(bh, nb, _BLOCK).sum(-1)  # (BH, nb)
    denominator = token_count[:, :, None] + _EPS
    q_hat, k_hat, v_hat = (t.reshape(bh, nb, _BLOCK, dim).sum(-2) / denominator for t in (query, key, value))
    low_logit = q_hat @ k_hat.transpose(0, 2, 1) * scale  # (BH, nb, nb)
    low_row_max = low_logit.max(-1, keepdims=True)
    empty = (token_count[:, None, :] * token_count[:, :, None]) < 0.5
    low_logit = low_logit - _REMOVED * empty
    low_max = low_logit.max(-1, keepdims=True)

    logit = low_logit - low_row_max
    rows = np.arange(nb)
    if diagonal_n > 0:
        logit = logit + _PRIOR_BONUS * (np.abs(rows[:, None] - rows[None, :]) <= diagonal_n // 2)
    first = (rows < first_n).astype(np.float64) * _PRIOR_BONUS
    logit = logit + first[:, None] + first[None, :]
    flat = logit.reshape(bh, nb * nb)
    k = min(num_blocks, nb * nb)
    order = np.argsort(-flat, axis=-1, kind="stable")[:, :k]  # ties: lower index first
    threshold = np.take_along_axis(flat, order, -1).min(-1)

    out = np.zeros_like(query)
    for r in range(bh):
        selected = np.zeros((nb, nb), dtype=bool)
        selected.flat[order[r]] = True
        for i in range(nb):
            rows_i = slice(i * _BLOCK, (i + 1) * _BLOCK)
            cols = np.nonzero(selected[i])[0]
            tiles = []
            for j in cols:
                cols_j = slice(j * _BLOCK, (j + 1) * _BLOCK)
                tile = query[r, rows_i] @ key[r, cols_j].T * scale - _REMOVED * (1.0 - mask[r, cols_j])[None, :]
                tiles.append((tile, value[r, cols_j]))
            row_max = np.max([t.max(-1) for t, _ in tiles], axis=0) if tiles else np.full(_BLOCK, low_max[r, i, 0])
            high_out = sum((np.exp(t - row_max[:, None]) @ v for t, v in tiles), np.zeros((_BLOCK, dim)))
            high_norm = sum((np.exp(t - row_max[:, None]).sum(-1) for t, _ in tiles), np.zeros(_BLOCK))
            if approx_mode == "sparse":
                context = high_out / (high_norm[:, None] + _EPS)
            else:
                covered = logit[r, i] >= threshold[r]
                low_attn = np.exp(low_logit[r, i] - low_max[r, i, 0] - _REMOVED * covered) * token_count[r]
                low_out, low_norm = low_attn @ v_hat[r], low_attn.sum()
                correction = (low_max[r, i, 0] - row_max) * mask[r, rows_i]
                low_corr = np.exp(np.minimum(correction, 0.0))
                high_corr = np.exp(-np.maximum(correction, 0.0))
                numerator = high_out * high_corr[:, None] + low_out[None, :] * low_corr[:, None]
                context = numerator / ((high_norm * high_corr + low_norm * low_corr)[:, None] + _EPS)
            out[r, rows_i] = context * mask[r, rows_i, None]
    return out


class MraAttention(OpRun):
    op_domain = DOMAIN

    def _run(self, query, key, value, attention_mask, num_blocks=None, scale=None, approx_mode="full",
             initial_prior_first_n_blocks=0, initial_prior_diagonal_n_blocks=0):
        if isinstance(approx_mode, bytes):
            approx_mode = approx_mode.decode()
        batch, heads, length, dim = query.shape
        pad = -length % _BLOCK
        padded = length + pad

        def rows(t):  # (B, H, L, D) -> (B*H, Lp, D) float64
            return np.pad(t.astype(np.float64), ((0, 0), (0, 0), (0, pad), (0, 0))).reshape(-1, padded, dim)

        mask = np.pad(attention_mask.astype(np.float64), ((0, 0), (0, pad)))  # (B, Lp)
        mask = np.repeat(mask[:, None, :], heads, axis=1).reshape(-1, padded)  # (B*H, Lp)
        out = _mra(rows(query), rows(key), rows(value), mask, int(num_blocks), float(scale), approx_mode,
                   int(initial_prior_first_n_blocks), int(initial_prior_diagonal_n_blocks))
        return (out.reshape(batch, heads, padded, dim)[:, :, :length].astype(query.dtype),)


def _scan(x, w, q, g, h0):
    """x (B, L, R) float64, w/q/g (R, N), h0 (B, R, N): y (B, L, R) and the last state."""
    h = h0.copy()
    y = np.empty_like(x)
    for t in range(x.shape[1]):
        h = q * h + w * x[:, t, :, None]
        y[:, t] = (g * h).sum(-1)
    return y, h


class MegaEma(OpRun):
    op_domain = DOMAIN

    def _run(self, x, damping_factor, decay_factor, ema_expansion_matrix, kernel_projection_matrix,
             prev_state=None, bidirectional=0, truncation=0):
        batch, length, channels = x.shape
        p = 1.0 / (1.0 + np.exp(-damping_factor.astype(np.float64)[..., 0]))  # (K, N)
        q = 1.0 - p / (1.0 + np.exp(-decay_factor.astype(np.float64)[..., 0]))
        w = p * ema_expansion_matrix.astype(np.float64)[..., 0]
        g = kernel_projection_matrix.astype(np.float64) * np.sqrt(1.0 / kernel_projection_matrix.shape[1])
        ndim = g.shape[1]
        xf = x.astype(np.float64)
        h0 = np.zeros((batch, channels, ndim)) if prev_state is None else prev_state.astype(np.float64)
        forward = slice(0, channels)
        y, final = _scan(xf, w[forward], q[forward], g[forward], h0)
        if bidirectional:
            backward = slice(channels, 2 * channels)
            y_back, _ = _scan(xf[:, ::-1], w[backward], q[backward], g[backward], np.zeros_like(h0))
            y = y + y_back[:, ::-1]
        if truncation and truncation < length:
            # The truncated kernel is no recurrence: convolve with its first T taps instead.
            taps = np.arange(truncation)
            kernel = np.einsum("kn,knl->kl", w * g, q[:, :, None] ** taps)  # (K, T)
            y = np.zeros_like(xf)
            for t in range(length):
                lags = taps[taps <= t]
                y[:, t] = np.einsum("lbd,dl->bd", xf[:, t - lags].transpose(1, 0, 2), kernel[forward, lags])
                if bidirectional:
                    ahead = taps[t + taps < length]
                    y[:, t] += np.einsum("lbd,dl->bd", xf[:, t + ahead].transpose(1, 0, 2),
                                         kernel[channels:, ahead])
        return y.astype(x.dtype), final.astype(x.dtype)


CUSTOM_OPS = [MraAttention, MegaEma]
