"""The int8 section of ``kiln bench``: each model's int8 export (``kiln quantize`` of its fp32 export, judged by the
int8 rule against the checkpoint's reference model) timed against the fp32 export in ONNX Runtime and HF eager.

The int8 export joins the latency section as one more backend (``onnxruntime_int8``, same inputs, same rotation, so
every ratio compares runs under the same machine state); this module builds the exports (``WORK/exports-int8/NAME``,
reused when present), records each one's size on disk and its check's figures (the worst cosine per output, top-1
agreement over the evaluation set), derives the int8 ratios from the latency rows, and checks the target: int8 at
least ``INT8_TARGET`` x the fp32 export in ORT for :data:`~.options.EFFICIENCY_MODELS` at batch 1, seq 512, with the
check passed. A model whose int8 check fails has no int8 column; the error says why.

int8 speed depends on the CPU's integer dot-product instructions (VNNI, AMX): the section records which ones the
machine has.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from tensorkiln.runtime import manifest as mf

from .options import EFFICIENCY_MODELS, LABELS, TARGET_SEQ, BenchOptions, Target, log

BACKEND = "onnxruntime_int8"
#: The issue's figure: int8 at least this many times faster than the fp32 export in ORT.
INT8_TARGET = 2.0
#: CPU flags (``/proc/cpuinfo``) of the integer dot products ONNX Runtime's int8 kernels use.
INT8_CPU_FLAGS = ("avx2", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_int8_flags() -> list[str]:
    """Which of :data:`INT8_CPU_FLAGS` this CPU has (empty where /proc/cpuinfo is absent)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return [flag for flag in INT8_CPU_FLAGS if flag in flags]
    return []


def _folder_bytes(folder: Path, manifest: mf.Manifest) -> int:
    return sum((folder / name).stat().st_size for name in manifest.files if name.startswith(mf.MODEL_NAME))


def build_int8(target: Target, options: BenchOptions) -> Path:
    """``WORK/exports-int8/NAME``: the int8 export of the target's fp32 export, made (and checked) when absent."""
    from tensorkiln.export.quantize import quantize_export

    out = Path(options.work) / "exports-int8" / target.name
    if not (out / mf.MANIFEST_NAME).is_file():
        log(options, f"{target.name}: quantizing to int8 in {out}")
        quantize_export(target.export, out, checkpoint_dir=target.checkpoint, progress=options.progress)
    return out


def int8_summary(target: Target, folder: Path) -> dict[str, Any]:
    """The int8 export's size next to the fp32 one's and its check's figures."""
    manifest = mf.read_manifest(folder, check_files=False)
    worst: dict[str, float] = {}
    for check in manifest.verification.checks:
        for error in check.errors:
            name = "present.*" if error.output.startswith("present.") else error.output
            worst[name] = min(worst.get(name, 1.0), error.cosine)
    fp32_bytes = _folder_bytes(target.export, target.manifest)
    int8_bytes = _folder_bytes(folder, manifest)
    return {"model": target.name, "export": str(folder), "status": manifest.verification.status,
            "oracle": manifest.verification.oracle, "shapes": len(manifest.verification.checks),
            "min_cosine": worst, "top1": {name: dict(a) for name, a in manifest.verification.agreement.items()},
            "quantized": dict(manifest.quantization.quantized), "tool_version": manifest.quantization.tool_version,
            "fp32_mb": fp32_bytes / 2**20, "int8_mb": int8_bytes / 2**20, "size_ratio": fp32_bytes / int8_bytes}


def attach(targets: list[Target], options: BenchOptions, result: dict[str, Any], guarded) -> None:
    """Build each target's int8 export (``guarded`` records a failure and returns None) and its summary."""
    result["int8"] = {"cpu_flags": cpu_int8_flags(), "models": {}}
    for target in targets:
        folder = guarded(result, f"{target.name} int8", options, lambda t=target: build_int8(t, options))
        if folder is not None:
            target.int8 = folder
            result["int8"]["models"][target.name] = int8_summary(target, folder)


def int8_rows(latency: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per latency row with an int8 column: the three latencies and the int8 ratios."""
    rows = []
    for row in latency:
        b = row["backends"]
        if BACKEND not in b:
            continue
        int8 = b[BACKEND]["median_ms"]
        rows.append({"model": row["model"], "model_type": row["model_type"], "batch": row["batch"],
                     "seq": row["seq"], "asked_seq": row["asked_seq"],
                     "ms": {name: b[name]["median_ms"] for name in ("onnxruntime", BACKEND, "hf", "reference")
                            if name in b},
                     "int8_vs": {name: b[name]["median_ms"] / int8 for name in ("onnxruntime", "hf", "reference")
                                 if name in b}})
    return rows


def int8_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """int8 >= INT8_TARGET x fp32 ORT for the efficiency models at batch 1, seq 512, with the check passed."""
    if not result.get("int8"):
        return []  # the section was skipped (--skip int8)
    models = result["int8"].get("models", {})
    checks = []
    for row in int8_rows(result["latency"]):
        if row["model_type"] in EFFICIENCY_MODELS and row["batch"] == 1 and row["asked_seq"] == TARGET_SEQ:
            value = row["int8_vs"]["onnxruntime"]
            passed = models.get(row["model"], {}).get("status") == mf.PASSED
            checks.append({"target": f"{row['model']} int8 >= {INT8_TARGET:g}x fp32 ORT at batch 1, seq {row['seq']}, "
                                     "int8 check passed", "value": value, "met": passed and value >= INT8_TARGET})
    return checks


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def int8_tables(result: dict[str, Any]) -> list[str]:
    """The markdown of the section: latency and ratios, then size and check per model."""
    section = result.get("int8") or {}
    rows = int8_rows(result["latency"])
    if not rows and not section.get("models"):
        return []
    flags = ", ".join(section.get("cpu_flags", [])) or "none found"
    lines = ["### int8 (ONNX Runtime dynamic quantization) vs fp32", "",
             f"CPU integer dot-product support: {flags}. Same inputs and rotation as the latency table.", "",
             f"| model | batch | seq | {LABELS[BACKEND]} (ms) | ORT fp32 (ms) | HF eager (ms) | int8 speed-up vs ORT "
             "fp32 | vs HF eager | vs reference eager |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ms, vs = r["ms"], r["int8_vs"]
        ratios = " | ".join(f"{vs[n]:.2f}x" if n in vs else "-" for n in ("onnxruntime", "hf", "reference"))
        lines.append(f"| {r['model']} | {r['batch']} | {r['seq']} | {_ms(ms[BACKEND])} | {_ms(ms['onnxruntime'])} | "
                     f"{_ms(ms.get('hf'))} | {ratios} |")
    lines += ["", "| model | fp32 size (MiB) | int8 size (MiB) | smaller by | quantized | int8 check | worst cosine "
              "| top-1 agreement |", "|---|---:|---:|---:|---|---|---|---|"]
    for name, m in section.get("models", {}).items():
        cosine = ", ".join(f"{k} {v:.5f}" for k, v in m["min_cosine"].items())
        top1 = ", ".join(f"{k} {a['agree'] / a['total']:.2%} of {a['total']:.0f}" for k, a in m["top1"].items()) or "-"
        quantized = ", ".join(f"{op} x{n}" for op, n in m["quantized"].items())
        lines.append(f"| {name} | {m['fp32_mb']:.1f} | {m['int8_mb']:.1f} | {m['size_ratio']:.2f}x | {quantized} | "
                     f"{m['status']} ({m['shapes']} shapes) | {cosine} | {top1} |")
    return lines
