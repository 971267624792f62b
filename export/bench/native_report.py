"""The markdown of ``kiln bench``'s native section (:mod:`.native`): the ops alone, then end to end."""

from __future__ import annotations

from typing import Any

COLUMNS = {"native": "native", "function": "function body (ORT)", "torch": "torch op", "dense_ort": "dense (ORT)",
           "hf": "HF eager", "dense": "dense model (ORT)"}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _err(value: float | None) -> str:
    return "-" if value is None else f"{value:.1e}"


def _ops_table(section: dict[str, Any]) -> list[str]:
    lines = ["| op | shape | native (ms) | function body (ms) | torch op (ms) | dense ORT (ms) | native vs function | "
             "native vs torch | native vs dense | native throughput | max abs native / function vs torch |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for op in section.get("ops", []):
        ms, up = op["ms"], op["speedup_native_vs"]
        if op["op"] == "MraAttention":
            shape = f"B,H,L,D = {tuple(op['shape'])}, {op['num_blocks']} blocks"
            rate = f"{op['native_gflops_per_s']:.1f} GFLOP/s ({op['counted_flops'] / 1e9:.2f} GFLOP counted)"
        else:
            shape = f"B,L,D,N = {tuple(op['shape'])}{', bidirectional' if op['bidirectional'] else ''}"
            rate = (f"{op['native_gb_per_s']:.1f} GB/s of {section['copy_bandwidth_gbs']:.1f} copy bandwidth "
                    f"({op['bytes_moved'] / 1e6:.2f} MB)")
        errors = op["max_abs_vs_torch"]
        lines.append(f"| {op['op']} | {shape} | {_ms(ms['native'])} | {_ms(ms.get('function'))} | "
                     f"{_ms(ms.get('torch'))} | {_ms(ms.get('dense_ort'))} | {_x(up.get('function'))} | "
                     f"{_x(up.get('torch'))} | {_x(up.get('dense_ort'))} | {rate} | "
                     f"{_err(errors['native'])} / {_err(errors['function'])} |")
    return lines


def _e2e_table(section: dict[str, Any]) -> list[str]:
    lines = ["| model | batch | seq | ORT native (ms) | compared with (ms) | native speed-up | max abs native vs |",
             "|---|---:|---:|---:|---|---|---|"]
    for key in ("mega_vs_hf", "mra_vs_dense", "mra_efficiency"):
        row = section.get(key)
        if not row:
            continue
        others = [k for k in row["ms"] if k != "native"]
        compared = ", ".join(f"{COLUMNS[k]} {_ms(row['ms'][k])}" for k in others)
        speedups = ", ".join(f"{_x(row['ms'][k] / row['ms']['native'])} vs {COLUMNS[k]}" for k in others)
        errors = ", ".join(f"{COLUMNS[k]} {_err(v)}" for k, v in row.get("max_abs_native_vs", {}).items())
        lines.append(f"| {row['model']} | {row['batch']} | {row['seq']} | {_ms(row['ms']['native'])} | {compared} | "
                     f"{speedups} | {errors or '-'} |")
    efficiency = section.get("mra_efficiency")
    if efficiency:
        shares = ", ".join(f"{COLUMNS[k]} {v:.1f} GFLOP/s ({100 * efficiency['fraction_of_peak'][k]:.0f}% of peak)"
                           for k, v in efficiency["gflops_per_s"].items())
        lines += ["", f"{efficiency['model']} at seq {efficiency['seq']}: {efficiency['matmul_flops'] / 1e9:.1f} "
                      f"counted matmul GFLOP; {shares}"]
    return lines


def format_native(section: dict[str, Any]) -> list[str]:
    """The native section as markdown lines."""
    build = section.get("build", {})
    api = build.get("ort_api_version", "?")
    lines = ["### Native kernels (libtensorkiln_ort.so)", "",
             f"Library {section['library']} (CPU kernels: {section['cpu_isa']}; ONNX Runtime API {api} headers). "
             "Ops alone: one node in ORT (native kernel vs its function body), the torch op, dense softmax "
             "attention of standard ops in ORT on the same inputs; median of alternating runs.", "",
             *_ops_table(section), "", "End to end (ORT CPU, kernels='native' vs the rest):", "", *_e2e_table(section)]
    return lines
