"""Parity of ``reference/mega.py`` with transformers 4.57.6's deprecated Mega, fp32 on CPU.

Every head x a spread of config variants (bidirectional or not, chunking, simple/rotary bias, every norm type with
random BatchNorm running stats, pre/post norm, NFFN on/off, each attention activation, truncation, token types,
tied or untied heads), batches with padding, the decoder (HF's cached full pass, HF's cache contents, token-by-token
decoding against full recomputation and against HF's own incremental steps), the decoder's cross-attention to an
encoder output (both biases, chunking, encoder padding, its cache), where we go beyond HF (chunk padding, left
padding, caching with chunking, an all-padding encoder output), and the config's validation. HF is the oracle:
expected values always come from HF's model run on the same (or an explicitly padded) input.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from tensorkiln.runtime.tolerances import REFERENCE_VS_HF_MAX_ABS as TOL

transformers = pytest.importorskip("transformers")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import transformers.models.deprecated.mega as hf_mega  # noqa: E402
from hf_helpers import load_into_reference, max_abs_diff, randomize_parameters  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from tensorkiln.reference import ConfigError, build_model  # noqa: E402
from tensorkiln.reference.init import initialize_weights  # noqa: E402
from tensorkiln.reference.mega import MegaConfig, MegaLayerCache  # noqa: E402

hf_logging.set_verbosity_error()  # HF warns on every deprecated-model build and decoder-less LM head
# HF's feature dropout calls dropout2d on 3-D input, which warns even in eval mode.
pytestmark = pytest.mark.filterwarnings("ignore:dropout2d:UserWarning")

PRESETS = Path(__file__).resolve().parents[1] / "reference" / "presets"
PAD = 1

PARITY_HEADS = [
    "Model", "ForCausalLM", "ForMaskedLM", "ForSequenceClassification", "ForMultipleChoice",
    "ForTokenClassification", "ForQuestionAnswering",
]
HF_CLASSES = {head: getattr(hf_mega, f"Mega{head}") for head in PARITY_HEADS}

BASE = dict(
    vocab_size=97, hidden_size=32, num_hidden_layers=2, intermediate_size=48, ema_projection_size=4,
    shared_representation_size=16, nffn_hidden_size=40, max_positions=32, pad_token_id=PAD, num_labels=3,
)
DECODER = dict(is_decoder=True, bidirectional=False)

VARIANTS = {
    "base": {},
    "uni_simple_layernorm_laplace": dict(bidirectional=False, relative_positional_bias="simple",
                                         normalization_type="layernorm", attention_activation="laplace"),
    "chunk_rmsnorm_relu2_trunc": dict(use_chunking=True, chunk_size=4, normalization_type="rmsnorm",
                                      attention_activation="relu2", truncation=3),
    "batchnorm_postnorm_types": dict(normalization_type="batchnorm", normalize_before_mega=False,
                                     normalize_before_ffn=False, norm_affine=False, add_token_type_embeddings=True,
                                     type_vocab_size=3, activation="gelu"),
    "syncbn_no_nffn_untied": dict(normalization_type="syncbatchnorm", use_normalized_ffn=False,
                                  add_lm_hidden_dense_layer=False, tie_word_embeddings=False,
                                  activation="gelu_accurate", ema_projection_size=1, use_feature_dropout=True),
    "decoder_chunk_simple": dict(DECODER, use_chunking=True, chunk_size=4, relative_positional_bias="simple",
                                 truncation=2),
}


def hf_config(**overrides):
    return hf_mega.MegaConfig(**{**BASE, **overrides})


@torch.no_grad()
def randomize(model, seed=0):
    """Every parameter random, and BatchNorm running statistics too (they are checkpoint buffers)."""
    randomize_parameters(model, seed=seed, scale=0.3)
    g = torch.Generator().manual_seed(seed + 1)
    for name, buffer in model.named_buffers():
        if name.endswith("running_mean"):
            buffer.copy_(torch.randn(buffer.shape, generator=g) * 0.3)
        elif name.endswith("running_var"):
            buffer.copy_(torch.rand(buffer.shape, generator=g) + 0.5)
    return model


def make_pair(tmp_path, head, seed=0, **overrides):
    if head == "ForQuestionAnswering":
        overrides = {"num_labels": 2, **overrides}  # HF splits qa_outputs into exactly (start, end)
    torch.manual_seed(seed)
    hf = randomize(HF_CLASSES[head](hf_config(**overrides)), seed).eval()
    ours = load_into_reference(hf, tmp_path, head=head)
    return hf, ours


def make_inputs(batch=3, length=12, seed=0, vocab=97):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, length - 3:] = 0  # right padding
    if batch > 2:
        mask[2, length - 5:] = 0  # spans a whole 4-chunk in the chunked variants
    ids[mask == 0] = PAD
    return ids, mask


OUTPUT_KEYS = {
    "Model": ["last_hidden_state", "pooler_output"],
    "ForCausalLM": ["logits"], "ForMaskedLM": ["logits"], "ForSequenceClassification": ["logits"],
    "ForMultipleChoice": ["logits"], "ForTokenClassification": ["logits"],
    "ForQuestionAnswering": ["start_logits", "end_logits"],
}


def assert_close(ours, theirs, what):
    assert not torch.isnan(theirs).any(), f"{what}: HF returned NaN"
    err = max_abs_diff(ours, theirs)
    assert err <= TOL, f"{what}: max abs error {err:.3g} > {TOL}"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("head", PARITY_HEADS)
def test_head_parity(tmp_path, head, variant):
    overrides = VARIANTS[variant]
    hf, ours = make_pair(tmp_path, head, **overrides)
    ids, mask = make_inputs()
    kwargs = dict(input_ids=ids, attention_mask=mask)
    if overrides.get("add_token_type_embeddings"):
        kwargs["token_type_ids"] = torch.randint(0, 3, ids.shape, generator=torch.Generator().manual_seed(5))
    if head == "ForMultipleChoice":  # (B, C, L): two choices per example
        kwargs = {k: torch.stack([v, v.flip(0)], dim=1) for k, v in kwargs.items()}
    with torch.no_grad():
        expected, got = hf(**kwargs), ours(**kwargs)
    for key in OUTPUT_KEYS[head]:
        assert_close(got[key], expected[key], f"{head}/{variant}/{key}")


def test_inputs_embeds_and_no_mask(tmp_path):
    hf, ours = make_pair(tmp_path, "Model", bidirectional=False, truncation=5)
    embeds = torch.randn(2, 9, BASE["hidden_size"], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert_close(ours(inputs_embeds=embeds).last_hidden_state, hf(inputs_embeds=embeds).last_hidden_state,
                     "inputs_embeds")


# ----------------------------------------------------------------------------------------------- decoder


@pytest.mark.parametrize("overrides", [
    dict(attention_activation="softmax", truncation=3),
    dict(attention_activation="laplace", relative_positional_bias="simple"),
    dict(attention_activation="relu2", use_chunking=True, chunk_size=4),
])
def test_decoder_full_pass_and_cache_match_hf(tmp_path, overrides):
    """HF's decoder runs its cached EMA path (use_cache defaults to true) on a full pass: truncation is ignored."""
    hf, ours = make_pair(tmp_path, "ForCausalLM", **DECODER, **overrides)
    ids, mask = make_inputs(length=12)
    with torch.no_grad():
        for use_cache in (None, False):
            expected, got = hf(ids, attention_mask=mask, use_cache=use_cache), ours(ids, mask, use_cache=use_cache)
            assert_close(got.logits, expected.logits, f"use_cache={use_cache}")
        if overrides.get("use_chunking"):
            return  # HF's cache with chunking is asserted broken in test_hf_cannot_cache_with_chunking
        expected, got = hf(ids, attention_mask=mask), ours(ids, mask)
        assert len(got.past_key_values) == len(expected.past_key_values)
        for layer_ours, layer_hf in zip(got.past_key_values, expected.past_key_values):
            assert isinstance(layer_ours, MegaLayerCache)
            for name, a, b in zip(MegaLayerCache._fields, layer_ours, layer_hf):
                assert_close(a, b, f"cache {name}")
        if overrides["attention_activation"] != "softmax":
            return  # HF's cached step is wrong for laplace/relu2: test_hf_incremental_elementwise_attention_is_wrong
        # HF's cache (plain tuples) continues in ours
        ones = torch.ones(3, 13, dtype=torch.long)
        step = ours(ids[:, :1], ones, past_key_values=expected.past_key_values).logits
        assert_close(step, hf(ids[:, :1], attention_mask=ones, past_key_values=expected.past_key_values).logits,
                     "step from HF's cache")


def test_truncation_is_ignored_on_hf_cache_path(tmp_path):
    hf, ours = make_pair(tmp_path, "ForCausalLM", **DECODER, truncation=2)
    ids, mask = make_inputs(length=10)
    with torch.no_grad():
        cached, stateless = hf(ids, attention_mask=mask, use_cache=True), hf(ids, attention_mask=mask, use_cache=False)
        assert max_abs_diff(cached.logits, stateless.logits) > 1e-3  # the quirk itself
        assert_close(ours(ids, mask, use_cache=True).logits, cached.logits, "cached")
        assert_close(ours(ids, mask, use_cache=False).logits, stateless.logits, "stateless")


def decode(model, ids, mask, prefill, step=1):
    """Prefill, then feed `step` tokens at a time with the cache; return the concatenated logits."""
    out = model(ids[:, :prefill], attention_mask=mask[:, :prefill], use_cache=True)
    logits, past = [out.logits], out.past_key_values
    for t in range(prefill, ids.shape[1], step):
        end = min(t + step, ids.shape[1])
        out = model(ids[:, t:end], attention_mask=mask[:, :end], past_key_values=past, use_cache=True)
        logits.append(out.logits)
        past = out.past_key_values
    return torch.cat(logits, dim=1)


@pytest.mark.parametrize("overrides, prefill, step", [
    (dict(), 1, 1),
    (dict(attention_activation="laplace"), 3, 1),
    (dict(attention_activation="relu2", relative_positional_bias="simple"), 2, 3),
    (dict(use_chunking=True, chunk_size=4), 1, 1),
    (dict(use_chunking=True, chunk_size=4, attention_activation="laplace"), 5, 2),
])
def test_incremental_decoding_equals_full_recomputation(tmp_path, overrides, prefill, step):
    """Against HF's full pass (the oracle) on the same tokens; right padding in the batch."""
    hf, ours = make_pair(tmp_path, "ForCausalLM", **DECODER, **overrides)
    ids, mask = make_inputs(length=16)
    ids, mask = ids[:, :13], mask[:, :13]
    with torch.no_grad():
        # HF needs whole chunks; 3 extra masked tokens at the end cannot change a causal model's first 13 outputs.
        tail_ids, tail_mask = torch.full((3, 3), PAD), torch.zeros(3, 3, dtype=torch.long)
        full = hf(torch.cat([ids, tail_ids], 1), attention_mask=torch.cat([mask, tail_mask], 1)).logits[:, :13]
        assert_close(ours(ids, mask).logits, full, "full pass")
        assert_close(decode(ours, ids, mask, prefill, step), full, "incremental")


@pytest.mark.parametrize("relative_positional_bias", ["rotary", "simple"])
def test_incremental_decoding_matches_hf_incremental(tmp_path, relative_positional_bias):
    """Where HF's own incremental path is right (softmax, no chunking, no padding), ours equals it step by step."""
    hf, ours = make_pair(tmp_path, "ForCausalLM", **DECODER, relative_positional_bias=relative_positional_bias)
    ids, _ = make_inputs(length=10)
    mask = torch.ones_like(ids)
    with torch.no_grad():
        assert_close(decode(ours, ids, mask, 2), decode(hf, ids, mask, 2), "incremental vs HF incremental")


def test_hf_incremental_elementwise_attention_is_wrong(tmp_path):
    """The HF quirk we do not reproduce: with a cache, laplace/relu2 divide the scores by 1, not by the visible keys."""
    hf, ours = make_pair(tmp_path, "ForCausalLM", **DECODER, attention_activation="laplace")
    ids, _ = make_inputs(length=8)
    mask = torch.ones_like(ids)
    with torch.no_grad():
        full = hf(ids, attention_mask=mask).logits
        assert max_abs_diff(decode(hf, ids, mask, 1), full) > 1e-3
        assert_close(decode(ours, ids, mask, 1), full, "ours incremental vs HF full")


def test_hf_cannot_cache_with_chunking(tmp_path):
    hf, _ = make_pair(tmp_path, "ForCausalLM", **DECODER, use_chunking=True, chunk_size=4)
    ids, mask = make_inputs(length=8)
    with torch.no_grad(), pytest.raises(RuntimeError):
        decode(hf, ids, mask, 4)


def test_bidirectional_decoder_cannot_cache(tmp_path):
    _, ours = make_pair(tmp_path, "ForCausalLM", is_decoder=True, bidirectional=True)
    ids, mask = make_inputs(length=6)
    with pytest.raises(ValueError, match="bidirectional"):
        ours(ids, mask)
    ours(ids, mask, use_cache=False)


def test_cache_needs_a_mask_covering_the_past(tmp_path):
    _, ours = make_pair(tmp_path, "ForCausalLM", **DECODER)
    ids, mask = make_inputs(length=6)
    with torch.no_grad():
        past = ours(ids[:, :4], mask[:, :4]).past_key_values
        with pytest.raises(ValueError, match="attention_mask must be"):
            ours(ids[:, 4:5], mask[:, 4:5], past_key_values=past)


# ----------------------------------------------------------------------------------------------- cross-attention

CROSS = dict(DECODER, add_cross_attention=True)
CROSS_HEADS = ["Model", "ForCausalLM", "ForMaskedLM"]  # the heads whose HF forward takes encoder_hidden_states


def make_encoder(batch=3, length=5, seed=0):
    """Encoder output (B, Ls, D) and its padding mask: right padding in row 1, left padding in row 2."""
    g = torch.Generator().manual_seed(seed + 100)
    states = torch.randn(batch, length, BASE["hidden_size"], generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, length - 2:] = 0
    if batch > 2:
        mask[2, :1] = 0
    return states, mask


CROSS_VARIANTS = {  # overrides, decoder length, encoder length
    "rotary_softmax": (dict(), 12, 5),
    "simple_laplace": (dict(relative_positional_bias="simple"), 7, 9),
    # relu2 squares the scores: with these random weights it is too ill-conditioned for 1e-5 after a layer norm
    # (HF's own fp32 logits are 2e-5 to 4e-5 off its fp64 ones with layernorm, batchnorm or rmsnorm); scalenorm here.
    "rotary_relu2": (dict(attention_activation="relu2"), 6, 4),
    "simple_postnorm_layernorm": (dict(relative_positional_bias="simple", normalize_before_mega=False,
                                       normalization_type="layernorm", activation="gelu"), 9, 3),
    "chunk_rotary_laplace_rmsnorm": (dict(use_chunking=True, chunk_size=4, attention_activation="laplace",
                                          normalization_type="rmsnorm"), 12, 7),
    "chunk_simple": (dict(use_chunking=True, chunk_size=4, relative_positional_bias="simple"), 4, 3),
    "bidirectional_uncached_trunc": (dict(bidirectional=True, use_cache=False, truncation=3,
                                          normalization_type="batchnorm"), 8, 6),
}


@pytest.mark.parametrize("variant", sorted(CROSS_VARIANTS))
@pytest.mark.parametrize("head", CROSS_HEADS)
def test_cross_attention_parity(tmp_path, head, variant):
    """Decoder and encoder of different lengths, padding in both; the cache HF returns on the same pass too."""
    overrides, length, source_length = CROSS_VARIANTS[variant]
    hf, ours = make_pair(tmp_path, head, **{**CROSS, **overrides})
    ids, mask = make_inputs(length=length)
    encoder, encoder_mask = make_encoder(length=source_length)
    kwargs = dict(input_ids=ids, attention_mask=mask, encoder_hidden_states=encoder,
                  encoder_attention_mask=encoder_mask)
    with torch.no_grad():
        expected, got = hf(**kwargs), ours(**kwargs)
    for key in OUTPUT_KEYS[head]:
        assert_close(got[key], expected[key], f"{head}/{variant}/{key}")
    if head == "ForCausalLM" and expected.past_key_values is not None:
        for layer_ours, layer_hf in zip(got.past_key_values, expected.past_key_values, strict=True):
            assert len(layer_hf) == 5 and layer_ours.length == length
            layer_ours = layer_ours[:5]
            if overrides.get("use_chunking"):  # HF keeps the chunk's keys, or None at a chunk boundary (length 12)
                layer_hf, layer_ours = layer_hf[2:], layer_ours[2:]
            for a, b in zip(layer_ours, layer_hf, strict=True):
                assert_close(a, b, f"{variant} cache")


@pytest.mark.parametrize("overrides, length", [
    (dict(use_chunking=True, chunk_size=4, relative_positional_bias="simple"), 8),  # decoder longer than a chunk
    (dict(relative_positional_bias="simple", max_positions=8), 6),  # encoder longer than max_positions
])
def test_cross_attention_simple_bias_limit_is_refused_like_hf(tmp_path, overrides, length):
    """The simple bias covers chunk_size (or max_positions) positions; HF's cross-attention asks for the longer of
    the two lengths and refuses beyond it. Our error says which limit and why."""
    hf, ours = make_pair(tmp_path, "ForCausalLM", **CROSS, **overrides)
    ids, mask = make_inputs(length=length)
    encoder, encoder_mask = make_encoder(length=9)
    kwargs = dict(attention_mask=mask, encoder_hidden_states=encoder, encoder_attention_mask=encoder_mask)
    with torch.no_grad():
        with pytest.raises(ValueError, match="going beyond max length"):
            hf(ids, **kwargs)
        with pytest.raises(ValueError, match="simple relative bias covers at most"):
            ours(ids, **kwargs)


@pytest.mark.parametrize("activation", ["softmax", "laplace", "relu2"])
def test_cross_attention_to_all_padding_attends_to_nothing(tmp_path, activation):
    """A sequence whose encoder output is all padding: HF's softmax and relu2 give NaN (its laplace divides by 0
    and so lands on zero weights). Ours attends to nothing, checked against HF given one encoder token whose
    cross-attention value act(v_proj(src)) is exactly 0 (one layer, so one v_proj to solve): any attention to that
    token adds nothing, whatever its weight."""
    hf, ours = make_pair(tmp_path, "ForCausalLM", **CROSS, num_hidden_layers=1, attention_activation=activation)
    ids, mask = make_inputs(length=6)
    encoder, encoder_mask = make_encoder(length=4)
    encoder_mask[0] = 0
    v_proj = hf.mega.layers[0].cross_attn.v_proj
    zero_value = torch.linalg.solve(v_proj.weight.double(), -v_proj.bias.double()).float()  # v_proj(src) = 0
    extra = dict(encoder_hidden_states=encoder, encoder_attention_mask=encoder_mask)
    with torch.no_grad():
        theirs = hf(ids, mask, **extra).logits
        assert torch.isnan(theirs[0]).any() == (activation != "laplace")
        got = ours(ids, mask, **extra).logits
        expected = hf(ids[:1], mask[:1], encoder_hidden_states=zero_value.view(1, 1, -1)).logits
        assert_close(got[:1], expected, "all-padding encoder row")
        assert_close(got[1:], theirs[1:], "other rows")


def decode_cross(model, ids, mask, encoder, encoder_mask, prefill, step=1):
    """decode() with an encoder output: HF needs encoder_hidden_states on every step (it then uses its cache)."""
    extra = dict(encoder_hidden_states=encoder, encoder_attention_mask=encoder_mask)
    out = model(ids[:, :prefill], attention_mask=mask[:, :prefill], use_cache=True, **extra)
    logits, past = [out.logits], out.past_key_values
    for t in range(prefill, ids.shape[1], step):
        end = min(t + step, ids.shape[1])
        out = model(ids[:, t:end], attention_mask=mask[:, :end], past_key_values=past, use_cache=True, **extra)
        logits.append(out.logits)
        past = out.past_key_values
    return torch.cat(logits, dim=1)


@pytest.mark.parametrize("overrides, prefill, step", [
    (dict(), 1, 1),
    (dict(relative_positional_bias="simple", attention_activation="laplace"), 3, 2),
    (dict(use_chunking=True, chunk_size=4), 1, 1),  # HF cannot cache with chunking: against its full pass only
    (dict(use_chunking=True, chunk_size=4, attention_activation="relu2"), 5, 3),
])
def test_cross_attention_incremental_equals_full_recomputation(tmp_path, overrides, prefill, step):
    """Against HF's full pass on the same tokens (the oracle); padding in the decoder batch and in the encoder."""
    hf, ours = make_pair(tmp_path, "ForCausalLM", **CROSS, **overrides)
    ids, mask = make_inputs(length=16)
    ids, mask = ids[:, :13], mask[:, :13]
    encoder, encoder_mask = make_encoder(length=6)
    extra = dict(encoder_hidden_states=encoder, encoder_attention_mask=encoder_mask)
    with torch.no_grad():
        # HF needs whole chunks; 3 extra masked tokens at the end cannot change a causal model's first 13 outputs.
        tail_ids, tail_mask = torch.full((3, 3), PAD), torch.zeros(3, 3, dtype=torch.long)
        full = hf(torch.cat([ids, tail_ids], 1), attention_mask=torch.cat([mask, tail_mask], 1), **extra).logits
        full = full[:, :13]
        assert_close(ours(ids, mask, **extra).logits, full, "full pass")
        assert_close(decode_cross(ours, ids, mask, encoder, encoder_mask, prefill, step), full, "incremental")


@pytest.mark.parametrize("relative_positional_bias", ["rotary", "simple"])
def test_cross_attention_cache_matches_hf(tmp_path, relative_positional_bias):
    """HF's cached cross-attention takes the bias row of position P + 1 for the token at position P. Where that
    cannot matter (the cross-attention bias made position-free: a constant simple table, a zero rotary alpha),
    HF's cached steps and cache contents equal ours; with a real bias HF's steps leave its own full pass, ours
    do not. HF's own cache tuples continue in ours."""
    hf, ours = make_pair(tmp_path / "random", "ForCausalLM", **CROSS, relative_positional_bias=relative_positional_bias)
    ids, _ = make_inputs(length=9)
    mask = torch.ones_like(ids)  # HF's cached self-attention is right only without padding
    encoder, encoder_mask = make_encoder(length=5)
    extra = dict(encoder_hidden_states=encoder, encoder_attention_mask=encoder_mask)
    with torch.no_grad():
        full = hf(ids, mask, **extra).logits
        assert max_abs_diff(decode_cross(hf, ids, mask, encoder, encoder_mask, 3), full) > 1e-3  # the quirk
        assert_close(decode_cross(ours, ids, mask, encoder, encoder_mask, 3), full, "ours incremental vs HF full")
        # HF's 5-tuples (no length field) continue in ours
        past = hf(ids[:, :4], mask[:, :4], use_cache=True, **extra).past_key_values
        step = ours(ids[:, 4:6], mask[:, :6], past_key_values=past, encoder_attention_mask=encoder_mask).logits
        assert_close(step, full[:, 4:6], "steps from HF's cache")

        for layer in hf.mega.layers:  # a position-free cross-attention bias
            if relative_positional_bias == "simple":
                layer.cross_attn.rel_pos_bias.rel_pos_bias.fill_(0.3)
            else:
                layer.cross_attn.rel_pos_bias.alpha.zero_()
        ours = load_into_reference(hf, tmp_path / "position_free", head="ForCausalLM")
        assert_close(decode_cross(ours, ids, mask, encoder, encoder_mask, 3),
                     decode_cross(hf, ids, mask, encoder, encoder_mask, 3), "incremental vs HF incremental")
        past_hf = hf(ids[:, :4], mask[:, :4], use_cache=True, **extra).past_key_values
        past_hf = hf(ids[:, 4:5], mask[:, :5], past_key_values=past_hf, use_cache=True, **extra).past_key_values
        past_ours = ours(ids[:, :4], mask[:, :4], use_cache=True, **extra).past_key_values
        past_ours = ours(ids[:, 4:5], mask[:, :5], past_key_values=past_ours, encoder_attention_mask=encoder_mask)
        for layer_ours, layer_hf in zip(past_ours.past_key_values, past_hf, strict=True):
            assert layer_ours.length == 5
            for name, a, b in zip(MegaLayerCache._fields, layer_ours, layer_hf, strict=False):
                assert_close(a, b, f"cache {name}")


def test_cross_attention_input_errors(tmp_path):
    _, ours = make_pair(tmp_path / "cross", "ForCausalLM", **CROSS, use_chunking=True, chunk_size=4)
    ids, mask = make_inputs(length=6)
    encoder, encoder_mask = make_encoder(length=5)
    with torch.no_grad():
        with pytest.raises(ValueError, match="pass encoder_hidden_states"):
            ours(ids, mask)
        with pytest.raises(ValueError, match="encoder_hidden_states must be"):
            ours(ids, mask, encoder_hidden_states=encoder[:2])
        with pytest.raises(ValueError, match="encoder_attention_mask must be"):
            ours(ids, mask, encoder_hidden_states=encoder, encoder_attention_mask=encoder_mask[:, :4])
        past = ours(ids, mask, encoder_hidden_states=encoder).past_key_values
        hf_style = tuple(tuple(layer[:5]) for layer in past)  # no length: a chunked cache cannot tell its position
        with pytest.raises(ValueError, match="must carry its length"):
            ours(ids[:, :1], past_key_values=hf_style)
    _, plain = make_pair(tmp_path / "plain", "ForCausalLM", **DECODER)
    with pytest.raises(ValueError, match="no cross-attention"):
        plain(ids, mask, encoder_hidden_states=encoder)
    # HF's classification heads build with cross-attention but take no encoder output, so they always raise
    hf, classifier = make_pair(tmp_path / "classifier", "ForSequenceClassification", **CROSS)
    with torch.no_grad(), pytest.raises(ValueError, match="without providing encoder hidden states"):
        hf(ids, mask)
    with torch.no_grad(), pytest.raises(ValueError, match="pass encoder_hidden_states"):
        classifier(ids, mask)


# ----------------------------------------------------------------------------------------------- beyond HF


@pytest.mark.parametrize("overrides, length, mask_padding", [
    (dict(use_chunking=True, chunk_size=4), 10, False),  # encoder, not a multiple of the chunk
    (dict(use_chunking=True, chunk_size=4, attention_activation="laplace"), 9, True),
    (dict(DECODER, use_chunking=True, chunk_size=8), 6, False),  # causal and shorter than a chunk
    (dict(DECODER, use_chunking=True, chunk_size=4, attention_activation="relu2"), 11, True),
])
def test_chunking_pads_like_explicit_padding(tmp_path, overrides, length, mask_padding):
    """HF fails on these lengths; ours equals HF on the input padded to whole chunks with masked positions."""
    hf, ours = make_pair(tmp_path, "Model", **overrides)
    chunk = overrides["chunk_size"]
    padded_length = -(-length // chunk) * chunk
    ids, mask = make_inputs(batch=2, length=padded_length)
    mask[:, length:] = 0
    ids[:, length:] = PAD
    if not mask_padding:
        mask[:, :length] = 1
    with torch.no_grad():
        with pytest.raises(RuntimeError):
            hf(ids[:, :length], attention_mask=mask[:, :length])
        expected = hf(ids, attention_mask=mask).last_hidden_state[:, :length]
        got = ours(ids[:, :length], attention_mask=mask[:, :length] if mask_padding else None).last_hidden_state
    assert_close(got, expected, "chunk padding")


def test_left_padded_causal_softmax_is_finite(tmp_path):
    """HF returns NaN for the whole left-padded row; ours gives the unpadded sequence's outputs on the real tokens."""
    hf, ours = make_pair(tmp_path, "Model", **DECODER, relative_positional_bias="simple")
    ids, _ = make_inputs(batch=2, length=9)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    ids[1, :3] = PAD
    with torch.no_grad():
        assert torch.isnan(hf(ids, attention_mask=mask).last_hidden_state[1]).all()
        got = ours(ids, attention_mask=mask).last_hidden_state
        assert torch.isfinite(got).all()
        assert_close(got[0], hf(ids[:1], attention_mask=mask[:1]).last_hidden_state[0], "unpadded row")
        assert_close(got[1, 3:], hf(ids[1:, 3:]).last_hidden_state[0], "left-padded row")


# ----------------------------------------------------------------------------------------------- config, presets


@pytest.mark.parametrize("key, value", [
    ("chunk_size", 0), ("truncation", 0), ("normalization_type", "groupnorm"), ("attention_activation", "gelu"),
    ("relative_positional_bias", "alibi"), ("shared_representation_size", 15), ("activation", "swiglu"),
    ("add_cross_attention", True), ("hidden_size", 0), ("pad_token_id", 500),
])
def test_bad_config_names_the_key(key, value):
    config = {**BASE, "model_type": "mega", key: value}
    if key == "chunk_size":
        config["use_chunking"] = True
    with pytest.raises(ConfigError, match=f"'{key}'"):
        MegaConfig.from_hf_config(config)


def test_input_errors(tmp_path):
    _, ours = make_pair(tmp_path, "Model", relative_positional_bias="simple")
    with pytest.raises(ValueError, match="simple relative bias"):
        ours(torch.ones(1, BASE["max_positions"] + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="exactly one"):
        ours()
    with pytest.raises(ValueError, match="past_key_values needs a decoder"):
        ours(torch.ones(1, 3, dtype=torch.long), past_key_values=())
    with pytest.raises(ConfigError, match="'num_labels'"):
        build_model(MegaConfig.from_hf_config({**BASE, "model_type": "mega"}), head="ForQuestionAnswering")


def test_gelu_accurate_alias_is_hfs_formula():
    from transformers.activations import ACT2FN

    from tensorkiln.reference.activations import get_activation

    x = torch.linspace(-6, 6, 101)
    assert max_abs_diff(get_activation("gelu_new")(x), ACT2FN["gelu_accurate"](x)) == 0


@pytest.mark.parametrize("name", ["mega-base-wikitext", "tiny-mega"])
def test_presets_parse(name):
    preset = json.loads((PRESETS / f"{name}.json").read_text())
    config = MegaConfig.from_hf_config(preset["config"])
    theirs = hf_mega.MegaConfig.from_dict(preset["config"])
    for field in ("hidden_size", "num_hidden_layers", "vocab_size", "bidirectional", "ema_projection_size",
                  "normalization_type", "relative_positional_bias", "max_positions", "is_decoder"):
        assert getattr(config, field) == getattr(theirs, field), field


def test_tiny_preset_builds_runs_and_matches_hf(tmp_path):
    preset = json.loads((PRESETS / "tiny-mega.json").read_text())["config"]
    model = initialize_weights(build_model(preset), seed=0, std=0.02)
    ids = torch.randint(3, preset["vocab_size"], (2, 7))
    with torch.no_grad():
        out = model(ids)
    assert out.logits.shape == (2, 7, preset["vocab_size"]) and torch.isfinite(out.logits).all()
    # our random init loads into HF and gives HF's numbers
    from tensorkiln.reference import save_pretrained

    save_pretrained(model, tmp_path / "tiny")
    hf = hf_mega.MegaForCausalLM.from_pretrained(tmp_path / "tiny").eval()
    with torch.no_grad():
        assert_close(out.logits, hf(ids).logits, "tiny preset")
