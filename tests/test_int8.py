"""int8 exports (``kiln quantize``, ``kiln export --precision int8``): every architecture quantizes and passes the int8
rule, the custom nodes and their function bodies stay fp32, and the rule can fail.

Oracles: HF transformers (4.57.6; MRA with the CUDA extension emulated by ``tests/hf_mra_kernels.py``) run on
inputs made here, with cosine, NMSE and top-1 agreement computed here in
numpy (the bounds come from the policy, ``runtime/tolerances.py``); the graph itself (op counts, function protos)
read with ``onnx``. The gate is shown to pass on checkpoints initialised as ``init-checkpoint`` does (HF init) and
on a trained-like distribution with moderate outliers, to refuse strong activation outliers (confirmed by running
the quantized graph here), and to catch a deliberately corrupted weight scale.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hf_mra_kernels import EmulatedMraKernels
from onnx import numpy_helper

from tensorkiln.export import exporter, parity, quantize, verify
from tensorkiln.export.cli import main as kiln
from tensorkiln.export.specs import ExportError, get_spec
from tensorkiln.reference import from_pretrained
from tensorkiln.reference.presets import DEMO_PRESETS, init_checkpoint
from tensorkiln.runtime import manifest as mf
from tensorkiln.runtime.session import load
from tensorkiln.runtime.tolerances import INT8_MAX_NMSE, INT8_MIN_COSINE, INT8_MIN_TOP1, INT8_TIE_MARGIN

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

#: One head per architecture: both decoders with their cache, MegatronBERT's pre-training head (per-token and
#: pooled class scores), Nystromformer's fixed-length graph, MRA's custom node.
FIVE = [("gpt_neox", "ForCausalLM"), ("mega", "ForCausalLM"), ("megatron-bert", "ForPreTraining"),
        ("nystromformer", "ForMaskedLM"), ("mra", "ForMaskedLM")]


# ----------------------------------------------------------------------------------------------- the oracle


@pytest.fixture(autouse=True)
def hf_mra_kernels(monkeypatch):
    """HF's MRA returns zeros for attention without its CUDA extension: run it with the emulated kernels."""
    from transformers.models.mra import modeling_mra

    monkeypatch.setattr(modeling_mra, "mra_cuda_kernel", EmulatedMraKernels())


def _hf_model(ckpt: Path):
    config = json.loads((ckpt / "config.json").read_text())
    if config["model_type"] == "mega":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import transformers.models.deprecated.mega as module
    else:
        module = transformers
    return getattr(module, config["architectures"][0]).from_pretrained(ckpt).eval()


def _inputs(config: dict, batch: int, length: int, seed: int) -> dict[str, np.ndarray]:
    """Random ids; row 0 right-padded by a quarter (pad ids there), except for MRA, where HF garbles a padding mask
    (tests/test_parity_mra.py). Causal models see the real tokens unchanged."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, config["vocab_size"], (batch, length), dtype=np.int64)
    mask = np.ones_like(ids)
    if config["model_type"] != "mra":
        mask[0, length - length // 4:] = 0
    if config.get("pad_token_id") is not None:
        ids[mask == 0] = config["pad_token_id"]
    return {"input_ids": ids, "attention_mask": mask}


def _metrics(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    got, want = got.astype(np.float64).ravel(), want.astype(np.float64).ravel()
    cosine = float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want)))
    return cosine, float(np.sum((got - want) ** 2) / np.sum(want ** 2))


def _agreeing(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Per row of class scores: the int8 top-1 is the reference's, or a choice it scores within the tie margin."""
    got, want = got.astype(np.float64), want.astype(np.float64)
    tie = INT8_TIE_MARGIN * np.sqrt(np.mean(want ** 2))
    picked = np.take_along_axis(want, got.argmax(-1)[..., None], -1)[..., 0]
    return picked >= want.max(-1) - tie


def _check_against_hf(ckpt: Path, export: Path, lengths: list[int]) -> dict[str, float]:
    """Run the int8 export with the runtime and HF on the same inputs: every output's cosine and NMSE at real tokens
    within the policy's bounds at each shape, per-token top-1 over all shapes >= the bound, pooled labels equal on
    every row. Returns the worst cosine per output."""
    config = json.loads((ckpt / "config.json").read_text())
    hf, session = _hf_model(ckpt), load(export)
    outputs = [o for o in session.manifest.outputs if not o.name.startswith("present.")]
    worst, agreeing = {}, collections.defaultdict(list)
    for seed, (batch, length) in enumerate(zip((2, 3), lengths)):
        inputs = _inputs(config, batch, length, seed)
        got = session.run(**inputs)
        with torch.no_grad():
            want = hf(**{k: torch.from_numpy(v) for k, v in inputs.items()})
        real = inputs["attention_mask"].astype(bool)
        for info in outputs:
            reference = want[info.name].float().numpy()
            per_token = info.token_axis is not None
            g, w = (got[info.name][real], reference[real]) if per_token else (got[info.name], reference)
            cosine, nmse = _metrics(g, w)
            worst[info.name] = min(worst.get(info.name, 1.0), cosine)
            if not per_token and info.name.endswith("logits"):  # pooled class scores: judged by their labels
                assert _agreeing(g, w).all(), (info.name, batch, length)
                continue
            assert cosine >= INT8_MIN_COSINE and nmse <= INT8_MAX_NMSE, (info.name, batch, length, cosine, nmse)
            if info.name.endswith("logits") and g.ndim == 2:  # (real tokens, classes)
                agreeing[info.name].append(_agreeing(g, w))
    for name, rows in agreeing.items():
        assert np.concatenate(rows).mean() >= INT8_MIN_TOP1, name
    return worst


def _lengths(export: Path) -> list[int]:
    manifest = mf.read_manifest(export)
    fixed, longest = manifest.length_rules.fixed_length, manifest.length_rules.max_length
    if manifest.model_type == "mra":  # HF's MRA: whole 32-token blocks, and (L / 32)^2 blocks to hold its budget
        config = json.loads((export / "config.json").read_text())
        budget = longest // 32 * config["block_per_row"]
        shortest = 32 * math.ceil(math.sqrt(budget))
        return [shortest, min(2 * shortest, longest)]
    return [fixed, fixed] if fixed else [24, min(40, longest)]


# ----------------------------------------------------------------------------------------------- every architecture


@pytest.mark.parametrize(("model_type", "head"), FIVE)
def test_every_architecture_quantizes_and_passes_the_gate(exports, model_type, head):
    ckpt, out = exports.get(model_type, head, "int8")
    fp32 = exports.get(model_type, head)[1]
    manifest, source = mf.read_manifest(out), mf.read_manifest(fp32)
    assert manifest.precision == "int8" and manifest.verification.status == "passed"
    assert manifest.verification.oracle == "the reference model (PyTorch fp32)"
    assert manifest.inputs == source.inputs and all(i.dtype == "int64" for i in manifest.inputs if "past" not in i.name)
    assert manifest.outputs == source.outputs and {o.dtype for o in manifest.outputs} == {"float32"}
    quantization = manifest.quantization
    assert (quantization.method, quantization.tool, quantization.tool_version) == (
        "dynamic", "onnxruntime.quantization.quantize_dynamic", ort.__version__)
    assert quantization.source_sha256 == source.files[source.model_file]

    graph, fp32_graph = (onnx.load(str(f / "model.onnx"), load_external_data=False) for f in (out, fp32))
    ops = collections.Counter(node.op_type for node in graph.graph.node)
    # Each quantized MatMul or Gemm of the fp32 graph is one MatMulInteger here; none is left.
    fp32_ops = collections.Counter(node.op_type for node in fp32_graph.graph.node)
    assert sum(quantization.quantized.values()) == ops["MatMulInteger"] >= 8 and ops["Gemm"] == 0
    assert quantization.quantized.get("Gemm", 0) == fp32_ops["Gemm"]
    # The custom nodes and their model-local function bodies are exactly the fp32 export's.
    assert [f.SerializeToString() for f in graph.functions] == [f.SerializeToString() for f in fp32_graph.functions]
    assert manifest.custom_nodes == source.custom_nodes
    if model_type in ("mra", "mega"):
        assert len(graph.functions) == 1 and manifest.custom_nodes[0].count == 2
    # The gate's per-token agreement covers the evaluation set, a few hundred real tokens.
    for name, counts in manifest.verification.agreement.items():
        assert counts["total"] >= 250 and counts["agree"] / counts["total"] >= INT8_MIN_TOP1, name
    _check_against_hf(ckpt, out, _lengths(out))


def test_export_int8_is_quantize_of_the_fp32_export(exports, tmp_path, capsys):
    """``kiln export --precision int8`` writes the graph ``kiln quantize`` makes of the fp32 export; without a
    checkpoint the check compares against the fp32 export in ONNX Runtime."""
    ckpt, fp32 = exports.get("mra", "ForMaskedLM")
    assert kiln(["export", str(ckpt), str(tmp_path / "a"), "--precision", "int8", "--no-progress"]) == 0
    assert kiln(["quantize", str(fp32), str(tmp_path / "b"), "--no-progress"]) == 0
    stdout = capsys.readouterr().out
    assert "int8: dynamic quantization by onnxruntime.quantization.quantize_dynamic" in stdout
    assert "checked against the fp32 export in ONNX Runtime (CPU) at 4 shapes" in stdout
    a, b = mf.read_manifest(tmp_path / "a"), mf.read_manifest(tmp_path / "b")
    assert a.files[mf.MODEL_NAME] == b.files[mf.MODEL_NAME]
    assert a.verification.oracle != b.verification.oracle and b.verification.status == "passed"
    assert kiln(["info", str(tmp_path / "b")]) == 0
    assert "- int8: dynamic quantization" in capsys.readouterr().out


def test_quantize_refuses_what_it_cannot_do(exports, tmp_path, capsys):
    ckpt, fp32 = exports.get("mra", "ForMaskedLM")
    int8 = exports.get("mra", "ForMaskedLM", "int8")[1]
    assert kiln(["quantize", str(int8), str(tmp_path / "x"), "--no-progress"]) == 2
    assert "is not an fp32 export (its precision is int8)" in capsys.readouterr().err
    (tmp_path / "exists").mkdir()
    assert kiln(["quantize", str(fp32), str(tmp_path / "exists"), "--no-progress"]) == 2
    assert "already exists" in capsys.readouterr().err
    other = exports.checkpoint("megatron-bert", "ForMaskedLM")
    assert kiln(["quantize", str(fp32), str(tmp_path / "y"), "--checkpoint", str(other), "--no-progress"]) == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["exists"]  # no staging folder left behind


def test_function_check_can_fail(exports):
    fp32 = onnx.load(str(exports.get("mega", "ForCausalLM")[1] / "model.onnx"))
    changed = onnx.ModelProto()
    changed.CopyFrom(fp32)
    changed.functions[0].node[0].name += "-edited"
    with pytest.raises(ExportError, match="changed the model-local functions"):
        quantize.check_functions_untouched(fp32, changed)
    quantize.check_functions_untouched(fp32, fp32)


# ----------------------------------------------------------------------------------------------- the gate can fail


def _scale(model: onnx.ModelProto, length: int) -> onnx.TensorProto:
    """The first per-channel weight scale with ``length`` channels (one per output of its MatMul)."""
    return next(t for t in model.graph.initializer if t.name.endswith("_scale") and list(t.dims) == [length])


def _corrupted(export: Path, folder: Path, length: int, factor: float) -> Path:
    """A copy of ``export`` with one weight scale multiplied by ``factor`` and the manifest's hashes rewritten."""
    shutil.copytree(export, folder)
    model = onnx.load(str(folder / "model.onnx"))
    tensor = _scale(model, length)
    tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * np.float32(factor), tensor.name))
    onnx.save(model, str(folder / "model.onnx"))
    manifest = mf.read_manifest(folder, check_files=False)
    mf.write_manifest(dataclasses.replace(manifest, files=mf.hash_files(folder)), folder)
    return folder


def _gate(ckpt: Path, folder: Path):
    manifest = mf.read_manifest(folder)
    model = from_pretrained(ckpt, manifest.head)
    spec = get_spec(manifest.model_type)
    shapes = quantize.evaluation_shapes(spec, model.config, manifest.head, 2, 16)
    return verify.verify_int8(folder, spec, model.config, manifest.head,
                              quantize.reference_oracle(model, spec, manifest.head), "reference", shapes)


def test_gate_catches_a_corrupted_scale(exports, tmp_path):
    ckpt, out = exports.get("megatron-bert", "ForPreTraining", "int8")
    config = json.loads((ckpt / "config.json").read_text())
    assert _gate(ckpt, out).status == "passed"
    # The MLP's first weight 10x too large: cosine and top-1 collapse.
    broken = _corrupted(out, tmp_path / "mlp", config["intermediate_size"], 10.0)
    with pytest.raises(verify.VerificationError, match=r"(?s)prediction_logits at .*cosine .* < 0.999.*top-1"):
        _gate(ckpt, broken)
    report = parity.run_parity(ckpt, broken)
    assert report.status == "failed" and any("top-1 agreement" in f for f in report.failures())
    # The LM head's scale 1.5x: the cosine stays within its bound (shown here against HF), the NMSE bound catches it.
    head = _corrupted(out, tmp_path / "head", config["vocab_size"], 1.5)
    assert not _nmse_ok(ckpt, head)
    with pytest.raises(verify.VerificationError, match=r"prediction_logits at .*NMSE .* a wrong scale"):
        _gate(ckpt, head)


def _nmse_ok(ckpt: Path, export: Path) -> bool:
    """Whether the export's masked-LM logits meet both bounds against HF on one input; asserts cosine alone does."""
    config = json.loads((ckpt / "config.json").read_text())
    inputs = _inputs(config, 2, 24, seed=7)
    got = load(export).run(**inputs)["prediction_logits"]
    with torch.no_grad():
        want = _hf_model(ckpt)(**{k: torch.from_numpy(v) for k, v in inputs.items()}).prediction_logits.numpy()
    real = inputs["attention_mask"].astype(bool)
    cosine, nmse = _metrics(got[real], want[real])
    assert cosine >= INT8_MIN_COSINE
    return nmse <= INT8_MAX_NMSE


# ----------------------------------------------------------------------------------------------- weight distributions


def _trained_like(folder: Path, norm_gain: float, tail_df: float) -> Path:
    """An HF-init tiny MegatronBERT masked LM given what trained transformers have: heavy-tailed weights (Student t
    with ``tail_df`` degrees of freedom, same std) and two outlier channels in every LayerNorm scale (``norm_gain``
    times the rest), which make every norm's output carry two channels that large."""
    from safetensors.torch import load_file, save_file

    init_checkpoint("tiny-megatron-bert", folder, seed=0)
    state = load_file(folder / "model.safetensors")
    with torch.random.fork_rng():
        torch.manual_seed(1)  # torch.distributions draws from the global generator
        for name, tensor in sorted(state.items()):
            if tensor.ndim == 2 and "embeddings" not in name and min(tensor.shape) > 2:
                draw = torch.distributions.StudentT(tail_df).sample(tensor.shape)
                state[name] = (draw / draw.std() * tensor.std()).contiguous()
            elif name.endswith(("ln.weight", "LayerNorm.weight")):
                tensor = tensor.clone()
                tensor[:2] *= norm_gain
                state[name] = tensor
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def test_trained_like_weights_pass_and_strong_outliers_are_refused(tmp_path):
    moderate = _trained_like(tmp_path / "moderate", norm_gain=6.0, tail_df=4.0)
    manifest = exporter.export(moderate, tmp_path / "moderate-int8", precision="int8", progress=False)
    assert manifest.verification.status == "passed"
    _check_against_hf(moderate, tmp_path / "moderate-int8", [24, 40])

    strong = _trained_like(tmp_path / "strong", norm_gain=32.0, tail_df=4.0)
    with pytest.raises(verify.VerificationError, match="cosine"):
        exporter.export(strong, tmp_path / "strong-int8", precision="int8", progress=False)
    assert not (tmp_path / "strong-int8").exists()
    # The refusal is right: the same quantization, run here, is below the cosine bound against HF.
    exporter.export(strong, tmp_path / "strong-fp32", progress=False)
    (tmp_path / "graph").mkdir()
    quantize.prepare(tmp_path / "strong-fp32" / "model.onnx", tmp_path / "graph", False)
    quantize.quantize_graph(tmp_path / "graph" / "model.onnx", tmp_path / "graph" / "int8.onnx", False)
    inputs = _inputs(json.loads((strong / "config.json").read_text()), 3, 40, seed=3)
    session = ort.InferenceSession(str(tmp_path / "graph" / "int8.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {**inputs, "token_type_ids": np.zeros_like(inputs["input_ids"])})
    with torch.no_grad():
        want = _hf_model(strong)(**{k: torch.from_numpy(v) for k, v in inputs.items()}).logits.numpy()
    real = inputs["attention_mask"].astype(bool)
    assert _metrics(got[real], want[real])[0] < INT8_MIN_COSINE


# ----------------------------------------------------------------------------------------------- published sizes


@pytest.mark.slow
@pytest.mark.parametrize("preset", DEMO_PRESETS)
def test_published_configs_pass_the_gate(tmp_path, preset):
    """The five demo checkpoints at their published sizes (HF init): the int8 export passes and agrees with HF."""
    init_checkpoint(preset, tmp_path / "ckpt", seed=0)
    manifest = exporter.export(tmp_path / "ckpt", tmp_path / "int8", precision="int8", progress=False)
    assert manifest.verification.status == "passed"
    _check_against_hf(tmp_path / "ckpt", tmp_path / "int8", _lengths(tmp_path / "int8"))


# ----------------------------------------------------------------------------------------------- the rule itself


def test_int8_rule():
    from tensorkiln.runtime import tolerances as t

    assert t.class_scores("logits", (2, 5, 10), 1) and t.class_scores("logits", (2, 3), None)
    assert not t.class_scores("start_logits", (2, 5), 1)  # QA logits run over tokens
    assert not t.class_scores("logits", (2, 1), None)  # one label: a regression
    assert not t.class_scores("last_hidden_state", (2, 5, 8), 1)
    want = np.array([[3.0, 0.0, 0.0], [0.0, 3.0, 2.95], [1.0, 0.0, 0.0]])
    same = want.copy()
    assert t.agreement(same, want) == (3, 3)
    flipped = np.array([[0.0, 3.0, 0.0], [0.0, 2.0, 3.0], [1.0, 0.0, 0.0]])  # row 0 flips, row 1 picks a near-tie
    assert t.agreement(flipped, want) == (2, 3)
    assert t.agreement(flipped, want, rows=np.array([False, True, True])) == (2, 2)
    assert t.agreement(np.full_like(want, np.nan), want) == (0, 3)

    good = t.Errors(0.1, 1e-3, 0.9995)
    assert t.judge("int8", good).passed
    assert not t.judge("int8", good._replace(cosine=0.998)).passed
    assert "wrong scale" in t.judge("int8", good._replace(nmse=0.25, cosine=1.0)).reason
    assert t.judge("int8", good._replace(cosine=0.5), labels=t.Agreement(3, 3)).passed  # pooled: labels decide
    assert not t.judge("int8", good, labels=t.Agreement(2, 3)).passed
    assert not t.judge("int8", good, labels=t.Agreement(0, 0)).passed
    assert t.judge_agreement("x", [t.Agreement(99, 100), t.Agreement(100, 100)]).passed
    assert not t.judge_agreement("x", [t.Agreement(98, 100)]).passed
    assert not t.judge_agreement("x", []).passed

    rng = np.random.default_rng(0)
    reference = rng.normal(size=(2, 6, 50))
    mask = np.ones((2, 6), dtype=np.int64)
    mask[0, 4:] = 0
    noisy = reference + 0.01 * rng.normal(size=reference.shape)
    noisy[0, 4:] = 100.0  # padded tokens: anything
    result = t.compare("int8", "logits", noisy, reference, token_axis=1, attention_mask=mask)
    assert result.verdict.passed and result.compared == "real tokens" and result.agreement == (10, 10)
    noisy[1, 0] = 100.0  # a real token
    assert not t.compare("int8", "logits", noisy, reference, token_axis=1, attention_mask=mask).verdict.passed
    with pytest.raises(ValueError, match="no rule for precision 'int4'"):
        t.compare("int4", "logits", noisy, reference)


# ----------------------------------------------------------------------------------------- runtime, parity, Triton


def test_parity_runtime_and_triton_take_int8_exports(exports, tmp_path):
    ckpt, out = exports.get("gpt_neox", "ForCausalLM", "int8")
    report = parity.run_parity(ckpt, out)
    assert report.ok and report.precision == "int8" and len(report.checks) >= 4
    (logits,) = report.agreement
    assert logits.output == "logits" and logits.passed and logits.total > 100
    rows = [row for check in report.checks for row in check.outputs]
    assert all(row.bound == {"cosine": INT8_MIN_COSINE, "nmse": INT8_MAX_NMSE} for row in rows)
    markdown = parity.to_markdown(report)
    assert "top-1 agreement, all shapes" in markdown and "**PASS**" in markdown

    session = load(out)
    prompt = np.random.default_rng(0).integers(3, 500, (2, 5))
    tokens = session.generate(prompt, 6)
    assert tokens.shape == (2, 11) and tokens.dtype == np.int64 and (tokens[:, :5] == prompt).all()

    from tensorkiln.runtime.triton import write_repository

    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from google.protobuf import text_format

    repo = write_repository(exports.get("mra", "ForMaskedLM", "int8")[1], tmp_path / "repo")
    config = text_format.Parse((repo / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.parameters["tensorkiln.precision"].string_value == "int8" and config.max_batch_size == 8
    assert {model_config_pb2.DataType.Name(i.data_type) for i in config.input} == {"TYPE_INT64"}
    assert {model_config_pb2.DataType.Name(o.data_type) for o in config.output} == {"TYPE_FP32"}
    graph = onnx.load(str(repo / "1" / "model.onnx"), load_external_data=False)
    assert "MatMulInteger" in {node.op_type for node in graph.graph.node}


def test_manifest_requires_the_quantization_record_for_int8(exports):
    from tensorkiln.runtime.errors import ManifestError

    manifest = mf.read_manifest(exports.get("mra", "ForMaskedLM", "int8")[1])
    data = json.loads(json.dumps(mf.to_dict(manifest)))  # as read from manifest.json
    assert mf.from_dict(data) == manifest
    with pytest.raises(ManifestError, match="'quantization' must be present exactly for int8"):
        mf.from_dict({**data, "quantization": None})
    with pytest.raises(ManifestError, match="'quantization' must be present exactly for int8"):
        mf.from_dict({**data, "precision": "fp32"})
