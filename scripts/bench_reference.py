#!/usr/bin/env python
"""CPU latency of the reference models next to HF eager (transformers 4.57.6), at the base-size demo configs.

Both models get the same random weights: HF builds the model from the preset's config, HF saves it, ours loads the
folder. Each forward runs under ``torch.inference_mode()`` with the same inputs; the figure is the median of
``--repeats`` timed runs after ``--warmup`` untimed ones, in one process, alternating ours and HF's runs so that both
see the same machine state. Prints a markdown table and writes JSON when ``--json`` is given.

HF's MRA returns zero attention without its CUDA kernels, so on a CPU its time leaves the attention out; the table
says so. Usage: ``python scripts/bench_reference.py --batch 1 --seq 512 --threads 2``
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from tensorkiln.reference import from_pretrained
from tensorkiln.export.demo import max_length
from tensorkiln.reference.presets import DEMO_PRESETS, get_preset


def _hf_model(preset):
    import transformers

    config_class = transformers.AutoConfig.for_model(**preset.config)
    class_name = preset.config["architectures"][0]
    return getattr(transformers, class_name)._from_config(config_class, attn_implementation="eager")


def _timed(fn, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def bench(preset_name: str, batch: int, seq: int, warmup: int, repeats: int) -> dict:
    preset = get_preset(preset_name)
    torch.manual_seed(0)
    hf = _hf_model(preset).eval()
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = from_pretrained(tmp)
    seq = min(seq, max_length(ours.config))  # nystromformer-512 takes 510 tokens (positions start at 2)
    ids = torch.randint(0, ours.config.vocab_size, (batch, seq))
    mask = torch.ones(batch, seq, dtype=torch.long)
    with torch.inference_mode():
        ours_fn = lambda: ours(input_ids=ids, attention_mask=mask)  # noqa: E731
        hf_fn = lambda: hf(input_ids=ids, attention_mask=mask)  # noqa: E731
        ours_t, hf_t = [], []
        for _ in range(repeats):
            ours_t += _timed(ours_fn, warmup if not ours_t else 0, 1)
            hf_t += _timed(hf_fn, warmup if not hf_t else 0, 1)
    ours_ms, hf_ms = 1000 * statistics.median(ours_t), 1000 * statistics.median(hf_t)
    return {
        "preset": preset_name,
        "model_type": preset.model_type,
        "head": preset.config["architectures"][0],
        "batch": batch,
        "seq": seq,
        "ours_ms": ours_ms,
        "hf_eager_ms": hf_ms,
        "hf_over_ours": hf_ms / ours_ms,
        "note": "HF MRA skips attention on CPU (no CUDA kernels)" if preset.model_type == "mra" else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="*", default=list(DEMO_PRESETS))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}, "
          f"batch {args.batch}, seq {args.seq} (clipped to each model's maximum), median of {args.repeats}")
    print("| preset | HF class | seq | ours (ms) | HF eager (ms) | HF / ours | note |")
    print("|---|---|---:|---:|---:|---:|---|", flush=True)
    rows = []
    for preset in args.presets:
        r = bench(preset, args.batch, args.seq, args.warmup, args.repeats)
        rows.append(r)
        print(f"| {r['preset']} | {r['head']} | {r['seq']} | {r['ours_ms']:.1f} | {r['hf_eager_ms']:.1f} "
              f"| {r['hf_over_ours']:.2f} | {r['note']} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"torch": torch.__version__, "threads": args.threads, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
