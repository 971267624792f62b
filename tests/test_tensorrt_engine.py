"""The TensorRT backend: its TensorRT-free logic (profile, cache key, plugin decision, engine cache) on every machine,
and, marked gpu, its engines against the ONNX Runtime session where TensorRT and an NVIDIA GPU are installed.

The profile is checked against rules written here from the models' configs and the manifest's cache layout, the key
against a hand-written text and hashlib's sha256 of it (the format of runtime/cpp/src/trt/enginePlan.h).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from tensorkiln.runtime import BackendUnavailableError, RuntimeInputError, load
from tensorkiln.runtime import manifest as mf
from tensorkiln.runtime import tensorrt_engine as te
from tensorkiln.runtime.errors import KilnWarning, UsageError
from tensorkiln.runtime.tolerances import compare

ROOT = Path(__file__).resolve().parent.parent

#: The five architectures' tiny exports (a multiple-choice head for the num_choices axis).
EXPORTS = [("gpt_neox", "ForCausalLM"), ("mega", "ForCausalLM"), ("megatron-bert", "ForMultipleChoice"),
           ("nystromformer", "ForMultipleChoice"), ("mra", "ForMaskedLM")]
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


def _cache_shape(model_type: str, kind: str, config: dict, past: int) -> list[int]:
    """The cache tensor's shape after ``past`` tokens (batch left out), from the model's config."""
    if model_type == "gpt_neox":
        heads = config["num_attention_heads"]
        return [heads, past, config["hidden_size"] // heads]
    return {"key": [past, config["shared_representation_size"]], "value": [past, config["intermediate_size"]],
            "ema_state": [config["hidden_size"], config["ema_projection_size"]]}[kind]


def _expected(manifest: mf.Manifest, config: dict, model_type: str) -> dict[str, tuple[list, list, list]]:
    longest = manifest.length_rules.max_length
    opt = min(128, longest)
    expected = {}
    for info in manifest.inputs:
        low, mid, high = [1], [1], [8]  # batch 1..8, opt 1
        if info.name in TOKEN_INPUTS:
            if manifest.head == "ForMultipleChoice":
                low, mid, high = low + [1], mid + [1], high + [4]
            fixed = manifest.length_rules.fixed_length
            if fixed:
                low, mid, high = low + [fixed], mid + [fixed], high + [fixed]
            elif info.name == "attention_mask" and manifest.cache is not None:  # cached + new at every corner
                low, mid, high = low + [1], mid + [opt // 2 + opt], high + [(longest - 1) + longest]
            else:
                low, mid, high = low + [1], mid + [opt], high + [longest]
        else:
            kind = info.name.split(".")[-1]
            low += _cache_shape(model_type, kind, config, 0)
            mid += _cache_shape(model_type, kind, config, opt // 2)
            high += _cache_shape(model_type, kind, config, longest - 1)
        expected[info.name] = (low, mid, high)
    return expected


@pytest.mark.parametrize("model_type,head", EXPORTS)
def test_profile_of_every_tiny_export(exports, model_type, head):
    _, out = exports.get(model_type, head)
    manifest = mf.read_manifest(out)
    config = json.loads((out / "config.json").read_text())
    got = {p.name: (list(p.min), list(p.opt), list(p.max)) for p in te.profiles_from_manifest(manifest)}
    assert got == _expected(manifest, config, model_type)
    assert list(got) == [i.name for i in manifest.inputs]
    if manifest.cache is not None:
        assert any(name.startswith("past_key_values.") for name in got)


FIELDS = te.EngineKeyFields(model_sha256="ab" * 32, tensorrt_version="10.15.1", device_name="NVIDIA H100 80GB HBM3",
                            compute_capability="9.0", precision="fp16", plugins_sha256="none", plugin_override=False,
                            profile="input_ids:1x1/1x128/8x128;attention_mask:1x1/1x128/8x128")


def test_key_text_and_sha256():
    text = ("tensorkiln-trt-engine-key/1\n"
            f"model_sha256={'ab' * 32}\n"
            "tensorrt=10.15.1\n"
            "device=NVIDIA H100 80GB HBM3\n"
            "compute_capability=9.0\n"
            "precision=fp16\n"
            "plugins=none\n"
            "plugin_override=off\n"
            "profile=input_ids:1x1/1x128/8x128;attention_mask:1x1/1x128/8x128\n")
    assert te.engine_key_text(FIELDS) == text
    assert te.engine_key(FIELDS) == hashlib.sha256(text.encode()).hexdigest()
    assert te.engine_key_text(dataclasses.replace(FIELDS, plugins_sha256="")) == text  # empty means none
    on = te.engine_key_text(dataclasses.replace(FIELDS, plugins_sha256="cd" * 32, plugin_override=True))
    assert f"plugins={'cd' * 32}\nplugin_override=on\n" in on
    assert te.tensorrt_version_text("10.14.1.48") == "10.14.1"


def test_key_equals_the_cpp_runtimes_for_its_unit_test_fields():
    """The fields of runtime/cpp/tests/enginePlanTest.cpp, whose digest is pinned there too: both runtimes name the
    same engine the same, so either reuses the other's cache."""
    fields = te.EngineKeyFields(model_sha256="ab" * 32, tensorrt_version="10.16.0",
                                device_name="NVIDIA H100 80GB HBM3", compute_capability="9.0", precision="fp16",
                                plugins_sha256="none", plugin_override=False, profile="input_ids:1x1/1x128/8x128")
    cpp_test = (ROOT / "runtime" / "cpp" / "tests" / "enginePlanTest.cpp").read_text()
    assert f'std::string("{te.engine_key(fields)}")' in cpp_test


def test_key_changes_with_every_field():
    changes = {"model_sha256": "cd" * 32, "tensorrt_version": "10.14.1", "device_name": "NVIDIA H200",
               "compute_capability": "8.0", "precision": "fp32", "plugins_sha256": "ef" * 32, "plugin_override": True,
               "profile": "input_ids:1x1/1x64/8x128"}
    assert set(changes) == {f.name for f in dataclasses.fields(te.EngineKeyFields)}
    keys = {te.engine_key(dataclasses.replace(FIELDS, **{name: value})) for name, value in changes.items()}
    assert len(keys | {te.engine_key(FIELDS)}) == len(changes) + 1


def test_plugin_decision():
    assert te.plugin_decision(False, True, True, "10.15.1") == te.PluginDecision(False, "")
    none = te.plugin_decision(True, False, True, "10.15.1")
    assert not none.set_override_flag and "function body" in none.custom_nodes_run_on
    assert "TENSORKILN_TRT_PLUGINS" in none.custom_nodes_run_on
    old = te.plugin_decision(True, True, False, "10.14.1")
    assert not old.set_override_flag and "10.14.1" in old.custom_nodes_run_on and "10.15" in old.custom_nodes_run_on
    plugins = te.PluginDecision(True, "plugin (libtensorkiln_plugins.so)")
    assert te.plugin_decision(True, True, True, "10.15.1") == plugins


def test_feeds_outside_the_profile_are_refused():
    profiles = [te.InputProfile("input_ids", (1, 1), (1, 128), (8, 128))]
    te.check_feeds(profiles, {"input_ids": np.zeros((8, 128), np.int64), "other": np.zeros(3)})
    with pytest.raises(RuntimeInputError, match=r"'input_ids' axis 0 is 9; this TensorRT engine takes 1\.\.8"):
        te.check_feeds(profiles, {"input_ids": np.zeros((9, 4), np.int64)})


class FakeTensorRt:
    """A builder and a deserialiser that count their calls; an engine is its bytes, and b"bad" does not load."""

    def __init__(self, data: bytes = b"engine-bytes"):
        self.data, self.builds = data, 0

    def build(self) -> bytes:
        self.builds += 1
        return self.data

    @staticmethod
    def deserialize(data: bytes):
        return None if data == b"bad" else ("engine", data)


def test_engine_cache_builds_once_and_rebuilds_damage(tmp_path):
    cache, fake = te.EngineCache(tmp_path / "engines"), FakeTensorRt()
    first = cache.load_or_build(FIELDS, fake.build, fake.deserialize)
    key = te.engine_key(FIELDS)
    assert first.built and first.path == tmp_path / "engines" / f"{key}.engine" and first.engine[1] == b"engine-bytes"
    record = json.loads((tmp_path / "engines" / f"{key}.json").read_text())
    assert record["key"] == key and record["engine_sha256"] == hashlib.sha256(b"engine-bytes").hexdigest()
    assert sorted(p.name for p in (tmp_path / "engines").iterdir()) == [f"{key}.engine", f"{key}.json"]  # no temps
    again = cache.load_or_build(FIELDS, fake.build, fake.deserialize)
    assert not again.built and fake.builds == 1

    first.path.write_bytes(b"engine-bytez")  # same size, other bytes: damaged
    with pytest.warns(KilnWarning, match="unusable .*sha256 differs"):
        repaired = cache.load_or_build(FIELDS, fake.build, fake.deserialize)
    assert repaired.built and fake.builds == 2 and first.path.read_bytes() == b"engine-bytes"

    (tmp_path / "engines" / f"{key}.json").unlink()
    with pytest.warns(KilnWarning, match="cannot read it or its record"):
        assert cache.load_or_build(FIELDS, fake.build, fake.deserialize).built


def test_engine_cache_refuses_what_tensorrt_cannot_load(tmp_path):
    cache = te.EngineCache(tmp_path)
    fields = dataclasses.replace(FIELDS, precision="fp32")
    stale = FakeTensorRt(b"bad")  # intact on disk, yet TensorRT refuses it (another TensorRT wrote it, say)
    with pytest.raises(BackendUnavailableError, match="cannot deserialise the engine it has just built"):
        cache.load_or_build(fields, stale.build, stale.deserialize)
    te.EngineCache(tmp_path)._store(te.engine_key(fields), fields, b"bad", *cache.paths(te.engine_key(fields)))
    good = FakeTensorRt()
    with pytest.warns(KilnWarning, match="TensorRT cannot deserialise it"):
        assert cache.load_or_build(fields, good.build, good.deserialize).built


def test_engine_cache_names_stay_inside_and_unwritable_cache_still_runs(tmp_path):
    outside = tmp_path / "elsewhere.engine"
    outside.write_bytes(b"engine-bytes")
    folder = tmp_path / "engines"
    folder.mkdir()
    os.symlink(outside, folder / f"{te.engine_key(FIELDS)}.engine")
    fake = FakeTensorRt()
    with pytest.raises(UsageError, match="outside"):
        te.EngineCache(folder).load_or_build(FIELDS, fake.build, fake.deserialize)
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    with pytest.warns(KilnWarning, match="could not cache the TensorRT engine"):
        result = te.EngineCache(not_a_folder / "engines").load_or_build(FIELDS, fake.build, fake.deserialize)
    assert result.path is None and result.engine[1] == b"engine-bytes"


def test_plugin_library_lookup(tmp_path, monkeypatch):
    monkeypatch.setattr(te, "CHECKOUT_BUILD", tmp_path / "absent.so")
    monkeypatch.delenv(te.ENV_PLUGINS, raising=False)
    assert te.find_plugin_library(None) is None
    library = tmp_path / "libtensorkiln_plugins.so"
    library.write_bytes(b"\x7fELF")
    monkeypatch.setenv(te.ENV_PLUGINS, str(library))
    assert te.find_plugin_library(None) == library
    with pytest.raises(BackendUnavailableError, match="tensorrt_plugins=.* is not a file"):
        te.find_plugin_library(tmp_path / "missing.so")
    monkeypatch.setenv(te.ENV_PLUGINS, str(tmp_path / "missing.so"))
    with pytest.raises(BackendUnavailableError, match="TENSORKILN_TRT_PLUGINS=.* is not a file"):
        te.find_plugin_library(None)


def _tensorrt_and_gpu() -> str | None:
    """None where TensorRT and a GPU are usable, else why not."""
    from tensorkiln.runtime.tensorrt_session import gpu_device, require_tensorrt

    try:
        require_tensorrt()
        gpu_device()
    except BackendUnavailableError as exc:
        return str(exc)
    return None


def test_clear_errors_without_tensorrt_or_gpu(exports, monkeypatch):
    from tensorkiln.runtime.tensorrt_session import gpu_device

    _, out = exports.get("gpt_neox", "ForCausalLM")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailableError, match=r"pip install tensorrt-cu12.*NVIDIA GPU"):
            load(out, backend="tensorrt")
    with pytest.raises(UsageError, match="takes none"):
        load(out, backend="tensorrt", providers=["CPUExecutionProvider"])
    try:
        gpu_device()
        return  # a GPU here: the gpu-marked tests cover the rest
    except BackendUnavailableError:
        pass
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.15.1.29"))
    with pytest.raises(BackendUnavailableError, match="needs an NVIDIA GPU"):
        load(out, backend="tensorrt")


def _inputs(session, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (2, 3, 12) if session.manifest.head == "ForMultipleChoice" else (2, 12)
    ids = rng.integers(3, session.limits.vocab_size, size=shape, dtype=np.int64)
    mask = np.ones(shape, dtype=np.int64)
    mask[0, ..., -4:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.gpu
@pytest.mark.parametrize("model_type,head", EXPORTS)
def test_tensorrt_outputs_equal_onnxruntime(exports, tmp_path, model_type, head):
    reason = _tensorrt_and_gpu()
    if reason:
        pytest.skip(reason)
    _, out = exports.get(model_type, head)
    ort = load(out, backend="onnxruntime", kernels="function")
    trt = load(out, backend="tensorrt", engine_cache=tmp_path)
    assert trt.engine_path is not None and trt.engine_path.parent == tmp_path
    inputs = _inputs(ort)
    want, got = ort.run(**inputs), trt.run(**inputs)
    assert sorted(got) == sorted(want)
    for name in want:
        result = compare(ort.manifest.precision, name, got[name], want[name])
        assert result.verdict.passed, (name, result)
    again = load(out, backend="tensorrt", engine_cache=tmp_path)  # from the cache this time
    assert again.engine_path == trt.engine_path
    cached = again.run(**inputs)
    assert all(np.array_equal(cached[name], got[name]) for name in got)


@pytest.mark.gpu
@pytest.mark.parametrize("model_type", ["gpt_neox", "mega"])
def test_tensorrt_greedy_generation_equals_onnxruntime(exports, tmp_path, model_type):
    reason = _tensorrt_and_gpu()
    if reason:
        pytest.skip(reason)
    _, out = exports.get(model_type, "ForCausalLM")
    ort = load(out, backend="onnxruntime", kernels="function")
    trt = load(out, backend="tensorrt", engine_cache=tmp_path)
    ids = np.random.default_rng(1).integers(3, ort.limits.vocab_size, size=(2, 7), dtype=np.int64)
    mask = np.ones_like(ids)
    mask[1, :2] = 0  # left padding
    want = ort.generate(ids, 8, attention_mask=mask, ignore_eos=True)
    assert np.array_equal(trt.generate(ids, 8, attention_mask=mask, ignore_eos=True), want)


def test_cli_takes_the_tensorrt_backend(exports, capsys):
    from tensorkiln.export.cli import build_parser
    from tensorkiln.export.cli import main as kiln

    _, out = exports.get("gpt_neox", "ForCausalLM")
    parser = build_parser()
    assert parser.parse_args(["generate", str(out), "Hi", "--backend", "tensorrt"]).backend == "tensorrt"
    assert parser.parse_args(["run", str(out), "Hi", "--backend", "tensorrt"]).backend == "tensorrt"
    if _tensorrt_and_gpu() is None:
        return  # it would run: the gpu tests cover the engine
    assert kiln(["generate", str(out), "Hi", "--backend", "tensorrt"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("kiln: error: backend 'tensorrt' needs") and "\n" not in error
