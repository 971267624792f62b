"""Parity of ``reference/nystromformer.py`` against ``transformers==4.57.6`` (the oracle), in fp32 on CPU.

Every head x a spread of configs (Nystrom landmark branch and exact-softmax branch, value conv on/off/0, both
pseudo-inverse initialisations, several activations, no position embeddings), with padding masks and batch > 1.
Then the places where we go beyond HF, each checked against HF run the way it works: short inputs against HF on the
explicitly padded input, per-sample pseudo-inverse initialisation against HF run one row at a time.
"""

from __future__ import annotations

import pytest
import torch
import transformers
from hf_helpers import load_into_reference, max_abs_diff, randomize_parameters

from tensorkiln.reference import ConfigError, build_model, from_pretrained
from tensorkiln.reference.nystromformer import NystromformerConfig
from tensorkiln.reference.presets import get_preset, init_checkpoint
from tensorkiln.runtime.tolerances import REFERENCE_VS_HF_MAX_ABS as TOL

#: Weight scale for randomize_parameters: large enough that attention is far from uniform, so that landmark
#: mixing and batch-dependent pseudo-inverse initialisation show up well above TOL (HF's 0.02 init hides them).
SCALE = 0.2

PARITY_HEADS = ["Model", "ForMaskedLM", "ForSequenceClassification", "ForMultipleChoice", "ForTokenClassification",
         "ForQuestionAnswering"]
PAD = 1
SEQ = 16  # segment_means_seq_len in every tiny config
BASE = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=40, type_vocab_size=3, segment_means_seq_len=SEQ, pad_token_id=PAD, num_labels=3)
VARIANTS = {
    "landmarks": dict(num_landmarks=4, conv_kernel_size=3, hidden_act="gelu_new"),
    "landmarks-noconv-relu": dict(num_landmarks=4, conv_kernel_size=None, hidden_act="relu"),
    "landmarks-exactcoeff": dict(num_landmarks=8, conv_kernel_size=5, inv_coeff_init_option=True, hidden_act="gelu"),
    "landmarks-conv0": dict(num_landmarks=2, conv_kernel_size=0, hidden_act="silu", type_vocab_size=1),
    "exact": dict(num_landmarks=SEQ, conv_kernel_size=3, hidden_act="gelu_new"),
    "exact-nopos-noconv": dict(num_landmarks=SEQ, conv_kernel_size=None, position_embedding_type="none",
                               hidden_act="tanh"),
}


def make_hf(head: str, **overrides):
    options = {**BASE, **overrides}
    inv_exact = options.pop("inv_coeff_init_option", False)
    extra = {k: options.pop(k) for k in ("pinv_init_per_sample",) if k in options}
    hf = getattr(transformers, "Nystromformer" + head)(transformers.NystromformerConfig(**options))
    randomize_parameters(hf, seed=0, scale=SCALE)
    for layer in hf.base_model.encoder.layer:
        attention = layer.attention.self
        if inv_exact:
            # HF crashes on inv_coeff_init_option=True (it subscripts the config); set the branch it means to take.
            attention.init_option = "exact"
        if attention.conv_kernel_size == 0:
            # HF builds an empty conv and crashes running it; 0 means "no conv", so run HF with it off.
            attention.conv_kernel_size = None
    hf.config.inv_coeff_init_option = inv_exact
    for key, value in extra.items():
        setattr(hf.config, key, value)  # written to config.json for us; HF ignores it
    return hf.eval()


def make_pair(head: str, tmp_path, **overrides):
    hf = make_hf(head, **overrides)
    return hf, load_into_reference(hf, tmp_path, head)


def make_inputs(batch: int, seq_len: int, lengths=None, type_vocab: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(2, BASE["vocab_size"], (batch, seq_len), generator=g)
    mask = torch.ones(batch, seq_len, dtype=torch.long)
    for row, length in enumerate(lengths or []):
        mask[row, length:] = 0
        input_ids[row, length:] = PAD
    token_type_ids = torch.randint(0, type_vocab, (batch, seq_len), generator=g)
    return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": token_type_ids}


def to_choices(inputs, num_choices: int):
    """(B*C, L) -> (B, C, L)"""
    return {k: v.view(-1, num_choices, v.shape[-1]) for k, v in inputs.items()}


@torch.no_grad()
def run(model, **inputs):
    return model(**inputs)


def assert_parity(hf_out, ours_out, tol=TOL):
    ours = ours_out.to_dict()
    assert ours, "no outputs"
    for name, value in ours.items():
        err = max_abs_diff(hf_out[name], value)
        assert err <= tol, f"{name}: max abs error {err:.3g} > {tol}"


# ----------------------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("head", PARITY_HEADS)
def test_parity_every_head_and_variant(head, variant, tmp_path):
    overrides = VARIANTS[variant]
    hf, ours = make_pair(head, tmp_path, **overrides)
    # The landmark branch needs HF's length (segment_means_seq_len); the exact branch runs any length.
    seq_len = SEQ if overrides["num_landmarks"] != SEQ else 13
    inputs = make_inputs(6 if head == "ForMultipleChoice" else 3, seq_len, lengths=[seq_len, 11, 5],
                         type_vocab=overrides.get("type_vocab_size", 3))
    if head == "ForMultipleChoice":
        inputs = to_choices(inputs, 3)
    assert_parity(run(hf, **inputs), run(ours, **inputs))


def test_parity_without_mask_or_token_types(tmp_path):
    hf, ours = make_pair("Model", tmp_path, **VARIANTS["landmarks"])
    ids = make_inputs(2, SEQ)["input_ids"]
    assert_parity(run(hf, input_ids=ids), run(ours, input_ids=ids))


def test_parity_inputs_embeds_and_position_ids(tmp_path):
    hf, ours = make_pair("Model", tmp_path, **VARIANTS["landmarks"])
    inputs = make_inputs(2, SEQ, lengths=[SEQ, 9])
    embeds = hf.base_model.embeddings.word_embeddings(inputs.pop("input_ids")).detach()
    position_ids = torch.randint(0, BASE["max_position_embeddings"] + 2, (2, SEQ))
    assert_parity(run(hf, inputs_embeds=embeds, position_ids=position_ids, **inputs),
                  run(ours, inputs_embeds=embeds, position_ids=position_ids, **inputs))


def test_exact_branch_accepts_max_position_embeddings_and_no_more(tmp_path):
    hf, ours = make_pair("Model", tmp_path, **VARIANTS["exact"])
    longest = BASE["max_position_embeddings"]  # position ids run 2..max+1, the last row of the table
    inputs = make_inputs(2, longest, lengths=[longest, 20])
    assert_parity(run(hf, **inputs), run(ours, **inputs))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        run(ours, input_ids=torch.full((1, longest + 1), 5))


# ----------------------------------------------------------------------------------------------- beyond HF: lengths


@pytest.mark.parametrize("seq_len", [1, 8, 9])
@pytest.mark.parametrize("head", ["Model", "ForSequenceClassification"])
def test_short_input_equals_hf_on_explicitly_padded_input(head, seq_len, tmp_path):
    hf, ours = make_pair(head, tmp_path, **VARIANTS["landmarks"])
    inputs = make_inputs(3, seq_len, lengths=[seq_len, max(seq_len - 3, 1), 1])
    pad = SEQ - seq_len
    padded = {
        "input_ids": torch.nn.functional.pad(inputs["input_ids"], (0, pad), value=PAD),
        "attention_mask": torch.nn.functional.pad(inputs["attention_mask"], (0, pad), value=0),
        "token_type_ids": torch.nn.functional.pad(inputs["token_type_ids"], (0, pad), value=0),
    }
    expected = run(hf, **padded)
    got = run(ours, **inputs)
    if head == "Model":
        expected = {"last_hidden_state": expected.last_hidden_state[:, :seq_len]}
    assert_parity(expected, got)


def test_short_inputs_embeds_and_position_ids_pad_like_hf(tmp_path):
    hf, ours = make_pair("Model", tmp_path, **VARIANTS["landmarks"])
    seq_len, pad = 10, SEQ - 10
    word = hf.base_model.embeddings.word_embeddings.weight.detach()
    ids = make_inputs(2, seq_len)["input_ids"]
    position_ids = torch.randint(0, BASE["max_position_embeddings"] + 2, (2, seq_len))
    padded_positions = torch.cat([position_ids, torch.arange(seq_len, SEQ).expand(2, -1) + 2], dim=1)
    mask = torch.tensor([[1] * seq_len, [1] * 6 + [0] * 4])
    expected = run(hf, inputs_embeds=word[torch.nn.functional.pad(ids, (0, pad), value=PAD)],
                   attention_mask=torch.nn.functional.pad(mask, (0, pad)), position_ids=padded_positions)
    got = run(ours, inputs_embeds=word[ids], attention_mask=mask, position_ids=position_ids)
    assert_parity({"last_hidden_state": expected.last_hidden_state[:, :seq_len]}, got)


def test_hf_mixes_rows_at_other_lengths_and_we_do_not(tmp_path):
    hf, ours = make_pair("Model", tmp_path, **VARIANTS["landmarks"], pinv_init_per_sample=True)
    inputs = make_inputs(2, SEQ // 2, seed=1)
    # HF folds the two half-length rows into one landmark sample (and heads into each other) without complaint.
    hf_half = run(hf, **inputs).last_hidden_state
    hf_row0_padded = run(hf, input_ids=torch.nn.functional.pad(inputs["input_ids"][:1], (0, SEQ // 2), value=PAD),
                         attention_mask=torch.nn.functional.pad(inputs["attention_mask"][:1], (0, SEQ // 2)),
                         token_type_ids=torch.nn.functional.pad(inputs["token_type_ids"][:1], (0, SEQ // 2)))
    assert max_abs_diff(hf_half[0], hf_row0_padded.last_hidden_state[0, : SEQ // 2]) > 1e-2
    ours_batch = run(ours, **inputs).last_hidden_state
    for row in range(2):
        alone = run(ours, **{k: v[row:row + 1] for k, v in inputs.items()}).last_hidden_state
        assert max_abs_diff(ours_batch[row:row + 1], alone) <= TOL
    assert max_abs_diff(ours_batch[:1], hf_row0_padded.last_hidden_state[:, : SEQ // 2]) <= TOL


def test_longer_than_segment_means_seq_len_is_refused(tmp_path):
    hf, ours = make_pair("Model", tmp_path, **VARIANTS["landmarks"])
    ids = torch.full((1, 2 * SEQ), 5)
    # One HF layer silently answers a batch of one with a batch of two (the next layer would then fail to reshape).
    hf_one_layer = make_hf("Model", **VARIANTS["landmarks"], num_hidden_layers=1)
    assert run(hf_one_layer, input_ids=ids).last_hidden_state.shape[0] == 2
    with pytest.raises(ValueError, match="segment_means_seq_len"):
        run(ours, input_ids=ids)


def test_short_input_without_pad_token_is_refused():
    config = NystromformerConfig.from_hf_config({**BASE, **VARIANTS["landmarks"], "pad_token_id": None})
    model = build_model(config, "Model")
    with pytest.raises(ValueError, match="pad_token_id"):
        run(model, input_ids=torch.full((1, 5), 3))


# ----------------------------------------------------------------------------------------------- beyond HF: batching


@pytest.mark.parametrize("head", ["Model", "ForSequenceClassification"])
def test_pinv_init_per_sample_makes_rows_batch_independent(head, tmp_path):
    hf, ours = make_pair(head, tmp_path, **VARIANTS["landmarks"], pinv_init_per_sample=True)
    inputs = make_inputs(3, SEQ, lengths=[SEQ, 11, 4], seed=2)
    hf_batch = run(hf, **inputs)
    ours_batch = run(ours, **inputs)
    name = "last_hidden_state" if head == "Model" else "logits"
    spread = 0.0
    for row in range(3):
        hf_alone = run(hf, **{k: v[row:row + 1] for k, v in inputs.items()})
        # With the option on, each row gets what HF gives it alone ...
        assert max_abs_diff(hf_alone[name], ours_batch[name][row:row + 1]) <= TOL
        spread = max(spread, max_abs_diff(hf_alone[name], hf_batch[name][row:row + 1]))
    # ... while HF's own answer depends on the batch neighbours, well above float noise.
    assert spread > 1e-4


def test_pinv_init_per_batch_is_hf_default(tmp_path):
    hf, ours = make_pair("Model", tmp_path, **VARIANTS["landmarks"])
    assert ours.config.pinv_init_per_sample is False
    inputs = make_inputs(3, SEQ, lengths=[SEQ, 11, 4], seed=2)
    assert_parity(run(hf, **inputs), run(ours, **inputs))


def test_reduced_precision_runs_where_hf_cannot(tmp_path):
    hf, ours = make_pair("Model", tmp_path, **VARIANTS["landmarks"])
    inputs = make_inputs(2, SEQ, lengths=[SEQ, 9])
    reference = run(ours, **inputs).last_hidden_state
    with pytest.raises(RuntimeError):  # HF's float32 identity meets bf16 matmuls in iterative_inv
        run(hf.to(torch.bfloat16), **inputs)
    low = run(ours.to(torch.bfloat16), **inputs).last_hidden_state
    assert torch.isfinite(low).all()
    assert max_abs_diff(reference, low.float()) < 0.25  # bf16 has ~3 significant digits; outputs are O(1)


# ----------------------------------------------------------------------------------------------- config and presets


@pytest.mark.parametrize(
    "overrides, key",
    [
        (dict(num_attention_heads=5), "num_attention_heads"),
        (dict(num_landmarks=5), "segment_means_seq_len"),  # 16 is not a multiple of 5
        (dict(num_landmarks=4, segment_means_seq_len=64), "segment_means_seq_len"),  # > max_position_embeddings
        (dict(conv_kernel_size=4), "conv_kernel_size"),
        (dict(conv_kernel_size=-3), "conv_kernel_size"),
        (dict(hidden_act="nope"), "hidden_act"),
        (dict(is_decoder=True), "is_decoder"),
        (dict(pad_token_id=99), "pad_token_id"),
        (dict(num_landmarks=0), "num_landmarks"),
    ],
)
def test_bad_config_names_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key):
        NystromformerConfig.from_hf_config({**BASE, **overrides})


def test_presets_parse():
    published = NystromformerConfig.from_hf_config(get_preset("nystromformer-512").config)
    # The published checkpoint has num_landmarks == segment_means_seq_len: HF runs it with exact softmax attention.
    assert not published.uses_landmarks
    hf_defaults = transformers.NystromformerConfig().to_dict()
    for key in ("hidden_size", "num_hidden_layers", "num_landmarks", "segment_means_seq_len", "conv_kernel_size",
                "max_position_embeddings", "vocab_size", "hidden_act", "pad_token_id"):
        assert getattr(published, key) == hf_defaults[key], key
    tiny = NystromformerConfig.from_hf_config(get_preset("tiny-nystromformer").config)
    assert tiny.uses_landmarks


def test_tiny_preset_builds_runs_and_loads_into_hf(tmp_path):
    folder = init_checkpoint("tiny-nystromformer", tmp_path / "tiny", seed=0)
    ours = from_pretrained(folder)
    hf = transformers.AutoModelForMaskedLM.from_pretrained(folder).eval()
    config = ours.config
    inputs = make_inputs(2, config.segment_means_seq_len, lengths=[config.segment_means_seq_len, 7],
                         type_vocab=config.type_vocab_size)
    out = run(ours, **inputs)
    assert out.logits.shape == (2, config.segment_means_seq_len, config.vocab_size)
    assert_parity(run(hf, **inputs), out)
    conv = ours.nystromformer.encoder.layer[0].attention.self.conv.weight
    assert abs(conv.std().item() - config.initializer_range) < 0.5 * config.initializer_range
