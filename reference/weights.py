"""Reading a checkpoint folder's weights, with one clear error per damaged or hostile file; checking their values.

HF's layouts: ``model.safetensors``, sharded safetensors with ``model.safetensors.index.json``, ``pytorch_model.bin``
(optionally sharded with ``pytorch_model.bin.index.json``). Every file the index names is resolved inside the
checkpoint folder (``runtime/paths.py``: no absolute path, no ``..``, no symlink out). A safetensors file that is
truncated, too small or has a header too large, and a ``pytorch_model.bin`` that is not a pickle of tensors or would
run code when unpickled, is a :class:`CheckpointError` naming the file. Pickles are read with
``torch.load(weights_only=True)`` only: tensorkiln never executes code from a checkpoint.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from tensorkiln.runtime.errors import KilnError
from tensorkiln.runtime.jsonfile import Fields, read_json_object
from tensorkiln.runtime.paths import resolve_inside

SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_NAME = "pytorch_model.bin"
TORCH_INDEX = "pytorch_model.bin.index.json"


class CheckpointError(KilnError, ValueError):
    """A checkpoint folder that cannot be loaded: files missing, or tensors missing, unexpected or mis-shaped."""


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except SafetensorError as exc:
        reason = str(exc).removeprefix("Error while deserializing header: ")
        raise CheckpointError(f"{str(path)!r} is not a readable safetensors file ({reason}): it is truncated or "
                              "damaged; save or download it again") from None
    except OSError as exc:
        raise CheckpointError(f"{str(path)!r} cannot be read: {exc.strerror or exc}") from None


def _unpickling_reason(text: str) -> str:
    """What torch's weights-only unpickler refused, without its advice to turn the protection off."""
    found = re.search(r"unsupported(?: global:)? GLOBAL ([\w.]+)", text, flags=re.IGNORECASE)
    if found:
        return (f"it would call {found.group(1)} when loaded, and tensorkiln never runs code from a checkpoint: "
                "convert it to safetensors with a tool you trust")
    found = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    detail = found.group(1).strip() if found else text.strip().splitlines()[0] if text.strip() else "no data"
    return f"it is not a PyTorch checkpoint of tensors ({detail})"


def _load_torch(path: Path) -> dict[str, torch.Tensor]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols are about its own loader
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{str(path)!r} cannot be loaded: {_unpickling_reason(str(exc))}") from None
    except (EOFError, RuntimeError, ValueError, OSError) as exc:  # empty, truncated zip, not a checkpoint
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{str(path)!r} is not a readable PyTorch checkpoint ({reason[:200]}): it is "
                              "truncated or damaged; save or download it again") from None
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{str(path)!r} does not hold a state dict (it holds a {type(state).__name__})")
    bad = [str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{str(path)!r} holds entries that are not named tensors: {', '.join(bad[:5])}")
    return dict(state)


def _load_sharded(folder: Path, index_name: str, loader) -> dict[str, torch.Tensor]:
    index_path = folder / index_name
    index = Fields(read_json_object(index_path, error=CheckpointError, what="the shard index"),
                   label=repr(str(index_path)), error=CheckpointError)
    weight_map = index.strings("weight_map")
    shards = sorted(set(weight_map.values()))
    if not shards:
        raise CheckpointError(f"{str(index_path)!r} key 'weight_map' names no shards")
    paths = {s: resolve_inside(folder, s, source=index_path, key="weight_map shard", error=CheckpointError)
             for s in shards}
    missing = [s for s, p in paths.items() if not p.is_file()]
    if missing:
        raise CheckpointError(f"{str(index_path)!r} names shards that are missing: {', '.join(missing)}")
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        state.update(loader(paths[shard]))
    return state


def read_state_dict(checkpoint_dir: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint folder, by name."""
    folder = Path(checkpoint_dir)
    if (folder / SAFETENSORS_NAME).is_file():
        return _load_safetensors(folder / SAFETENSORS_NAME)
    if (folder / SAFETENSORS_INDEX).is_file():
        return _load_sharded(folder, SAFETENSORS_INDEX, _load_safetensors)
    if (folder / TORCH_NAME).is_file():
        return _load_torch(folder / TORCH_NAME)
    if (folder / TORCH_INDEX).is_file():
        return _load_sharded(folder, TORCH_INDEX, _load_torch)
    raise CheckpointError(
        f"no weights in {str(folder)!r}: expected {SAFETENSORS_NAME}, {SAFETENSORS_INDEX}, {TORCH_NAME} "
        f"or {TORCH_INDEX}"
    )


def check_finite(model: nn.Module, source: str | os.PathLike, half: nn.Module | None = None) -> None:
    """Refuse weights holding NaN or Inf (naming each tensor), and weights that overflow fp16 in ``half``."""
    problems = []
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            nan, inf = int(torch.isnan(tensor).sum()), int(torch.isinf(tensor).sum())
            kinds = ", ".join(f"{count} {what}" for count, what in ((nan, "NaN"), (inf, "Inf")) if count)
            problems.append(f"{name} ({kinds} of {tensor.numel()} values)")
    if problems:
        raise CheckpointError(f"the weights of {str(source)!r} hold NaN or Inf: {'; '.join(problems[:5])}"
                              + (f" and {len(problems) - 5} more tensors" if len(problems) > 5 else "")
                              + ". The checkpoint is damaged (or the training diverged); fix it before exporting")
    if half is None:
        return
    overflow = [name for name, tensor in half.state_dict().items()
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if overflow:
        raise CheckpointError(f"the weights of {str(source)!r} overflow fp16 (|value| > 65504) in "
                              f"{', '.join(overflow[:5])}: export with --precision fp32")


__all__ = ["CheckpointError", "SAFETENSORS_INDEX", "SAFETENSORS_NAME", "TORCH_INDEX", "TORCH_NAME", "check_finite",
           "read_state_dict"]
