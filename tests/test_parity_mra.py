"""Parity of reference/mra.py with ``transformers==4.57.6``'s MRA, every head, on CPU in fp32.

HF's attention needs its CUDA extension and returns zeros without it, so every HF forward here runs with the
extension emulated by ``tests/hf_mra_kernels.py`` (written from the CUDA source, independent of our op).

HF is only a valid oracle where HF itself is right:
* without padding (an all-ones mask survives HF's mask handling) at lengths that are multiples of 32 and where the
  configured block budget fits the input (else HF's top-k fails);
* with padding, HF garbles the mask (int32 overflow to -2**31, and rows handed to the wrong heads when B > 1).
  There we (a) run HF one sample at a time with its extended mask replaced by ``(m - 1) * 1e4``, which HF's own
  ``1 + m / 1e4`` turns back into the exact 0/1 mask, against ours batched with padding, and (b) run unmodified HF
  unpadded on the real tokens against ours right-padded to a length that is not a multiple of 32.
"""

from __future__ import annotations

import json
from importlib import resources

import pytest
import torch
import transformers
from hf_helpers import load_into_reference, max_abs_diff, randomize_parameters
from hf_mra_kernels import EmulatedMraKernels

from tensorkiln.reference import ConfigError, build_model
from tensorkiln.reference.mra import MraConfig
from tensorkiln.runtime.tolerances import REFERENCE_VS_HF_MAX_ABS as TOL

PARITY_HEADS = ["Model", "ForMaskedLM", "ForSequenceClassification", "ForMultipleChoice", "ForTokenClassification",
         "ForQuestionAnswering"]
VOCAB = 99

# name -> (HF config overrides, sequence length). Budgets are (max_position_embeddings // 32) * block_per_row.
VARIANTS = {
    # head_dim 32, 4 of 16 blocks
    "full-bpr1-hd32": (dict(num_attention_heads=2, block_per_row=1), 128),
    # head_dim 16 (HF pads it to 32), 8 of 16 blocks
    "sparse-bpr2-hd16-relu": (
        dict(num_attention_heads=4, block_per_row=2, approx_mode="sparse", hidden_act="relu"), 128),
    # head_dim 64, priors on, 12 of 16 blocks
    "full-priors-bpr3-hd64-gelunew": (
        dict(num_attention_heads=1, block_per_row=3, initial_prior_first_n_blocks=1,
             initial_prior_diagonal_n_blocks=3, hidden_act="gelu_new"), 128),
    # 2 of 4 blocks at length 64, priors on
    "sparse-priors-L64-silu": (
        dict(num_attention_heads=2, max_position_embeddings=64, block_per_row=1, approx_mode="sparse",
             initial_prior_diagonal_n_blocks=1, hidden_act="silu"), 64),
    # a 256-position model on a 128-token input: 8 of 16 blocks, first-n prior
    "full-maxpos256-first2": (
        dict(num_attention_heads=4, max_position_embeddings=256, block_per_row=1, initial_prior_first_n_blocks=2,
             hidden_act="gelu_pytorch_tanh"), 128),
    # the budget covers every block: exact attention
    "full-all-blocks-L64": (dict(num_attention_heads=2, block_per_row=1), 64),
}


@pytest.fixture(autouse=True)
def hf_kernels(monkeypatch):
    from transformers.models.mra import modeling_mra

    monkeypatch.setattr(modeling_mra, "mra_cuda_kernel", EmulatedMraKernels())


def hf_config(**overrides) -> transformers.MraConfig:
    settings = dict(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=96,
        max_position_embeddings=128, type_vocab_size=2, layer_norm_eps=1e-5, num_labels=3, pad_token_id=1,
    )
    settings.update(overrides)
    return transformers.MraConfig(**settings)


def hf_and_ours(head: str, config: transformers.MraConfig, tmp_path, seed: int = 0):
    hf = getattr(transformers, "Mra" + head)(config).eval()
    randomize_parameters(hf, seed=seed, scale=0.1)
    ours = load_into_reference(hf, tmp_path, head=head).eval()
    return hf, ours


def inputs(head: str, batch: int, length: int, seed: int = 0, choices: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (batch, choices, length) if head == "ForMultipleChoice" else (batch, length)
    return {
        "input_ids": torch.randint(3, VOCAB, shape, generator=g),
        "token_type_ids": torch.randint(0, 2, shape, generator=g),
    }


def outputs(result) -> dict[str, torch.Tensor]:
    return {k: v for k, v in result.items() if isinstance(v, torch.Tensor) and k != "loss"}


def assert_close(ours: dict, theirs: dict, tol: float = TOL) -> float:
    assert set(ours) == set(theirs), (sorted(ours), sorted(theirs))
    worst = max(max_abs_diff(ours[k], theirs[k]) for k in ours)
    assert worst <= tol, f"max abs error {worst:.3g} > {tol}"
    return worst


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("head", PARITY_HEADS)
@torch.no_grad()
def test_parity_without_padding(head, variant, tmp_path):
    overrides, length = VARIANTS[variant]
    hf, ours = hf_and_ours(head, hf_config(**overrides), tmp_path)
    batch = inputs(head, batch=2, length=length)
    expected = outputs(hf(**batch))
    got = ours(**batch).to_dict()
    assert not all(v.abs().max() == 0 for v in expected.values())
    assert_close(got, expected)


def _fix_hf_mask(hf_model) -> None:
    """Make HF's mask handling exact: its ``1 + m / 1e4`` then ``.int()`` turns ``(mask - 1) * 1e4`` into ``mask``."""
    base = getattr(hf_model, "mra", hf_model)
    base.get_extended_attention_mask = lambda mask, shape, *args, **kwargs: (
        (mask[:, None, None, :].float() - 1.0) * 10000.0
    )


@pytest.mark.parametrize("variant", ["full-bpr1-hd32", "sparse-bpr2-hd16-relu", "full-priors-bpr3-hd64-gelunew",
                                     "sparse-priors-L64-silu"])
@pytest.mark.parametrize("head", PARITY_HEADS)
@torch.no_grad()
def test_parity_with_padding_per_sample(head, variant, tmp_path):
    """Ours batched with right padding == HF one sample at a time with the 0/1 mask it means to use."""
    overrides, length = VARIANTS[variant]
    hf, ours = hf_and_ours(head, hf_config(**overrides), tmp_path, seed=1)
    _fix_hf_mask(hf)
    batch = inputs(head, batch=2, length=length, seed=1)
    real = [length, length - 45] if head != "ForMultipleChoice" else [length - 7, length - 40]
    mask = torch.zeros(batch["input_ids"].shape)
    for b, n in enumerate(real):
        mask[b, ..., :n] = 1.0
    if head == "ForMultipleChoice":
        mask[1, 1, length - 70:] = 0.0  # each choice its own padding
    got = ours(**batch, attention_mask=mask).to_dict()

    worst = 0.0
    choices = (0, 1) if head == "ForMultipleChoice" else (None,)
    for b, c in [(b, c) for b in range(2) for c in choices]:
        def pick(t, b=b, c=c):
            return t[b : b + 1] if c is None else t[b : b + 1, c : c + 1]

        single = {k: pick(v) for k, v in batch.items()}
        expected = outputs(hf(**single, attention_mask=pick(mask)))
        worst = max(worst, assert_close({k: pick(v) for k, v in got.items()}, expected))
    assert worst <= TOL


@pytest.mark.parametrize("head", ["Model", "ForTokenClassification", "ForQuestionAnswering"])
@torch.no_grad()
def test_padded_batch_matches_unpadded_hf(head, tmp_path):
    """Unmodified HF on 64 real tokens (batch 1, no padding) == ours on the same tokens right-padded to 90 in a
    batch whose other row has 90 real tokens. The budget (4 blocks) covers the real blocks, so both are exact."""
    hf, ours = hf_and_ours(head, hf_config(num_attention_heads=2, block_per_row=1), tmp_path, seed=2)
    batch = inputs(head, batch=2, length=90, seed=2)
    mask = torch.ones(2, 90)
    mask[0, 64:] = 0.0
    got = ours(**batch, attention_mask=mask).to_dict()
    expected = outputs(hf(**{k: v[:1, :64] for k, v in batch.items()}))
    assert_close({k: v[:1, :64] for k, v in got.items()}, expected)


@torch.no_grad()
def test_hf_mask_handling_is_broken_with_padding(tmp_path):
    """Why padding is compared per sample: in HF's own padded batch, the padded row AND the unpadded row (which
    gets the padded row's mask on some heads) disagree with HF run one sample at a time (or are NaN)."""
    hf, _ = hf_and_ours("Model", hf_config(num_attention_heads=2, block_per_row=1), tmp_path)
    batch = inputs("Model", batch=2, length=128)
    mask = torch.ones(2, 128)
    mask[1, 100:] = 0.0
    padded = hf(**batch, attention_mask=mask).last_hidden_state
    _fix_hf_mask(hf)
    for b, n in ((0, 128), (1, 100)):
        single = hf(**{k: v[b : b + 1] for k, v in batch.items()}, attention_mask=mask[b : b + 1]).last_hidden_state
        error = (padded[b, :n] - single[0, :n]).abs().max()
        assert not error <= 0.1, f"row {b}: HF's padded batch unexpectedly right (error {error})"  # NaN counts


@torch.no_grad()
def test_inputs_embeds_and_position_ids(tmp_path):
    config = hf_config(num_attention_heads=2, max_position_embeddings=96, block_per_row=1)
    hf, ours = hf_and_ours("Model", config, tmp_path)
    batch = inputs("Model", batch=2, length=64)  # a budget of 3 of the 4 blocks
    embeds = hf.embeddings.word_embeddings(batch["input_ids"])
    positions = torch.arange(64)[None].expand(2, 64) + 5
    expected = hf(inputs_embeds=embeds, token_type_ids=batch["token_type_ids"], position_ids=positions)
    got = ours(inputs_embeds=embeds, token_type_ids=batch["token_type_ids"], position_ids=positions)
    assert_close({"last_hidden_state": got.last_hidden_state}, {"last_hidden_state": expected.last_hidden_state})


def test_masked_lm_ties_decoder_to_word_embeddings(tmp_path):
    _, ours = hf_and_ours("ForMaskedLM", hf_config(), tmp_path)
    assert ours.cls.predictions.decoder.weight is ours.mra.embeddings.word_embeddings.weight
    assert ours.cls.predictions.decoder.bias is ours.cls.predictions.bias


@pytest.mark.parametrize(
    "key, value",
    [
        ("hidden_size", 66),  # not a multiple of num_attention_heads (4)
        ("approx_mode", "dense"),
        ("block_per_row", 0),
        ("max_position_embeddings", 16),
        ("position_embedding_type", "relative_key"),
        ("initial_prior_first_n_blocks", -1),
        ("hidden_act", "nope"),
    ],
)
def test_bad_config_names_the_key(key, value):
    config = hf_config(num_attention_heads=4).to_dict()
    config[key] = value
    with pytest.raises(ConfigError, match=key):
        MraConfig.from_hf_config(config)


def test_hf_default_config_parses_to_hf_defaults():
    ours = MraConfig.from_hf_config(transformers.MraConfig().to_dict())
    assert ours == MraConfig()


@pytest.mark.parametrize("name", ["mra-base-512-4", "mra-base-4096-8", "tiny-mra"])
def test_presets_parse(name):
    preset = json.loads(resources.files("tensorkiln.reference.presets").joinpath(f"{name}.json").read_text())
    assert preset["source"] and preset["description"]
    config = MraConfig.from_hf_config(preset["config"])
    assert transformers.MraConfig(**preset["config"]).to_dict()["block_per_row"] == config.block_per_row
    if name == "mra-base-4096-8":
        assert (config.max_position_embeddings, config.block_per_row, config.num_blocks) == (4096, 8, 1024)
    if name == "mra-base-512-4":
        assert config.num_blocks == 64


@torch.no_grad()
def test_tiny_preset_builds_and_runs():
    preset = json.loads(resources.files("tensorkiln.reference.presets").joinpath("tiny-mra.json").read_text())
    model = build_model(preset["config"])
    from tensorkiln.reference.init import initialize_weights

    initialize_weights(model, seed=0, std=0.02)
    ids = torch.randint(3, 512, (2, 200))
    mask = torch.ones(2, 200)
    mask[1, 150:] = 0
    logits = model(input_ids=ids, attention_mask=mask).logits
    assert logits.shape == (2, 200, 512) and torch.isfinite(logits).all()
