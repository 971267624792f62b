"""Malformed values: config.json, weights files, manifest fields and generation arguments get one clear error each.

One table row per class of case from issue 10. Command-line cases assert the exit status (2: bad input), one
``kiln: error:`` line naming the file or key, no traceback, and an unchanged work folder (tests/hostile.py); API
cases assert the error type and message. Generation's valid edge values are checked against the documented
behaviour (``top_k=0`` keeps every token, as in HF's generate).
"""

from __future__ import annotations

import json
import math
import pickle
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hostile import kiln_error, snapshot
from safetensors.torch import load_file, save_file

from tensorkiln.runtime import ManifestError, RuntimeInputError, load
from tensorkiln.runtime.generate import NonFiniteLogitsError, Sampler


@pytest.fixture
def work(exports, tmp_path) -> Path:
    ckpt, out = exports.get("gpt_neox", "ForCausalLM")
    shutil.copytree(ckpt, tmp_path / "ckpt")
    shutil.copytree(out, tmp_path / "exp")
    return tmp_path


def _config(ckpt: Path, **changes) -> None:
    config = json.loads((ckpt / "config.json").read_text())
    config.update(changes)
    (ckpt / "config.json").write_text(json.dumps(config))


def _export_fails(capsys, work: Path, message: str, *options: str) -> str:
    before = snapshot(work)
    code, line = kiln_error(capsys, ["export", work / "ckpt", work / "out", "--no-progress", *options])
    assert code == 2 and re.search(message, line), line
    assert snapshot(work) == before
    return line


# ----------------------------------------------------------------------------------------------- config.json


CONFIG_CASES = {
    "model_type a list": (lambda c: _config(c, model_type=["gpt_neox"]),
                          "config key 'model_type' in '.*config.json' must be a string"),
    "invalid UTF-8": (lambda c: (c / "config.json").write_bytes(b'{"model_type": "gpt_neox", "x": "\xff"}'),
                      "config.json' \\(the model's config\\) is not UTF-8 text \\(byte 0xff"),
    "vocab_size 10**12": (lambda c: _config(c, vocab_size=10**12),
                          "config.json': config key 'vocab_size' is 1000000000000, past the limit"),
    "vocab_size 1e12": (lambda c: _config(c, vocab_size=1e12), "config key 'vocab_size' .* expected an integer"),
    "a model larger than memory": (lambda c: _config(c, vocab_size=2**30, hidden_size=2**14),
                                   "describes a model of .* weights .* more than this machine's .* memory"),
    "num_hidden_layers 10**6": (lambda c: _config(c, num_hidden_layers=10**6),
                                "config key 'num_hidden_layers' is 1000000, past the limit of 1024"),
    "deeply nested": (lambda c: (c / "config.json").write_text('{"a": ' + "[" * 100000 + "]" * 100000 + "}"),
                      "config.json' \\(the model's config\\) nests its JSON too deeply"),
    "NaN": (lambda c: (c / "config.json").write_text('{"model_type": "gpt_neox", "layer_norm_eps": NaN}'),
            "is not valid JSON: NaN is not a JSON number"),
    "not an object": (lambda c: (c / "config.json").write_text("[1, 2]"), "must hold a JSON object, got a list"),
    "a folder": (lambda c: ((c / "config.json").unlink(), (c / "config.json").mkdir()), "is a folder, not a file"),
    "missing": (lambda c: (c / "config.json").unlink(), "config.json' is missing"),
    "architectures not names": (lambda c: _config(c, architectures=[5]),
                                "config key 'architectures' in '.*config.json' must be a list"),
    "checkpoint is a file": (lambda c: (shutil.rmtree(c), c.write_text("not a folder")),
                             "checkpoint folder '.*ckpt' is a file, not a folder"),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_a_bad_config_json_is_one_clear_error(work, capsys, case):
    make, message = CONFIG_CASES[case]
    make(work / "ckpt")
    _export_fails(capsys, work, message)


# ----------------------------------------------------------------------------------------------- weights


def _truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _to_bin(ckpt: Path, content) -> None:
    """The checkpoint's weights as pytorch_model.bin holding ``content`` (bytes, or an object torch.save writes)."""
    (ckpt / "model.safetensors").unlink()
    if isinstance(content, bytes):
        (ckpt / "pytorch_model.bin").write_bytes(content)
    else:
        torch.save(content, ckpt / "pytorch_model.bin")


class RunsCode:
    """Unpickling this calls ``print``: the shape of a malicious pickle, without the harm."""

    def __reduce__(self):
        return (print, ("this must never run",))


def _set_weight(ckpt: Path, value: float) -> str:
    state = load_file(ckpt / "model.safetensors")
    name = sorted(n for n, t in state.items() if t.ndim == 2)[0]
    state[name][0, 0] = value
    save_file(state, ckpt / "model.safetensors", metadata={"format": "pt"})
    return name


WEIGHT_CASES = {
    "safetensors truncated": (lambda c: _truncate(c / "model.safetensors", 5000),
                              "model.safetensors' is not a readable safetensors file .*truncated or damaged"),
    "safetensors tiny": (lambda c: _truncate(c / "model.safetensors", 3), "model.safetensors' .*header too small"),
    "safetensors header too large": (
        lambda c: (c / "model.safetensors").write_bytes(struct.pack("<Q", 2**40) + b"{}"),
        "model.safetensors' .*header too large"),
    "pytorch_model.bin random bytes": (lambda c: _to_bin(c, bytes(range(256)) * 4),
                                       "pytorch_model.bin' cannot be loaded: it is not a PyTorch checkpoint"),
    "pytorch_model.bin malicious pickle": (
        lambda c: _to_bin(c, {"weight": RunsCode()}),
        "pytorch_model.bin' cannot be loaded: it would call (builtins.)?print when loaded, and tensorkiln never runs"),
    "pytorch_model.bin plain pickle": (lambda c: _to_bin(c, pickle.dumps({"w": RunsCode()})), "cannot be loaded"),
    "pytorch_model.bin empty": (lambda c: _to_bin(c, b""), "pytorch_model.bin' is not a readable PyTorch checkpoint"),
    "pytorch_model.bin a list": (lambda c: _to_bin(c, [torch.zeros(2)]), "does not hold a state dict"),
    "NaN weight": (lambda c: _set_weight(c, math.nan), "hold NaN or Inf: .*weight \\(1 NaN of \\d+ values\\)"),
    "Inf weight": (lambda c: _set_weight(c, -math.inf), "hold NaN or Inf: .*weight \\(1 Inf of \\d+ values\\)"),
}


@pytest.mark.parametrize("case", WEIGHT_CASES)
def test_damaged_or_hostile_weights_are_one_clear_error(work, capsys, case):
    make, message = WEIGHT_CASES[case]
    make(work / "ckpt")
    line = _export_fails(capsys, work, message)
    assert "weights_only" not in line and "this must never run" not in capsys.readouterr().out


def test_weights_that_overflow_fp16_are_named(work, capsys):
    name = _set_weight(work / "ckpt", 1e6)
    _export_fails(capsys, work, f"overflow fp16 .* in {re.escape(name)}: export with --precision fp32",
                  "--precision", "fp16")


# ----------------------------------------------------------------------------------------------- manifests


def _manifest(export: Path, change) -> None:
    data = json.loads((export / "manifest.json").read_text())
    change(data)
    (export / "manifest.json").write_text(json.dumps(data))


MANIFEST_TYPE_CASES = {
    "inputs a string": (lambda d: d.update(inputs="input_ids"),
                        "key 'inputs' must be a list of objects, got a string \\('input_ids'\\)"),
    "input name a number": (lambda d: d["inputs"][0].update(name=5), "key 'inputs\\[0\\].name' must be a string"),
    "dims a string": (lambda d: d["outputs"][0].update(dims="batch"), "key 'outputs\\[0\\].dims' must be a list"),
    "opset a string": (lambda d: d.update(opset="18"), "key 'opset' must be an integer, got a string"),
    "files a list": (lambda d: d.update(files=["model.onnx"]), "key 'files' must be an object of strings"),
    "files not sha256": (lambda d: d["files"].update({"config.json": "abc"}), "'abc', not a sha256"),
    "length_rules.max_length": (lambda d: d["length_rules"].update(max_length="long"),
                                "key 'length_rules.max_length' must be an integer"),
    "cache a string": (lambda d: d.update(cache="none"), "key 'cache' must be an object"),
    "verification.checks": (lambda d: d["verification"].update(checks="x"), "key 'verification.checks' must be"),
    "format_version a string": (lambda d: d.update(format_version="1"), "'format_version' is missing or not an int"),
    "a missing key": (lambda d: d.pop("head"), "is missing the key 'head'"),
    "no attention_mask input": (lambda d: d.update(inputs=d["inputs"][:1]), "has no input 'attention_mask'"),
}


@pytest.mark.parametrize("case", MANIFEST_TYPE_CASES)
def test_manifest_fields_of_the_wrong_type_name_the_key(work, capsys, case):
    _manifest(work / "exp", MANIFEST_TYPE_CASES[case][0])
    with pytest.raises(ManifestError, match=MANIFEST_TYPE_CASES[case][1]):
        load(work / "exp")
    if case != "no attention_mask input":  # a runtime rule: kiln info only describes the export
        code, line = kiln_error(capsys, ["info", work / "exp"])
        assert code == 2 and "manifest.json" in line


@pytest.mark.parametrize(("content", "message"), [
    (b"[]", "must hold a JSON object, got a list"), (b"\xff\xfe", "is not UTF-8 text"), (b"{", "is not valid JSON"),
])
def test_a_manifest_that_is_not_a_json_object_is_named(work, content, message):
    (work / "exp" / "manifest.json").write_bytes(content)
    with pytest.raises(ManifestError, match=f"manifest.json' {message}"):
        load(work / "exp")


def test_an_export_config_with_a_bad_vocab_size_is_named(work):
    config = json.loads((work / "exp" / "config.json").read_text())
    (work / "exp" / "config.json").write_text(json.dumps({**config, "vocab_size": "many"}))
    _manifest(work / "exp", lambda d: d["files"].update({"config.json": _sha(work / "exp" / "config.json")}))
    with pytest.raises(ManifestError, match="config.json key 'vocab_size' must be an integer"):
        load(work / "exp")


def _sha(path: Path) -> str:
    from tensorkiln.runtime.manifest import sha256_file

    return sha256_file(path)


def test_a_truncated_model_is_the_manifests_error_not_onnx_runtimes(work, capsys):
    model = work / "exp" / "model.onnx"
    _truncate(model, model.stat().st_size // 2)
    with pytest.raises(ManifestError, match="model.onnx has sha256 .* the manifest says"):
        load(work / "exp")
    with pytest.raises(ManifestError, match="model.onnx' is not a complete ONNX model"):
        load(work / "exp", check_files=False)
    code, line = kiln_error(capsys, ["info", work / "exp"])
    assert code == 2 and "does not match its manifest" in line


# ----------------------------------------------------------------------------------------------- generation


@pytest.fixture(scope="module")
def neox(exports):
    return load(exports.get("gpt_neox", "ForCausalLM")[1])


PROMPT = np.array([[5, 6, 7, 8]])
GENERATE_CASES = {
    "temperature NaN": ({"do_sample": True, "temperature": float("nan")}, "temperature must be a finite number > 0"),
    "temperature Inf": ({"do_sample": True, "temperature": float("inf")}, "temperature must be a finite number"),
    "temperature 0": ({"do_sample": True, "temperature": 0}, "temperature must be a finite number > 0, got 0"),
    "temperature a string": ({"do_sample": True, "temperature": "0.7"}, "temperature .* got '0.7'"),
    "temperature True": ({"temperature": True}, "temperature .* got True"),
    "top_p 0": ({"do_sample": True, "top_p": 0.0}, "top_p must be a number in \\(0, 1\\]"),
    "top_p 1.5": ({"do_sample": True, "top_p": 1.5}, "top_p must be"),
    "top_p NaN": ({"do_sample": True, "top_p": float("nan")}, "top_p must be"),
    "top_p a string": ({"do_sample": True, "top_p": "0.9"}, "top_p must be"),
    "top_k -1": ({"do_sample": True, "top_k": -1}, "top_k must be an integer >= 0"),
    "top_k 2.5": ({"do_sample": True, "top_k": 2.5}, "top_k must be an integer"),
    "top_k a string": ({"do_sample": True, "top_k": "3"}, "top_k must be an integer"),
    "max_new_tokens 0": ({"max_new_tokens": 0}, "max_new_tokens must be a positive integer"),
    "max_new_tokens 2.0": ({"max_new_tokens": 2.0}, "max_new_tokens must be a positive integer"),
    "max_new_tokens a string": ({"max_new_tokens": "3"}, "max_new_tokens must be a positive integer"),
    "empty prompt (1, 0)": ({"input_ids": np.zeros((1, 0), dtype=np.int64)}, "the prompt is empty"),
    "empty prompt []": ({"input_ids": []}, "the prompt is empty"),
    "mask of 2s": ({"attention_mask": np.full((1, 4), 2)}, "attention_mask must be 0/1"),
    "mask of halves": ({"attention_mask": np.full((1, 4), 0.5)}, "attention_mask must be 0/1"),
    "mask of strings": ({"attention_mask": np.full((1, 4), "1")}, "attention_mask must be 0/1"),
    "seed negative": ({"do_sample": True, "seed": -1}, "seed must be an integer >= 0"),
    "do_sample a string": ({"do_sample": "yes"}, "do_sample must be True or False"),
    "eos a string": ({"eos_token_id": "</s>"}, "eos_token_id must be a token id"),
    "ragged prompts": ({"input_ids": [[1, 2], [3]]}, "pad the prompts to one length"),
}


@pytest.mark.parametrize("case", GENERATE_CASES)
def test_bad_generation_arguments_are_refused(neox, case):
    options, message = GENERATE_CASES[case]
    options = {"input_ids": PROMPT, "max_new_tokens": 3, **options}
    with pytest.raises(RuntimeInputError, match=message):
        neox.generate(options.pop("input_ids"), options.pop("max_new_tokens"), **options)


def test_valid_edge_arguments_keep_their_meaning(neox):
    """top_k=0 keeps every token (HF's meaning: the same as a top_k of the whole vocabulary), numpy scalars are
    numbers, a float mask of 0/1 is a mask."""
    vocab = neox.config["vocab_size"]
    free = neox.generate(PROMPT, 4, do_sample=True, seed=3, top_k=vocab, ignore_eos=True)
    np.testing.assert_array_equal(neox.generate(PROMPT, 4, do_sample=True, seed=3, top_k=0, ignore_eos=True), free)
    np.testing.assert_array_equal(
        neox.generate(PROMPT, 4, do_sample=True, seed=np.int64(3), temperature=np.float32(1.0), top_p=1.0, top_k=0,
                      attention_mask=np.ones((1, 4), np.float32), ignore_eos=True), free)


def test_nan_logits_stop_generation_instead_of_returning_token_zero():
    logits = np.array([[0.5, np.nan, 0.1], [0.1, 0.2, 0.3]])
    for sampler in (Sampler(), Sampler(True, seed=0)):
        with pytest.raises(NonFiniteLogitsError, match="NaN or infinite logits for prompt row\\(s\\) \\[0\\]"):
            sampler(logits)
    assert NonFiniteLogitsError.exit_code == 1
