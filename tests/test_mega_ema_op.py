"""``tensorkiln::mega_ema`` against an independent oracle: the EMA recurrence run step by step in fp64.

    h_t = q * h_{t-1} + p * beta * x_t        y_t = sum_n gamma_n * sqrt(1/N) * h_{t,n}

with p = sigmoid(delta), q = 1 - p * sigmoid(alpha). Bidirectional = a forward scan (rows [0, D)) plus a backward
scan over the reversed input (rows [D, 2D)), both including the current token. Truncation = the recurrence's
impulse response cut to T taps. Also: prev_state, chunked calls chained through the state, dtypes, errors, and the
op's registration (opcheck, torch.export), and HF's own EMA module.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from tensorkiln.reference.ops.mega_ema import mega_ema
from tensorkiln.runtime.tolerances import OP_VS_ORACLE_MAX_ABS as FP32_TOL


def make_params(channels, ndim, bidirectional, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    rows = 2 * channels if bidirectional else channels
    damping = torch.randn(rows, ndim, 1, generator=g) * scale
    decay = torch.randn(rows, ndim, 1, generator=g) * scale
    expansion = torch.randn(rows, ndim, 1, generator=g)
    projection = torch.randn(rows, ndim, generator=g)
    return damping, decay, expansion, projection


def scan(x, damping, decay, expansion, projection, h0=None):
    """The recurrence, one step at a time in fp64. x (B, L, D) and params for D rows; returns y (B, L, D), h_L."""
    p = torch.sigmoid(damping.double()).squeeze(-1)  # (D, N)
    q = 1.0 - p * torch.sigmoid(decay.double()).squeeze(-1)
    beta = expansion.double().squeeze(-1)
    gamma = projection.double() * math.sqrt(1.0 / projection.shape[1])
    batch, length, channels = x.shape
    h = torch.zeros(batch, channels, p.shape[1], dtype=torch.float64) if h0 is None else h0.double().clone()
    ys = []
    for t in range(length):
        h = q * h + p * beta * x[:, t].double().unsqueeze(-1)  # (B, D, N)
        ys.append((h * gamma).sum(-1))
    return torch.stack(ys, dim=1), h


def truncated(x, damping, decay, expansion, projection, taps):
    """y_t = sum_{s < taps} k_s x_{t-s}, k being the recurrence's response to a unit impulse."""
    channels = x.shape[2]
    impulse = torch.zeros(1, taps, channels, dtype=torch.float64)
    impulse[:, 0] = 1.0
    k, _ = scan(impulse, damping, decay, expansion, projection)  # (1, T, D)
    out = torch.zeros(x.shape, dtype=torch.float64)
    for s in range(taps):
        out[:, s:] += k[:, s] * x[:, : x.shape[1] - s].double()
    return out


def run(x, params, prev=None, **kw):
    return mega_ema(x, *params, prev, **kw)


@pytest.mark.parametrize("length", [1, 7, 33])
def test_unidirectional_matches_the_recurrence(length):
    params = make_params(6, 4, False)
    x = torch.randn(3, length, 6, generator=torch.Generator().manual_seed(1))
    y, state = run(x, params)
    y_ref, h_ref = scan(x, *params)
    assert y.dtype == x.dtype and state.dtype == x.dtype
    assert (y.double() - y_ref).abs().max() < FP32_TOL
    assert (state.double() - h_ref).abs().max() < FP32_TOL


@pytest.mark.parametrize("length", [1, 9, 40])
def test_bidirectional_is_a_forward_plus_a_backward_scan(length):
    channels = 5
    params = make_params(channels, 3, True)
    x = torch.randn(2, length, channels, generator=torch.Generator().manual_seed(2))
    y, state = run(x, params, bidirectional=True)
    forward = [t[:channels] for t in params]
    backward = [t[channels:] for t in params]
    y_fwd, h_fwd = scan(x, *forward)
    y_bwd, _ = scan(x.flip(1), *backward)
    assert (y.double() - (y_fwd + y_bwd.flip(1))).abs().max() < FP32_TOL
    # the final state is the forward direction's
    assert (state.double() - h_fwd).abs().max() < FP32_TOL


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("taps", [1, 4, 50])
def test_truncation_cuts_the_kernel(bidirectional, taps):
    channels, length = 4, 20
    params = make_params(channels, 3, bidirectional)
    x = torch.randn(2, length, channels, generator=torch.Generator().manual_seed(3))
    y, state = run(x, params, bidirectional=bidirectional, truncation=taps)
    taps = min(taps, length)
    forward = [t[:channels] for t in params]
    expected = truncated(x, *forward, taps)
    if bidirectional:
        expected = expected + truncated(x.flip(1), *[t[channels:] for t in params], taps).flip(1)
    assert (y.double() - expected).abs().max() < FP32_TOL
    # truncation shapes the output only: the state stays the exact recurrence's
    assert (state.double() - scan(x, *forward)[1]).abs().max() < FP32_TOL


def test_prev_state_continues_the_recurrence():
    params = make_params(6, 4, False, seed=4)
    g = torch.Generator().manual_seed(5)
    x, h0 = torch.randn(2, 11, 6, generator=g), torch.randn(2, 6, 4, generator=g)
    y, state = run(x, params, h0)
    y_ref, h_ref = scan(x, *params, h0=h0)
    assert (y.double() - y_ref).abs().max() < FP32_TOL
    assert (state.double() - h_ref).abs().max() < FP32_TOL


@pytest.mark.parametrize("splits", [[1] * 12, [5, 7], [3, 1, 8]])
def test_chunked_calls_with_state_equal_one_call(splits):
    params = make_params(8, 4, False, seed=6)
    x = torch.randn(2, sum(splits), 8, generator=torch.Generator().manual_seed(7))
    y_full, state_full = run(x, params)
    outputs, state = [], None
    for piece in x.split(splits, dim=1):
        y, state = run(piece, params, state)
        outputs.append(y)
    assert (torch.cat(outputs, 1) - y_full).abs().max() < FP32_TOL
    assert (state - state_full).abs().max() < FP32_TOL


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_reduced_precision_returns_its_dtype(dtype, bidirectional):
    params = make_params(6, 4, bidirectional, seed=8)
    x = torch.randn(2, 16, 6, generator=torch.Generator().manual_seed(9))
    y32, s32 = run(x, params, bidirectional=bidirectional)
    y, s = run(x.to(dtype), [t.to(dtype) for t in params], bidirectional=bidirectional)
    assert y.dtype == dtype and s.dtype == dtype
    # The op computes in fp32, so the error is the inputs' and outputs' rounding: a few ulps of the dtype.
    eps = torch.finfo(dtype).eps
    scale = y32.abs().max().item()
    assert (y.float() - y32).abs().max() < 16 * eps * max(scale, 1.0)
    assert (s.float() - s32).abs().max() < 16 * eps * max(s32.abs().max().item(), 1.0)


def test_long_sequence_stays_exact():
    params = make_params(4, 2, True, seed=10, scale=2.0)
    x = torch.randn(1, 600, 4, generator=torch.Generator().manual_seed(11))
    y, _ = run(x, params, bidirectional=True)
    y_fwd, _ = scan(x, *[t[:4] for t in params])
    y_bwd, _ = scan(x.flip(1), *[t[4:] for t in params])
    assert (y.double() - (y_fwd + y_bwd.flip(1))).abs().max() < FP32_TOL


@pytest.mark.parametrize(
    "make_call, message",
    [
        (lambda x, p: mega_ema(x[0], *p), "x must be"),
        (lambda x, p: mega_ema(x, *p, bidirectional=True), "K=4 rows"),
        (lambda x, p: mega_ema(x, p[0], p[1][:, :1], p[2], p[3]), "decay_factor must have shape"),
        (lambda x, p: mega_ema(x, *p, torch.zeros(2, 4, 3)), "prev_state must be"),
        (lambda x, p: mega_ema(x, *p, torch.zeros(2, 4, 2), truncation=3), "truncation=0"),
        (lambda x, p: mega_ema(x, *p, truncation=-1), "truncation must be"),
        (lambda x, p: mega_ema(x, *make_params(4, 2, True), torch.zeros(2, 4, 2), bidirectional=True),
         "unidirectional"),
    ],
)
def test_bad_inputs_raise_clear_errors(make_call, message):
    x, params = torch.randn(2, 5, 4), make_params(4, 2, False)
    with pytest.raises(ValueError, match=message):
        make_call(x, params)


def test_op_registration_traces():
    """The schema, the fake kernel and torch.export: what the ONNX exporter will rely on."""
    params = make_params(4, 2, False)
    x, h0 = torch.randn(2, 5, 4), torch.randn(2, 4, 2)
    op = torch.ops.tensorkiln.mega_ema.default
    torch.library.opcheck(op, (x, *params, h0), {"bidirectional": False, "truncation": 0},
                          test_utils=("test_schema", "test_faketensor"))
    torch.library.opcheck(op, (x, *make_params(4, 2, True), None), {"bidirectional": True, "truncation": 3},
                          test_utils=("test_schema", "test_faketensor"))

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.params = torch.nn.ParameterList(make_params(4, 2, True))

        def forward(self, x):
            return mega_ema(x, *self.params, bidirectional=True, truncation=0)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = torch.export.export(Wrapper(), (x,))
    assert "tensorkiln.mega_ema" in str(exported.graph)
    y, _ = exported.module()(x)
    assert (y - Wrapper()(x)[0]).abs().max() == 0


@pytest.mark.parametrize("bidirectional, truncation", [(False, None), (True, None), (True, 5), (False, 3)])
def test_matches_hf_ema_module(bidirectional, truncation):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from transformers.models.deprecated.mega import MegaConfig
        from transformers.models.deprecated.mega.modeling_mega import MegaMultiDimensionDampedEma

    config = MegaConfig(hidden_size=8, ema_projection_size=3, bidirectional=bidirectional, truncation=truncation)
    hf = MegaMultiDimensionDampedEma(config).eval()
    g = torch.Generator().manual_seed(12)
    with torch.no_grad():
        for param in hf.parameters():
            param.copy_(torch.randn(param.shape, generator=g) * 0.7)
        x = torch.randn(13, 2, 8, generator=g)  # HF is time-first (L, B, D)
        expected, _ = hf(x)
        ema, _ = mega_ema(x.transpose(0, 1), hf.damping_factor, hf.decay_factor, hf.ema_expansion_matrix,
                          hf.kernel_projection_matrix, bidirectional=bidirectional, truncation=truncation or 0)
        ours = F.silu(ema.transpose(0, 1) + x * hf.residual_weight)
    assert (ours - expected).abs().max() < FP32_TOL
