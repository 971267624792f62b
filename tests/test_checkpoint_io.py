"""Checkpoint I/O: HF's layouts load strictly, our writes are atomic and readable by HF's own from_pretrained."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from tensorkiln.export.cli import main as kiln
from tensorkiln.reference import CheckpointError, ConfigError, from_pretrained, get_architecture, save_pretrained
from tensorkiln.reference.presets import DEMO_PRESETS, get_preset, init_checkpoint, preset_names

TINY = sorted(name for name in preset_names() if name.startswith("tiny-"))


def _hf_class(name: str):
    return getattr(transformers, name)


def _all_heads():
    for preset in TINY:
        arch = get_architecture(get_preset(preset).model_type)
        for head in arch.heads:
            yield preset, head


def test_every_architecture_has_a_tiny_and_a_demo_preset():
    from tensorkiln.reference import model_types

    tiny_types = {get_preset(p).model_type for p in TINY}
    demo_types = {get_preset(p).model_type for p in DEMO_PRESETS}
    assert tiny_types == set(model_types())
    assert demo_types == set(model_types())


@pytest.mark.parametrize("preset,head", list(_all_heads()))
def test_init_checkpoint_loads_strictly_in_hf(tmp_path, preset, head):
    folder = init_checkpoint(preset, tmp_path / "ckpt", seed=1, head=head)
    config = json.loads((folder / "config.json").read_text())
    arch = get_architecture(config["model_type"])
    assert config["architectures"] == [arch.hf_class_name(head)]
    hf_model, info = _hf_class(config["architectures"][0]).from_pretrained(folder, output_loading_info=True)
    assert info["missing_keys"] == [] or set(info["missing_keys"]) <= _hf_tied_or_buffer(hf_model)
    assert info["unexpected_keys"] == []
    assert info["mismatched_keys"] == []
    ours = from_pretrained(folder)
    hf_state = hf_model.state_dict()
    for name, tensor in ours.state_dict().items():
        if name in hf_state:
            torch.testing.assert_close(tensor, hf_state[name], rtol=0, atol=0, msg=name)


def _hf_tied_or_buffer(hf_model) -> set[str]:
    # HF lists tied decoder weights it fills itself, and buffers it recomputes, as "missing" in some versions.
    tied = set(getattr(hf_model, "_tied_weights_keys", None) or [])
    buffers = {name for name, _ in hf_model.named_buffers()}
    return tied | buffers


def _tiny_hf_model(tmp_path):
    folder = init_checkpoint("tiny-gpt-neox", tmp_path / "src", seed=0, head="ForCausalLM")
    return folder, from_pretrained(folder)


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("safe,shard", [(True, "20KB"), (False, None), (False, "20KB")])
def test_hf_layouts_load_equal(tmp_path, safe, shard):
    folder, ours = _tiny_hf_model(tmp_path)
    hf_model = transformers.GPTNeoXForCausalLM.from_pretrained(folder)
    out = tmp_path / "hf"
    kwargs = {"safe_serialization": safe}
    if shard:
        kwargs["max_shard_size"] = shard
    hf_model.save_pretrained(out, **kwargs)
    names = {p.name for p in out.iterdir()}
    if shard:
        assert any(n.endswith(".index.json") for n in names), names
    else:
        assert ("model.safetensors" if safe else "pytorch_model.bin") in names
    ids = torch.randint(0, ours.config.vocab_size, (2, 7))
    torch.testing.assert_close(_logits(from_pretrained(out), ids), _logits(ours, ids), rtol=0, atol=0)


def test_every_bad_tensor_is_listed_in_one_error(tmp_path):
    from safetensors.torch import load_file, save_file

    folder, _ = _tiny_hf_model(tmp_path)
    state = load_file(str(folder / "model.safetensors"))
    removed = "gpt_neox.layers.0.attention.dense.weight"
    reshaped = "gpt_neox.layers.1.mlp.dense_h_to_4h.bias"
    del state[removed]
    state[reshaped] = torch.zeros(3)
    state["gpt_neox.layers.0.surprise"] = torch.zeros(2)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError) as err:
        from_pretrained(folder)
    message = str(err.value)
    for name in (removed, reshaped, "gpt_neox.layers.0.surprise"):
        assert name in message
    assert "missing" in message and "unexpected" in message and "mis-shaped" in message


def test_missing_weights_and_config_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json"):
        from_pretrained(tmp_path / "empty")
    folder, _ = _tiny_hf_model(tmp_path)
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights"):
        from_pretrained(folder)


@pytest.mark.parametrize(
    "change,key",
    [
        ({"model_type": "bert"}, "model_type"),
        ({"hidden_size": "wide"}, "hidden_size"),
        ({"num_hidden_layers": 2.5}, "num_hidden_layers"),
        ({"num_attention_heads": 5}, "num_attention_heads"),
    ],
)
def test_bad_config_names_the_key(tmp_path, change, key):
    folder, _ = _tiny_hf_model(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config.update(change)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=f"'{key}'"):
        from_pretrained(folder)


def test_missing_model_type_is_named(tmp_path):
    folder, _ = _tiny_hf_model(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    del config["model_type"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="'model_type'"):
        from_pretrained(folder)


def test_head_override_takes_hf_names_and_suffixes(tmp_path):
    folder, ours = _tiny_hf_model(tmp_path)
    base = from_pretrained(folder, head="Model")
    assert type(base).__name__ == "GPTNeoXModel"
    assert type(from_pretrained(folder, head="GPTNeoXModel")) is type(base)
    torch.testing.assert_close(
        base.state_dict()["layers.0.attention.dense.weight"],
        ours.state_dict()["gpt_neox.layers.0.attention.dense.weight"],
    )
    with pytest.raises(CheckpointError, match="score.weight"):
        from_pretrained(folder, head="ForSequenceClassification")
    with pytest.raises(ConfigError, match="ForSequenceClassification"):
        from_pretrained(folder, head="ForNothing")


def test_base_checkpoint_loads_into_head_model_base(tmp_path):
    folder, ours = _tiny_hf_model(tmp_path)
    base_dir = save_pretrained(from_pretrained(folder, head="Model"), tmp_path / "base")
    with pytest.raises(CheckpointError, match="embed_out.weight"):
        from_pretrained(base_dir, head="ForCausalLM")


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    import safetensors.torch

    _, ours = _tiny_hf_model(tmp_path)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    target = tmp_path / "out"
    with pytest.raises(OSError, match="disk full"):
        save_pretrained(ours, target)
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_sharded_save_round_trips(tmp_path):
    _, ours = _tiny_hf_model(tmp_path)
    out = save_pretrained(ours, tmp_path / "sharded", max_shard_bytes=16 * 1024)
    assert (out / "model.safetensors.index.json").is_file()
    ids = torch.randint(0, ours.config.vocab_size, (1, 5))
    torch.testing.assert_close(_logits(from_pretrained(out), ids), _logits(ours, ids), rtol=0, atol=0)


def test_cli_init_checkpoint(tmp_path, capsys):
    out = tmp_path / "c"
    assert kiln(["init-checkpoint", "tiny-gpt-neox", str(out), "--seed", "3"]) == 0
    again = tmp_path / "d"
    assert kiln(["init-checkpoint", "tiny-gpt-neox", str(again), "--seed", "3"]) == 0
    assert (out / "model.safetensors").read_bytes() == (again / "model.safetensors").read_bytes()
    assert kiln(["init-checkpoint", "tiny-gpt-neox", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert kiln(["init-checkpoint", "no-such-preset", str(tmp_path / "e")]) == 2
    assert "unknown preset" in capsys.readouterr().err
