"""The models a ``kiln bench`` run measures, built into its work folder when absent.

A preset gets a random-weight checkpoint (``WORK/checkpoints/NAME``) and an export (``WORK/exports/NAME``); a Mega
preset that is not a causal LM also gets a causal LM of the same size, for the generation section. A ``--models``
spec, ``CHECKPOINT[:EXPORT]``, names an HF checkpoint folder and, optionally, its export (default
``WORK/exports/NAME``, exported when absent). Without presets or models, the run takes the demo presets (their tiny
versions with ``--quick``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from tensorkiln.runtime import manifest as mf

from .options import BenchError, BenchOptions, Target, log


def _preset_targets(options: BenchOptions) -> list[tuple[str, Any]]:
    from tensorkiln.reference.presets import DEMO_PRESETS, get_preset

    if options.presets:
        names = options.presets
    elif options.models:
        names = ()
    elif options.quick:
        names = tuple("tiny-" + get_preset(n).model_type.replace("_", "-") for n in DEMO_PRESETS)
    else:
        names = DEMO_PRESETS
    return [(name, get_preset(name)) for name in names]


def _causal_variant(preset):
    """A Mega causal LM of the same size as a Mega preset (for the generation section), or None."""
    from tensorkiln.reference.presets import Preset

    if preset.model_type != "mega" or preset.config["architectures"][0] == "MegaForCausalLM":
        return None
    config = {**preset.config, "architectures": ["MegaForCausalLM"], "is_decoder": True, "bidirectional": False,
              "use_cache": True}
    return Preset(f"{preset.name}-causal", preset.source, f"{preset.description} (causal LM variant)", config)


def build_target(name: str, preset, checkpoint: Path, export: Path, options: BenchOptions,
                 patch: Callable[[], AbstractContextManager[Any]] | None = None) -> Target:
    """The checkpoint (from ``preset``, when it has none) and the export of one model, each made when absent.

    ``patch``, when given, is a context manager the export runs in (the MRA vs dense section's dense attention).
    """
    if not (checkpoint / "config.json").is_file():
        if preset is None:
            raise BenchError(f"{str(checkpoint)!r} has no config.json: pass an HF checkpoint folder")
        from tensorkiln.reference.presets import init_checkpoint

        log(options, f"{name}: writing a random-weight checkpoint to {checkpoint}")
        init_checkpoint(preset, checkpoint, seed=0)
    if not (export / mf.MANIFEST_NAME).is_file():
        from tensorkiln.export.exporter import ExportOptions
        from tensorkiln.export.exporter import export as run_export

        log(options, f"{name}: exporting to {export}")
        with patch() if patch is not None else contextlib.nullcontext():
            run_export(checkpoint, export, ExportOptions(progress=options.progress))
    manifest = mf.read_manifest(export, check_files=False)
    config = json.loads((checkpoint / "config.json").read_text())
    return Target(name, checkpoint, export, config, manifest)


def build_targets(options: BenchOptions) -> tuple[list[Target], list[Target]]:
    """(models for the latency sections, extra causal LMs for generation), built into the work dir if absent."""
    work = Path(options.work)
    targets, extra = [], []
    for name, preset in _preset_targets(options):
        targets.append(build_target(name, preset, work / "checkpoints" / name, work / "exports" / name, options))
        variant = _causal_variant(preset) if "generation" not in options.skip else None
        if variant is not None:
            extra.append(build_target(variant.name, variant, work / "checkpoints" / variant.name,
                                      work / "exports" / variant.name, options))
    for spec in options.models:
        checkpoint, _, export = spec.partition(":")
        checkpoint_path = Path(checkpoint)
        name = checkpoint_path.resolve().name
        export_path = Path(export) if export else work / "exports" / name
        targets.append(build_target(name, None, checkpoint_path, export_path, options))
    return targets, extra
