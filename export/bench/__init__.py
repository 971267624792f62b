"""``kiln bench``: latency, throughput, compute efficiency, generation speed and memory of the reference models,
their ONNX Runtime exports and HF transformers eager, measured in one run on one machine.

Torch-free at import: torch, the reference models and transformers are imported by the columns that need them.

What is measured, and where:
  * the models: built into the work folder when absent (:mod:`.targets`), run through one small interface per
    backend (:mod:`.backends`: reference eager fp32, ORT CPU over the export's ``model.onnx``, HF eager);
  * the machine and its fp32 sgemm peak, the figure the efficiencies divide by (:mod:`.machine`, :mod:`.peak`);
  * latency: one forward at each batch x sequence shape, the backends alternating (:mod:`.timing`), with the matmul
    FLOPs of the reference forward (:mod:`.flops`);
  * int8: each model's int8 export (``kiln quantize``, checked) as one more latency backend, its size and check, and
    its speed-up over the fp32 export (:mod:`.int8`);
  * generation: greedy decoding with the cache, ORT vs the reference (:mod:`.generation`);
  * memory: each backend's RSS in a fresh process (:mod:`.memory`, run by :mod:`.worker`);
  * MRA vs dense: MRA at its long length against dense attention of the same weights (:mod:`.mra_dense`);
  * native: libtensorkiln_ort.so's kernels alone and end to end, against the function bodies, the torch ops, HF
    eager and dense attention, with their targets (:mod:`.native`, :mod:`.native_ops`; needs ``kiln
    build-kernels``).

The ORT columns run the custom nodes as ``--kernels`` says (the runtime's ``load(kernels=...)``, default "auto");
``custom_nodes`` in the result records which implementation ran them for each model.

:func:`run_bench` runs them in that order and evaluates the acceptance targets (:mod:`.options`);
:func:`format_markdown` (:mod:`.report`) renders the result. A section that fails is recorded under ``errors`` and the
others still run; the JSON is rewritten after each one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .flops import count_matmul_flops
from .generation import bench_generation
from .int8 import attach as attach_int8
from .int8 import int8_targets
from .machine import load_average, machine_info
from .memory import bench_memory
from .mra_dense import MraPair, bench_mra_dense, build_mra_pair
from .native import bench_native
from .options import (
    EFFICIENCY_MODELS,
    EFFICIENCY_TARGET,
    MEGA_TARGET,
    TARGET_SEQ,
    BenchError,
    BenchOptions,
    Target,
    log,
)
from .peak import sgemm_peak
from .report import format_markdown
from .targets import build_targets
from .timing import bench_model

__all__ = ["BenchError", "BenchOptions", "MraPair", "Target", "bench_generation", "bench_memory", "bench_model",
           "bench_mra_dense", "build_mra_pair", "build_targets", "count_matmul_flops", "format_markdown",
           "machine_info", "run_bench", "sgemm_peak"]


def _targets_met(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The acceptance targets, each with its value and whether it was met, on the rows they name."""
    checks = []
    for row in result["latency"]:
        ort = row["backends"]["onnxruntime"]
        if row["model_type"] in EFFICIENCY_MODELS and row["batch"] == 1 and row["asked_seq"] == TARGET_SEQ:
            value = ort.get("fraction_of_peak")
            checks.append({"target": f"{row['model']} ORT at batch 1, seq {row['seq']}: >= "
                                     f"{EFFICIENCY_TARGET:.0%} of the sgemm peak (median run)",
                           "value": value, "met": value is not None and value >= EFFICIENCY_TARGET,
                           "best_run": ort.get("fraction_of_peak_best_run")})
        if row["model_type"] == "mega" and "onnxruntime_vs_hf" in row["speedup"]:
            value = row["speedup"]["onnxruntime_vs_hf"]
            checks.append({"target": f"{row['model']} ORT >= {MEGA_TARGET}x HF eager (batch {row['batch']}, "
                                     f"seq {row['seq']})", "value": value, "met": value >= MEGA_TARGET})
    mra = result.get("mra_vs_dense")
    if mra:
        for backend, b in mra["backends"].items():
            checks.append({"target": f"{mra['model']} at seq {mra['seq']} faster than dense attention ({backend})",
                           "value": b["mra_speedup"], "met": b["mra_speedup"] > 1})
    return checks


def _write_json(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, path)


def _guarded(result: dict[str, Any], what: str, options: BenchOptions, run: Callable[[], Any]) -> Any:
    """``run()``, or None with the error recorded: one failing section must not lose the others' figures."""
    try:
        return run()
    except Exception as exc:
        result["errors"].append({"section": what, "error": f"{type(exc).__name__}: {exc}"})
        log(options, f"{what} failed: {type(exc).__name__}: {exc}")
        return None


def _new_result(options: BenchOptions) -> dict[str, Any]:
    """The result before any measurement: the machine, the settings and every section empty."""
    return {"machine": machine_info(options.threads), "settings": {
        "batches": list(options.batches), "seqs": list(options.seqs), "threads": options.threads,
        "repeats": options.repeats, "warmup": options.warmup, "quick": options.quick, "skip": sorted(options.skip),
        "ort_fusions": options.ort_fusions, "kernels": options.kernels,
        "onnxruntime_model": "the export's model.onnx, CPU execution provider, ORT_ENABLE_ALL graph optimisations"},
        "errors": [], "latency": [], "skipped": {}, "ort_fusions": {}, "generation": [], "memory": [],
        "mra_vs_dense": None, "native": None, "custom_nodes": {}, "int8": None, "targets": []}


def _latency(result: dict[str, Any], targets: list[Target], options: BenchOptions, path: Path) -> None:
    peak = result["sgemm_peak"]["best_gflops"]
    for target in targets:
        measured = _guarded(result, f"{target.name} latency", options, lambda t=target: bench_model(t, options, peak))
        if measured is None:
            continue
        rows, info = measured
        result["latency"] += rows
        if info["skipped"]:
            result["skipped"][target.name] = info["skipped"]
        if "ort_fusions" in info:
            result["ort_fusions"][target.name] = info["ort_fusions"]
        if info.get("custom_nodes"):
            result["custom_nodes"][target.name] = info["custom_nodes"]
        _write_json(result, path)


def run_bench(options: BenchOptions) -> dict[str, Any]:
    """Build what is missing, measure every section, write the JSON (after each section); return the result."""
    work = Path(options.work)
    work.mkdir(parents=True, exist_ok=True)
    path = Path(options.json_path) if options.json_path else work / "bench.json"
    started = time.time()
    result = _new_result(options)
    log(options, f"sgemm peak ({options.sgemm_size}^2, {options.threads} threads)")
    result["sgemm_peak"] = sgemm_peak(options.sgemm_size, options.threads)
    targets, extra = build_targets(options)
    # The MRA/dense pair of exports serves the MRA vs dense section and the native section's end-to-end MRA row.
    mra_pair = None if {"mra-dense", "native"} <= options.skip else build_mra_pair(options)
    result["models"] = [{"name": t.name, "checkpoint": str(t.checkpoint), "export": str(t.export),
                         "model_type": t.model_type, "hf_class": t.manifest.hf_class} for t in targets]
    if "int8" not in options.skip:
        attach_int8(targets, options, result, _guarded)
    _latency(result, targets, options, path)
    if "generation" not in options.skip:
        for target in targets + extra:
            row = _guarded(result, f"{target.name} generation", options, lambda t=target: bench_generation(t, options))
            if row is not None:
                result["generation"].append(row)
        _write_json(result, path)
    if "memory" not in options.skip:
        for target in targets:
            with_hf = "hf" not in result["skipped"].get(target.name, {})
            result["memory"] += _guarded(result, f"{target.name} memory", options,
                                         lambda t=target, h=with_hf: bench_memory(t, options, h)) or []
        _write_json(result, path)
    if "mra-dense" not in options.skip:
        result["mra_vs_dense"] = _guarded(result, "MRA vs dense", options, lambda: bench_mra_dense(mra_pair, options))
    if "native" not in options.skip:
        peak = result["sgemm_peak"]["best_gflops"]
        result["native"] = _guarded(result, "native kernels", options,
                                    lambda: bench_native(options, peak, mra_pair, result["errors"]))
        _write_json(result, path)
    result["targets"] = (_targets_met(result) + (result["native"] or {}).get("targets", [])
                         + int8_targets(result))
    result["elapsed_s"] = time.time() - started
    result["machine"]["load_average_at_end"] = load_average()
    _write_json(result, path)
    result["json_path"] = str(path)
    return result
