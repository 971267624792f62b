"""GPU tests of the chunked-scan CUDA kernel of ``tensorkiln::mega_ema`` (plugins/megaEmaPlugin/megaEmaKernel.cu).

The CUDA op (the torch binding of the launcher the TensorRT plugin calls, loaded by reference/ops/cuda_kernels.py)
is checked against the pure-PyTorch op (FFT convolution, reference/ops/mega_ema.py) over a grid of shapes (one and
several 64-step chunks, short last chunks, N below/above the 4- and 16-wide register tiles), the three dtypes,
bidirectional, truncation and prev_state, under flash-attention's rule as docs/ARCHITECTURE.md states it: the kernel's
error against an fp64 reference is at most twice the error of PyTorch run in that dtype (plus a bound of 1e-6 of the
output's scale, where both errors are at fp32 rounding). Also: strided x, mixed parameter dtypes, fp64, chunked calls
chained through the state, and the op's errors. MraAttention's kernels are tested in test_kernels_gpu_mra.py.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():
    pytest.skip("needs CUDA", allow_module_level=True)

from tensorkiln.reference.ops import cuda_kernels  # noqa: E402  (builds/loads the extension; needs CUDA)
from tensorkiln.reference.ops.mega_ema import _mega_ema_pure, mega_ema  # noqa: E402

DEVICE = "cuda"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (B, L, D, N): one chunk, chunk edges (64, 65), a long tail, N = 1, 4 (4-wide tile), 16 and 17 (16-wide tiles).
SHAPES = [(1, 1, 1, 1), (2, 7, 3, 4), (2, 64, 16, 16), (3, 65, 33, 16), (2, 200, 40, 17), (1, 1000, 8, 4),
          (2, 2048, 64, 16)]
TRUNCATIONS = [0, 5, 64, 1000]


@pytest.fixture(scope="module", autouse=True)
def extension():
    assert cuda_kernels.load(), "the CUDA kernels did not load"


def make_inputs(batch, length, channels, ndim, bidirectional, dtype, seed=0, param_dtype=None):
    g = torch.Generator().manual_seed(seed)
    rows = 2 * channels if bidirectional else channels
    params = (
        torch.randn(rows, ndim, 1, generator=g),
        torch.randn(rows, ndim, 1, generator=g),
        torch.randn(rows, ndim, 1, generator=g),
        torch.randn(rows, ndim, generator=g),
    )
    x = torch.randn(batch, length, channels, generator=g)
    prev = torch.randn(batch, channels, ndim, generator=g)
    pd = param_dtype or dtype
    return (x.to(DEVICE, dtype), tuple(p.to(DEVICE, pd) for p in params), prev.to(DEVICE, dtype))


def reference(x, params, prev, **attributes):
    """fp64 on the same (already rounded) inputs: the oracle both implementations are measured against."""
    out, state = _mega_ema_pure(x.double(), *(p.double() for p in params),
                                None if prev is None else prev.double(), **attributes)
    return out, state


def assert_within_rule(kernel, pytorch, oracle, what):
    kernel_error = (kernel.double() - oracle).abs().max().item()
    torch_error = (pytorch.double() - oracle).abs().max().item()
    floor = 1e-6 * (1.0 + oracle.abs().max().item())
    assert kernel_error <= 2.0 * torch_error + floor, (
        f"{what}: kernel error {kernel_error:.3g} > 2 x PyTorch's {torch_error:.3g} + {floor:.3g}"
    )


def test_the_op_dispatches_to_the_cuda_kernel():
    dump = torch._C._dispatch_dump("tensorkiln::mega_ema")
    assert "\nCUDA:" in dump and "CompositeExplicitAutograd[alias]" in dump


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}_L{}_D{}_N{}".format(*s))
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("truncation", TRUNCATIONS, ids=lambda t: f"T{t}")
def test_kernel_matches_the_pure_op(dtype, shape, bidirectional, truncation):
    x, params, _ = make_inputs(*shape, bidirectional, dtype, seed=sum(shape) + truncation)
    attributes = dict(bidirectional=bidirectional, truncation=truncation)
    out, state = mega_ema(x, *params, None, **attributes)  # dispatches to the CUDA kernel
    pure_out, pure_state = _mega_ema_pure(x, *params, None, **attributes)
    ref_out, ref_state = reference(x, params, None, **attributes)
    assert out.dtype == dtype and state.dtype == dtype
    assert out.shape == pure_out.shape and state.shape == pure_state.shape
    assert_within_rule(out, pure_out, ref_out, "output")
    assert_within_rule(state, pure_state, ref_state, "final_state")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES[1:], ids=lambda s: "B{}_L{}_D{}_N{}".format(*s))
def test_prev_state(dtype, shape):
    x, params, prev = make_inputs(*shape, False, dtype, seed=3)
    out, state = mega_ema(x, *params, prev)
    pure_out, pure_state = _mega_ema_pure(x, *params, prev, False, 0)
    ref_out, ref_state = reference(x, params, prev, bidirectional=False, truncation=0)
    assert_within_rule(out, pure_out, ref_out, "output")
    assert_within_rule(state, pure_state, ref_state, "final_state")


def test_chunked_calls_chain_through_the_state():
    x, params, _ = make_inputs(2, 300, 24, 16, False, torch.float32, seed=5)
    full_out, full_state = mega_ema(x, *params)
    first_out, first_state = mega_ema(x[:, :130], *params)
    second_out, second_state = mega_ema(x[:, 130:], *params, first_state)
    torch.testing.assert_close(torch.cat([first_out, second_out], 1), full_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(second_state, full_state, rtol=1e-5, atol=1e-5)


def test_strided_x_and_mixed_parameter_dtypes():
    x, params, _ = make_inputs(2, 150, 20, 16, True, torch.float16, seed=7, param_dtype=torch.float32)
    strided = x.transpose(1, 2).contiguous().transpose(1, 2)  # (B, L, D) view with D-stride L
    assert not strided.is_contiguous()
    out, state = mega_ema(strided, *params, bidirectional=True, truncation=40)
    pure_out, pure_state = _mega_ema_pure(x, *params, None, True, 40)
    ref_out, ref_state = reference(x, params, None, bidirectional=True, truncation=40)
    assert_within_rule(out, pure_out, ref_out, "output")
    assert_within_rule(state, pure_state, ref_state, "final_state")


def test_float64_runs_in_float64():
    x, params, prev = make_inputs(2, 257, 9, 5, False, torch.float64, seed=11)
    out, state = mega_ema(x, *params, prev)
    ref_out, ref_state = reference(x, params, prev, bidirectional=False, truncation=0)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(state, ref_state, rtol=1e-10, atol=1e-10)


def test_the_kernel_rejects_what_the_op_rejects():
    x, params, prev = make_inputs(2, 10, 4, 3, True, torch.float32)
    with pytest.raises(ValueError, match="check the bidirectional flag|check the bidirectional field"):
        torch.ops.tensorkiln.mega_ema(x, *params, None, bidirectional=False, truncation=0)
    with pytest.raises(ValueError, match="truncation'? must be 0"):
        torch.ops.tensorkiln.mega_ema(x, *params, None, bidirectional=True, truncation=-1)
    x, params, prev = make_inputs(2, 10, 4, 3, False, torch.float32)
    with pytest.raises(ValueError, match="prev_state needs truncation=0"):
        torch.ops.tensorkiln.mega_ema(x, *params, prev, bidirectional=False, truncation=3)
