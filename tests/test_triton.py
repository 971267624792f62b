"""``kiln triton``: the model repository parses as Triton's own ModelConfig and matches the ONNX graph.

The oracle for the config format is Triton's protobuf schema as shipped in ``tritonclient`` (``model_config_pb2``);
the tensor names, types and dims are checked against the ONNX graph that ONNX Runtime loads from the repository.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tensorkiln.export.cli import main as kiln
from tensorkiln.runtime.triton import TritonError, write_repository

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


def _check_against_graph(config, model_path):
    graph = onnx.load(str(model_path), load_external_data=False).graph
    batched = config.max_batch_size > 0
    for entries, values in ((config.input, graph.input), (config.output, graph.output)):
        assert [e.name for e in entries] == [v.name for v in values]
        for entry, value in zip(entries, values):
            tensor_type = value.type.tensor_type
            assert model_config_pb2.DataType.Name(entry.data_type) == ONNX_TO_TRITON[tensor_type.elem_type]
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
    assert config.instance_group[0].count == 2
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
    nys = _parse(write_repository(exported["nystromformer"], tmp_path / "repo") / "config.pbtxt")
    assert nys.max_batch_size == 0
    assert nys.parameters["tensorkiln.fixed_length"].string_value == str(list(nys.input[0].dims)[-1])


def test_cli_and_errors(exported, tmp_path, capsys):
    repo = tmp_path / "repo"
    assert kiln(["triton", str(exported["mra"]), str(repo), "--name", "mra_cls"]) == 0
    assert (repo / "mra_cls" / "1" / "model.onnx").is_file()
    assert kiln(["triton", str(exported["mra"]), str(repo), "--name", "mra_cls"]) == 2
    assert "exists" in capsys.readouterr().err
    with pytest.raises(TritonError, match="model name"):
        write_repository(exported["mra"], repo, name="bad name")
    assert sorted(p.name for p in repo.iterdir()) == ["mra_cls"]  # nothing half-written
