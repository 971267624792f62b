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
    tokenizer: bool = True,
) -> Path:
    """Write a random-weight checkpoint of ``preset`` to ``out_dir``, in HF's layout: config.json, model.safetensors
    and, with ``tokenizer``, a tokenizer trained for it (``tokenizer.json``, ``tokenizer_config.json``,
    ``special_tokens_map.json``; see :mod:`.tokenizer`) plus ``generation_config.json`` for causal LMs."""
    import torch

    from ..checkpoint import build_model, save_pretrained
    from ..init import initialize_weights

    if isinstance(preset, str):
        preset = get_preset(preset)
    with torch.device("cpu"):
        model = build_model(preset.config, head)
    std = getattr(model.config, "initializer_range", 0.02)
    initialize_weights(model, seed=seed, std=std)
    extra = text_files(model.config.to_hf_dict(), type(model).__name__.endswith("ForCausalLM")) if tokenizer else {}
    return save_pretrained(model, out_dir, overwrite=overwrite, extra_files=extra)


def text_files(config: dict[str, Any], causal: bool) -> dict[str, str]:
    """The text side of a demo checkpoint: its tokenizer files, and ``generation_config.json`` for a causal LM."""
    from .tokenizer import build_tokenizer_files, generation_config_text

    files = build_tokenizer_files(config, causal)
    if causal:
        files["generation_config.json"] = generation_config_text(config)
    return files
