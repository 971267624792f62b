"""The native section of ``kiln bench``: libtensorkiln_ort.so's kernels against the function bodies, the torch ops,
HF eager and dense attention, alone and end to end, with the issue's acceptance targets.

  * the ops alone (:mod:`.native_ops`): MegaEma at mega-base-wikitext's shapes (b1, s512, D 128, N 16,
    bidirectional); MraAttention at mra-base-4096-8's (b1, 12 heads, s4096, d64, 1024 blocks) and mra-base-512-4's
    (s512, 64 blocks), each with dense softmax attention in ORT on the same q, k, v;
  * end to end, in ORT with kernels="native" and "function": mega-base-wikitext vs HF eager at batch 1, seq 512;
    mra-base-4096-8 vs the same weights with dense attention (the MRA vs dense section's pair of exports); and
    mra-base-512-4 at seq 512 as a fraction of the sgemm peak on its counted matmul FLOPs (:mod:`.flops`).

The section needs the library (``kiln build-kernels``); without it the section is recorded as not measured, with
the build command. ``--quick`` runs the same on the tiny presets and small op shapes.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from tensorkiln.runtime import native

from .backends import HF, Ort, Reference, token_ids
from .flops import count_matmul_flops
from .native_ops import bench_ema_op, bench_mra_op, copy_bandwidth_gbs
from .options import BenchOptions, log
from .targets import build_target
from .timing import alternate, max_abs

#: The issue's targets for the native kernels (2-core machine).
EMA_OP_TARGET = 5.0
MEGA_E2E_TARGET = 3.0
MRA_OP_TARGET = 5.0
MRA_E2E_TARGET = 2.0
MRA_EFFICIENCY_TARGET = 0.90

MEGA_PRESET, MRA_EFFICIENCY_PRESET, SEQ = "mega-base-wikitext", "mra-base-512-4", 512
QUICK = {"mega": "tiny-mega", "mra": "tiny-mra", "seq": 64}


def _preset_target(name: str, options: BenchOptions):
    from tensorkiln.reference.presets import get_preset

    work = Path(options.work)
    return build_target(name, get_preset(name), work / "checkpoints" / name, work / "exports" / name, options)


def _time(calls: dict[str, Any], repeats: int) -> tuple[dict[str, float], dict[str, Any]]:
    outputs = {name: call() for name, call in calls.items()}
    times = alternate(calls, repeats)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}, outputs


def _ort_pair(export: Path, threads: int) -> dict[str, Ort]:
    return {"native": Ort(export, threads, kernels="native"), "function": Ort(export, threads, kernels="function")}


def mega_vs_hf(options: BenchOptions) -> dict[str, Any]:
    """mega-base-wikitext in ORT (native, function bodies) and HF eager at batch 1, seq 512."""
    target = _preset_target(QUICK["mega"] if options.quick else MEGA_PRESET, options)
    seq = QUICK["seq"] if options.quick else SEQ
    runners: dict[str, Any] = _ort_pair(target.export, options.threads)
    if "hf" not in options.skip:
        runners["hf"] = HF(target.checkpoint, options.threads)
    ids = token_ids(runners["native"].vocab_size, 1, seq)
    ms, outputs = _time({k: r.bind(ids) for k, r in runners.items()}, options.repeats)
    main = target.manifest.outputs[0].name
    values = {k: runners[k].output(v, main) for k, v in outputs.items()}
    return {"model": target.name, "batch": 1, "seq": seq, "ms": ms,
            "speedup_native_vs": {k: v / ms["native"] for k, v in ms.items() if k != "native"},
            "max_abs_native_vs": {k: max_abs(values["native"], values[k]) for k in values if k != "native"},
            "implementations": runners["native"].implementations}


def mra_vs_dense(pair: Any, options: BenchOptions) -> dict[str, Any]:
    """The MRA export in ORT (native, function bodies) against the dense-attention export of the same weights."""
    if pair is None or pair.errors:
        raise RuntimeError(f"the MRA/dense pair of exports is missing: {pair.errors if pair else 'skipped'}")
    runners: dict[str, Any] = _ort_pair(pair.exports["mra"].export, options.threads)
    runners["dense"] = Ort(pair.exports["dense"].export, options.threads, kernels="function")
    seq = pair.exports["mra"].config["max_position_embeddings"]
    log(options, f"native: {pair.name} native vs function vs dense at seq {seq}")
    ids = token_ids(runners["native"].vocab_size, 1, seq)
    ms, outputs = _time({k: r.bind(ids) for k, r in runners.items()}, max(1, min(options.repeats, 3)))
    main = pair.exports["mra"].manifest.outputs[0].name
    values = {k: runners[k].output(v, main) for k, v in outputs.items()}
    return {"model": pair.name, "batch": 1, "seq": seq, "ms": ms,
            "speedup_native_vs": {k: v / ms["native"] for k, v in ms.items() if k != "native"},
            "max_abs_native_vs": {k: max_abs(values["native"], values[k]) for k in values if k != "native"}}


def mra_efficiency(options: BenchOptions, peak_gflops: float) -> dict[str, Any]:
    """mra-base-512-4 at seq 512 in ORT (native, function bodies): counted matmul GFLOP/s over the sgemm peak."""
    target = _preset_target(QUICK["mra"] if options.quick else MRA_EFFICIENCY_PRESET, options)
    seq = min(QUICK["seq"] if options.quick else SEQ, target.manifest.length_rules.max_length)
    runners = _ort_pair(target.export, options.threads)
    ids = token_ids(runners["native"].vocab_size, 1, seq)
    ms, _ = _time({k: r.bind(ids) for k, r in runners.items()}, options.repeats)
    reference = Reference(target.checkpoint, options.threads)
    flops = count_matmul_flops(reference.model, 1, seq, reference.vocab_size)
    fraction = {k: flops / v / 1e6 / peak_gflops for k, v in ms.items()}
    return {"model": target.name, "batch": 1, "seq": seq, "ms": ms, "matmul_flops": flops,
            "gflops_per_s": {k: flops / v / 1e6 for k, v in ms.items()}, "fraction_of_peak": fraction}


def _ops(options: BenchOptions, library: Path) -> list[dict[str, Any]]:
    work, threads = Path(options.work), options.threads
    repeats = max(1, min(options.repeats, 3))
    if options.quick:
        return [bench_ema_op(1, 128, 32, 4, True, work, library, threads, repeats),
                bench_mra_op((1, 2, 256, 32), 16, work, library, threads, repeats)]
    log(options, "native: the ops alone (MegaEma at mega-base-wikitext's shapes, MraAttention at 4096 and 512)")
    return [bench_ema_op(1, SEQ, 128, 16, True, work, library, threads, options.repeats),
            bench_mra_op((1, 12, 4096, 64), 1024, work, library, threads, repeats),
            bench_mra_op((1, 12, SEQ, 64), 64, work, library, threads, options.repeats)]


def _section_targets(section: dict[str, Any]) -> list[dict[str, Any]]:
    checks = []

    def check(text: str, value: float | None, bound: float) -> None:
        checks.append({"target": text, "value": value, "met": value is not None and value >= bound})

    ops = section.get("ops", [])
    for op in ops:
        if op["op"] == "MegaEma":
            check(f"MegaEma op {op['shape']} native >= {EMA_OP_TARGET:g}x its function body",
                  op["speedup_native_vs"]["function"], EMA_OP_TARGET)
    mra_ops = [op for op in ops if op["op"] == "MraAttention"]
    if mra_ops:  # the target is set at the longest sequence (mra-base-4096-8's)
        op = max(mra_ops, key=lambda o: o["shape"][2])
        check(f"MraAttention op at seq {op['shape'][2]} native >= {MRA_OP_TARGET:g}x dense attention in ORT",
              op["speedup_native_vs"]["dense_ort"], MRA_OP_TARGET)
    mega = section.get("mega_vs_hf")
    if mega and "hf" in mega["speedup_native_vs"]:
        check(f"{mega['model']} ORT native >= {MEGA_E2E_TARGET:g}x HF eager (b1, s{mega['seq']})",
              mega["speedup_native_vs"]["hf"], MEGA_E2E_TARGET)
    mra = section.get("mra_vs_dense")
    if mra:
        check(f"{mra['model']} ORT native >= {MRA_E2E_TARGET:g}x the dense model in ORT (s{mra['seq']})",
              mra["speedup_native_vs"]["dense"], MRA_E2E_TARGET)
    efficiency = section.get("mra_efficiency")
    if efficiency:
        check(f"{efficiency['model']} ORT native at s{efficiency['seq']} >= {MRA_EFFICIENCY_TARGET:.0%} of the "
              "sgemm peak (counted FLOPs)", efficiency["fraction_of_peak"]["native"], MRA_EFFICIENCY_TARGET)
    return checks


def bench_native(options: BenchOptions, peak_gflops: float, mra_pair: Any, errors: list[dict[str, str]]
                 ) -> dict[str, Any]:
    """The section; a part that fails is recorded in ``errors`` and the others still run."""
    library = native.plan_kernels("native", True).library  # raises, with the build command, when unusable
    section: dict[str, Any] = {"library": str(library), "build": native.read_build_info(library),
                               "cpu_isa": native.probe(library)["cpu_isa"],
                               "copy_bandwidth_gbs": copy_bandwidth_gbs()}
    parts = (("ops", lambda: _ops(options, library)), ("mega_vs_hf", lambda: mega_vs_hf(options)),
             ("mra_vs_dense", lambda: mra_vs_dense(mra_pair, options)),
             ("mra_efficiency", lambda: mra_efficiency(options, peak_gflops)))
    for key, run in parts:
        try:
            section[key] = run()
        except Exception as exc:  # one failing part must not lose the others' figures
            errors.append({"section": f"native {key}", "error": f"{type(exc).__name__}: {exc}"})
            log(options, f"native {key} failed: {type(exc).__name__}: {exc}")
    section["targets"] = _section_targets(section)
    return section
