"""Shipped configs: the published configs of the public checkpoints, a long-sequence MRA preset, and tiny variants.

Each ``<name>.json`` holds ``{"source", "description", "config"}``, where ``config`` is the checkpoint's
``config.json``. :func:`init_checkpoint` turns a preset into a random-weight checkpoint folder in HF's format,
which both :func:`tensorkiln.reference.from_pretrained` and HF's own ``from_pretrained`` load (there are no model
hubs here, so tests and demos build their checkpoints this way).
"""

from __future__ import annotations

import dataclasses
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from tensorkiln.runtime.errors import UsageError

#: The five demo checkpoints the main job builds, one per architecture.
DEMO_PRESETS = (
    "mra-base-512-4",
    "mega-base-wikitext",
    "megatron-bert-cased-345m",
    "pythia-160m",
    "nystromformer-512",
)


class PresetError(UsageError):
    """A preset name that is not shipped."""


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    source: str
    description: str
    config: dict[str, Any]

    @property
    def model_type(self) -> str:
        return self.config["model_type"]


def _preset_files() -> dict[str, Any]:
    folder = resources.files(__package__)
    return {p.name[: -len(".json")]: p for p in folder.iterdir() if p.name.endswith(".json")}


def preset_names() -> list[str]:
    return sorted(_preset_files())


def get_preset(name: str) -> Preset:
    files = _preset_files()
    if name not in files:
        raise PresetError(f"unknown preset {name!r}; available: {', '.join(sorted(files))} (see `kiln presets`)")
    data = json.loads(files[name].read_text())
    return Preset(name=name, source=data["source"], description=data.get("description", ""), config=data["config"])


def init_checkpoint(
    preset: str | Preset,
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    head: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a random-weight checkpoint of ``preset`` (HF layout: config.json + model.safetensors) to ``out_dir``."""
    import torch

    from ..checkpoint import build_model, save_pretrained
    from ..init import initialize_weights

    if isinstance(preset, str):
        preset = get_preset(preset)
    with torch.device("cpu"):
        model = build_model(preset.config, head)
    std = getattr(model.config, "initializer_range", 0.02)
    initialize_weights(model, seed=seed, std=std)
    return save_pretrained(model, out_dir, overwrite=overwrite)
