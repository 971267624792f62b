"""The main job until export exists: build the demo checkpoints and run the reference models on them.

Checkpoints are random-weight folders written from the shipped presets (there are no model hubs here); a folder
already present is reused. Each model runs one forward pass on random token ids, timed as the median of a few runs
after a warm-up, and the results come back as rows for a markdown table.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

from tensorkiln.reference.checkpoint import CONFIG_NAME, from_pretrained
from tensorkiln.reference.presets import DEMO_PRESETS, get_preset, init_checkpoint

from .specs import get_spec


@dataclasses.dataclass(frozen=True)
class DemoRow:
    preset: str
    model_type: str
    head: str
    parameters: int
    outputs: str
    latency_ms: float
    finite: bool


def _progress(items, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=desc, file=sys.stderr, leave=False)


def tiny_presets() -> tuple[str, ...]:
    return tuple("tiny-" + get_preset(name).model_type.replace("_", "-") for name in DEMO_PRESETS)


def run_demo(out_dir: Path, presets: tuple[str, ...], batch: int, seq: int, repeats: int = 3) -> list[DemoRow]:
    rows = []
    for name in _progress(presets, "demo"):
        folder = out_dir / name
        if not (folder / CONFIG_NAME).is_file():
            init_checkpoint(name, folder, seed=0)
        model = from_pretrained(folder)
        length = min(seq, max_length(model.config))
        generator = torch.Generator().manual_seed(0)
        input_ids = torch.randint(0, model.config.vocab_size, (batch, length), generator=generator)
        attention_mask = torch.ones(batch, length, dtype=torch.long)
        with torch.inference_mode():
            outputs = model(input_ids=input_ids, attention_mask=attention_mask)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                model(input_ids=input_ids, attention_mask=attention_mask)
                times.append(time.perf_counter() - start)
        tensors = {k: v for k, v in outputs.to_dict().items() if isinstance(v, torch.Tensor)}
        rows.append(
            DemoRow(
                preset=name,
                model_type=model.config.model_type,
                head=type(model).__name__,
                parameters=sum(p.numel() for p in model.parameters()),
                outputs=", ".join(f"{k} {tuple(v.shape)}" for k, v in tensors.items()),
                latency_ms=1000 * statistics.median(times),
                finite=all(bool(torch.isfinite(v).all()) for v in tensors.values()),
            )
        )
    return rows


def max_length(config) -> int:
    """The longest input the model takes, from its export spec's length rules (Nystromformer's landmark branch
    stops at ``segment_means_seq_len``, MRA and the BERT-style models at ``max_position_embeddings``, ...)."""
    return get_spec(config.model_type).length_rules(config).max_length


def format_table(rows: list[DemoRow], batch: int, seq: int) -> str:
    lines = [
        f"| preset | model_type | head | parameters | outputs | latency (ms, batch {batch}, seq ≤ {seq}) | finite |",
        "|---|---|---|---:|---|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.preset} | {r.model_type} | {r.head} | {r.parameters / 1e6:.1f}M | {r.outputs} "
            f"| {r.latency_ms:.1f} | {'yes' if r.finite else 'NO'} |"
        )
    return "\n".join(lines)
