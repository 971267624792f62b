"""The CPU kernels of plugins/cpu (what libtensorkiln_ort.so runs for MraAttention and MegaEma) against the torch ops
(reference/ops), an fp64 EMA oracle and dense attention, through the kernels' ctypes test shim, built here with g++
(plugins/cpu/testing). Both builds run: the AVX2+FMA one (where the CPU has it) and the portable one.

Shapes follow the hidden-shape rule: odd lengths (1, 7, 31, 33, 100, 257), batch > 1, several heads, head dims 16,
17, 32 and 64, padding masks with fully padded rows, both approx modes, every prior, budgets from 1 to past the
number of blocks; for the EMA odd channel counts and N, both directions, truncation shorter and longer than L,
prev_state, and L = 4096 with q near 1 (16384 in the slow run). Bound: tolerances.OP_VS_ORACLE_MAX_ABS.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mra_oracles import dense_attention

from tensorkiln.reference.ops.mega_ema import mega_ema
from tensorkiln.reference.ops.mra_attention import mra_attention
from tensorkiln.runtime.tolerances import OP_VS_ORACLE_MAX_ABS as TOL

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "plugins" / "cpu" / "testing"))
import cpu_kernels_capi  # noqa: E402

ISAS = ("avx2+fma", "portable")


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """The torch ops here are small: one thread is faster than two on this shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def built_kernels(tmp_path_factory):
    if shutil.which("g++") is None:
        pytest.skip("no g++ to build the CPU kernels' test shim")
    path = cpu_kernels_capi.build(tmp_path_factory.mktemp("cpu-kernels"))
    return path, cpu_kernels_capi.CpuKernels(path)


@pytest.fixture(params=ISAS)
def kernels(request, built_kernels):
    """The kernels, switched to one build; the AVX2 one skips where the CPU lacks AVX2 or FMA."""
    kernels = built_kernels[1]
    if request.param == "avx2+fma" and not kernels.supports_avx2:
        pytest.skip("this CPU has no AVX2+FMA")
    kernels.select_isa(request.param)
    assert kernels.isa == request.param
    return kernels


def _max_abs(got, want) -> float:
    want = want.detach().numpy() if isinstance(want, torch.Tensor) else want
    return float(np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64)).max())


# ---------------------------------------------------------------------------------------------------------------
# MraAttention


def _mra_inputs(batch, heads, length, dim, seed, pad=True):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, length, dim, generator=g) for _ in range(3))
    mask = torch.ones(batch, length)
    if pad and batch > 1:
        mask[1, length // 2 + 1:] = 0.0  # right padding
    if pad and batch > 2:
        mask[2] = 0.0  # a fully padded row
    return q, k, v, mask


def _check_mra(kernels, q, k, v, mask, **attributes) -> float:
    want = mra_attention(q, k, v, mask, **attributes)
    got = kernels.mra_attention(q.numpy(), k.numpy(), v.numpy(), mask.numpy(), **attributes)
    error = _max_abs(got, want)
    assert error <= TOL, f"{attributes} shape {tuple(q.shape)}: max abs {error:.3g}"
    return error


@pytest.mark.parametrize("shape", [(1, 1, 1, 16), (2, 3, 7, 17), (3, 2, 31, 32), (2, 2, 33, 64), (1, 2, 100, 16),
                                   (3, 1, 257, 64)])
@pytest.mark.parametrize("approx_mode", ["full", "sparse"])
def test_mra_matches_the_op(kernels, shape, approx_mode):
    batch, heads, length, dim = shape
    q, k, v, mask = _mra_inputs(*shape, seed=length * 7 + dim)
    nb = math.ceil(length / 32)
    scale = float(np.float32(1.0 / math.sqrt(dim)))  # the node's attribute is fp32
    for first_n, diagonal_n in [(0, 0), (1, 0), (0, 3), (2, 5)]:
        for budget in sorted({1, 3, max(1, nb * nb // 2), nb * nb, nb * nb + 5}):
            _check_mra(kernels, q, k, v, mask, num_blocks=budget, scale=scale, approx_mode=approx_mode,
                       initial_prior_first_n_blocks=first_n, initial_prior_diagonal_n_blocks=diagonal_n)


@pytest.mark.parametrize("approx_mode", ["full", "sparse"])
def test_mra_breaks_ties_as_the_op(kernels, approx_mode):
    """Every key block is the same 32 keys (of small integers: the block means and low-resolution logits are exact,
    so the scores tie bit for bit) but the values differ per block: the output shows which tied blocks won."""
    g = torch.Generator().manual_seed(11)
    batch, heads, length, dim = 2, 2, 256, 16
    q = torch.randint(-2, 3, (batch, heads, length, dim), generator=g).float()
    key_block = torch.randint(-2, 3, (batch, heads, 32, dim), generator=g).float()
    k = key_block.repeat(1, 1, length // 32, 1)
    k[:, :, 128:] = -k[:, :, 128:]  # two groups of tied blocks, not one
    v = torch.randn(batch, heads, length, dim, generator=g)
    mask = torch.ones(batch, length)
    for budget in (1, 5, 12, 30, 64):
        for first_n, diagonal_n in [(0, 0), (1, 0), (0, 3)]:
            _check_mra(kernels, q, k, v, mask, num_blocks=budget, scale=0.25, approx_mode=approx_mode,
                       initial_prior_first_n_blocks=first_n, initial_prior_diagonal_n_blocks=diagonal_n)


def test_mra_with_every_block_is_dense_attention(kernels):
    """Independent of the op: with a budget covering every block MRA is masked softmax attention (fp64 oracle)."""
    q, k, v, mask = _mra_inputs(3, 2, 70, 32, seed=5)
    got = kernels.mra_attention(q, k, v, mask, num_blocks=9, scale=0.125, approx_mode="sparse")
    want = dense_attention(q[:2], k[:2], v[:2], mask[:2], 0.125)  # row 2 has no token: softmax over nothing
    assert _max_abs(got[:2], want) <= TOL
    assert np.all(got[2] == 0.0)  # the op's output at padding


def test_mra_fractional_mask_values_match_the_op(kernels):
    """The contract's mask is 0/1, but the op multiplies by whatever it is given; so do the kernels."""
    q, k, v, mask = _mra_inputs(2, 2, 96, 16, seed=8, pad=False)
    mask[0, 40:70] = 0.5
    for approx_mode in ("full", "sparse"):
        _check_mra(kernels, q, k, v, mask, num_blocks=4, scale=0.25, approx_mode=approx_mode)


def test_mra_threads_give_the_serial_result_bit_for_bit(kernels):
    q, k, v, mask = _mra_inputs(2, 3, 300, 64, seed=3)
    attributes = dict(num_blocks=30, scale=0.125, approx_mode="full", initial_prior_diagonal_n_blocks=3)
    serial = kernels.mra_attention(q, k, v, mask, **attributes)
    with kernels.thread_pool(2) as pool:
        threaded = kernels.mra_attention(q, k, v, mask, pool=pool, **attributes)
    assert np.array_equal(serial, threaded)


@pytest.mark.slow
def test_mra_at_mra_base_4096_shapes(kernels):
    q, k, v, mask = _mra_inputs(1, 12, 4096, 64, seed=4096, pad=False)
    with kernels.thread_pool(2) as pool:
        got = kernels.mra_attention(q, k, v, mask, num_blocks=1024, scale=0.125, pool=pool)
    assert _max_abs(got, mra_attention(q, k, v, mask, num_blocks=1024, scale=0.125)) <= TOL


@pytest.mark.parametrize("attributes, message", [
    (dict(num_blocks=0, scale=0.125), "num_blocks must be at least 1"),
    (dict(num_blocks=2, scale=-1.0), "scale must be positive"),
    (dict(num_blocks=2, scale=0.125, initial_prior_first_n_blocks=-1), "must be >= 0"),
])
def test_mra_rejects_invalid_attributes(built_kernels, attributes, message):
    q, k, v, mask = _mra_inputs(1, 1, 40, 16, seed=1)
    with pytest.raises(RuntimeError, match=message):
        built_kernels[1].mra_attention(q, k, v, mask, **attributes)


# ---------------------------------------------------------------------------------------------------------------
# MegaEma


def _ema_params(rows, ndim, seed, one_minus_q=None):
    """HF Mega's initialisation (delta, alpha ~ N(0, 0.2), beta ~ N(0, 1) + ..., gamma ~ N(0, 1)); with
    one_minus_q, p ~ 0.5 and sigmoid(alpha) such that 1 - q is about that, beta scaled so that y is O(1)."""
    g = torch.Generator().manual_seed(seed)
    delta = 0.2 * torch.randn(rows, ndim, 1, generator=g)
    alpha = 0.2 * torch.randn(rows, ndim, 1, generator=g)
    beta = torch.randn(rows, ndim, 1, generator=g)
    gamma = torch.randn(rows, ndim, generator=g)
    if one_minus_q is not None:
        target = 2.0 * one_minus_q * (1.0 + 0.5 * torch.rand(rows, ndim, 1, generator=g))
        alpha = _agreeing_decay(delta, torch.log(target / (1.0 - target)))
        beta = beta * math.sqrt(2.0 * one_minus_q)
    return delta, alpha, beta, gamma


def _agreeing_decay(delta, alpha):
    """Nudge alpha by ulps until PyTorch's fp32 q = 1 - sigmoid(delta) sigmoid(alpha) equals the q of a correctly
    rounded exp (megaEma.cpp computes sigmoid as PyTorch's fp32 1 / (1 + exp(-x)) with that exp). Near q = 1 the
    output moves by more than the bound for one ulp of q, so this is the op's conditioning, not the scan's accuracy.
    """
    def emulated_sigmoid(x):
        e = np.exp(-x.numpy().astype(np.float64)).astype(np.float32)
        return np.float32(1.0) / (np.float32(1.0) + e)

    p_torch, p_emulated = torch.sigmoid(delta), emulated_sigmoid(delta)
    alpha = alpha.clone()
    for _ in range(64):
        q_torch = (1.0 - p_torch * torch.sigmoid(alpha)).numpy()
        damped = (p_emulated.astype(np.float64) * emulated_sigmoid(alpha).astype(np.float64)).astype(np.float32)
        differ = torch.from_numpy(q_torch != np.float32(1.0) - damped)
        if not differ.any():
            return alpha
        alpha = torch.where(differ, torch.nextafter(alpha, torch.full_like(alpha, math.inf)), alpha)
    raise AssertionError("could not find decay factors where both sigmoids agree")


def _ema_oracle(x, delta, alpha, beta, gamma, prev=None, bidirectional=False, truncation=0):
    """The op's math in fp64 on its fp32 coefficients: the truncated kernel by direct powers, the convolutions by
    fp64 FFT, final_state = sum_s q^(L-1-s) w x_s (+ q^L prev)."""
    p = torch.sigmoid(delta)
    q = (1.0 - p * torch.sigmoid(alpha)).squeeze(-1).double().numpy()
    w = (p * beta).squeeze(-1).double().numpy()
    g = (gamma * math.sqrt(1.0 / gamma.shape[1])).double().numpy()
    x = x.double().numpy()
    batch, length, channels = x.shape
    taps = length if truncation == 0 else min(truncation, length)
    kernel = np.einsum("kn,knl->kl", w * g, q[:, :, None] ** np.arange(taps))  # (K, T)
    size = 1 << math.ceil(math.log2(length + taps))

    def causal(signal, k):  # (B, D, L) conv (D, T), first L samples
        return np.fft.irfft(np.fft.rfft(signal, size) * np.fft.rfft(k, size), size)[..., :length]

    signal = x.transpose(0, 2, 1)
    y = causal(signal, kernel[:channels])
    if bidirectional:
        y = y + causal(signal[..., ::-1], kernel[channels:])[..., ::-1]
    weights = q[:channels, :, None] ** np.arange(length - 1, -1, -1)  # q^(L-1-s)
    final = np.einsum("bdl,dnl->bdn", signal, weights) * w[:channels]
    if prev is not None:
        prev = prev.double().numpy()
        y = y + np.einsum("bdn,dnl->bdl", prev * g * q, q[:, :, None] ** np.arange(length))
        final = final + prev * q ** length
    return y.transpose(0, 2, 1), final


def _check_ema(kernels, x, params, prev=None, bidirectional=False, truncation=0, torch_op=True):
    got_y, got_final = kernels.mega_ema(x, *params, prev, bidirectional=bidirectional, truncation=truncation)
    want_y, want_final = _ema_oracle(x, *params, prev, bidirectional, truncation)
    errors = {"vs fp64": max(_max_abs(got_y, want_y), _max_abs(got_final, want_final))}
    if torch_op:
        op_y, op_final = mega_ema(x, *params, prev, bidirectional=bidirectional, truncation=truncation)
        errors["vs op"] = max(_max_abs(got_y, op_y), _max_abs(got_final, op_final))
    case = f"x {tuple(x.shape)} bidirectional={bidirectional} truncation={truncation} prev={prev is not None}"
    assert max(errors.values()) <= TOL, f"{case}: {errors}"


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 7, 5, 3), (1, 33, 8, 16), (2, 100, 17, 16), (1, 257, 128, 16)])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_ema_matches_the_op_and_fp64(kernels, shape, bidirectional):
    batch, length, channels, ndim = shape
    g = torch.Generator().manual_seed(length + channels)
    x = torch.randn(batch, length, channels, generator=g)
    params = _ema_params((2 if bidirectional else 1) * channels, ndim, seed=length)
    for truncation in sorted({0, 1, 5, max(1, length - 1), length, 10 * length}):
        _check_ema(kernels, x, params, bidirectional=bidirectional, truncation=truncation)
    if not bidirectional:
        prev = torch.randn(batch, channels, ndim, generator=g)
        _check_ema(kernels, x, params, prev)


@pytest.mark.parametrize("one_minus_q", [None, 1e-2, 1e-3])
def test_ema_long_sequence(kernels, one_minus_q):
    """L = 4096, HF's initialisation and q near 1 (long memory, where an fp32 recurrence would drift)."""
    g = torch.Generator().manual_seed(4096)
    x = torch.randn(2, 4096, 6, generator=g)
    for bidirectional in (False, True):
        params = _ema_params(12 if bidirectional else 6, 4, seed=7, one_minus_q=one_minus_q)
        for truncation in (0, 300):
            _check_ema(kernels, x, params, bidirectional=bidirectional, truncation=truncation)


@pytest.mark.slow
@pytest.mark.parametrize("one_minus_q", [None, 1e-3, 1e-4])
def test_ema_very_long_sequence(kernels, one_minus_q):
    g = torch.Generator().manual_seed(16384)
    x = torch.randn(1, 16384, 8, generator=g)
    for bidirectional in (False, True):
        params = _ema_params(16 if bidirectional else 8, 16, seed=9, one_minus_q=one_minus_q)
        for truncation in (0, 1000, 16383):
            _check_ema(kernels, x, params, bidirectional=bidirectional, truncation=truncation)


def test_ema_threads_give_the_serial_result_bit_for_bit(kernels):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 500, 40, generator=g)
    params = _ema_params(80, 16, seed=2)
    serial = kernels.mega_ema(x, *params, bidirectional=True, truncation=100)
    with kernels.thread_pool(2) as pool:
        threaded = kernels.mega_ema(x, *params, bidirectional=True, truncation=100, pool=pool)
    assert all(np.array_equal(a, b) for a, b in zip(serial, threaded, strict=True))


@pytest.mark.parametrize("bidirectional, truncation, message", [
    (True, 0, "only defined for a unidirectional EMA"),
    (False, 5, "prev_state needs truncation=0"),
])
def test_ema_refuses_prev_state_where_the_op_does(built_kernels, bidirectional, truncation, message):
    x = torch.randn(1, 10, 4)
    params = _ema_params(8 if bidirectional else 4, 2, seed=3)
    with pytest.raises(RuntimeError, match=message):
        built_kernels[1].mega_ema(x, *params, torch.zeros(1, 4, 2), bidirectional=bidirectional,
                                  truncation=truncation)


# ---------------------------------------------------------------------------------------------------------------
# Dispatch


def test_the_environment_can_force_the_portable_build(built_kernels):
    """TENSORKILN_CPU_ISA=portable, read at the first kernel call, picks the portable build (fresh process)."""
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import cpu_kernels_capi as c, numpy as np; "
              "k = c.CpuKernels(sys.argv[2]); x = np.ones((1, 4, 4), np.float32); p = np.zeros((4, 1, 1));"
              "k.mega_ema(x, p, p, p, np.zeros((4, 1))); print(k.isa)")
    env = dict(os.environ, TENSORKILN_CPU_ISA="portable")
    result = subprocess.run([sys.executable, "-c", script, str(ROOT / "plugins" / "cpu" / "testing"),
                             str(built_kernels[0])], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "portable"
