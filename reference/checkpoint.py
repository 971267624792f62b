"""Hugging Face checkpoint I/O: ``from_pretrained`` and ``save_pretrained`` for local checkpoint folders.

A checkpoint folder holds ``config.json`` and the weights as ``model.safetensors``, sharded safetensors with
``model.safetensors.index.json``, or ``pytorch_model.bin`` (optionally sharded with ``pytorch_model.bin.index.json``).
Loading is strict: every missing, unexpected or mis-shaped tensor is listed in one :class:`CheckpointError`.

The reference modules use HF's parameter names, so the only name mapping is HF's own base-model prefix handling
(a bare ``Model`` checkpoint loads into a head model's base, and a head checkpoint loads into a bare ``Model``, its
head weights left out) plus the weights a model ties (a missing ``lm_head.decoder.weight`` takes the word
embeddings, as HF does).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tensorkiln.runtime.atomic import marker_problem, staged_folder, write_marker
from tensorkiln.runtime.hub import hub_hint
from tensorkiln.runtime.jsonfile import read_json_object

from .config import ConfigError, HFConfig
from .registry import Architecture, get_architecture, normalize_head
from .weights import SAFETENSORS_INDEX, SAFETENSORS_NAME, CheckpointError, read_state_dict

CONFIG_NAME = "config.json"
#: HF's default shard size.
MAX_SHARD_BYTES = 5 * 1024**3
#: The kind in the ``.kiln-folder.json`` marker of a checkpoint save_pretrained wrote: what ``overwrite`` replaces.
MARKER_KIND = "checkpoint"


def read_config(checkpoint_dir: str | os.PathLike) -> dict[str, Any]:
    folder = Path(checkpoint_dir)
    path = folder / CONFIG_NAME
    if not folder.is_dir():
        if folder.exists():
            raise CheckpointError(f"checkpoint folder {str(folder)!r} is a file, not a folder: pass the folder that "
                                  "holds config.json and the weights")
        raise CheckpointError(f"checkpoint folder {str(folder)!r} does not exist." + hub_hint(folder))
    if not path.exists():
        raise CheckpointError(f"{str(path)!r} is missing: a checkpoint folder needs the model's config.json")
    config = read_json_object(path, error=ConfigError, what="the model's config")
    if "model_type" not in config:
        raise ConfigError(f"config is missing the required key 'model_type' in {str(path)!r}")
    if not isinstance(config["model_type"], str):
        raise ConfigError(f"config key 'model_type' in {str(path)!r} must be a string such as \"gpt_neox\", got "
                          f"{config['model_type']!r}")
    names = config.get("architectures")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise ConfigError(f"config key 'architectures' in {str(path)!r} must be a list of class names, got {names!r}")
    return config


def resolve(config: Mapping[str, Any], head: str | None = None) -> tuple[Architecture, str]:
    """The architecture and head suffix a config names; ``head`` overrides ``architectures[0]``."""
    arch = get_architecture(config["model_type"])
    if head is None:
        names = config.get("architectures") or []
        if names and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
            raise ConfigError(f"config key 'architectures' must be a list of class names, got {names!r}")
        head = names[0] if names else "Model"
    suffix = normalize_head(head, arch.class_prefix)
    arch.head_class(suffix)  # raises, naming the available heads
    return arch, suffix


def build_model(config: Mapping[str, Any] | HFConfig, head: str | None = None) -> nn.Module:
    """The model (uninitialised weights) of the architecture and head a config names."""
    if isinstance(config, HFConfig):
        hf = config.to_hf_dict()
        if head is None and config.architectures:
            head = config.architectures[0]
    else:
        hf = dict(config)
    arch, suffix = resolve(hf, head)
    parsed = config if isinstance(config, HFConfig) else arch.config_class.from_hf_config(hf)
    return _build(arch.head_class(suffix), parsed, "the config").eval()


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system: no limit to check against
        return None


def _build(model_class: type[nn.Module], config: HFConfig, source: str) -> nn.Module:
    """``model_class(config)``, once a shapes-only build on the meta device shows its weights fit in this machine's
    memory: an absurd size in config.json (vocab_size 10**12) is a clear error, not an allocation that fails."""
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the model's notes on its config come once, from the real build below
        sizes = model_class(config)
    tensors = (*sizes.parameters(), *sizes.buffers())
    count, nbytes = sum(t.numel() for t in tensors), sum(t.numel() * t.element_size() for t in tensors)
    limit = _memory_bytes()
    if limit is not None and nbytes > limit:
        keys = ", ".join(f"{f.name} {getattr(config, f.name)}" for f in dataclasses.fields(config)
                         if type(getattr(config, f.name)) is int and getattr(config, f.name) > 1)
        raise ConfigError(f"{source} describes a model of {count:.3g} weights ({nbytes / 2**30:.0f} GiB), more than "
                          f"this machine's {limit / 2**30:.0f} GiB of memory: check its sizes ({keys})")
    return model_class(config)


# ----------------------------------------------------------------------------------------------- matching names


def _tied_weights(model: nn.Module) -> dict[str, str]:
    """target -> source for the parameters this model shares (the same tensor under two names)."""
    first_name: dict[int, str] = {}
    tied: dict[str, str] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        key = id(tensor)
        if key in first_name:
            tied[name] = first_name[key]
        else:
            first_name[key] = name
    return tied


def _ignored(model: nn.Module, name: str) -> bool:
    patterns = getattr(model, "ignored_checkpoint_keys", ())
    return any(re.search(p, name) for p in patterns)


def match_state_dict(
    model: nn.Module, state: Mapping[str, torch.Tensor], base_model_prefix: str
) -> dict[str, torch.Tensor]:
    """Rename checkpoint tensors onto the model's names and check them strictly; raise listing every problem."""
    expected = model.state_dict()
    tied = _tied_weights(model)
    prefix = base_model_prefix + "."
    model_has_prefix = any(k.startswith(prefix) for k in expected)
    ckpt_has_prefix = any(k.startswith(prefix) for k in state)
    state = {k: v for k, v in state.items() if not _ignored(model, k)}
    if model_has_prefix and not ckpt_has_prefix:
        # A bare base-model checkpoint loaded into a head model: its tensors are the head model's base.
        state = {prefix + k: v for k, v in state.items()}
    elif not model_has_prefix and ckpt_has_prefix:
        # A head checkpoint loaded into the bare model: keep the base, leave the head out (as HF does).
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}

    out: dict[str, torch.Tensor] = {}
    missing, mis_shaped = [], []
    for name, param in expected.items():
        if name in state:
            tensor = state[name]
        elif name in tied and tied[name] in state:
            tensor = state[tied[name]]
        elif name in tied:
            continue  # reported under its source's name
        else:
            missing.append(name)
            continue
        if tuple(tensor.shape) != tuple(param.shape):
            mis_shaped.append(f"{name}: checkpoint {tuple(tensor.shape)}, model {tuple(param.shape)}")
            continue
        out[name] = tensor
    for target, source in tied.items():
        if source in missing and target in state:
            # Some checkpoints keep only the tied copy's name.
            missing.remove(source)
            out[source] = state[target]
    unexpected = [k for k in state if k not in expected]
    problems = []
    if missing:
        problems.append(f"missing tensors ({len(missing)}): " + ", ".join(missing))
    if unexpected:
        problems.append(f"unexpected tensors ({len(unexpected)}): " + ", ".join(unexpected))
    if mis_shaped:
        problems.append(f"mis-shaped tensors ({len(mis_shaped)}): " + "; ".join(mis_shaped))
    if problems:
        raise CheckpointError(
            f"checkpoint does not match {type(model).__name__}:\n  " + "\n  ".join(problems)
            + "\nCheck that config.json belongs to these weights and that the head is right (head=...)."
        )
    return out


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], base_model_prefix: str) -> nn.Module:
    matched = match_state_dict(model, state, base_model_prefix)
    with torch.no_grad():
        params = model.state_dict(keep_vars=True)
        for name, tensor in matched.items():
            params[name].copy_(tensor.to(dtype=params[name].dtype))
    return model


def from_pretrained(
    checkpoint_dir: str | os.PathLike,
    head: str | None = None,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> nn.Module:
    """Load a local HF checkpoint folder into the reference model, in eval mode.

    The architecture comes from ``config.json``'s ``model_type`` and the head from its ``architectures``;
    ``head`` overrides it and takes HF's class names or their suffixes (``"ForSequenceClassification"``).
    """
    hf = read_config(checkpoint_dir)
    arch, suffix = resolve(hf, head)
    source = repr(str(Path(checkpoint_dir) / CONFIG_NAME))
    try:
        config = arch.config_class.from_hf_config(hf)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    model = _build(arch.head_class(suffix), config, source)
    load_weights(model, read_state_dict(checkpoint_dir), arch.base_model_prefix)
    if dtype is not None:
        model = model.to(dtype=dtype)
    if device is not None:
        model = model.to(device=device)
    return model.eval()


# ----------------------------------------------------------------------------------------------- writing


def _shards(state: dict[str, torch.Tensor], max_bytes: int) -> Iterator[dict[str, torch.Tensor]]:
    shard: dict[str, torch.Tensor] = {}
    size = 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shard and size + nbytes > max_bytes:
            yield shard
            shard, size = {}, 0
        shard[name] = tensor
        size += nbytes
    if shard:
        yield shard


def save_pretrained(
    model: nn.Module,
    out_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    max_shard_bytes: int = MAX_SHARD_BYTES,
    extra_files: Mapping[str, str] | None = None,
) -> Path:
    """Write ``config.json`` and safetensors weights, atomically: a failure leaves no partial folder behind.

    An existing ``out_dir`` must be empty, or (with ``overwrite``) a checkpoint this function wrote and nothing
    else (its ``.kiln-folder.json`` marker lists its files); the old one stays as ``OUT.kiln-old`` until the new one
    is in place.
    ``extra_files``: ``{name: text}`` written beside them in the same step (a tokenizer, ``generation_config.json``)."""
    from safetensors.torch import save_file

    config: HFConfig = model.config
    arch = get_architecture(config.model_type)
    hf = config.to_hf_dict()
    hf["architectures"] = [arch.hf_class_name(_head_suffix(arch, model))]

    tied = _tied_weights(model)
    state = {
        name: tensor.detach().to("cpu").contiguous().clone()
        for name, tensor in model.state_dict().items()
        if name not in tied and not _ignored(model, name)
    }
    metadata = {"format": "pt"}
    with staged_folder(out_dir, overwrite=overwrite, owned=ownership_problem, error=CheckpointError,
                       what="the checkpoint folder", replace_empty=True) as tmp:
        (tmp / CONFIG_NAME).write_text(json.dumps(hf, indent=2, sort_keys=True) + "\n")
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        shards = list(_shards(state, max_shard_bytes))
        if len(shards) == 1:
            save_file(shards[0], str(tmp / SAFETENSORS_NAME), metadata=metadata)
        else:
            weight_map = {}
            for i, shard in enumerate(shards, start=1):
                name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, str(tmp / name), metadata=metadata)
                weight_map.update({k: name for k in shard})
            total = sum(t.numel() * t.element_size() for t in state.values())
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (tmp / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        write_marker(tmp, MARKER_KIND)
    return Path(out_dir)


def ownership_problem(folder: Path) -> str | None:
    """None when ``folder`` is a checkpoint :func:`save_pretrained` wrote (its marker and the files it lists, nothing
    else), so that ``overwrite`` may replace it; otherwise why not."""
    return marker_problem(folder, MARKER_KIND)


def _head_suffix(arch: Architecture, model: nn.Module) -> str:
    for suffix, cls in arch.heads.items():
        if type(model) is cls:
            return suffix
    raise TypeError(f"{type(model).__name__} is not a registered head of {arch.model_type}")
