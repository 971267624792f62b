"""``kiln parity`` end to end: tiny exports checked through the runtime against their reference models.

Each export is made once per module (5-15 s each on 2 cores) and shared. A passing run must report every shape x
output with figures under the policy's bounds; a broken graph (one weight scaled, the manifest's hashes rewritten
so the runtime loads it) and a runtime that raises must fail with exit 1; a checkpoint that is not the export's is a
usage error (exit 2). One test recomputes a reported figure from the reference model and ONNX Runtime directly.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from tensorkiln.export import exporter, parity
from tensorkiln.export.cli import main as kiln
from tensorkiln.export.specs import Shape, get_spec
from tensorkiln.reference import from_pretrained
from tensorkiln.reference.presets import init_checkpoint
from tensorkiln.runtime import manifest as mf
from tensorkiln.runtime import tolerances
from tensorkiln.runtime.backends import BackendUnavailableError
from tensorkiln.runtime.inputs import RuntimeInputError
from tensorkiln.runtime.session import Session

#: fp32: an encoder padded to a fixed length by the runtime, MRA (its custom node), the decoder with cache; and fp16.
PASSING = [("nystromformer", "ForMaskedLM", "fp32"), ("mra", "ForMaskedLM", "fp32"),
           ("gpt_neox", "ForCausalLM", "fp32"), ("megatron-bert", "Model", "fp16")]


def _parity(capsys, *args: str) -> tuple[int, str, str]:
    code = kiln(["parity", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _report(folder: Path) -> tuple[dict, str]:
    return json.loads((folder / "parity.json").read_text()), (folder / "parity.md").read_text()


# ----------------------------------------------------------------------------------------------- passing exports


@pytest.mark.parametrize(("model_type", "head", "precision"), PASSING)
def test_parity_passes_and_reports_every_shape_and_output(exports, tmp_path, capsys, model_type, head, precision):
    ckpt, out = exports.get(model_type, head, precision)
    code, stdout, _ = _parity(capsys, str(ckpt), str(out), "--report", str(tmp_path / "report"))
    data, markdown = _report(tmp_path / "report")
    assert code == 0, stdout
    assert data["status"] == "passed" and markdown == stdout and "**PASS**" in markdown
    assert (data["model_type"], data["head"], data["precision"]) == (model_type, head, precision)
    manifest = mf.read_manifest(out)
    outputs = [o.name for o in manifest.outputs]
    checks = data["checks"]
    assert len(checks) >= 4 and len({json.dumps(c["sizes"], sort_keys=True) for c in checks}) == len(checks)
    assert any(c["sizes"][mf.BATCH] == 1 for c in checks)
    for check in checks:
        assert [row["output"] for row in check["outputs"]] == outputs
        for row in check["outputs"]:
            assert row["passed"] and 0 <= row["max_abs"] <= row["bound"]["max_abs"] and row["cosine"] > 0.999
            assert f"{row['max_abs']:.3g}" in markdown and f"{row['nmse']:.3g}" in markdown
            if precision == "fp32":
                assert row["bound"] == {"max_abs": tolerances.FP32_MAX_ABS, "nmse": tolerances.FP32_MAX_NMSE}
                assert row["nmse"] <= tolerances.FP32_MAX_NMSE
            else:  # the 2x rule, on PyTorch fp16's own error at the same inputs
                own = row["torch_half_max_abs"]
                assert own is not None and row["bound"]["max_abs"] >= tolerances.HALF_ERROR_RATIO * own
                assert row["compared"] == ("real tokens" if row["output"] == "last_hidden_state" else "all")
    sizes = [c["sizes"] for c in checks]
    if model_type == "nystromformer":  # shorter real lengths go through the session's fixed-length padding
        fixed = manifest.length_rules.fixed_length
        assert {s[mf.SEQUENCE] for s in sizes} > {fixed} and min(s[mf.SEQUENCE] for s in sizes) < fixed
    if model_type == "mra":  # near the max length, across 32-token blocks
        assert max(s[mf.SEQUENCE] for s in sizes) == manifest.length_rules.max_length - 1
    if model_type == "gpt_neox":  # left-padded prefills and steps after a past, one reaching the max length
        assert any(s[mf.PAST] == 0 and s[mf.SEQUENCE] > 1 for s in sizes)
        assert any(s[mf.PAST] > 0 and s[mf.SEQUENCE] == 1 for s in sizes)
        assert any(s[mf.PAST] > 0 and s[mf.SEQUENCE] > 1 for s in sizes)
        assert max(s[mf.PAST] + s[mf.SEQUENCE] for s in sizes) == manifest.length_rules.max_length


def test_reported_error_matches_an_independent_computation(exports, tmp_path):
    """The report's max abs for one feed, recomputed from the reference model (HF keyword arguments) and a plain
    ONNX Runtime session on the same inputs."""
    ckpt, out = exports.get("mra", "ForMaskedLM")
    report = parity.run_parity(ckpt, out, shapes=1, seed=5)
    (check,) = report.checks
    (row,) = check.outputs
    model = from_pretrained(ckpt, "ForMaskedLM")
    shape = Shape(check.sizes[mf.BATCH], check.sizes[mf.SEQUENCE])
    inputs = get_spec("mra").dummy_inputs(model.config, "ForMaskedLM", shape, seed=check.seed)
    assert check.seed == 6 and inputs["attention_mask"].min() == 0  # seed + 1; padded
    with torch.no_grad():
        want = model(**inputs).logits.double().numpy()
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {name: value.numpy() for name, value in inputs.items()})
    expected = float(np.abs(got.astype(np.float64) - want).max())
    assert 0 < expected <= tolerances.FP32_MAX_ABS
    assert math.isclose(row.max_abs, expected, rel_tol=1e-6), (row.max_abs, expected)


def test_default_report_folder_is_beside_the_export(exports, capsys):
    ckpt, out = exports.get("gpt_neox", "ForCausalLM")
    code, stdout, err = _parity(capsys, str(ckpt), str(out), "--shapes", "2", "--seed", "3")
    folder = out.parent / f"{out.name}-parity"
    assert code == 0 and str(folder) in err
    data, markdown = _report(folder)
    assert len(data["checks"]) == 2 and data["checks"][0]["seed"] == 4 and markdown == stdout
    manifest = mf.read_manifest(out)  # the export's hashes still hold
    assert sorted(p.name for p in out.iterdir()) == sorted([*manifest.files, "manifest.json"])  # nothing added


# ----------------------------------------------------------------------------------------------- failures


def _broken_copy(out: Path, target: Path) -> Path:
    """A copy of the export with one MatMul weight scaled by 1.1, its manifest hashes rewritten to match."""
    shutil.copytree(out, target)
    model = onnx.load(str(target / "model.onnx"))
    initializers = {t.name: t for t in model.graph.initializer}
    weight = next(initializers[n.input[1]] for n in model.graph.node
                  if n.op_type in ("MatMul", "Gemm") and n.input[1] in initializers)
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(1.1), weight.name))
    onnx.save(model, str(target / "model.onnx"))
    manifest = mf.read_manifest(target, check_files=False)
    mf.write_manifest(dataclasses.replace(manifest, files=mf.hash_files(target)), target)
    return target


def test_a_broken_graph_fails(exports, tmp_path, capsys):
    ckpt, out = exports.get("gpt_neox", "ForCausalLM")
    broken = _broken_copy(out, tmp_path / "broken")
    code, stdout, _ = _parity(capsys, str(ckpt), str(broken), "--shapes", "2")
    data, markdown = _report(tmp_path / "broken-parity")
    assert code == 1
    assert data["status"] == "failed" and "**FAIL**" in markdown and markdown == stdout
    failed = [row for check in data["checks"] for row in check["outputs"] if not row["passed"]]
    assert any(row["output"] == "logits" for row in failed)
    assert all(row["reason"] and ("max abs" in row["reason"] or "NMSE" in row["reason"]) for row in failed)


def test_a_runtime_that_raises_fails(exports, tmp_path, capsys, monkeypatch):
    ckpt, out = exports.get("gpt_neox", "ForCausalLM")

    def refuse(self, **inputs):
        raise RuntimeInputError("input 'position_ids' holds 200, outside the positions [0, 128)")

    monkeypatch.setattr(Session, "run", refuse)
    code, stdout, _ = _parity(capsys, str(ckpt), str(out), "--shapes", "1", "--report", str(tmp_path / "r"))
    data, markdown = _report(tmp_path / "r")
    assert code == 1 and data["status"] == "failed" and "position_ids" in data["reason"]
    assert "**FAIL**" in stdout and "RuntimeInputError" in markdown


def test_fp16_that_ort_cannot_load_is_not_run_and_not_passed(exports, tmp_path, capsys, monkeypatch):
    ckpt, out = exports.get("megatron-bert", "Model", "fp16")

    def unavailable(*args, **kwargs):
        raise BackendUnavailableError("ONNX Runtime's CPUExecutionProvider cannot run this fp16 export (test)")

    monkeypatch.setattr(parity, "load", unavailable)
    code, stdout, _ = _parity(capsys, str(ckpt), str(out), "--report", str(tmp_path / "r"))
    data, markdown = _report(tmp_path / "r")
    assert code == 1 and data["status"] == "not run" and data["checks"] == []
    assert "cannot run this fp16 export" in data["reason"]
    assert "NOT RUN" in markdown and "PASS" not in markdown


def test_mismatched_checkpoint_and_export_are_usage_errors(exports, tmp_path, capsys):
    _, neox = exports.get("gpt_neox", "ForCausalLM")
    mra_ckpt = exports.checkpoint("mra", "ForMaskedLM")
    code, _, err = _parity(capsys, str(mra_ckpt), str(neox))
    assert code == 2 and "'mra'" in err and "'gpt_neox'" in err

    other_head = init_checkpoint("tiny-gpt-neox", tmp_path / "neox-model", head="Model")
    code, _, err = _parity(capsys, str(other_head), str(neox))
    assert code == 2 and "head" in err and "GPTNeoXModel" in err

    changed = tmp_path / "neox-changed"
    shutil.copytree(exports.checkpoint("gpt_neox", "ForCausalLM"), changed)
    config = json.loads((changed / "config.json").read_text())
    config["rotary_pct"] = 1.0 if config.get("rotary_pct") != 1.0 else 0.5
    (changed / "config.json").write_text(json.dumps(config))
    code, _, err = _parity(capsys, str(changed), str(neox))
    assert code == 2 and "rotary_pct" in err

    ckpt = exports.checkpoint("gpt_neox", "ForCausalLM")
    code, _, err = _parity(capsys, str(ckpt), str(neox), "--report", str(neox / "parity"))
    assert code == 2 and "inside the export" in err
    assert _parity(capsys, str(ckpt), str(neox), "--shapes", "0")[0] == 2
    assert _parity(capsys, str(ckpt), str(tmp_path / "missing"))[0] == 2
    assert not (tmp_path / "missing-parity").exists()


# ----------------------------------------------------------------------------------------------- the policy


def test_export_check_and_parity_judge_by_the_one_policy(exports, tmp_path, monkeypatch):
    """Tightening the policy's fp32 bound makes both the export-time check and kiln parity fail: neither keeps a
    copy of the numbers or of the rule."""
    ckpt, out = exports.get("mra", "ForMaskedLM")
    monkeypatch.setattr(tolerances, "FP32_MAX_ABS", 1e-12)
    with pytest.raises(exporter.VerificationError, match="max abs .* > 1e-12"):
        exporter.export(ckpt, tmp_path / "strict", progress=False)
    assert not (tmp_path / "strict").exists()
    report = parity.run_parity(ckpt, out, shapes=1)
    assert report.status == "failed" and "> 1e-12" in report.failures()[0]


def test_policy_rules():
    assert tolerances.errors("x", np.array([np.nan]), np.array([1.0])) == (math.inf, math.inf, -1.0)
    assert tolerances.errors("x", np.array([1.0]), np.array([np.inf])) == (math.inf, math.inf, -1.0)
    with pytest.raises(ValueError, match="'x' has shape"):
        tolerances.errors("x", np.zeros(2), np.zeros(3))
    small = tolerances.Errors(5e-5, 1e-12, 1.0)
    assert tolerances.judge("fp32", small).passed
    assert not tolerances.judge("fp32", small._replace(nmse=1e-6)).passed  # tiny outputs: NMSE catches it
    assert not tolerances.judge("fp32", small._replace(max_abs=2e-4)).passed
    assert tolerances.judge("fp16", small, torch_half_max_abs=3e-5).passed
    assert not tolerances.judge("fp16", small, torch_half_max_abs=2e-5).passed
    assert tolerances.judge("fp16", small, torch_half_max_abs=2e-5, resolution=1e-5).passed
    # Without PyTorch's own figure, or a non-finite one, the rule cannot judge: never a pass.
    assert not tolerances.judge("fp16", small).passed
    assert not tolerances.judge("fp16", small, torch_half_max_abs=math.inf).passed
    assert not tolerances.judge("fp16", small._replace(max_abs=math.inf), torch_half_max_abs=math.inf).passed
