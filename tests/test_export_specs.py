"""Export specs and the manifest, without exporting: every architecture and head has a spec, and the spec's names,
dims and cache layout agree with what the reference models actually take and return (the independent oracle)."""

from __future__ import annotations

import json

import pytest
import torch

from tensorkiln.export.specs import HEAD_TASKS, TASK_ALIASES, Shape, all_specs, get_spec
from tensorkiln.reference import all_architectures, build_model
from tensorkiln.reference.presets import get_preset
from tensorkiln.runtime import manifest as mf

TINY = {
    "mra": "tiny-mra",
    "mega": "tiny-mega",
    "megatron-bert": "tiny-megatron-bert",
    "gpt_neox": "tiny-gpt-neox",
    "nystromformer": "tiny-nystromformer",
}
#: Which architectures take token types (HF's forward signatures; Mega only with add_token_type_embeddings).
TOKEN_TYPES = {"mra": True, "mega": False, "megatron-bert": True, "gpt_neox": False, "nystromformer": True}
#: HF's output field names per head (transformers' ModelOutput classes).
HF_OUTPUTS = {
    "Model": {"last_hidden_state"},
    "ForMaskedLM": {"logits"},
    "ForCausalLM": {"logits"},
    "ForSequenceClassification": {"logits"},
    "ForMultipleChoice": {"logits"},
    "ForTokenClassification": {"logits"},
    "ForQuestionAnswering": {"start_logits", "end_logits"},
    "ForPreTraining": {"prediction_logits", "seq_relationship_logits"},
    "ForNextSentencePrediction": {"logits"},
}
HEADS = [(mt, head, {}) for mt, arch in sorted(all_architectures().items()) for head in arch.heads]
#: Config variants whose export differs: a Megatron-BERT decoder caches.
VARIANTS = [("megatron-bert", "ForCausalLM", {"is_decoder": True})]


def tiny(model_type: str):
    preset = get_preset(TINY[model_type])
    arch = all_architectures()[model_type]
    return arch.config_class.from_hf_config(preset.config)


def test_every_architecture_has_a_spec_and_a_tiny_checkpoint():
    assert set(all_specs()) == set(all_architectures()), "an architecture lacks an export spec (export/specs.py)"
    assert set(TINY) == set(all_architectures())
    for model_type, name in TINY.items():
        assert get_preset(name).model_type == model_type


@pytest.mark.parametrize("model_type", sorted(all_architectures()))
def test_the_spec_covers_every_head(model_type):
    spec = get_spec(model_type)
    heads = set(all_architectures()[model_type].heads)
    assert set(spec.heads) == heads, f"{model_type}: heads without a spec: {heads - set(spec.heads)}"
    config = tiny(model_type)
    for head in heads:
        assert spec.inputs(config, head) and spec.outputs(config, head)
        assert head in HEAD_TASKS


def test_task_aliases_name_known_heads():
    heads = {h for arch in all_architectures().values() for h in arch.heads}
    assert set(TASK_ALIASES.values()) <= heads
    assert set(HEAD_TASKS) == heads


def _reference_outputs(model, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return model(**inputs).to_dict()


@pytest.mark.parametrize(("model_type", "head", "changes"), HEADS + VARIANTS)
def test_spec_names_and_dims_match_the_reference(model_type, head, changes):
    """The spec's input names are the model's keyword arguments and its outputs are what the model returns, with
    the shapes the dims declare, at two shapes."""
    spec = get_spec(model_type)
    config = tiny(model_type).replace(**changes)
    torch.manual_seed(0)
    model = build_model(config, head)
    names = [s.name for s in spec.inputs(config, head)]
    assert names[:2] == ["input_ids", "attention_mask"]
    assert ("token_type_ids" in names) == TOKEN_TYPES[model_type]
    assert ("position_ids" in names) == (model_type == "gpt_neox" and head == "ForCausalLM")
    assert spec.uses_cache(config, head) == (head == "ForCausalLM" and model_type != "megatron-bert" or bool(changes))
    out_names = {s.name for s in spec.outputs(config, head)}
    expected = HF_OUTPUTS[head] | ({"pooler_output"} if head == "Model" and spec.model_pooler else set())
    if spec.uses_cache(config, head):
        layout = spec.cache_layout(config, head)
        expected |= {e.output for e in layout.entries}
    assert out_names == expected

    for shape in spec.check_shapes(config, head, 2, 6):
        inputs = spec.dummy_inputs(config, head, shape)
        sizes = shape.sizes()
        for s in spec.inputs(config, head):
            assert tuple(inputs[s.name].shape) == mf.TensorInfo(s.name, "int64", s.dims).resolve(sizes), s.name
        mask = inputs["attention_mask"]
        assert (mask == 0).any() and (mask.sum(-1) > 0).all(), "dummy inputs must pad one row, never a whole row"
        if spec.uses_cache(config, head):
            kwargs = {k: v for k, v in inputs.items() if not k.startswith("past_key_values.")}
            past = [tuple(inputs[f"past_key_values.{i}.{k}"] for k in spec.cache_kinds)
                    for i in range(config.num_hidden_layers)]
            with torch.no_grad():
                out = model(**kwargs, past_key_values=tuple(past), use_cache=True)
            got = {"logits": out.logits}
            for i, layer in enumerate(out.past_key_values):
                got.update({f"present.{i}.{k}": t for k, t in zip(spec.cache_kinds, layer)})
        else:
            got = _reference_outputs(model, inputs)
        for s in spec.outputs(config, head):
            assert tuple(got[s.name].shape) == mf.TensorInfo(s.name, "float32", s.dims).resolve(sizes), s.name


def test_decoder_cache_layouts():
    neox, mega = tiny("gpt_neox"), tiny("mega")
    layout = get_spec("gpt_neox").cache_layout(neox, "ForCausalLM")
    assert [e.input for e in layout.entries[:2]] == ["past_key_values.0.key", "past_key_values.0.value"]
    assert [e.output for e in layout.entries[:2]] == ["present.0.key", "present.0.value"]
    assert all(e.sequence_axis == 2 for e in layout.entries) and layout.position_ids == "position_ids"
    layout = get_spec("mega").cache_layout(mega, "ForCausalLM")
    kinds = {e.kind: e for e in layout.entries if e.layer == 0}
    assert set(kinds) == {"key", "value", "ema_state"}
    assert kinds["key"].sequence_axis == 1 and kinds["ema_state"].sequence_axis is None
    assert kinds["ema_state"].dims == (mf.BATCH, mega.hidden_size, mega.ema_projection_size)
    assert get_spec("gpt_neox").cache_layout(neox, "ForSequenceClassification") is None
    # A bidirectional Mega cannot cache: its ForCausalLM exports without one.
    assert get_spec("mega").cache_layout(mega.replace(bidirectional=True), "ForCausalLM") is None


def test_length_rules():
    nys = tiny("nystromformer")
    rules = get_spec("nystromformer").length_rules(nys)
    assert rules.fixed_length == nys.segment_means_seq_len == 32 and rules.pad_token_id == nys.pad_token_id
    assert get_spec("nystromformer").inputs(nys, "ForMaskedLM")[0].dims == (mf.BATCH, 32)
    exact = nys.replace(num_landmarks=32)  # num_landmarks == segment_means_seq_len: exact attention, any length
    assert get_spec("nystromformer").length_rules(exact).fixed_length is None
    mra = get_spec("mra").length_rules(tiny("mra"))
    assert (mra.max_length, mra.pad_multiple, mra.fixed_length) == (256, 32, None)
    assert get_spec("gpt_neox").length_rules(tiny("gpt_neox")).max_length == 128


def test_check_shapes_differ():
    for model_type in TINY:
        spec, config = get_spec(model_type), tiny(model_type)
        for head in spec.heads:
            a, b = spec.check_shapes(config, head, 2, 16)
            assert a != b and a.batch != b.batch
            if spec.uses_cache(config, head):
                assert (a.past, b.sequence) == (0, 1), "decoders check a prefill and a one-token step"


# ----------------------------------------------------------------------------------------------- manifest


def _manifest(**changes) -> mf.Manifest:
    base = mf.Manifest(
        model_type="gpt_neox", task="text-generation-with-past", head="ForCausalLM", hf_class="GPTNeoXForCausalLM",
        opset=18, precision="fp32",
        inputs=(mf.TensorInfo("input_ids", "int64", (mf.BATCH, mf.SEQUENCE)),),
        outputs=(mf.TensorInfo("logits", "float32", (mf.BATCH, mf.SEQUENCE, 7)),),
        length_rules=mf.LengthRules(max_length=128),
        custom_nodes=(mf.CustomNode("tensorkiln", "MegaEma", 2),),
        cache=mf.CacheLayout(past_dim=mf.PAST, entries=(
            mf.CacheEntry(0, "key", "past_key_values.0.key", "present.0.key", (mf.BATCH, 2, mf.PAST, 4), 2),)),
        verification=mf.Verification("passed", "rule", "CPUExecutionProvider", checks=(
            mf.CheckResult(shape={mf.BATCH: 2}, errors=(mf.OutputError("logits", 1e-7, 1e-14, 1.0),)),)),
        files={"model.onnx": "0" * 64, "config.json": "0" * 64},
    )
    return mf.Manifest(**{**base.__dict__, **changes})


def test_manifest_round_trip(tmp_path):
    manifest = _manifest()
    (tmp_path / "model.onnx").write_bytes(b"graph")
    (tmp_path / "config.json").write_text("{}")
    manifest = _manifest(files=mf.hash_files(tmp_path))
    mf.write_manifest(manifest, tmp_path)
    assert mf.read_manifest(tmp_path) == manifest
    assert manifest.input("input_ids").resolve({mf.BATCH: 2, mf.SEQUENCE: 5}) == (2, 5)
    mask = mf.TensorInfo("m", "int64", (mf.BATCH, mf.TOTAL))
    assert mask.resolve({mf.BATCH: 1, mf.SEQUENCE: 1, mf.PAST: 4}) == (1, 5)
    (tmp_path / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(mf.ManifestError, match="model.onnx has sha256"):
        mf.read_manifest(tmp_path)


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.pop("opset"), "'opset'"),
    (lambda d: d.update(format_version=mf.FORMAT_VERSION + 1), "newer"),
    (lambda d: d.update(precision="int4"), "precision"),
    (lambda d: d.update(files={}), "model file"),
])
def test_manifest_errors_name_the_problem(change, message):
    data = json.loads(json.dumps(mf.to_dict(_manifest())))
    change(data)
    with pytest.raises(mf.ManifestError, match=message):
        mf.from_dict(data)


def test_shape_sizes():
    assert Shape(2, 3, past=4, choices=5).sizes() == {mf.BATCH: 2, mf.SEQUENCE: 3, mf.PAST: 4, mf.CHOICES: 5}
