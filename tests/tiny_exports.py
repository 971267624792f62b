"""Tiny checkpoints and their exports, made on first use and shared by a test module (exports take 5-15 s each on
two cores). Used by the export, parity and runtime tests.
"""

from __future__ import annotations

from pathlib import Path

from tensorkiln.export import exporter, quantize
from tensorkiln.reference.presets import Preset, get_preset, init_checkpoint

TINY = {
    "mra": "tiny-mra",
    "mega": "tiny-mega",
    "megatron-bert": "tiny-megatron-bert",
    "gpt_neox": "tiny-gpt-neox",
    "nystromformer": "tiny-nystromformer",
}
#: Config variants of the tiny presets: name -> (model_type, config changes).
VARIANTS = {
    "megatron-decoder": ("megatron-bert", {"is_decoder": True}),
    "mega-bidirectional": ("mega", {"bidirectional": True, "is_decoder": False}),  # mega-base-wikitext's kind
    "mega-chunked": ("mega", {"use_chunking": True, "chunk_size": 8}),
}


class Exports:
    """Checkpoints and exports made on first use and shared by the module's tests."""

    def __init__(self, root: Path):
        self.root = root
        self.done: dict[tuple, tuple[Path, Path]] = {}

    def checkpoint(self, model_type: str, head: str) -> Path:
        """``model_type`` is an architecture (its tiny preset) or a name in VARIANTS."""
        path = self.root / f"ckpt-{model_type}-{head}"
        if not path.exists():
            preset = get_preset(TINY[VARIANTS.get(model_type, (model_type,))[0]])
            if model_type in VARIANTS:
                config = {**preset.config, **VARIANTS[model_type][1]}
                preset = Preset(model_type, preset.source, preset.description, config)
            init_checkpoint(preset, path, seed=0, head=head)
        return path

    def get(self, model_type: str, head: str, precision: str = "fp32") -> tuple[Path, Path]:
        """int8: ``kiln quantize`` of the cached fp32 export, judged against the checkpoint's reference (the same
        graph ``kiln export --precision int8`` writes, without exporting twice; tests/test_int8.py checks that)."""
        key = (model_type, head, precision)
        if key not in self.done:
            ckpt = self.checkpoint(model_type, head)
            out = self.root / f"onnx-{model_type}-{head}-{precision}"
            if precision == "int8":
                quantize.quantize_export(self.get(model_type, head)[1], out, checkpoint_dir=ckpt, progress=False)
            else:
                exporter.export(ckpt, out, precision=precision, progress=False)
            self.done[key] = (ckpt, out)
        return self.done[key]
