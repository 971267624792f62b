"""``kiln triton``: both repository flavours parse as Triton's own ModelConfig and match the export.

The oracle for the config format is Triton's protobuf schema as shipped in ``tritonclient`` (``model_config_pb2``,
read back with ``text_format``); tensor names, types and dims are checked against the ONNX graph that ONNX Runtime
loads from the repository (ONNX Runtime flavour) or against the manifest and a runtime session loaded from the
repository's copy of the export (Python flavour). A real server loads them in tests/test_triton_server.py (slow).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tensorkiln.export.cli import main as kiln
from tensorkiln.runtime import load
from tensorkiln.runtime import manifest as mf
from tensorkiln.runtime.triton import TritonError, install_paths, write_repository
from tensorkiln.runtime.triton_config import GENERATION_PARAMETERS

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
text_format = pytest.importorskip("google.protobuf.text_format")
ONNX_TO_TRITON = {onnx.TensorProto.INT64: "TYPE_INT64", onnx.TensorProto.FLOAT: "TYPE_FP32",
                  onnx.TensorProto.FLOAT16: "TYPE_FP16"}


@pytest.fixture
def exported(exports):
    return {"mra": exports.get("mra", "ForSequenceClassification")[1],
            "neox": exports.get("gpt_neox", "ForCausalLM")[1],
            "nystromformer": exports.get("nystromformer", "ForMaskedLM")[1]}


def _parse(path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def _type(entry) -> str:
    return model_config_pb2.DataType.Name(entry.data_type)


def _check_against_graph(config, model_path):
    graph = onnx.load(str(model_path), load_external_data=False).graph
    batched = config.max_batch_size > 0
    for entries, values in ((config.input, graph.input), (config.output, graph.output)):
        assert [e.name for e in entries] == [v.name for v in values]
        for entry, value in zip(entries, values):
            tensor_type = value.type.tensor_type
            assert _type(entry) == ONNX_TO_TRITON[tensor_type.elem_type]
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
            if batched:
                assert dims[0] == -1, f"{entry.name}: Triton batching needs a dynamic first dim"
                dims = dims[1:]
            assert list(entry.dims) == dims, entry.name


def test_encoder_repository_batches(exported, tmp_path):
    target = write_repository(exported["mra"], tmp_path / "repo", max_batch_size=16, instances=2)
    config = _parse(target / "config.pbtxt")
    assert config.name == target.name and config.backend == "onnxruntime"
    assert config.max_batch_size == 16 and config.HasField("dynamic_batching")
    group = config.instance_group[0]
    assert group.count == 2 and model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind) == "KIND_CPU"
    assert not config.HasField("optimization")
    assert config.parameters["tensorkiln.head"].string_value == "ForSequenceClassification"
    _check_against_graph(config, target / "1" / "model.onnx")
    session = ort.InferenceSession(str(target / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    ids = np.full((2, 9), 5, dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    feeds.update({i.name: np.zeros_like(ids) for i in session.get_inputs() if i.name not in feeds})
    assert session.run(None, feeds)[0].shape == (2, 2)


def test_decoder_and_batch_dependent_models_do_not_batch(exported, tmp_path):
    neox = _parse(write_repository(exported["neox"], tmp_path / "repo") / "config.pbtxt")
    assert neox.max_batch_size == 0 and not neox.HasField("dynamic_batching")
    assert any(i.name == "past_key_values.0.key" for i in neox.input)
    _check_against_graph(neox, tmp_path / "repo" / "gpt_neox_forcausallm" / "1" / "model.onnx")
    # Nystromformer's HF pseudo-inverse init mixes rows: merged requests would change each other's outputs.
    manifest = mf.read_manifest(exported["nystromformer"])
    fixed, vocab = manifest.length_rules.fixed_length, manifest.outputs[0].dims[-1]
    for backend in ("onnxruntime", "python"):
        nys = _parse(write_repository(exported["nystromformer"], tmp_path / backend, backend=backend)
                     / "config.pbtxt")
        assert nys.max_batch_size == 0 and not nys.HasField("dynamic_batching")
        assert nys.parameters["tensorkiln.fixed_length"].string_value == str(fixed)
        # The graph takes its fixed length; the runtime behind the Python backend pads to it and slices back.
        length = fixed if backend == "onnxruntime" else -1
        assert list(nys.input[0].dims) == [-1, length] and list(nys.output[0].dims) == [-1, length, vocab]


def test_gpu_instances_and_execution_accelerators(exported, tmp_path):
    manifest = mf.read_manifest(exported["mra"])
    target = write_repository(exported["mra"], tmp_path / "repo", kind="KIND_GPU", gpus=(0, 1), instances=2,
                              accelerator="tensorrt", trt_plugins="/opt/tensorkiln/libtensorkiln_plugins.so",
                              trt_engine_cache="/tmp/engines", threads=3)
    config = _parse(target / "config.pbtxt")
    group = config.instance_group[0]
    assert model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind) == "KIND_GPU"
    assert list(group.gpus) == [0, 1] and group.count == 2
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    parameters = dict(accelerator.parameters)
    assert parameters["precision_mode"] == "FP32"  # the export's precision
    assert parameters["trt_extra_plugin_lib_paths"] == "/opt/tensorkiln/libtensorkiln_plugins.so"
    assert parameters["trt_engine_cache_enable"] == "1" and parameters["trt_engine_cache_path"] == "/tmp/engines"
    longest = manifest.length_rules.max_length
    assert parameters["trt_profile_max_shapes"] == ",".join(f"{t.name}:8x{longest}" for t in manifest.inputs)
    assert parameters["trt_profile_min_shapes"] == ",".join(f"{t.name}:1x1" for t in manifest.inputs)
    assert config.parameters["intra_op_thread_count"].string_value == "3"
    cuda = _parse(write_repository(exported["mra"], tmp_path / "cuda", kind="KIND_GPU", accelerator="cuda",
                                   trt_precision=None) / "config.pbtxt")
    assert [a.name for a in cuda.optimization.execution_accelerators.gpu_execution_accelerator] == ["cuda"]


def test_python_encoder_repository(exported, tmp_path):
    target = write_repository(exported["mra"], tmp_path / "repo", backend="python", name="mra")
    config = _parse(target / "config.pbtxt")
    manifest = mf.read_manifest(exported["mra"])
    assert config.backend == "python" and config.max_batch_size == 8 and config.HasField("dynamic_batching")
    assert not config.model_transaction_policy.decoupled
    assert [(i.name, _type(i), list(i.dims), i.optional) for i in config.input] == [
        (t.name, "TYPE_INT64", [-1], t.name != "input_ids") for t in manifest.inputs]
    assert [(o.name, list(o.dims)) for o in config.output] == [(o.name, [2]) for o in manifest.outputs]
    # The repository's copy of the export loads (its manifest and hashes checked) and gives the export's outputs.
    ids = np.arange(1, 19, dtype=np.int64).reshape(2, 9)
    served, original = load(target / "1" / "export"), load(exported["mra"])
    np.testing.assert_array_equal(served.run(input_ids=ids)["logits"], original.run(input_ids=ids)["logits"])
    shim = importlib.util.find_spec("tensorkiln.runtime.triton_python_model").origin
    assert (target / "1" / "model.py").read_text() == Path(shim).read_text()
    note = json.loads((target / "1" / "tensorkiln.json").read_text())
    assert note["python_path"] == install_paths() and note["python"] == "{}.{}".format(*sys.version_info[:2])


def test_python_decoder_is_decoupled(exported, tmp_path):
    config = _parse(write_repository(exported["neox"], tmp_path / "repo", backend="python", name="gen",
                                     max_generations=2) / "config.pbtxt")
    assert config.model_transaction_policy.decoupled and config.max_batch_size == 0
    inputs = {i.name: i for i in config.input}
    assert list(inputs["input_ids"].dims) == [-1, -1] and not inputs["input_ids"].optional
    assert inputs["attention_mask"].optional and list(inputs["attention_mask"].dims) == [-1, -1]
    for name, data_type, _ in GENERATION_PARAMETERS:
        assert _type(inputs[name]) == data_type and list(inputs[name].dims) == [1]
        assert inputs[name].optional == (name != "max_new_tokens")
    assert not any(name.startswith("past_key_values") for name in inputs)  # the cache stays on the server
    assert mf.read_manifest(exported["neox"]).text.tokenizer == "tokenizer.json"  # the demo tokenizer travels
    assert [(o.name, _type(o)) for o in config.output] == [("token_ids", "TYPE_INT64"), ("text", "TYPE_STRING")]
    assert config.parameters["tensorkiln.max_generations"].string_value == "2"
    assert (tmp_path / "repo" / "gen" / "1" / "export" / "tokenizer.json").is_file()


def test_python_decoder_without_a_tokenizer_streams_ids_only(exported, tmp_path):
    export = tmp_path / "export"
    shutil.copytree(exported["neox"], export)
    manifest = mf.read_manifest(export)
    text_files = {*manifest.text.files, manifest.text.generation_config}
    for name in text_files - {None}:
        (export / name).unlink()
    files = {k: v for k, v in manifest.files.items() if k not in text_files}
    mf.write_manifest(dataclasses.replace(manifest, files=files, text=mf.TextFiles()), export)
    config = _parse(write_repository(export, tmp_path / "repo", backend="python") / "config.pbtxt")
    assert [(o.name, _type(o)) for o in config.output] == [("token_ids", "TYPE_INT64")]


def test_model_py_finds_tensorkiln_from_its_note(exported, tmp_path):
    """The stub's interpreter need not have tensorkiln: in a Python without site-packages (-I -S), model.py puts the
    folders of tensorkiln.json first on sys.path, and says what to do when they do not hold tensorkiln."""
    model_py = write_repository(exported["mra"], tmp_path / "repo", backend="python") / "1" / "model.py"
    code = (f"import runpy; runpy.run_path({str(model_py)!r}); "
            "import tensorkiln.runtime.triton_serving as t; print('found', t.__name__)")
    found = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert found.returncode == 0 and "found tensorkiln.runtime.triton_serving" in found.stdout, found.stderr
    code = (f"model = runpy.run_path({str(model_py)!r})['TritonPythonModel']()\n"
            "try:\n    model.initialize({})\nexcept RuntimeError as exc:\n    print(exc)\n")
    env = {"TENSORKILN_PYTHONPATH": str(tmp_path)}  # a folder without tensorkiln replaces the note
    missing = subprocess.run([sys.executable, "-I", "-S", "-c", "import runpy\n" + code], capture_output=True,
                             text=True, cwd=tmp_path, env=env)
    assert "tensorkiln.runtime cannot be imported" in missing.stdout, missing.stderr
    assert "{}.{}".format(*sys.version_info[:2]) in missing.stdout and "--python-path" in missing.stdout


@pytest.mark.parametrize("options, message", [
    ({"backend": "python", "kind": "KIND_GPU", "accelerator": "cuda"}, "onnxruntime backend"),
    ({"accelerator": "tensorrt"}, "GPU instances"),
    ({"gpus": (0,)}, "--kind gpu"),
    ({"kind": "KIND_GPU", "trt_plugins": "/x.so"}, "--accelerator tensorrt"),
    ({"kind": "KIND_TPU"}, "KIND_CPU or KIND_GPU"),
    ({"backend": "tensorflow"}, "backend must be"),
    ({"instances": 0}, "instances"),
    ({"batch_size": 4}, "unknown serving option"),
])
def test_options_that_cannot_be_served_are_refused(exported, tmp_path, options, message):
    with pytest.raises(TritonError, match=message):
        write_repository(exported["mra"], tmp_path / "repo", **options)
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())


def test_cli_and_errors(exported, tmp_path, capsys):
    repo = tmp_path / "repo"
    assert kiln(["triton", str(exported["mra"]), str(repo), "--name", "mra_cls"]) == 0
    assert (repo / "mra_cls" / "1" / "model.onnx").is_file()
    assert kiln(["triton", str(exported["mra"]), str(repo), "--name", "mra_cls"]) == 2
    assert "exists" in capsys.readouterr().err
    assert kiln(["triton", str(exported["mra"]), str(repo), "--name", "gpu", "--kind", "gpu", "--gpus", "0,x"]) == 2
    assert "--gpus" in capsys.readouterr().err
    assert kiln(["triton", str(exported["neox"]), str(repo), "--name", "gen", "--backend", "python",
                 "--python-path", str(tmp_path)]) == 0
    assert json.loads((repo / "gen" / "1" / "tensorkiln.json").read_text())["python_path"] == [str(tmp_path)]
    assert _parse(repo / "gen" / "config.pbtxt").model_transaction_policy.decoupled
    with pytest.raises(TritonError, match="model name"):
        write_repository(exported["mra"], repo, name="bad name")
    assert sorted(p.name for p in repo.iterdir()) == ["gen", "mra_cls"]  # nothing half-written
