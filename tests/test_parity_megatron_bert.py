"""MegatronBERT parity: every head and config variant of ``reference/megatron_bert.py`` against transformers 4.57.6.

HF models get random weights (every parameter, biases and norms included), go through HF's own ``save_pretrained``
and load strictly into ours; outputs must agree to 1e-5 in fp32 on CPU, padded positions included (HF's finite
``finfo.min`` mask gives fully masked rows a uniform softmax, and we must reproduce that number too).
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import transformers
from hf_helpers import load_into_reference, max_abs_diff, randomize_parameters
from transformers.cache_utils import EncoderDecoderCache

from tensorkiln.reference import ConfigError, from_pretrained, get_architecture
from tensorkiln.reference.megatron_bert import MegatronBertConfig
from tensorkiln.reference.presets import get_preset, init_checkpoint
from tensorkiln.runtime.tolerances import REFERENCE_VS_HF_MAX_ABS as ATOL

VOCAB = 99
ARCH = get_architecture("megatron-bert")

TINY = dict(
    vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
    max_position_embeddings=24, type_vocab_size=3, pad_token_id=0,
)

# HF's relative positions change with the mere presence of a cache object (see test_hf_relative_positions_*),
# and HF decoders build one by default; parity runs HF with use_cache=False, which is what we compute.
VARIANTS = {
    "absolute": {},
    "relative_key": {"position_embedding_type": "relative_key"},
    "relative_key_query": {"position_embedding_type": "relative_key_query"},
    "decoder": {"is_decoder": True},
    "decoder_relative_key_query": {"is_decoder": True, "position_embedding_type": "relative_key_query",
                                   "use_cache": False},
    "relu_untied": {"hidden_act": "relu", "tie_word_embeddings": False, "layer_norm_eps": 1e-5},
    "gelu_new": {"hidden_act": "gelu_new", "pad_token_id": None},
    "silu_relative_key": {"hidden_act": "silu", "position_embedding_type": "relative_key"},
}

#: Every head, with the output fields compared against HF (test_registry.py reads this literal).
PARITY_HEADS = {
    "Model": ("last_hidden_state", "pooler_output"),
    "ForPreTraining": ("prediction_logits", "seq_relationship_logits"),
    "ForCausalLM": ("logits",),
    "ForMaskedLM": ("logits",),
    "ForNextSentencePrediction": ("logits",),
    "ForSequenceClassification": ("logits",),
    "ForMultipleChoice": ("logits",),
    "ForTokenClassification": ("logits",),
    "ForQuestionAnswering": ("start_logits", "end_logits"),
}


def hf_config(**overrides) -> transformers.MegatronBertConfig:
    kwargs = {**TINY, "num_labels": 3}
    kwargs.update(overrides)
    return transformers.MegatronBertConfig(**kwargs)


def build_pair(tmp_path, head: str, config: transformers.MegatronBertConfig, seed: int = 0):
    hf_class = getattr(transformers, ARCH.hf_class_name(head))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf_model = randomize_parameters(hf_class(config), seed=seed, scale=0.2).eval()
        ours = load_into_reference(hf_model, tmp_path, head=head)
    return hf_model, ours


def padding_mask(batch: int, length: int) -> torch.Tensor:
    """Row 0 full, row 1 right-padded, row 2 left-padded (so a decoder's first query sees only padding)."""
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, length - 3:] = 0
    if batch > 2:
        mask[2, :2] = 0
    return mask


def make_inputs(head: str, generator: torch.Generator, batch: int = 3, length: int = 7, with_types: bool = True):
    shape = (batch, 2, length) if head == "ForMultipleChoice" else (batch, length)
    ids = torch.randint(1, VOCAB, shape, generator=generator)
    mask = padding_mask(batch * shape[1] if len(shape) == 3 else batch, length).view(shape)
    inputs = {"input_ids": ids, "attention_mask": mask}
    if with_types:
        inputs["token_type_ids"] = torch.randint(0, TINY["type_vocab_size"], shape, generator=generator)
    return inputs


def assert_parity(ours_out, hf_out, fields) -> float:
    worst = 0.0
    for field in fields:
        err = max_abs_diff(ours_out[field], getattr(hf_out, field))
        assert err <= ATOL, f"{field}: max abs error {err:.3g} > {ATOL}"
        worst = max(worst, err)
    return worst


# ----------------------------------------------------------------------------------------------- every head


def _head_variant_matrix():
    """Every head x every variant; half of the pairs (a checkerboard, so each head meets four variants and each
    variant four or five heads) run by default, the rest under ``-m slow``."""
    for i, head in enumerate(PARITY_HEADS):
        for j, variant in enumerate(VARIANTS):
            marks = () if (i + j) % 2 == 0 else (pytest.mark.slow,)
            yield pytest.param(head, variant, marks=marks, id=f"{head}-{variant}")


@pytest.mark.parametrize("head,variant", list(_head_variant_matrix()))
def test_head_parity(tmp_path, head, variant):
    # Question answering reads exactly two labels (start, end); the other heads get three.
    config = hf_config(**VARIANTS[variant], **({"num_labels": 2} if head == "ForQuestionAnswering" else {}))
    hf_model, ours = build_pair(tmp_path, head, config)
    assert set(ours.state_dict()) == set(hf_model.state_dict())
    generator = torch.Generator().manual_seed(1)
    for with_types in (True, False):
        inputs = make_inputs(head, generator, with_types=with_types)
        with torch.no_grad():
            assert_parity(ours(**inputs), hf_model(**inputs), PARITY_HEADS[head])


def test_every_hf_head_is_registered():
    from transformers.models.megatron_bert import modeling_megatron_bert

    hf_heads = {name[len("MegatronBert"):] for name in modeling_megatron_bert.__all__
                if name != "MegatronBertPreTrainedModel"}
    assert hf_heads == set(ARCH.heads) == set(PARITY_HEADS)


@pytest.mark.parametrize("tied", [True, False])
def test_lm_decoder_tying_follows_config(tmp_path, tied):
    hf_model, ours = build_pair(tmp_path, "ForMaskedLM", hf_config(tie_word_embeddings=tied))
    shared = ours.cls.predictions.decoder.weight is ours.bert.embeddings.word_embeddings.weight
    hf_shared = hf_model.cls.predictions.decoder.weight is hf_model.bert.embeddings.word_embeddings.weight
    assert shared == hf_shared == tied
    assert ours.cls.predictions.decoder.bias is ours.cls.predictions.bias


def test_model_inputs_embeds_position_ids_and_3d_mask(tmp_path):
    hf_model, ours = build_pair(tmp_path, "Model", hf_config(is_decoder=True))
    generator = torch.Generator().manual_seed(2)
    embeds = torch.randn(2, 6, 32, generator=generator)
    positions = torch.tensor([[3, 4, 5, 6, 7, 8], [0, 0, 1, 2, 3, 4]])
    # A 3D mask is used as given: HF adds no causal mask to it, even in a decoder.
    mask3d = (torch.rand(2, 6, 6, generator=generator) > 0.3).long()
    for inputs in (
        {"inputs_embeds": embeds, "position_ids": positions},
        {"inputs_embeds": embeds, "attention_mask": mask3d},
        {"input_ids": torch.randint(1, VOCAB, (2, 6), generator=generator), "attention_mask": mask3d.float()},
    ):
        with torch.no_grad():
            assert_parity(ours(**inputs, use_cache=False), hf_model(**inputs, use_cache=False),
                          PARITY_HEADS["Model"])


def test_converted_megatron_checkpoint_layout_loads(tmp_path):
    """HF's convert_megatron_bert_checkpoint.py writes pytorch_model.bin with the decoder weight copied, no
    ``cls.predictions.decoder.bias`` (it is ``cls.predictions.bias``); older checkpoints also carry position_ids."""
    hf_model, _ = build_pair(tmp_path / "pair", "ForPreTraining", hf_config())
    state = {k: v.clone() for k, v in hf_model.state_dict().items() if k != "cls.predictions.decoder.bias"}
    state["bert.embeddings.position_ids"] = torch.arange(TINY["max_position_embeddings"]).unsqueeze(0)
    folder = tmp_path / "converted"
    folder.mkdir()
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps({**hf_model.config.to_dict(), "architectures": None}))
    ours = from_pretrained(folder, head="ForPreTraining")
    inputs = make_inputs("ForPreTraining", torch.Generator().manual_seed(9))
    with torch.no_grad():
        assert_parity(ours(**inputs), hf_model(**inputs), PARITY_HEADS["ForPreTraining"])


# ----------------------------------------------------------------------------------------------- cross-attention


@pytest.mark.parametrize("position", ["absolute", "relative_key", "relative_key_query"])
def test_cross_attention_parity(tmp_path, position):
    config = hf_config(is_decoder=True, add_cross_attention=True, position_embedding_type=position, use_cache=False)
    hf_model, ours = build_pair(tmp_path, "ForCausalLM", config)
    generator = torch.Generator().manual_seed(3)
    inputs = make_inputs("ForCausalLM", generator)
    encoder_states = torch.randn(3, 5, 32, generator=generator)
    encoder_mask = torch.ones(3, 5, dtype=torch.long)
    encoder_mask[1, 3:] = 0
    for extra in ({"encoder_hidden_states": encoder_states, "encoder_attention_mask": encoder_mask},
                  {"encoder_hidden_states": encoder_states}, {}):
        with torch.no_grad():
            assert_parity(ours(**inputs, **extra), hf_model(**inputs, **extra), ("logits",))


# ----------------------------------------------------------------------------------------------- KV cache


def decode_incrementally(model, ids, mask, chunks, **extra):
    """Feed ``ids`` in chunks of the given sizes through the cache; return the logits of every position."""
    past, logits, start = None, [], 0
    for size in chunks:
        with torch.no_grad():
            out = model(input_ids=ids[:, start:start + size], attention_mask=mask[:, :start + size],
                        past_key_values=past, use_cache=True, **extra)
        logits.append(out.logits)
        past, start = out.past_key_values, start + size
    return torch.cat(logits, dim=1), past


CACHE_VARIANTS = {
    "absolute": {},
    "relative_key": {"position_embedding_type": "relative_key"},
    "relative_key_query": {"position_embedding_type": "relative_key_query"},
    "cross_relative_key_query": {"position_embedding_type": "relative_key_query", "add_cross_attention": True},
}


@pytest.mark.parametrize("variant", list(CACHE_VARIANTS))
def test_incremental_decoding_equals_full_recomputation(tmp_path, variant):
    config = hf_config(is_decoder=True, use_cache=False, **CACHE_VARIANTS[variant])
    hf_model, ours = build_pair(tmp_path, "ForCausalLM", config)
    generator = torch.Generator().manual_seed(4)
    ids = torch.randint(1, VOCAB, (3, 9), generator=generator)
    mask = padding_mask(3, 9)
    extra = {}
    if config.add_cross_attention:
        extra["encoder_hidden_states"] = torch.randn(3, 4, 32, generator=generator)
    with torch.no_grad():
        full = ours(input_ids=ids, attention_mask=mask, use_cache=False, **extra).logits
        hf_full = hf_model(input_ids=ids, attention_mask=mask, use_cache=False, **extra).logits
    assert max_abs_diff(full, hf_full) <= ATOL
    # A query whose keys are all padding (row 2's first two) gets a uniform softmax over the keys present, which
    # grow while decoding: such positions carry no information, and every other position must agree.
    real = mask.bool()
    for chunks in ([9], [3, 1, 1, 2, 1, 1], [1] * 9):
        stepped, past = decode_incrementally(ours, ids, mask, chunks, **extra)
        assert max_abs_diff(stepped[real], full[real]) <= ATOL, chunks
        assert len(past) == TINY["num_hidden_layers"]
        assert past[0][0].shape == (3, 4, 9, 8)  # (B, H, T, head_dim)
        assert len(past[0]) == (4 if config.add_cross_attention else 2)


@pytest.mark.parametrize("variant", list(CACHE_VARIANTS))
def test_cache_matches_hf_cache(tmp_path, variant):
    """Step both models through their caches. HF is only right for one-token steps with relative positions, and
    only without cross-attention (see the quirk tests), so those variants feed the prompt one token at a time and
    leave cross-attention positions absolute."""
    overrides = dict(CACHE_VARIANTS[variant])
    if overrides.get("add_cross_attention"):
        overrides["position_embedding_type"] = "absolute"
    config = hf_config(is_decoder=True, **overrides)
    hf_model, ours = build_pair(tmp_path, "ForCausalLM", config)
    generator = torch.Generator().manual_seed(5)
    ids = torch.randint(1, VOCAB, (3, 8), generator=generator)
    mask = padding_mask(3, 8)
    chunks = [1] * 8 if config.position_embedding_type != "absolute" else [4, 1, 1, 2]
    extra = {}
    if config.add_cross_attention:
        extra["encoder_hidden_states"] = torch.randn(3, 5, 32, generator=generator)
    ours_past = hf_past = None
    start = 0
    for size in chunks:
        step = {"input_ids": ids[:, start:start + size], "attention_mask": mask[:, :start + size], "use_cache": True}
        with torch.no_grad():
            ours_out = ours(**step, past_key_values=ours_past, **extra)
            hf_out = hf_model(**step, past_key_values=hf_past, **extra)
        assert max_abs_diff(ours_out.logits, hf_out.logits) <= ATOL
        hf_legacy = hf_out.past_key_values.to_legacy_cache()
        for ours_layer, hf_layer in zip(ours_out.past_key_values, hf_legacy, strict=True):
            hf_layer = tuple(t for t in hf_layer if t is not None)  # HF pads with None where no cross cache
            assert len(ours_layer) == len(hf_layer)
            for a, b in zip(ours_layer, hf_layer):
                assert max_abs_diff(a, b) <= ATOL
        ours_past, hf_past, start = ours_out.past_key_values, hf_out.past_key_values, start + size
    # Our tuple cache also drives HF (its legacy layout), continuing from where both stopped.
    nxt = {"input_ids": ids[:, -1:], "attention_mask": torch.ones(3, 9, dtype=torch.long), "use_cache": True}
    with torch.no_grad():
        hf_from_ours = hf_model(**nxt, past_key_values=EncoderDecoderCache.from_legacy_cache(ours_past), **extra)
        assert max_abs_diff(ours(**nxt, past_key_values=ours_past, **extra).logits, hf_from_ours.logits) <= ATOL


def test_hf_relative_positions_depend_on_cache(tmp_path):
    """HF puts every query at key_length - 1 once a cache object exists: its prompt pass with use_cache=True
    differs from use_cache=False. We always give the use_cache=False numbers."""
    hf_model, ours = build_pair(tmp_path, "ForCausalLM",
                                hf_config(is_decoder=True, position_embedding_type="relative_key"))
    ids = torch.randint(1, VOCAB, (2, 6), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        hf_cached = hf_model(input_ids=ids, use_cache=True).logits
        hf_plain = hf_model(input_ids=ids, use_cache=False).logits
        for use_cache in (True, False):
            assert max_abs_diff(ours(input_ids=ids, use_cache=use_cache).logits, hf_plain) <= ATOL
    assert max_abs_diff(hf_cached, hf_plain) > 1e-3


def test_hf_relative_cross_attention_depends_on_cache(tmp_path):
    """HF's cross-attention puts every query at encoder_length - 1 when a cache exists."""
    config = hf_config(is_decoder=True, add_cross_attention=True, position_embedding_type="relative_key")
    hf_model, ours = build_pair(tmp_path, "ForCausalLM", config)
    generator = torch.Generator().manual_seed(7)
    ids = torch.randint(1, VOCAB, (2, 1), generator=generator)
    extra = {"encoder_hidden_states": torch.randn(2, 5, 32, generator=generator)}
    with torch.no_grad():
        hf_cached = hf_model(input_ids=ids, use_cache=True, **extra).logits
        hf_plain = hf_model(input_ids=ids, use_cache=False, **extra).logits
        ours_cached = ours(input_ids=ids, use_cache=True, **extra).logits
    assert max_abs_diff(ours_cached, hf_plain) <= ATOL
    assert max_abs_diff(hf_cached, hf_plain) > 1e-3


# ----------------------------------------------------------------------------------------------- errors and presets


@pytest.mark.parametrize("key,value,extra", [
    ("num_attention_heads", 5, {}),
    ("hidden_act", "no_such_act", {}),
    ("position_embedding_type", "rotary", {}),
    ("add_cross_attention", True, {}),
    ("pad_token_id", 500, {}),
    ("layer_norm_eps", 0.0, {}),
])
def test_bad_config_names_the_key(key, value, extra):
    hf = {"model_type": "megatron-bert", **TINY, key: value, **extra}
    with pytest.raises(ConfigError, match=key):
        MegatronBertConfig.from_hf_config(hf)


def test_question_answering_needs_two_labels():
    config = MegatronBertConfig.from_hf_config({**TINY, "num_labels": 3})
    with pytest.raises(ConfigError, match="num_labels"):
        ARCH.head_class("ForQuestionAnswering")(config)


def test_bad_inputs_raise_clear_errors():
    model = ARCH.head_class("ForCausalLM")(MegatronBertConfig.from_hf_config({**TINY, "is_decoder": True})).eval()
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(input_ids=torch.ones(1, 25, dtype=torch.long))
    with pytest.raises(ValueError, match="attention_mask"):
        model(input_ids=torch.ones(1, 4, dtype=torch.long), attention_mask=torch.ones(1, 3))
    with pytest.raises(ValueError, match="cross-attention"):
        model(input_ids=torch.ones(1, 4, dtype=torch.long), encoder_hidden_states=torch.zeros(1, 2, 32))
    past = model(input_ids=torch.ones(1, 4, dtype=torch.long)).past_key_values
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(input_ids=torch.ones(1, 21, dtype=torch.long), past_key_values=past)
    encoder = ARCH.head_class("Model")(MegatronBertConfig.from_hf_config(TINY)).eval()
    with pytest.raises(ValueError, match="is_decoder"):
        encoder(input_ids=torch.ones(1, 1, dtype=torch.long), past_key_values=past)


def test_345m_preset_is_hf_default_config():
    preset = get_preset("megatron-bert-cased-345m")
    ours = MegatronBertConfig.from_hf_config(preset.config)
    hf_default = transformers.MegatronBertConfig()
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "pad_token_id", "hidden_act",
                "position_embedding_type", "initializer_range", "use_cache", "is_decoder", "tie_word_embeddings"):
        assert getattr(ours, key) == getattr(hf_default, key), key
    # And HF's own config class reads the preset to the same values.
    hf_read = transformers.MegatronBertConfig.from_dict(preset.config)
    assert hf_read.to_dict()["hidden_size"] == ours.hidden_size == 1024


def test_tiny_preset_builds_runs_and_matches_hf(tmp_path):
    preset = get_preset("tiny-megatron-bert")
    MegatronBertConfig.from_hf_config(preset.config)
    folder = init_checkpoint(preset, tmp_path / "tiny", seed=3)
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["MegatronBertForMaskedLM"]
    ours = from_pretrained(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf_model = transformers.MegatronBertForMaskedLM.from_pretrained(folder).eval()
    inputs = make_inputs("ForMaskedLM", torch.Generator().manual_seed(8), with_types=False)
    with torch.no_grad():
        assert_parity(ours(**inputs), hf_model(**inputs), ("logits",))
