"""``kiln export`` end to end: tiny checkpoints -> ONNX -> ONNX Runtime, checked against the reference models.

The oracle is the reference model called directly (HF keyword arguments, its own output fields), on inputs made
here, with padding in the attention mask, at two shapes per export. Exports are slow (5-15 s each on 2 cores), so
each export is made once per module and shared; the default run covers one head per architecture plus the two
decoders' token-by-token decoding, and ``-m slow`` runs every architecture x head and fp16.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from tensorkiln.export import exporter
from tensorkiln.export.cli import main as kiln
from tensorkiln.export.specs import ExportError, TensorSpec
from tensorkiln.reference import all_architectures, from_pretrained
from tensorkiln.reference.gpt_neox import position_ids_from_attention_mask
from tensorkiln.runtime import manifest as mf
from tensorkiln.runtime import tolerances
from tensorkiln.runtime.tolerances import FP32_MAX_ABS

#: Max abs error relative to the output's largest magnitude.
FP32_REL = 1e-4
#: The default run: one head per architecture (the decoders' cache heads among them).
FAST = [("gpt_neox", "ForCausalLM"), ("mega", "ForCausalLM"), ("megatron-bert", "ForPreTraining"),
        ("nystromformer", "ForMaskedLM"), ("mra", "ForMaskedLM")]
ALL = [(mt, head) for mt, arch in sorted(all_architectures().items()) for head in arch.heads]
SLOW = [case for case in ALL if case not in FAST]


def _session(out: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(out / "model.onnx"), options, providers=["CPUExecutionProvider"])


# ----------------------------------------------------------------------------------------------- inputs made here


def _encoder_inputs(config, head: str, batch: int, length: int, seed: int, token_types: bool) -> dict:
    """Random ids, right padding on row 0 (pad ids there), token types where the model takes them."""
    g = torch.Generator().manual_seed(seed)
    lead = (batch, 3) if head == "ForMultipleChoice" else (batch,)
    ids = torch.randint(3, config.vocab_size, (*lead, length), generator=g)
    mask = torch.ones_like(ids)
    mask[0, ..., length - max(1, length // 4):] = 0
    if config.pad_token_id is not None:
        ids = ids.masked_fill(mask == 0, config.pad_token_id)
    inputs = {"input_ids": ids, "attention_mask": mask}
    if token_types:
        second = int(config.type_vocab_size > 1)  # tiny-mra has a single token type
        inputs["token_type_ids"] = (torch.arange(length) >= length // 2).long().expand_as(ids) * mask * second
    return inputs


def _compare(got: dict[str, np.ndarray], want: dict[str, torch.Tensor], atol: float = FP32_MAX_ABS) -> float:
    """Max abs error <= atol, and relative to the output's scale too: tiny random models give outputs near 1e-3,
    where an absolute 1e-4 alone would pass a wrong graph (measured: fp32 ORT is within 1e-5 relative)."""
    worst = 0.0
    for name, value in want.items():
        assert got[name].shape == tuple(value.shape), name
        want_np = value.double().numpy()
        error = float(np.abs(got[name] - want_np).max())
        scale = float(np.abs(want_np).max())
        assert error <= atol, f"{name}: max abs error {error:.3g} > {atol}"
        assert error <= FP32_REL * scale, f"{name}: max abs error {error:.3g} next to the output's scale {scale:.3g}"
        worst = max(worst, error)
    return worst


def _check_encoder(ckpt: Path, out: Path, model_type: str, head: str) -> None:
    model = from_pretrained(ckpt, head)
    manifest = mf.read_manifest(out)
    session = _session(out)
    names = [i.name for i in session.get_inputs()]
    rules = manifest.length_rules
    lengths = [rules.fixed_length] * 2 if rules.fixed_length else [11, 37 if model_type == "mra" else 5]
    for batch, length in zip((2, 3), lengths):
        inputs = _encoder_inputs(model.config, head, batch, length, seed=batch, token_types="token_type_ids" in names)
        got = dict(zip([o.name for o in session.get_outputs()],
                       session.run(None, {k: v.numpy() for k, v in inputs.items()})))
        with torch.no_grad():
            want = model(**inputs).to_dict()
        assert set(got) <= set(want), f"the graph has outputs the reference lacks: {set(got) - set(want)}"
        _compare(got, {name: want[name] for name in got})


# ----------------------------------------------------------------------------------------------- encoders


@pytest.mark.parametrize(("model_type", "head"), [c for c in FAST if c[1] != "ForCausalLM"])
def test_encoder_parity(exports, model_type, head):
    ckpt, out = exports.get(model_type, head)
    _check_encoder(ckpt, out, model_type, head)


@pytest.mark.slow
@pytest.mark.parametrize(("model_type", "head"), SLOW)
def test_every_head_parity(exports, model_type, head):
    ckpt, out = exports.get(model_type, head)
    manifest = mf.read_manifest(out)
    if manifest.cache is None:
        _check_encoder(ckpt, out, model_type, head)
    assert manifest.verification.status == "passed"


@pytest.mark.slow
@pytest.mark.parametrize(("variant", "head"), [
    ("mega-bidirectional", "ForMaskedLM"), ("mega-chunked", "ForMaskedLM"), ("mega-chunked", "ForCausalLM")])
def test_config_variants(exports, variant, head):
    """A bidirectional EMA; chunked attention at lengths below, at and above the chunk (a chunked decoder exports
    without a cache: the manifest says so)."""
    ckpt, out = exports.get(variant, head)
    model = from_pretrained(ckpt, head)
    session = _session(out)
    for batch, length in ((2, 5), (1, 8), (3, 19)):
        inputs = _encoder_inputs(model.config, head, batch, length, seed=length, token_types=False)
        got = dict(zip([o.name for o in session.get_outputs()],
                       session.run(None, {k: v.numpy() for k, v in inputs.items()})))
        with torch.no_grad():
            want = model(**inputs).to_dict()
        _compare(got, {name: want[name] for name in got})
    manifest = mf.read_manifest(out)
    assert manifest.cache is None and manifest.task in ("fill-mask", "text-generation")


def test_a_branch_on_a_length_is_refused():
    """torch.export keeps one side of ``if L > 8`` and narrows L's range; the export must refuse that graph."""

    class Branchy(torch.nn.Module):
        def forward(self, inputs):
            ids = inputs["input_ids"]
            return (ids * 2,) if ids.shape[1] > 8 else (ids + 1,)

    specs = (TensorSpec("input_ids", "int64", (mf.BATCH, mf.SEQUENCE)),)
    example = {"input_ids": torch.ones(2, 5, dtype=torch.long)}
    with pytest.raises(ExportError, match=r"input_ids axis 1 \(sequence_length\) only holds in \[0, 8\]"):
        exporter.check_ranges(exporter._trace(Branchy(), example, specs), specs, max_length=64)

    class Plain(torch.nn.Module):
        def forward(self, inputs):
            return (inputs["input_ids"] * 2,)

    exporter.check_ranges(exporter._trace(Plain(), example, specs), specs, max_length=64)


def test_nystromformer_runtime_padding_rule(exports):
    """The manifest's rule (pad right to fixed_length with pad_token_id, mask 0; slice back) gives the reference's
    output at the real, shorter length."""
    ckpt, out = exports.get("nystromformer", "ForMaskedLM")
    rules = mf.read_manifest(out).length_rules
    model = from_pretrained(ckpt)
    inputs = _encoder_inputs(model.config, "ForMaskedLM", 2, 13, seed=5, token_types=True)
    pad = rules.fixed_length - 13
    padded = {
        "input_ids": torch.nn.functional.pad(inputs["input_ids"], (0, pad), value=rules.pad_token_id),
        "attention_mask": torch.nn.functional.pad(inputs["attention_mask"], (0, pad)),
        "token_type_ids": torch.nn.functional.pad(inputs["token_type_ids"], (0, pad)),
    }
    (logits,) = _session(out).run(None, {k: v.numpy() for k, v in padded.items()})
    with torch.no_grad():
        want = model(**inputs).logits  # the reference pads the same way inside
    _compare({"logits": logits[:, :13]}, {"logits": want})


# ----------------------------------------------------------------------------------------------- decoders


def _left_padded_prompt(config, batch: int, length: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, config.vocab_size, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # left padding, as generate batches prompts
    return ids.masked_fill(mask == 0, config.pad_token_id), mask


def _decode(out: Path, model, ids: torch.Tensor, mask: torch.Tensor, prompt: int) -> list[np.ndarray]:
    """Prefill ``prompt`` tokens (empty past), then feed one token per step, each step's presents as pasts."""
    manifest = mf.read_manifest(out)
    layout = manifest.cache
    session = _session(out)
    batch = ids.shape[0]
    past = {}
    for entry in layout.entries:
        dims = [batch if d == mf.BATCH else 0 if d == mf.PAST else d for d in entry.dims]
        past[entry.input] = np.zeros(dims, dtype=np.float32)
    steps = [(0, prompt)] + [(t, t + 1) for t in range(prompt, ids.shape[1])]
    logits = []
    positions = position_ids_from_attention_mask(mask)
    for start, stop in steps:
        feeds = {"input_ids": ids[:, start:stop].numpy(), "attention_mask": mask[:, :stop].numpy(), **past}
        if "token_type_ids" in [i.name for i in manifest.inputs]:
            feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
        if layout.position_ids:
            feeds[layout.position_ids] = positions[:, start:stop].numpy()
        results = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
        logits.append(results["logits"])
        past = {entry.input: results[entry.output] for entry in layout.entries}
    return logits


@pytest.mark.parametrize("model_type", [
    "gpt_neox", "mega", pytest.param("megatron-decoder", marks=pytest.mark.slow)])
def test_decoder_token_by_token_equals_full_recomputation(exports, model_type):
    ckpt, out = exports.get(model_type, "ForCausalLM")
    model = from_pretrained(ckpt)
    ids, mask = _left_padded_prompt(model.config, batch=2, length=9, seed=3)
    kwargs = {"position_ids": position_ids_from_attention_mask(mask)} if model_type == "gpt_neox" else {}
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, use_cache=False, **kwargs).logits
    steps = _decode(out, model, ids, mask, prompt=4)
    real = mask.bool()
    got = torch.from_numpy(np.concatenate(steps, axis=1))
    # Compare at real tokens: a padded query has no key to attend to, where the two models need not agree.
    error = float((got - full)[real].abs().max())
    scale = float(full[real].abs().max())
    assert error <= FP32_MAX_ABS, f"{model_type}: token-by-token decoding differs from full recomputation by {error}"
    assert error <= FP32_REL * scale, f"{model_type}: decoding error {error:.3g} next to the logits' scale {scale:.3g}"
    assert got.shape == full.shape


def test_decoder_manifest_cache_layout(exports):
    _, out = exports.get("gpt_neox", "ForCausalLM")
    manifest = mf.read_manifest(out)
    assert manifest.task == "text-generation-with-past"
    names = [i.name for i in manifest.inputs]
    assert names[:3] == ["input_ids", "attention_mask", "position_ids"]
    assert manifest.input("attention_mask").dims == (mf.BATCH, mf.TOTAL)
    assert manifest.input("past_key_values.1.value").dims == (mf.BATCH, 4, mf.PAST, 16)
    assert manifest.output("present.1.value").dims == (mf.BATCH, 4, mf.TOTAL, 16)
    assert {(e.input, e.output) for e in manifest.cache.entries} == {
        (f"past_key_values.{i}.{k}", f"present.{i}.{k}") for i in range(2) for k in ("key", "value")}


# ----------------------------------------------------------------------------------------------- the files


def test_graph_names_dims_and_checker(exports):
    ckpt, out = exports.get("megatron-bert", "ForPreTraining")
    manifest = mf.read_manifest(out)
    model = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)

    def dims(value):
        return tuple(d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim)

    assert [(i.name, dims(i)) for i in model.graph.input] == [(i.name, i.dims) for i in manifest.inputs]
    assert [(o.name, dims(o)) for o in model.graph.output] == [(o.name, o.dims) for o in manifest.outputs]
    assert [i.name for i in manifest.inputs] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in manifest.outputs] == ["prediction_logits", "seq_relationship_logits"]
    assert all(t.dtype == "int64" for t in manifest.inputs)
    assert manifest.opset == 18 and any(o.domain in ("", "ai.onnx") and o.version == 18 for o in model.opset_import)


def test_manifest_is_complete_and_hashes_match(exports):
    ckpt, out = exports.get("megatron-bert", "ForPreTraining")
    manifest = mf.read_manifest(out)  # checks every sha256
    text = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}  # the checkpoint's tokenizer
    assert set(manifest.files) == {"model.onnx", "config.json", *text}
    assert sorted(p.name for p in out.iterdir()) == sorted(["config.json", "manifest.json", "model.onnx", *text])
    assert json.loads((out / "config.json").read_text()) == json.loads((ckpt / "config.json").read_text())
    assert (manifest.model_type, manifest.head, manifest.hf_class) == (
        "megatron-bert", "ForPreTraining", "MegatronBertForPreTraining")
    assert manifest.precision == "fp32" and manifest.cache is None and manifest.custom_nodes == ()
    assert manifest.length_rules.max_length == 64
    verification = manifest.verification
    assert verification.status == "passed" and len(verification.checks) == 2
    assert verification.checks[0].shape != verification.checks[1].shape
    for check in verification.checks:
        assert {e.output for e in check.errors} == {"prediction_logits", "seq_relationship_logits"}
        for error in check.errors:
            assert 0 <= error.max_abs <= FP32_MAX_ABS and error.nmse < 1e-8 and error.cosine > 0.99999
    raw = json.loads((out / "manifest.json").read_text())
    assert raw["format_version"] == mf.FORMAT_VERSION


def test_custom_nodes_are_recorded(exports):
    for model_type, op_type in (("mega", "MegaEma"), ("mra", "MraAttention")):
        _, out = exports.get(model_type, "ForCausalLM" if model_type == "mega" else "ForMaskedLM")
        nodes = {(n.domain, n.op_type): n.count for n in mf.read_manifest(out).custom_nodes}
        assert nodes.get(("tensorkiln", op_type)) == 2, nodes  # one per layer of the 2-layer tiny models
        model = onnx.load(str(out / "model.onnx"))
        assert any(f.domain == "tensorkiln" and f.name == op_type for f in model.functions)


# ----------------------------------------------------------------------------------------------- failures


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_failed_verification_leaves_nothing(exports, tmp_path, monkeypatch, capsys):
    ckpt = exports.checkpoint("megatron-bert", "Model")
    monkeypatch.setattr(tolerances, "FP32_MAX_ABS", 0.0)  # no export can pass a zero tolerance
    out = tmp_path / "nested" / "out"
    assert kiln(["export", str(ckpt), str(out), "--task", "Model", "--no-progress"]) == 1
    assert "breaks the tolerance" in capsys.readouterr().err
    assert not (tmp_path / "nested").exists(), "a failed export must not leave its folder or the parents it made"
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_failure_at_any_step_leaves_nothing(exports, tmp_path, monkeypatch, error):
    """Whatever fails inside the export (here: after writing part of the graph), the temporary folder goes."""
    ckpt = exports.checkpoint("gpt_neox", "ForCausalLM")

    def broken(tmp, *args):
        (tmp / "model.onnx").write_bytes(b"half a graph")
        raise error

    monkeypatch.setattr(exporter, "_export_into", broken)
    with pytest.raises(type(error)):
        exporter.export(ckpt, tmp_path / "out", progress=False)
    assert os.listdir(tmp_path) == []
    # --overwrite replaces an existing export only once the new one is complete.
    previous = shutil.copytree(exports.get("gpt_neox", "ForCausalLM")[1], tmp_path / "out")
    before = mf.hash_files(previous)
    with pytest.raises(type(error)):
        exporter.export(ckpt, tmp_path / "out", progress=False, overwrite=True)
    assert os.listdir(tmp_path) == ["out"] and mf.hash_files(tmp_path / "out") == before


def test_cli_errors(exports, tmp_path, capsys):
    ckpt = exports.checkpoint("gpt_neox", "ForCausalLM")
    assert kiln(["export", str(tmp_path / "missing"), str(tmp_path / "a")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert kiln(["export", str(ckpt), str(tmp_path / "a"), "--task", "ForMaskedLM"]) == 2
    err = capsys.readouterr().err
    assert "has no head 'ForMaskedLM'" in err and "ForCausalLM" in err
    assert kiln(["export", str(ckpt), str(tmp_path / "a"), "--task", "fill-mask"]) == 2
    (tmp_path / "taken").mkdir()
    assert kiln(["export", str(ckpt), str(tmp_path / "taken"), "--no-progress"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert kiln(["export", str(ckpt), str(tmp_path / "a"), "--opset", "9"]) == 2
    assert kiln(["export", str(ckpt), str(tmp_path / "a"), "--seq", "4096"]) == 2
    assert "max length 128" in capsys.readouterr().err
    assert os.listdir(tmp_path) == ["taken"]
    with pytest.raises(ExportError, match="precision"):
        exporter.export(ckpt, tmp_path / "b", precision="int4")


def test_an_export_that_cannot_be_verified_fails_unless_asked(exports, tmp_path, monkeypatch, capsys):
    """ORT without a kernel for the graph (fp16 on some CPUs): no silent "skipped" pass; --no-verify writes it and
    the manifest says so."""
    import onnxruntime

    from tensorkiln.export import verify

    class NoFp16Session:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find an implementation for "
                               "MatMul(13) node with name 'n'")

    monkeypatch.setattr(onnxruntime, "InferenceSession", NoFp16Session)
    ckpt = exports.checkpoint("gpt_neox", "Model")
    with pytest.raises(verify.VerificationUnavailableError, match="--no-verify"):
        exporter.export(ckpt, tmp_path / "fp16", precision="fp16", progress=False)
    assert not (tmp_path / "fp16").exists()
    assert kiln(["export", str(ckpt), str(tmp_path / "fp16"), "--precision", "fp16", "--no-progress"]) == 2
    assert "cannot be checked here" in capsys.readouterr().err and not (tmp_path / "fp16").exists()
    code = kiln(["export", str(ckpt), str(tmp_path / "fp16"), "--precision", "fp16", "--no-progress", "--no-verify"])
    assert code == 0 and "not verified" in capsys.readouterr().err
    verification = mf.read_manifest(tmp_path / "fp16").verification
    assert verification.status == mf.UNVERIFIED and "--no-verify" in verification.reason


# ----------------------------------------------------------------------------------------------- fp16, big models


@pytest.mark.slow
@pytest.mark.parametrize(("model_type", "head"), FAST + [
    ("megatron-bert", "Model"), ("megatron-bert", "ForSequenceClassification"), ("gpt_neox", "Model")])
def test_fp16_export(exports, model_type, head):
    """fp16 graphs: fp16 weights and activations, int64 ids; on inputs made here, ORT's error against the fp32
    reference is at most 2x PyTorch fp16's own (plus one fp16 step at the output's scale), at real tokens."""
    ckpt, out = exports.get(model_type, head, "fp16")
    manifest = mf.read_manifest(out)
    assert manifest.precision == "fp16" and manifest.verification.status == "passed"
    assert all(t.dtype == "int64" for t in manifest.inputs if not t.name.startswith("past_key_values"))
    assert all(t.dtype == "float16" for t in manifest.outputs)
    model = onnx.load(str(out / "model.onnx"))
    matrices = [t for t in model.graph.initializer if len(t.dims) == 2 and min(t.dims) > 1]
    assert matrices and all(t.data_type == onnx.TensorProto.FLOAT16 for t in matrices), "weights must be fp16"

    reference = from_pretrained(ckpt, head)
    half = from_pretrained(ckpt, head, dtype=torch.float16)
    session = _session(out)
    names = [i.name for i in session.get_inputs()]
    length = manifest.length_rules.fixed_length or 12
    inputs = _encoder_inputs(reference.config, head, 2, length, seed=7, token_types="token_type_ids" in names)
    feeds = {k: v.numpy() for k, v in inputs.items() if k in names}
    if manifest.cache is not None:  # a prefill: empty pasts, positions from 0
        for entry in manifest.cache.entries:
            dims = [2 if d == mf.BATCH else 0 if d == mf.PAST else d for d in entry.dims]
            feeds[entry.input] = np.zeros(dims, dtype=np.float16)
        if manifest.cache.position_ids:
            feeds[manifest.cache.position_ids] = position_ids_from_attention_mask(inputs["attention_mask"]).numpy()
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    with torch.no_grad():
        want, own = reference(**inputs).to_dict(), half(**inputs).to_dict()
    for name in set(got) & set(want):
        value, ref, mine = got[name].astype(np.float64), want[name].double().numpy(), own[name].double().numpy()
        if value.ndim >= 2 and value.shape[:2] == tuple(inputs["attention_mask"].shape):  # per token: real ones
            real = inputs["attention_mask"].bool().numpy()
            value, ref, mine = value[real], ref[real], mine[real]
        ort_error, torch_error = np.abs(value - ref).max(), np.abs(mine - ref).max()
        step = float(np.spacing(np.float16(np.abs(ref).max())))
        assert ort_error <= 2 * torch_error + step, f"{name}: ORT fp16 {ort_error:.3g}, PyTorch fp16 {torch_error:.3g}"


@pytest.mark.slow
def test_external_data(exports, tmp_path):
    """Weights go to model.onnx.data when forced (automatic past 2 GB); the checker and ORT read it."""
    ckpt = exports.checkpoint("gpt_neox", "Model")
    shutil.copytree(exports.get("gpt_neox", "ForCausalLM")[1], tmp_path / "out")  # an earlier export, replaced
    manifest = exporter.export(ckpt, tmp_path / "out", task="Model", external_data=True, overwrite=True,
                               progress=False)
    assert not (tmp_path / "out" / "stale.txt").exists() and os.listdir(tmp_path) == ["out"]
    assert set(manifest.files) == {"model.onnx", "model.onnx.data", "config.json", "tokenizer.json",
                                   "tokenizer_config.json", "special_tokens_map.json"}
    assert (tmp_path / "out" / "model.onnx").stat().st_size < (tmp_path / "out" / "model.onnx.data").stat().st_size
    mf.read_manifest(tmp_path / "out")
    _check_encoder(ckpt, tmp_path / "out", "gpt_neox", "Model")
