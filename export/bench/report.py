"""The markdown report of a ``kiln bench`` result: the machine and settings, then one table per section that ran
(latency, efficiency, generation, memory, MRA vs dense, targets), then the errors and skipped columns.
"""

from __future__ import annotations

from typing import Any

from .int8 import int8_tables
from .native_report import format_native
from .options import LABELS


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _err(value: float | None) -> str:
    return "-" if value is None else f"{value:.1e}"


def _header(result: dict[str, Any]) -> list[str]:
    m, s = result["machine"], result["settings"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    peak = result["sgemm_peak"]
    lines = [f"Machine: {m['cpu']}, {m['usable_cpus']} usable of {m['logical_cpus']} logical CPUs, "
             f"{s['threads']} threads; python {m['python']}, {versions}",
             f"fp32 sgemm peak ({peak['size']}^2): {peak['best_gflops']:.1f} GFLOP/s by {peak['best_by']} ("
             + ", ".join(f"{k} {v:.1f}" for k, v in peak["gflops"].items()) + f"); latency = median of "
             f"{s['repeats']} runs after {s['warmup']} warm-up, backends alternating",
             f"ORT CPU: {s['onnxruntime_model']}"]
    if m.get("load_average_at_start") and m.get("load_average_at_end"):
        lines.append(f"1-min load average {m['load_average_at_start'][0]:.2f} at the start, "
                     f"{m['load_average_at_end'][0]:.2f} at the end (other processes on this machine skew timings)")
    return lines


def _latency_backends(result: dict[str, Any]) -> list[str]:
    """The backends that appear in some latency row, in the tables' column order (int8 has its own table)."""
    return [b for b in ("reference", "onnxruntime", "onnxruntime_fused", "hf")
            if any(b in r["backends"] for r in result["latency"])]


def _latency_table(result: dict[str, Any], names: list[str]) -> list[str]:
    others = [b for b in names if b != "onnxruntime"]
    lines = ["### Latency and throughput", "",
             "| model | batch | seq | " + " | ".join(f"{LABELS[b]} (ms)" for b in names)
             + " | ORT tokens/s | " + " | ".join(f"ORT speed-up vs {LABELS[b]}" for b in others)
             + " | ORT max abs vs reference | note |",
             "|---|---:|---:|" + "---:|" * (len(names) + 1 + len(others) + 1) + "---|"]
    for r in result["latency"]:
        b = r["backends"]
        lines.append(f"| {r['model']} | {r['batch']} | {r['seq']} | "
                     + " | ".join(_ms(b[n]["median_ms"]) if n in b else "-" for n in names)
                     + f" | {b['onnxruntime']['tokens_per_s']:.0f} | "
                     + " | ".join(_x(r["speedup"].get(f"onnxruntime_vs_{n}")) for n in others)
                     + f" | {_err(r['max_abs_vs_reference'].get('onnxruntime'))} | {r['note']} |")
    return lines


def _efficiency_table(result: dict[str, Any], names: list[str]) -> list[str]:
    lines = ["### Efficiency (fraction of the sgemm peak)", "",
             "Matmul FLOPs only, counted on the reference forward (MRA's attention from its selected blocks; Mega's "
             "FFT EMA, elementwise ops, norms and softmax not counted).", "",
             "| model | batch | seq | GFLOP | " + " | ".join(f"{LABELS[b]} GFLOP/s (of peak)" for b in names) + " |",
             "|---|---:|---:|---:|" + "---:|" * len(names)]
    for r in result["latency"]:
        b = r["backends"]
        cells = [f"{b[n]['gflops_per_s']:.1f} ({_pct(b[n].get('fraction_of_peak'))}; best run "
                 f"{_pct(b[n].get('fraction_of_peak_best_run'))})" if n in b else "-" for n in names]
        lines.append(f"| {r['model']} | {r['batch']} | {r['seq']} | {r['matmul_flops'] / 1e9:.2f} | "
                     + " | ".join(cells) + " |")
    return lines


def _generation_table(generation: list[dict[str, Any]]) -> list[str]:
    lines = ["### Generation (greedy, batch 1, with the cache)", "",
             "| model | prompt | new tokens | ORT prefill (ms) | ORT decode tokens/s | reference prefill (ms) "
             "| reference decode tokens/s | ORT decode speed-up | same tokens |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for g in generation:
        o, r = g["backends"]["onnxruntime"], g["backends"]["reference"]
        lines.append(f"| {g['model']} | {g['prompt']} | {g['new_tokens']} | {_ms(o['prefill_ms'])} | "
                     f"{o['decode_tokens_per_s']:.1f} | {_ms(r['prefill_ms'])} | {r['decode_tokens_per_s']:.1f} | "
                     f"{_x(g['decode_speedup_onnxruntime_vs_reference'])} | "
                     f"{'yes' if g['same_tokens'] else 'NO'} |")
    return lines


def _memory_table(memory: list[dict[str, Any]]) -> list[str]:
    lines = ["### Memory (RSS in MiB, each backend in a fresh process)", "",
             "After imports: the runtime's own libraries; after load: with the weights; forward peak: the RSS "
             "high-water mark during one forward, reset after loading. HF memory-maps safetensors, so its "
             "weights enter RSS during the forward: compare forward peaks.", "",
             "| model | batch | seq | backend | after imports | after load | forward peak | forward peak - load |",
             "|---|---:|---:|---|---:|---:|---:|---:|"]
    for r in memory:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['batch']} | {r['seq']} | {LABELS[r['backend']]} | "
                         f"{r['error']} | | | |")
            continue
        lines.append(f"| {r['model']} | {r['batch']} | {r['seq']} | {LABELS[r['backend']]} | "
                     f"{r['imports_mb']:.0f} | {r['loaded_mb']:.0f} | {r['forward_peak_mb']:.0f} | "
                     f"{r['forward_peak_mb'] - r['loaded_mb']:.0f} |")
    if not all(r.get("peak_reset", True) for r in memory):
        lines.append("(the kernel refused a high-water reset: forward peak includes loading)")
    return lines


def _mra_dense_table(mra: dict[str, Any]) -> list[str]:
    f = mra["matmul_flops"]
    lines = [f"### MRA vs dense attention ({mra['model']}, batch 1, seq {mra['seq']}, median of "
             f"{mra['repeats']})", "",
             "| backend | MRA (ms) | dense (ms) | MRA speed-up | MRA GFLOP | dense GFLOP |",
             "|---|---:|---:|---:|---:|---:|"]
    for backend, b in mra["backends"].items():
        lines.append(f"| {LABELS[backend]} | {_ms(b['mra_ms'])} | {_ms(b['dense_ms'])} | "
                     f"{_x(b['mra_speedup'])} | {f['mra'] / 1e9:.1f} | {f['dense'] / 1e9:.1f} |")
    for kind, error in mra["export_errors"].items():
        lines.append(f"\nORT left out: the {kind} export failed: {error}")
    return lines


def _fusions_line(ort_fusions: dict[str, dict[str, int]]) -> str:
    fusions = (f"{k}: {', '.join(f'{op} {n}' for op, n in v.items()) or 'none'}" for k, v in ort_fusions.items())
    return "ORT transformer optimizer fusions: " + "; ".join(fusions)


def _targets_table(targets: list[dict[str, Any]]) -> list[str]:
    lines = ["### Targets", "", "| target | value | met |", "|---|---:|---|"]
    for t in targets:
        value = t["value"]
        shown = "-" if value is None else _pct(value) if "%" in t["target"] else _x(value)
        if t.get("best_run") is not None:
            shown += f" (best run {_pct(t['best_run'])})"
        lines.append(f"| {t['target']} | {shown} | {'yes' if t['met'] else 'no'} |")
    return lines


def _notes(result: dict[str, Any]) -> list[str]:
    """The sections that failed and the columns that were skipped, each as its own paragraph."""
    lines = [f"\n{error['section']}: not measured: {error['error']}" for error in result["errors"]]
    for model, skipped in result["skipped"].items():
        for column, reason in skipped.items():
            lines.append(f"\n{model}: {column} column skipped: {reason}")
    return lines


def format_markdown(result: dict[str, Any]) -> str:
    """The result of :func:`~tensorkiln.export.bench.run_bench` as markdown."""
    names = _latency_backends(result)
    lines = [*_header(result), "", *_latency_table(result, names), "", *_efficiency_table(result, names)]
    int8 = int8_tables(result)
    if int8:
        lines += ["", *int8]
    if result["generation"]:
        lines += ["", *_generation_table(result["generation"])]
    if result["memory"]:
        lines += ["", *_memory_table(result["memory"])]
    if result.get("mra_vs_dense"):
        lines += ["", *_mra_dense_table(result["mra_vs_dense"])]
    if result.get("native"):
        lines += ["", *format_native(result["native"])]
    if result.get("ort_fusions"):
        lines += ["", _fusions_line(result["ort_fusions"])]
    if result.get("custom_nodes"):
        lines += ["", "Custom nodes in the ORT columns (--kernels " + result["settings"].get("kernels", "auto")
                  + "): " + "; ".join(f"{model}: " + ", ".join(f"{op} {label}" for op, label in nodes.items())
                                      for model, nodes in result["custom_nodes"].items())]
    if result["targets"]:
        lines += ["", *_targets_table(result["targets"])]
    lines += _notes(result)
    return "\n".join(lines)
