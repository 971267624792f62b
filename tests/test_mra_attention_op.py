"""Tests of the custom op ``tensorkiln::mra_attention`` (reference/ops/mra_attention.py).

Two independent oracles:
* dense masked softmax attention, which the op must equal whenever its block budget covers every block;
* HF's own ``mra2_attention`` (transformers 4.57.6) with its CUDA kernels emulated on CPU (tests/hf_mra_kernels.py),
  called with a correct 0/1 mask of shape (B*H, L), for partial budgets, both approx modes and the priors.
"""

from __future__ import annotations

import json
import math
from importlib import resources

import pytest
import torch
from hf_mra_kernels import emulated_mra_kernels
from mra_oracles import dense_attention, right_padding

from tensorkiln.reference import build_model
from tensorkiln.reference.init import initialize_weights
from tensorkiln.reference.mra import MraConfig
from tensorkiln.reference.ops.mra_attention import mra_attention
from tensorkiln.runtime.tolerances import OP_VS_ORACLE_MAX_ABS as TOL


def random_qkv(batch, heads, length, dim, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, length, dim, generator=g).to(dtype) for _ in range(3)]


# (batch, heads, length, dim, real lengths per batch row or None)
DENSE_CASES = [
    (1, 1, 1, 8, None),
    (2, 3, 45, 8, [45, 20]),
    (2, 2, 64, 17, [64, 33]),
    (3, 2, 100, 64, [100, 1, 64]),
    (2, 4, 96, 128, [70, 96]),
    (1, 2, 31, 64, [30]),
    (2, 1, 160, 32, [160, 129]),
]


@pytest.mark.parametrize("approx_mode", ["full", "sparse"])
@pytest.mark.parametrize("batch, heads, length, dim, real", DENSE_CASES)
def test_full_budget_equals_dense_attention(batch, heads, length, dim, real, approx_mode):
    q, k, v = random_qkv(batch, heads, length, dim, seed=length + dim)
    mask = right_padding(batch, length, real or [length] * batch)
    scale = 1.0 / math.sqrt(max(dim, 32))
    every_block = math.ceil(length / 32) ** 2
    out = mra_attention(q, k, v, mask, num_blocks=every_block, scale=scale, approx_mode=approx_mode,
                        initial_prior_first_n_blocks=1, initial_prior_diagonal_n_blocks=1)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert (out - dense_attention(q, k, v, mask, scale).float()).abs().max() <= TOL
    assert (out * (1 - mask)[:, None, :, None]).abs().max() == 0  # zero at padded positions


@pytest.mark.parametrize("length", [40, 100, 200, 255])
def test_short_input_with_base_512_budget_is_dense(length):
    """mra-base-512-4 asks for 64 blocks; an input under 256 tokens has fewer, and HF's top-k would fail."""
    budget = MraConfig(max_position_embeddings=512, block_per_row=4).num_blocks
    assert budget == 64 and math.ceil(length / 32) ** 2 <= budget
    q, k, v = random_qkv(2, 2, length, 64, seed=length)
    mask = right_padding(2, length, [length, length // 2])
    out = mra_attention(q, k, v, mask, num_blocks=budget, scale=0.125)
    assert (out - dense_attention(q, k, v, mask, 0.125).float()).abs().max() <= TOL


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision_inputs_return_their_dtype(dtype):
    q, k, v = random_qkv(2, 2, 70, 64, dtype=dtype)
    mask = right_padding(2, 70, [70, 50])
    out = mra_attention(q, k, v, mask, num_blocks=4, scale=0.125)
    assert out.dtype == dtype
    # Computed in fp32 from the rounded inputs, so the only extra error is the final rounding to dtype.
    reference = mra_attention(q.float(), k.float(), v.float(), mask, num_blocks=4, scale=0.125)
    assert (out.float() - reference).abs().max() <= 2 * torch.finfo(dtype).eps * reference.abs().max()


# (batch, heads, length, dim, budget, mode, first_n, diagonal_n, real lengths)
HF_CASES = [
    (2, 2, 128, 32, 4, "full", 0, 0, [128, 80]),
    (2, 2, 128, 64, 6, "sparse", 0, 0, [128, 100]),
    (1, 3, 160, 32, 7, "full", 1, 3, [150]),
    (2, 1, 96, 64, 3, "sparse", 2, 0, [96, 33]),
    (2, 2, 64, 16, 2, "full", 0, 1, [64, 40]),
    (1, 2, 256, 64, 16, "full", 0, 0, [256]),
    (3, 2, 192, 32, 12, "full", 1, 1, [192, 100, 40]),
    (1, 1, 128, 128, 16, "sparse", 0, 0, [128]),
]


@pytest.mark.parametrize("batch, heads, length, dim, budget, mode, first_n, diagonal_n, real", HF_CASES)
@torch.no_grad()
def test_matches_hf_mra2_attention(batch, heads, length, dim, budget, mode, first_n, diagonal_n, real):
    q, k, v = random_qkv(batch, heads, length, dim, seed=budget * 7 + dim)
    mask = right_padding(batch, length, real)
    out = mra_attention(q, k, v, mask, num_blocks=budget, scale=1.0 / math.sqrt(dim), approx_mode=mode,
                        initial_prior_first_n_blocks=first_n, initial_prior_diagonal_n_blocks=diagonal_n)
    with emulated_mra_kernels() as modeling_mra:
        rows = mask[:, None, :].expand(batch, heads, length).reshape(batch * heads, length)  # (B*H, L)
        expected = modeling_mra.mra2_attention(
            q, k, v, rows, budget, mode,
            initial_prior_first_n_blocks=first_n, initial_prior_diagonal_n_blocks=diagonal_n,
        )
    assert expected.abs().max() > 0
    assert (out - expected).abs().max() <= TOL
    if budget < (length // 32) ** 2 and mode == "full":
        # A partial budget really approximates: it is not dense attention.
        assert (out - dense_attention(q, k, v, mask, 1.0 / math.sqrt(dim)).float()).abs().max() > 1e-4


@torch.no_grad()
def test_long_sequence_with_4096_budget_matches_hf():
    config = MraConfig(max_position_embeddings=4096, block_per_row=8)
    q, k, v = random_qkv(1, 1, 4096, 64, seed=4096)
    mask = right_padding(1, 4096, [4000])
    out = mra_attention(q, k, v, mask, num_blocks=config.num_blocks, scale=0.125)
    with emulated_mra_kernels() as modeling_mra:
        expected = modeling_mra.mra2_attention(q, k, v, mask, config.num_blocks, "full")
    assert (out - expected).abs().max() <= TOL


def tiny_model(**changes):
    preset = json.loads(resources.files("tensorkiln.reference.presets").joinpath("tiny-mra.json").read_text())
    model = build_model(dict(preset["config"], **changes), head="Model")
    return initialize_weights(model, seed=0, std=0.02)


@torch.no_grad()
def test_model_runs_up_to_max_positions_and_rejects_longer():
    model = tiny_model()
    for length in (1, 33, 256):
        out = model(input_ids=torch.randint(3, 512, (2, length))).last_hidden_state
        assert out.shape == (2, length, 64) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="sequence length 257 exceeds max_position_embeddings"):
        model(input_ids=torch.randint(3, 512, (1, 257)))


@torch.no_grad()
def test_model_runs_in_bfloat16():
    """HF's MRA cannot (its attention returns fp32 into bf16 layers); ours keeps the model's dtype."""
    model = tiny_model().to(torch.bfloat16)
    mask = torch.ones(2, 70)
    mask[1, 40:] = 0
    out = model(input_ids=torch.randint(3, 512, (2, 70)), attention_mask=mask).last_hidden_state
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(approx_mode="dense"), "approx_mode"),
        (dict(num_blocks=0), "num_blocks"),
        (dict(scale=0.0), "scale"),
        (dict(initial_prior_first_n_blocks=-1), "initial_prior"),
        (dict(key=torch.zeros(2, 2, 40, 16)), "key shape"),
        (dict(value=torch.zeros(2, 2, 48, 16, dtype=torch.float16)), "value dtype"),
        (dict(attention_mask=torch.ones(2, 47)), "attention_mask"),
        (dict(query=torch.zeros(2, 48, 16), key=torch.zeros(2, 48, 16), value=torch.zeros(2, 48, 16)), "query"),
    ],
)
def test_invalid_arguments_raise_clear_errors(change, message):
    q, k, v = random_qkv(2, 2, 48, 16)
    arguments = dict(query=q, key=k, value=v, attention_mask=torch.ones(2, 48), num_blocks=2, scale=0.25)
    arguments.update(change)
    with pytest.raises((ValueError, RuntimeError), match=message):
        mra_attention(**arguments)


def test_opcheck_schema_and_fake():
    q, k, v = random_qkv(2, 2, 50, 16)
    mask = right_padding(2, 50, [50, 20])
    torch.library.opcheck(
        torch.ops.tensorkiln.mra_attention.default, (q, k, v, mask),
        dict(num_blocks=3, scale=0.25, approx_mode="full", initial_prior_first_n_blocks=1,
             initial_prior_diagonal_n_blocks=1),
        test_utils=("test_schema", "test_faketensor"),
    )


def test_exports_as_one_node():
    class Attention(torch.nn.Module):
        def forward(self, q, k, v, mask):
            return mra_attention(q, k, v, mask, num_blocks=4, scale=0.25, approx_mode="sparse")

    q, k, v = random_qkv(1, 2, 64, 16)
    mask = torch.ones(1, 64)
    program = torch.export.export(Attention(), (q, k, v, mask))
    targets = [str(node.target) for node in program.graph.nodes if node.op == "call_function"]
    assert targets == ["tensorkiln.mra_attention.default"]
    assert torch.equal(program.module()(q, k, v, mask), Attention()(q, k, v, mask))
