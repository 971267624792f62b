"""The latency section: one forward of each backend at each batch x sequence shape of each model, timed in turn.

Each shape's figure is the median of ``repeats`` timed runs after ``warmup`` untimed ones. The backends run in turn
(the order rotating each round, :func:`alternate`), so that all of them see the same machine state. A row also
carries the throughput, the matmul GFLOP/s and their fraction of the sgemm peak (:mod:`.flops`, :mod:`.peak`), ORT's
speed-up over the others and each backend's largest difference from the reference's main output.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .backends import HF, Ort, Reference, token_ids
from .flops import count_matmul_flops
from .options import BenchOptions, Target, log


def alternate(calls: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each call, ``repeats`` rounds, the order rotating each round."""
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        for name in names[round_ % len(names):] + names[: round_ % len(names)]:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return times


def shapes(target: Target, options: BenchOptions) -> list[tuple[int, int, int]]:
    """(batch, length, asked length): lengths clipped to the model's maximum, or its fixed length."""
    rules = target.manifest.length_rules
    out, seen = [], set()
    for batch in options.batches:
        for seq in options.seqs:
            length = rules.fixed_length or min(seq, rules.max_length)
            if (batch, length) not in seen:
                seen.add((batch, length))
                out.append((batch, length, seq))
    return out


def max_abs(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    """The largest absolute difference of two outputs, or None when either is missing or their shapes differ."""
    if a is None or b is None or a.shape != b.shape:
        return None
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def _stats(times: list[float], tokens: int, flops: int | None, peak_gflops: float | None) -> dict[str, Any]:
    median = statistics.median(times)
    out = {"median_ms": 1000 * median, "min_ms": 1000 * min(times), "times_ms": [1000 * t for t in times],
           "tokens_per_s": tokens / median}
    if flops is not None:
        out["gflops_per_s"] = flops / median / 1e9
        if peak_gflops:
            out["fraction_of_peak"] = out["gflops_per_s"] / peak_gflops
            # The peak is a best-of figure too: the best run is the like-for-like number on a shared machine.
            out["fraction_of_peak_best_run"] = flops / min(times) / 1e9 / peak_gflops
    return out


def _speedups(backends: dict[str, dict]) -> dict[str, float]:
    """ORT's speed-up over each other backend: their median latency over ORT's."""
    ort = backends["onnxruntime"]["median_ms"]
    return {f"onnxruntime_vs_{name}": b["median_ms"] / ort for name, b in backends.items() if name != "onnxruntime"}


def _hf_note(target: Target) -> str:
    if target.model_type == "mra":
        return "HF's MRA skips attention without its CUDA kernels: its CPU time leaves attention out"
    return ""


def _fused_model(target: Target, work: Path) -> tuple[Path | None, dict[str, int]]:
    """ORT's transformer optimizer (onnxruntime.transformers) applied to a copy of the export, outside it."""
    from onnxruntime.transformers.optimizer import optimize_model

    model_type = {"gpt_neox": "gpt_neox", "mega": None}.get(target.model_type, "bert")
    if model_type is None:
        return None, {}
    config = target.config
    out = work / "ort-fused" / f"{target.manifest.files[target.manifest.model_file][:16]}.onnx"
    optimized = optimize_model(str(target.export / target.manifest.model_file), model_type=model_type,
                               num_heads=config["num_attention_heads"], hidden_size=config["hidden_size"],
                               opt_level=0)
    fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        optimized.save_model_to_file(str(tmp))
        os.replace(tmp, out)
    return out, fused


def _open_runners(target: Target, options: BenchOptions) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the runners of one model by backend name, what was skipped or fused)."""
    runners: dict[str, Any] = {}
    info: dict[str, Any] = {"skipped": {}}
    log(options, f"{target.name}: loading the reference, ORT{'' if 'hf' in options.skip else ' and HF'}")
    runners["reference"] = Reference(target.checkpoint, options.threads)
    runners["onnxruntime"] = Ort(target.export, options.threads, kernels=options.kernels)
    info["custom_nodes"] = runners["onnxruntime"].implementations
    if target.int8 is not None:  # the int8 section's export (export/bench/int8.py)
        runners["onnxruntime_int8"] = Ort(target.int8, options.threads, kernels=options.kernels)
    if options.ort_fusions:
        path, fused = _fused_model(target, Path(options.work))
        info["ort_fusions"] = fused
        if path is not None:
            runners["onnxruntime_fused"] = Ort(target.export, options.threads, model_path=path, check_files=False)
    if "hf" in options.skip:
        info["skipped"]["hf"] = "skipped (--skip hf)"
    elif importlib.util.find_spec("transformers") is None:
        info["skipped"]["hf"] = "transformers is not installed"
    else:
        try:
            runners["hf"] = HF(target.checkpoint, options.threads)
        except Exception as exc:  # an HF class that is missing or refuses the checkpoint: skip the column
            info["skipped"]["hf"] = f"HF could not load the checkpoint: {type(exc).__name__}: {exc}"
    return runners, info


def _measure_shape(target: Target, runners: dict[str, Any], batch: int, seq: int, asked: int,
                   options: BenchOptions, peak_gflops: float | None) -> dict[str, Any]:
    """The latency row of one model at one shape."""
    main_output = target.manifest.outputs[0].name
    ids = token_ids(runners["reference"].vocab_size, batch, seq)
    calls = {name: runner.bind(ids) for name, runner in runners.items()}
    outputs = {name: call() for name, call in calls.items()}
    for _ in range(options.warmup - 1):
        for call in calls.values():
            call()
    flops = count_matmul_flops(runners["reference"].model, batch, seq, runners["reference"].vocab_size)
    times = alternate(calls, options.repeats)
    reference_out = runners["reference"].output(outputs["reference"], main_output)
    row = {
        "model": target.name, "model_type": target.model_type, "hf_class": target.manifest.hf_class,
        "batch": batch, "seq": seq, "asked_seq": asked, "matmul_flops": flops,
        "backends": {name: _stats(t, batch * seq, flops, peak_gflops) for name, t in times.items()},
        "max_abs_vs_reference": {
            name: max_abs(runners[name].output(outputs[name], main_output), reference_out)
            for name in runners if name != "reference"},
        "compared_output": main_output,
        "note": _hf_note(target) if "hf" in runners else "",
    }
    row["speedup"] = _speedups(row["backends"])
    return row


def bench_model(target: Target, options: BenchOptions, peak_gflops: float | None) -> tuple[list[dict], dict]:
    """The latency rows of one model (every shape) and what was skipped or fused."""
    runners, info = _open_runners(target, options)
    rows = []
    for batch, seq, asked in shapes(target, options):
        log(options, f"{target.name}: batch {batch}, seq {seq}")
        rows.append(_measure_shape(target, runners, batch, seq, asked, options, peak_gflops))
    return rows, info
