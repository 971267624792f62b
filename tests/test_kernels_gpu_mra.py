"""GPU tests of the CUDA kernels of ``tensorkiln::mra_attention`` (plugins/mraAttentionPlugin/mraAttentionKernel.cu).

The CUDA op (the torch binding of the launcher the TensorRT plugin calls, loaded by reference/ops/cuda_kernels.py) is
checked against two oracles:

* the pure-PyTorch op (reference/ops/mra_attention.py) on the same inputs, over a grid of lengths, head dims, both
  approx modes, partial and full budgets, padding and the three dtypes, under flash-attention's rule: the kernel's
  error against the fp32 reference is at most twice the error of PyTorch run in that dtype (fp32: a small bound);
* dense masked softmax attention, which the op must equal when its budget covers every block.

Top-k is a discrete choice: two implementations that round a logit differently may pick different blocks when two
ranking scores are within rounding of each other at the cut, and then legitimately differ by far more than rounding.
Each case therefore draws inputs until the cut is unambiguous (``selection_is_unambiguous``); exact ties, which HF's
priors produce on purpose, are checked separately against the tie rule the kernel documents (lowest block index
first, as the reference op and ONNX TopK take them).
"""

from __future__ import annotations

import math

import pytest
import torch

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():
    pytest.skip("needs CUDA", allow_module_level=True)

from mra_oracles import dense_attention, right_padding  # noqa: E402

from tensorkiln.reference.ops import cuda_kernels  # noqa: E402  (builds/loads the extension; needs CUDA)
from tensorkiln.reference.ops.mra_attention import mra_attention  # noqa: E402
from tensorkiln.runtime.tolerances import OP_VS_ORACLE_MAX_ABS as FP32_TOL  # noqa: E402

BLOCK = 32
# Dense oracle at fp32; the reference test of the op uses the same bound.
DENSE_TOL = FP32_TOL
# Draws of inputs until the top-k cut is unambiguous: at L = 4096 (16,384 candidates) one draw in five or ten is.
MAX_DRAWS = 100


@pytest.fixture(scope="module", autouse=True)
def extension():
    assert cuda_kernels.load(), "the CUDA kernels did not load"
    # Without its own CUDA kernel the op would silently run the pure-PyTorch code on CUDA and test nothing.
    assert "\nCUDA:" in torch._C._dispatch_dump("tensorkiln::mra_attention"), "no CUDA kernel for mra_attention"


def cuda_op(q, k, v, mask, **attributes):
    """The CUDA implementation: the op on CUDA tensors dispatches to the extension's kernel."""
    out = mra_attention(q.cuda(), k.cuda(), v.cuda(), mask.cuda(), **attributes)
    torch.cuda.synchronize()
    return out.cpu()


def torch_op(q, k, v, mask, **attributes):
    """The pure-PyTorch implementation (CPU dispatch of the same op)."""
    return mra_attention(q.cpu(), k.cpu(), v.cpu(), mask.cpu(), **attributes)


def prior_block_count(nb, first_n, diagonal_n):
    index = torch.arange(nb)
    band = (index[:, None] - index[None, :]).abs() <= diagonal_n // 2
    if diagonal_n == 0:
        band = torch.zeros(nb, nb, dtype=torch.bool)
    first = (index[:, None] < first_n) | (index[None, :] < first_n)
    return int((band | first).sum())


def ranking_scores(q, k, mask, scale, first_n, diagonal_n):
    """The op's top-k scores in fp64 from the inputs as the kernel sees them, (BH, nb*nb); which blocks are empty; and
    per (batch, head) a bound on |logit| that scales how far fp32 rounding can move a score."""
    batch, heads, length, dim = q.shape
    pad = -length % BLOCK
    nb = (length + pad) // BLOCK
    bh = batch * heads
    m = torch.nn.functional.pad(mask.double(), (0, pad))[:, None, :].expand(batch, heads, -1).reshape(bh, -1)
    count = m.reshape(bh, nb, BLOCK).sum(-1)  # (BH, nb)

    def means(t):
        t = torch.nn.functional.pad(t.double(), (0, 0, 0, pad)).reshape(bh, nb * BLOCK, dim) * m[:, :, None]
        return t.reshape(bh, nb, BLOCK, dim).sum(-2) / (count[:, :, None] + 1e-6)  # (BH, nb, D)

    q_hat, k_hat = means(q), means(k)
    logit = q_hat @ k_hat.transpose(-1, -2) * scale  # (BH, nb, nb)
    empty = (count[:, None, :] * count[:, :, None]) < 0.5
    score = logit - 1e4 * empty - logit.amax(-1, keepdim=True)
    index = torch.arange(nb)
    if diagonal_n > 0:
        score = score + 5e3 * ((index[:, None] - index[None, :]).abs() <= diagonal_n // 2)
    if first_n > 0:
        score = score + 5e3 * (index[:, None] < first_n) + 5e3 * (index[None, :] < first_n)
    magnitude = q_hat.norm(dim=-1).amax(-1) * k_hat.norm(dim=-1).amax(-1) * scale  # (BH,)
    return score.flatten(1), empty.flatten(1), magnitude


def selection_is_unambiguous(q, k, mask, num_blocks, scale, first_n=0, diagonal_n=0):
    """True when no two scores straddling the k-th are within rounding of each other (empty blocks may tie: which of
    them is chosen does not change the output)."""
    score, empty, magnitude = ranking_scores(q, k, mask, scale, first_n, diagonal_n)
    budget = min(num_blocks, score.shape[1])
    if budget == score.shape[1]:
        return True
    eps = torch.finfo(torch.float32).eps
    for row in range(score.shape[0]):
        s = score[row]
        threshold = s.topk(budget).values[-1]
        # fp32 logits: block sums of 32 tokens, then a dot of D <= 128 terms, summed in different orders by the two
        # implementations; the +5e3 priors round to a unit in the last place of the score.
        tol = 2e-6 * float(magnitude[row]) + 4 * eps * float(threshold.abs())
        near = (s - threshold).abs() <= tol
        above = int((s > threshold + tol).sum())
        split = above + int(near.sum()) > budget
        if split and bool((near & ~empty[row]).any()):
            return False
    return True


def draw(batch, heads, length, dim, dtype, seed, **selection):
    """q, k, v in `dtype` (and their fp32 originals) whose top-k cut is unambiguous at `dtype`."""
    for attempt in range(MAX_DRAWS):
        g = torch.Generator().manual_seed(seed * 1000 + attempt)
        originals = [torch.randn(batch, heads, length, dim, generator=g) for _ in range(3)]
        rounded = [t.to(dtype) for t in originals]
        q, k = rounded[0], rounded[1]
        if selection_is_unambiguous(q.float(), k.float(), **selection) and selection_is_unambiguous(
            originals[0], originals[1], **selection
        ):
            return originals, rounded
    pytest.fail(f"no unambiguous top-k cut in {MAX_DRAWS} draws")


def budget_below(nb):
    """A budget that leaves blocks out, or None where there is only one block. It holds the nb blocks that carry each
    row's maximum: their scores are exactly 0 (logit - row max), so a cut among them would be a tie by construction."""
    return None if nb == 1 else nb + (nb * nb - nb) // 8


def errors(out, reference):
    diff = (out.double() - reference.double()).flatten()
    ref = reference.double().flatten()
    nmse = float(diff.pow(2).sum() / ref.pow(2).sum().clamp_min(1e-30))
    cosine = float(torch.nn.functional.cosine_similarity(out.double().flatten(), ref, dim=0))
    return float(diff.abs().max()), nmse, cosine


LENGTHS = [1, 31, 32, 100, 512, 1000, 4096]
HEAD_DIMS = [16, 32, 64, 100, 128]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("approx_mode", ["full", "sparse"])
@pytest.mark.parametrize("dim", HEAD_DIMS)
@pytest.mark.parametrize("length", LENGTHS)
def test_cuda_kernel_matches_the_torch_op(length, dim, approx_mode):
    batch, heads = 2, 2
    nb = math.ceil(length / BLOCK)
    mask = right_padding(batch, length, [length, max(1, length // 2 + 1)])
    scale = 1.0 / math.sqrt(max(dim, BLOCK))
    budgets = [b for b in (budget_below(nb), nb * nb) if b is not None]
    for budget in budgets:
        # HF's priors where the budget holds them and the row-max blocks (a cut through the +5e3 blocks or the
        # zeros is a tie by construction; ties are tested on their own below).
        priors = (1, 3) if prior_block_count(nb, 1, 3) + nb < budget else (0, 0)
        attributes = dict(num_blocks=budget, scale=scale, approx_mode=approx_mode,
                          initial_prior_first_n_blocks=priors[0], initial_prior_diagonal_n_blocks=priors[1])
        selection = dict(mask=mask, num_blocks=budget, scale=scale, first_n=priors[0], diagonal_n=priors[1])
        for dtype in DTYPES:
            originals, (q, k, v) = draw(batch, heads, length, dim, dtype, seed=length * 7 + dim, **selection)
            reference = torch_op(*originals, mask, **attributes)  # fp32 inputs, fp32 op
            out = cuda_op(q, k, v, mask, **attributes)
            assert out.dtype == dtype and out.shape == q.shape
            assert torch.isfinite(out).all()
            assert (out.float() * (1 - mask)[:, None, :, None]).abs().max() == 0  # zero at padded positions
            kernel_error, nmse, cosine = errors(out, reference)
            where = f"L={length} D={dim} {approx_mode} budget={budget}/{nb * nb} priors={priors} {dtype}"
            if dtype == torch.float32:
                assert kernel_error <= FP32_TOL, f"{where}: max abs {kernel_error:.3g} nmse {nmse:.3g} cos {cosine}"
            else:
                torch_error = errors(torch_op(q, k, v, mask, **attributes), reference)[0]
                assert kernel_error <= 2 * torch_error + 1e-6, (
                    f"{where}: kernel {kernel_error:.3g} vs PyTorch in {dtype} {torch_error:.3g} "
                    f"(nmse {nmse:.3g}, cos {cosine})"
                )


@pytest.mark.parametrize("approx_mode", ["full", "sparse"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("length, dim, real", [
    (1, 16, [1, 1]), (31, 64, [31, 5]), (100, 100, [100, 40]), (512, 128, [512, 300]), (1000, 32, [999, 1]),
])
def test_full_budget_is_dense_attention(length, dim, real, dtype, approx_mode):
    g = torch.Generator().manual_seed(length + dim)
    q, k, v = [torch.randn(2, 3, length, dim, generator=g).to(dtype) for _ in range(3)]
    mask = right_padding(2, length, real)
    scale = 1.0 / math.sqrt(max(dim, BLOCK))
    every_block = math.ceil(length / BLOCK) ** 2
    out = cuda_op(q, k, v, mask, num_blocks=every_block, scale=scale, approx_mode=approx_mode,
                  initial_prior_first_n_blocks=1, initial_prior_diagonal_n_blocks=1)
    expected = dense_attention(q, k, v, mask, scale)
    bound = DENSE_TOL if dtype == torch.float32 else 2 * torch.finfo(dtype).eps * float(expected.abs().max())
    assert float((out.double() - expected).abs().max()) <= bound


@pytest.mark.parametrize("approx_mode", ["full", "sparse"])
def test_ties_at_the_cut_take_the_lowest_block_indices(approx_mode):
    """HF's priors put many blocks at exactly +5e3 (x + 5e3 rounds to 5e3 for small x): a budget cutting through them
    is a tie. The kernel takes the lowest flat block indices, as the reference op (a stable sort) and ONNX TopK do."""
    g = torch.Generator().manual_seed(11)
    q, k, v = [torch.randn(2, 2, 300, 64, generator=g) for _ in range(3)]
    mask = right_padding(2, 300, [300, 130])
    attributes = dict(num_blocks=12, scale=0.125, approx_mode=approx_mode,
                      initial_prior_first_n_blocks=1, initial_prior_diagonal_n_blocks=3)
    out = cuda_op(q, k, v, mask, **attributes)
    expected = torch_op(q, k, v, mask, **attributes)
    assert float((out - expected).abs().max()) <= FP32_TOL


def test_top_k_over_65536_candidates():
    """L = 8192: nb^2 = 65536 candidates per (batch, head), the largest the brief names; radix select over them."""
    length, dim = 8192, 32
    mask = right_padding(1, length, [8000])
    scale = 1.0 / math.sqrt(BLOCK)
    for budget in (300, 4096):
        selection = dict(mask=mask, num_blocks=budget, scale=scale)
        originals, _ = draw(1, 2, length, dim, torch.float32, seed=budget, **selection)
        attributes = dict(num_blocks=budget, scale=scale, approx_mode="full")
        out = cuda_op(*originals, mask, **attributes)
        expected = torch_op(*originals, mask, **attributes)
        assert float((out - expected).abs().max()) <= FP32_TOL


def test_non_contiguous_inputs_and_half_mask():
    """Strided (B, H, L, D) views, as attention layers produce from a (B, L, H, D) projection, and a fp16 mask."""
    g = torch.Generator().manual_seed(5)
    q, k, v = [torch.randn(2, 200, 4, 64, generator=g).transpose(1, 2) for _ in range(3)]  # (B, H, L, D) views
    mask = right_padding(2, 200, [200, 77])
    attributes = dict(num_blocks=12, scale=0.125, approx_mode="full")
    assert selection_is_unambiguous(q, k, mask, 12, 0.125)
    out = cuda_op(q, k, v, mask.half(), **attributes)
    expected = torch_op(q.contiguous(), k.contiguous(), v.contiguous(), mask, **attributes)
    assert float((out - expected).abs().max()) <= FP32_TOL
