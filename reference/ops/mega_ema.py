"""``tensorkiln::mega_ema``: Mega's multi-dimensional damped EMA as one custom op (ONNX node ``MegaEma``, TRT plugin).

Checked against transformers 4.57.6 ``MegaMultiDimensionDampedEma`` (``get_ema_kernel``, ``fft_convolution``,
``ema_step``, ``one_ema_step``) and Ma et al. 2022, "Mega: Moving Average Equipped Gated Attention", eq. 2-3.

Node contract (the single source of truth for export and the plugins; K = 2D when bidirectional, else D):

  #  name                      shape       dtype            meaning
  0  x                         (B, L, D)   fp32/fp16/bf16   input, already multiplied by the padding mask
  1  damping_factor            (K, N, 1)   any float        delta before the sigmoid: p = sigmoid(delta)
  2  decay_factor              (K, N, 1)   any float        alpha before the sigmoid: q = 1 - p * sigmoid(alpha)
  3  ema_expansion_matrix      (K, N, 1)   any float        beta, the input expansion
  4  kernel_projection_matrix  (K, N)      any float        gamma, the output projection (scaled by sqrt(1/N) here)
  5  prev_state                (B, D, N)   x's dtype        optional EMA state before x[:, 0] (unidirectional only)
  out 0  output                (B, L, D)   x's dtype        the EMA only (no residual, no SiLU)
  out 1  final_state           (B, D, N)   x's dtype        the forward EMA state after x[:, L-1]
  attr bidirectional  bool  rows [0, D) run forward, rows [D, 2D) backward; both include the current token
  attr truncation     int   0: none; else the kernel is cut to min(truncation, L) taps (output only)

Per channel d and dimension n the recurrence is h_t = q * h_{t-1} + p * beta * x_t and y_t = sum_n gamma_n *
sqrt(1/N) * h_{t,n}; equivalently y = x conv k with k_l = sum_n gamma_n sqrt(1/N) p beta q^l. All arithmetic is fp32
(fp64 for fp64 inputs). final_state is always the exact (untruncated) state h_{L-1}, so truncation changes the
output only; truncation with prev_state is refused because a truncated kernel is not a recurrence. The pure
implementation convolves by FFT, as HF does, and adds prev_state's contribution q^(t+1) in closed form.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["mega_ema", "mega_ema_op", "ema_kernel"]


def _check(
    x: Tensor,
    damping_factor: Tensor,
    decay_factor: Tensor,
    ema_expansion_matrix: Tensor,
    kernel_projection_matrix: Tensor,
    prev_state: Tensor | None,
    bidirectional: bool,
    truncation: int,
) -> tuple[int, int, int, int]:
    """Validate ranks and shapes; return (B, L, D, N). Shared by the real and the fake implementation."""
    if x.dim() != 3:
        raise ValueError(f"mega_ema: x must be (batch, length, channels), got shape {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        raise ValueError(f"mega_ema: x must be a floating tensor, got {x.dtype}")
    batch, length, channels = x.shape
    if damping_factor.dim() != 3 or damping_factor.shape[-1] != 1:
        raise ValueError(f"mega_ema: damping_factor must be (K, N, 1), got shape {tuple(damping_factor.shape)}")
    rows, ndim = damping_factor.shape[0], damping_factor.shape[1]
    expected_rows = 2 * channels if bidirectional else channels
    if rows != expected_rows:
        direction = "bidirectional: K = 2 * D" if bidirectional else "unidirectional: K = D"
        raise ValueError(
            f"mega_ema: the parameters have K={rows} rows but x has D={channels} channels ({direction} = "
            f"{expected_rows}); check the bidirectional flag"
        )
    for name, tensor, shape in (
        ("decay_factor", decay_factor, (rows, ndim, 1)),
        ("ema_expansion_matrix", ema_expansion_matrix, (rows, ndim, 1)),
        ("kernel_projection_matrix", kernel_projection_matrix, (rows, ndim)),
    ):
        if tuple(tensor.shape) != shape:
            raise ValueError(f"mega_ema: {name} must have shape {shape} (K, N...), got {tuple(tensor.shape)}")
    if truncation < 0:
        raise ValueError(f"mega_ema: truncation must be 0 (none) or positive, got {truncation}")
    if prev_state is not None:
        if bidirectional:
            raise ValueError("mega_ema: prev_state is only defined for a unidirectional EMA (bidirectional=False)")
        if truncation:
            raise ValueError("mega_ema: prev_state needs truncation=0: a truncated kernel has no recurrent state")
        if tuple(prev_state.shape) != (batch, channels, ndim):
            raise ValueError(
                f"mega_ema: prev_state must be (batch, channels, ndim) = {(batch, channels, ndim)}, "
                f"got {tuple(prev_state.shape)}"
            )
    return batch, length, channels, ndim


def _coefficients(damping_factor, decay_factor, ema_expansion_matrix, kernel_projection_matrix, dtype):
    """(p*beta, q, gamma*sqrt(1/N)), each (K, N): HF's ``_compute_ema_coefficients`` plus the projection scale."""
    p = torch.sigmoid(damping_factor.to(dtype))
    q = 1.0 - p * torch.sigmoid(decay_factor.to(dtype))
    ndim = kernel_projection_matrix.shape[1]
    gamma = kernel_projection_matrix.to(dtype) * math.sqrt(1.0 / ndim)
    return (p * ema_expansion_matrix.to(dtype)).squeeze(-1), q.squeeze(-1), gamma


def _powers(q: Tensor, start: int, length: int) -> Tensor:
    """q^start ... q^(start+length-1), shape (K, N, length). pow, not exp(l*log q): q = 0 must give 0^0 = 1."""
    exponents = torch.arange(start, start + length, device=q.device, dtype=q.dtype)
    return torch.pow(q.unsqueeze(-1), exponents)


def ema_kernel(damping_factor, decay_factor, ema_expansion_matrix, kernel_projection_matrix, length: int):
    """The EMA's impulse response k[d, l] = sum_n gamma sqrt(1/N) p beta q^l, shape (K, length), in fp32."""
    input_weight, q, gamma = _coefficients(
        damping_factor, decay_factor, ema_expansion_matrix, kernel_projection_matrix, torch.float32
    )
    return torch.einsum("kn,knl->kl", input_weight * gamma, _powers(q, 0, length))


def _fft_conv(x: Tensor, kernel: Tensor, out_length: int) -> Tensor:
    """Linear convolution of x (B, D, L) with kernel (D, T) along the last axis, first out_length samples."""
    n = x.shape[-1] + kernel.shape[-1] - 1
    n = n + (n & 1)  # rfft sizes: even lengths are the fast path
    spectrum = torch.fft.rfft(x, n=n) * torch.fft.rfft(kernel, n=n)
    return torch.fft.irfft(spectrum, n=n)[..., :out_length]


def _mega_ema_pure(x, damping_factor, decay_factor, ema_expansion_matrix, kernel_projection_matrix, prev_state,
                   bidirectional, truncation):
    batch, length, channels, ndim = _check(
        x, damping_factor, decay_factor, ema_expansion_matrix, kernel_projection_matrix, prev_state,
        bidirectional, truncation,
    )
    dtype = torch.promote_types(x.dtype, torch.float32)
    input_weight, q, gamma = _coefficients(
        damping_factor, decay_factor, ema_expansion_matrix, kernel_projection_matrix, dtype
    )
    taps = length if truncation == 0 else min(truncation, length)
    powers = _powers(q, 0, length)  # (K, N, L): q^l
    kernel = torch.einsum("kn,knl->kl", input_weight * gamma, powers[..., :taps])  # (K, T)
    signal = x.to(dtype).transpose(1, 2)  # (B, D, L)

    if bidirectional:
        forward_kernel, backward_kernel = kernel[:channels], kernel[channels:]  # (D, T) each
        # One two-sided kernel over shifts -(T-1)..(T-1): index m is shift m - (T-1); both halves own shift 0, so
        # each direction includes the current token (HF pads k1 on the left and flipped k2 on the right).
        two_sided = F.pad(forward_kernel, (taps - 1, 0)) + F.pad(backward_kernel.flip(-1), (0, taps - 1))
        output = _fft_conv(signal, two_sided, length + taps - 1)[..., taps - 1:]  # (B, D, L)
    else:
        output = _fft_conv(signal, kernel, length)  # (B, D, L)

    # The forward direction's exact state after the last token: h = sum_s p beta q^(L-1-s) x_s (+ q^L h_prev).
    # Flipping x (not the powers) keeps the contraction a contiguous batched matmul.
    forward_weight, forward_q, forward_powers = input_weight[:channels], q[:channels], powers[:channels]
    reversed_signal = signal.flip(-1).contiguous()  # (B, D, L): x_{L-1-s}
    final_state = torch.einsum("bdl,dnl->bdn", reversed_signal, forward_powers) * forward_weight
    if prev_state is not None:
        state = prev_state.to(dtype)
        # h_prev decays into every output: y_t += sum_n gamma q^(t+1) h_prev
        output = output + torch.einsum("bdn,dnl->bdl", state * gamma * q, powers)
        final_state = final_state + state * forward_q.pow(length)
    return output.transpose(1, 2).to(x.dtype).contiguous(), final_state.to(x.dtype).contiguous()


@torch.library.custom_op("tensorkiln::mega_ema", mutates_args=())
def mega_ema_op(
    x: Tensor,
    damping_factor: Tensor,
    decay_factor: Tensor,
    ema_expansion_matrix: Tensor,
    kernel_projection_matrix: Tensor,
    prev_state: Tensor | None,
    *,
    bidirectional: bool = False,
    truncation: int = 0,
) -> tuple[Tensor, Tensor]:
    """The pure-PyTorch implementation (CPU and any GPU); a CUDA scan registers for the CUDA key later."""
    return _mega_ema_pure(
        x, damping_factor, decay_factor, ema_expansion_matrix, kernel_projection_matrix, prev_state,
        bidirectional, truncation,
    )


@mega_ema_op.register_fake
def _mega_ema_fake(
    x, damping_factor, decay_factor, ema_expansion_matrix, kernel_projection_matrix, prev_state, *,
    bidirectional=False, truncation=0,
):
    batch, length, channels, ndim = _check(
        x, damping_factor, decay_factor, ema_expansion_matrix, kernel_projection_matrix, prev_state,
        bidirectional, truncation,
    )
    return x.new_empty((batch, length, channels)), x.new_empty((batch, channels, ndim))


def mega_ema(
    x: Tensor,
    damping_factor: Tensor,
    decay_factor: Tensor,
    ema_expansion_matrix: Tensor,
    kernel_projection_matrix: Tensor,
    prev_state: Tensor | None = None,
    *,
    bidirectional: bool = False,
    truncation: int = 0,
) -> tuple[Tensor, Tensor]:
    """What the model calls: validates with readable errors, then dispatches ``torch.ops.tensorkiln.mega_ema``."""
    _check(
        x, damping_factor, decay_factor, ema_expansion_matrix, kernel_projection_matrix, prev_state,
        bidirectional, truncation,
    )
    return torch.ops.tensorkiln.mega_ema(
        x, damping_factor, decay_factor, ema_expansion_matrix, kernel_projection_matrix, prev_state,
        bidirectional=bidirectional, truncation=truncation,
    )
