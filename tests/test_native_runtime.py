"""The runtime with the native kernels: load(kernels=...), what a Session reports, whole tiny exports run natively
against their function bodies and the reference model, the decoder cache, ``kiln parity --kernels native``,
``kiln info``, and the library itself (one exported symbol, no link against libonnxruntime).

Whole-model comparisons use the runtime's fp32 bound (tolerances.FP32_MAX_ABS), as the export check does: errors
of the op accumulate through the layers. The op-level bound is checked node by node in tests/test_native_ops.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch

from tensorkiln.export.cli import main as kiln
from tensorkiln.reference import from_pretrained
from tensorkiln.runtime import load, native
from tensorkiln.runtime.errors import BackendUnavailableError, UsageError
from tensorkiln.runtime.tolerances import FP32_MAX_ABS

#: Tiny exports holding custom nodes: MRA (MraAttention), Mega causal LM (MegaEma with prev_state: the cache),
#: Mega bidirectional and chunked (tests/tiny_exports.py VARIANTS).
MODELS = [("mra", "ForMaskedLM"), ("mega", "ForCausalLM"), ("mega-bidirectional", "ForMaskedLM"),
          ("mega-chunked", "ForMaskedLM")]


@pytest.fixture
def no_library(tmp_path, monkeypatch):
    """A machine where the library was never built."""
    monkeypatch.delenv(native.ENV_LIBRARY, raising=False)
    monkeypatch.setenv(native.ENV_CACHE, str(tmp_path / "empty-cache"))


def _ids(vocab: int, batch: int, length: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(3, vocab, size=(batch, length), dtype=np.int64)


def _mask(batch: int, length: int) -> np.ndarray:
    mask = np.ones((batch, length), np.int64)
    for row in range(1, batch):
        mask[row, length - row * 3:] = 0
    return mask


# ------------------------------------------------------------------------------------------------ the choice


def test_auto_without_library_runs_function_bodies_and_says_why(exports, no_library):
    _, out = exports.get("mra", "ForMaskedLM")
    session = load(out)
    [(name, label)] = session.custom_node_implementations.items()
    assert name == "tensorkiln::MraAttention"
    assert label.startswith(native.FUNCTION_BODY) and native.BUILD_COMMAND in label
    assert "tensorkiln::MraAttention: function body" in repr(session)


def test_native_without_library_names_the_build_command(exports, no_library):
    _, out = exports.get("mra", "ForMaskedLM")
    with pytest.raises(BackendUnavailableError, match=f"`{native.BUILD_COMMAND}`"):
        load(out, kernels="native")
    assert load(out, kernels="function").custom_node_implementations == {"tensorkiln::MraAttention": "function body"}
    with pytest.raises(UsageError, match="kernels must be one of"):
        load(out, kernels="fast")


def test_a_missing_library_path_is_an_error(exports, monkeypatch, tmp_path):
    _, out = exports.get("mra", "ForMaskedLM")
    monkeypatch.setenv(native.ENV_LIBRARY, str(tmp_path / "nowhere.so"))
    with pytest.raises(BackendUnavailableError, match=native.ENV_LIBRARY):
        load(out)


def test_exports_without_custom_nodes_load_nothing(exports, native_kernels):
    _, out = exports.get("gpt_neox", "ForCausalLM")
    assert load(out, kernels="native").custom_node_implementations == {}


@pytest.mark.parametrize("change, reason", [
    ({"sources_sha256": "0" * 64}, "kernel sources changed"),
    ({"tensorkiln_version": "0.0.1"}, "built for tensorkiln 0.0.1"),
    ({"ort_api_version": 999}, "API 999 headers"),
])
def test_a_stale_library_is_not_used(exports, native_library, monkeypatch, tmp_path, change, reason):
    copy = tmp_path / native.LIBRARY_NAME
    shutil.copy(native_library, copy)
    info = {**native.read_build_info(native_library), **change}
    copy.with_name(native.BUILD_INFO_NAME).write_text(json.dumps(info))
    monkeypatch.setenv(native.ENV_LIBRARY, str(copy))
    _, out = exports.get("mra", "ForMaskedLM")
    label = load(out).custom_node_implementations["tensorkiln::MraAttention"]
    assert label.startswith(native.FUNCTION_BODY) and reason in label
    with pytest.raises(BackendUnavailableError, match=reason):
        load(out, kernels="native")


# ------------------------------------------------------------------------------------------ whole exports


@pytest.mark.parametrize(("model_type", "head"), MODELS)
def test_native_session_matches_function_bodies_and_reference(exports, native_kernels, model_type, head):
    ckpt, out = exports.get(model_type, head)
    native_session, function_session = load(out, kernels="native"), load(out, kernels="function")
    labels = set(native_session.custom_node_implementations.values())
    assert len(labels) == 1 and labels.pop().startswith("native (")
    assert set(load(out).custom_node_implementations.values()) == set(
        native_session.custom_node_implementations.values())  # auto finds the library
    model = from_pretrained(ckpt, head).eval()
    for batch, length in ((1, 7), (3, 45), (2, 64)):
        ids, mask = _ids(model.config.vocab_size, batch, length, seed=length), _mask(batch, length)
        got = native_session.run(input_ids=ids, attention_mask=mask)
        body = function_session.run(input_ids=ids, attention_mask=mask)
        with torch.no_grad():
            want = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).to_dict()
        for name, value in got.items():
            if name not in want or want[name] is None or not isinstance(want[name], torch.Tensor):
                continue
            assert np.max(np.abs(value - body[name])) <= FP32_MAX_ABS, name
            assert np.max(np.abs(value - want[name].numpy())) <= FP32_MAX_ABS, name


def test_native_generation_with_the_cache_equals_the_function_bodies(exports, native_kernels):
    """Mega's decoder cache goes through MegaEma's prev_state/final_state: greedy tokens and per-step logits."""
    _, out = exports.get("mega", "ForCausalLM")
    prompt = _ids(256, 2, 9, seed=1)
    sessions = {kernels: load(out, kernels=kernels) for kernels in ("native", "function")}
    tokens = {k: s.generate(prompt, 12) for k, s in sessions.items()}
    np.testing.assert_array_equal(tokens["native"], tokens["function"])
    first = {k: s.run(input_ids=prompt) for k, s in sessions.items()}
    pasts = {k: {name.replace("present", "past_key_values", 1): value for name, value in outputs.items()
                 if name.startswith("present")} for k, outputs in first.items()}
    step = prompt[:, -1:]
    logits = {k: sessions[k].run(input_ids=step, **pasts[k])["logits"] for k in sessions}
    assert np.max(np.abs(logits["native"] - logits["function"])) <= FP32_MAX_ABS


# ---------------------------------------------------------------------------------------------------- the CLI


def test_kiln_parity_with_native_kernels(exports, native_kernels, tmp_path, capsys):
    ckpt, out = exports.get("mega", "ForCausalLM")
    code = kiln(["parity", str(ckpt), str(out), "--kernels", "native", "--report", str(tmp_path / "report")])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    report = json.loads((tmp_path / "report" / "parity.json").read_text())
    assert report["status"] == "passed"
    assert any("tensorkiln::MegaEma: native (" in runner for runner in report["runners"])


def test_kiln_info_says_what_runs_the_nodes(exports, native_kernels, capsys):
    _, out = exports.get("mra", "ForMaskedLM")
    assert kiln(["info", str(out)]) == 0
    assert "native kernels (" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ the library


def test_library_exports_only_register_custom_ops_and_needs_no_libonnxruntime(native_library):
    defined = subprocess.run(["nm", "-D", "--defined-only", str(native_library)], capture_output=True, text=True)
    assert [line.split()[-1] for line in defined.stdout.splitlines() if line.strip()] == ["RegisterCustomOps"]
    needed = subprocess.run(["readelf", "-d", str(native_library)], capture_output=True, text=True).stdout
    assert "onnxruntime" not in needed and "NEEDED" in needed
    info = native.read_build_info(native_library)
    assert info["sources_sha256"] == native.sources_digest() and info["ort_api_version"] >= 17
    assert native.probe(native_library)["cpu_isa"] in ("avx2+fma", "portable")


def test_only_the_avx2_translation_unit_gets_avx2_flags(native_library):
    """sources.json's cpu_avx2 group is compiled with -mavx2 -mfma, every other source with the baseline flags, so
    the library runs on any x86-64 CPU and dispatches at run time."""
    from native_library import CACHE

    groups = json.loads((native.PLUGINS_DIR / "sources.json").read_text())
    ninja = (CACHE / "build" / "ort-cpu" / "build.ninja").read_text()
    compiled = {}
    for block in ninja.split("\nbuild ")[1:]:
        head = block.splitlines()[0]
        for name in groups["cpu"] + groups["cpu_avx2"] + groups["ort"]:
            if head.endswith(f"{name}") or f" {native.PLUGINS_DIR / name}" in head:
                compiled[name] = "-mavx2" in block and "-mfma" in block
    assert set(compiled) == set(groups["cpu"] + groups["cpu_avx2"] + groups["ort"])
    assert {name for name, avx2 in compiled.items() if avx2} == set(groups["cpu_avx2"])


def test_kiln_build_kernels_installs_where_asked(native_library, monkeypatch, tmp_path, capsys):
    """The documented command, sharing the session build's cache (headers and build tree: nothing recompiles)."""
    from native_library import CACHE

    monkeypatch.setenv(native.ENV_CACHE, str(CACHE))
    target = tmp_path / "lib" / native.LIBRARY_NAME
    assert kiln(["build-kernels", "--cuda", "off", "--out", str(target)]) == 0
    stdout = capsys.readouterr().out
    assert f"installed {target}" in stdout and f"{native.ENV_LIBRARY}={target}" in stdout
    assert native.read_build_info(target)["cuda"] is False
    assert native.probe(target)["cuda"] == "0"


@pytest.mark.slow
def test_headers_from_npm(tmp_path):
    """The fallback source of ORT's headers: the npm package's iOS framework headers (150 MB download)."""
    from tensorkiln.runtime import ort_headers

    if shutil.which("npm") is None:
        pytest.skip("needs npm")
    folder = ort_headers._fetch_into(tmp_path, "npm", ort_headers._fetch_npm, log=lambda message: None)
    assert (folder / ort_headers.HEADER).is_file() and ort_headers.api_version(folder) >= 17
    assert ort_headers.ort_headers(tmp_path, log=lambda message: None) in (tmp_path / "debian", folder)
