"""Micro-benchmark of the CPU kernels of plugins/cpu alone (no ONNX Runtime), through their ctypes test shim
(plugins/cpu/testing, built here with g++): MraAttention at mra-base-4096-8's shapes against the torch op and dense
softmax attention (torch SDPA) on the same q, k, v; MegaEma at mega-base-wikitext's sizes against the torch op (an
FFT convolution). The ONNX Runtime figures (the native node vs its function body, end to end) are ``kiln bench``'s.

Run: ``python scripts/bench_cpu_kernels.py [--threads 2] [--repeats 5] [--lengths 512 2048 4096 16384] [--isa
avx2+fma|portable] [--json FILE]``. Prints markdown tables; every figure is the median of back-to-back runs after an
untimed one (see _median_ms for why not alternated), all on ``--threads`` threads (the kernels' std::thread pool,
torch's intra-op threads, the BLAS of the sgemm peak). MRA's GFLOP/s are on the FLOPs its selected blocks and low-
resolution part count (export/bench/flops.py's ``mra_flops``), dense attention's on 4 B H L^2 D, against this
machine's fp32 sgemm peak (export/bench/peak.py: the best of numpy, torch and ORT 4096 x 4096 matmuls, each pinned
to the same threads). The EMA's GB/s are on the bytes it must move (x read, output and final state written,
parameters read once), against numpy's copy bandwidth; the scan is compute-bound (two fp64 FMAs per step, channel
and EMA dimension), so its GFLOP/s are printed too. The machine is shared: the load average is printed with the
figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tensorkiln.export.bench.flops import mra_flops
from tensorkiln.export.bench.machine import load_average
from tensorkiln.export.bench.native_ops import copy_bandwidth_gbs
from tensorkiln.export.bench.peak import sgemm_peak
from tensorkiln.export.bench.timing import alternate
from tensorkiln.reference.mra import MraConfig
from tensorkiln.reference.ops.mega_ema import mega_ema
from tensorkiln.reference.ops.mra_attention import mra_attention
from tensorkiln.reference.presets import get_preset

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "plugins" / "cpu" / "testing"))
import cpu_kernels_capi  # noqa: E402


def _median_ms(calls: dict, repeats: int) -> dict[str, float]:
    """Median ms of each call, its runs back to back after an untimed one, a pause between calls. Not alternated:
    torch's OpenMP threads keep spinning for a while after each torch call and take the second core from whatever
    runs next (measured: the native MRA 27 ms alone, 30-40 ms right after an SDPA call)."""
    out = {}
    for name, call in calls.items():
        time.sleep(0.5)
        call()  # untimed: first-touch allocations, thread start-up
        out[name] = 1e3 * statistics.median(alternate({name: call}, repeats)[name])
    return out


def _max_abs(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def bench_mra(kernels, pool, repeats: int) -> dict:
    """mra-base-4096-8: B=1, H=12, L=4096, D=64 and the preset's budget, approx_mode full, no priors."""
    config = MraConfig.from_hf_config(get_preset("mra-base-4096-8").config)
    batch, heads, length = 1, config.num_attention_heads, config.max_position_embeddings
    dim = config.hidden_size // heads
    scale = 1.0 / math.sqrt(max(dim, 32))  # reference/mra.py's scale
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, heads, length, dim, generator=g) for _ in range(3))
    mask = torch.ones(batch, length)
    attributes = dict(num_blocks=config.num_blocks, scale=scale, approx_mode=config.approx_mode,
                      initial_prior_first_n_blocks=config.initial_prior_first_n_blocks,
                      initial_prior_diagonal_n_blocks=config.initial_prior_diagonal_n_blocks)
    arrays = [t.numpy() for t in (q, k, v, mask)]
    calls = {"native": lambda: kernels.mra_attention(*arrays, pool=pool, **attributes),
             "torch op": lambda: mra_attention(q, k, v, mask, **attributes),
             "dense SDPA": lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale)}
    ms = _median_ms(calls, repeats)
    flops = {"native": mra_flops(q.shape, k.shape, v.shape, mask.shape, **attributes)}
    flops["torch op"] = flops["native"]
    flops["dense SDPA"] = 4 * batch * heads * length * length * dim
    error = _max_abs(calls["native"](), calls["torch op"]())
    return {"shape": [batch, heads, length, dim], "attributes": attributes, "ms": ms, "flops": flops,
            "max_abs_native_vs_op": error}


def bench_ema(kernels, pool, lengths: list[int], repeats: int) -> list[dict]:
    """mega-base-wikitext's EMA: D = hidden 128, N = ema_projection_size 16, bidirectional, B = 1."""
    config = get_preset("mega-base-wikitext").config
    channels, ndim, bidirectional = config["hidden_size"], config["ema_projection_size"], config["bidirectional"]
    rows = 2 * channels if bidirectional else channels
    rows_out = []
    for length in lengths:
        g = torch.Generator().manual_seed(length)
        x = torch.randn(1, length, channels, generator=g)
        params = [0.2 * torch.randn(rows, ndim, 1, generator=g), 0.2 * torch.randn(rows, ndim, 1, generator=g),
                  torch.randn(rows, ndim, 1, generator=g), torch.randn(rows, ndim, generator=g)]
        arrays = [t.numpy() for t in (x, *params)]
        calls = {"native": lambda a=arrays: kernels.mega_ema(*a, bidirectional=bidirectional, pool=pool),
                 "torch op": lambda x=x, p=params: mega_ema(x, *p, bidirectional=bidirectional)}
        ms = _median_ms(calls, repeats if length <= 4096 else max(3, repeats // 2))
        moved = 4 * (2 * length * channels + 4 * rows * ndim + channels * ndim)
        scan_flops = 4 * length * rows * ndim  # two FMAs per step, channel and EMA dimension, in fp64
        error = _max_abs(calls["native"]()[0], calls["torch op"]()[0])
        rows_out.append({"shape": [1, length, channels, ndim], "bidirectional": bidirectional, "ms": ms,
                         "bytes_moved": moved, "scan_flops": scan_flops, "max_abs_native_vs_op": error})
    return rows_out


def report(result: dict) -> str:
    peak, bandwidth = result["sgemm_peak"]["best_gflops"], result["copy_bandwidth_gbs"]
    mra = result["mra"]
    lines = [f"CPU kernels ({result['isa']}), {result['threads']} threads; load average at start "
             f"{result['load_start']}, at end {result['load_end']}; sgemm peak {peak:.1f} GFLOP/s "
             f"({result['sgemm_peak']['best_by']}), copy bandwidth {bandwidth:.1f} GB/s", "",
             f"MraAttention, mra-base-4096-8 (B, H, L, D) = {tuple(mra['shape'])}, num_blocks "
             f"{mra['attributes']['num_blocks']}, {mra['attributes']['approx_mode']}; native vs op max abs "
             f"{mra['max_abs_native_vs_op']:.2e}", "",
             "| implementation | ms | dense SDPA / this | GFLOP counted | GFLOP/s | % of sgemm peak |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, ms in mra["ms"].items():
        gflops = mra["flops"][name] / ms / 1e6
        lines.append(f"| {name} | {ms:.2f} | {mra['ms']['dense SDPA'] / ms:.2f}x | {mra['flops'][name] / 1e9:.2f} "
                     f"| {gflops:.1f} | {100 * gflops / peak:.0f}% |")
    lines += ["", "MegaEma, mega-base-wikitext sizes (B=1, D=128, N=16, bidirectional)", "",
              "| L | native ms | torch op ms | torch op / native | native GB/s | % of copy bandwidth "
              "| scan GFLOP/s (fp64) | max abs vs op |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in result["ema"]:
        native, op = row["ms"]["native"], row["ms"]["torch op"]
        gbs = row["bytes_moved"] / native / 1e6
        lines.append(f"| {row['shape'][1]} | {native:.3f} | {op:.2f} | {op / native:.0f}x | {gbs:.2f} | "
                     f"{100 * gbs / bandwidth:.0f}% | {row['scan_flops'] / native / 1e6:.1f} "
                     f"| {row['max_abs_native_vs_op']:.1e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 4096, 16384])
    parser.add_argument("--isa", choices=["avx2+fma", "portable"], default=None,
                        help="the build to run (default: the best this CPU supports)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    load_start = load_average()
    with tempfile.TemporaryDirectory() as build_dir:
        kernels = cpu_kernels_capi.CpuKernels(cpu_kernels_capi.build(Path(build_dir)))
        if args.isa:
            kernels.select_isa(args.isa)
        with kernels.thread_pool(args.threads) as pool:
            mra = bench_mra(kernels, pool, args.repeats)
            ema = bench_ema(kernels, pool, args.lengths, args.repeats)
        isa = kernels.isa
    result = {"isa": isa, "threads": args.threads, "cpu_count": os.cpu_count(), "load_start": load_start,
              "sgemm_peak": sgemm_peak(4096, args.threads), "copy_bandwidth_gbs": copy_bandwidth_gbs(),
              "mra": mra, "ema": ema, "load_end": load_average()}
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
