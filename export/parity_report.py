"""The report of ``kiln parity``: per shape and output, the errors and the policy's verdict, as JSON and markdown.

Torch-free. ``status`` is "passed", "failed", or "not run" (the runtime cannot load the export on this machine): a
check that did not run is not a pass, so only "passed" makes ``ok`` true and ``kiln parity`` exit 0.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

from tensorkiln.runtime import manifest as mf
from tensorkiln.runtime import tolerances
from tensorkiln.runtime.atomic import write_text
from tensorkiln.runtime.errors import UsageError

JSON_NAME = "parity.json"
MARKDOWN_NAME = "parity.md"
PASSED, FAILED, NOT_RUN = "passed", "failed", "not run"


@dataclasses.dataclass(frozen=True)
class OutputCheck:
    output: str
    max_abs: float
    nmse: float
    cosine: float
    bound: dict[str, float]
    passed: bool
    reason: str = ""
    #: PyTorch's own error in the exported precision (reduced precision only).
    torch_half_max_abs: float | None = None
    #: "all" elements, or "real tokens" (reduced precision: padded queries' outputs are arbitrary there).
    compared: str = "all"
    #: int8, outputs of class scores: rows whose top-1 agrees with the reference's, of how many (real tokens).
    agree: int | None = None
    total: int | None = None


@dataclasses.dataclass(frozen=True)
class AgreementCheck:
    """int8: one output's per-token top-1 agreement over every checked shape together, and the policy's verdict."""

    output: str
    agree: int
    total: int
    bound: float
    passed: bool
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class ShapeCheck:
    label: str
    sizes: dict[str, int]
    seed: int
    outputs: tuple[OutputCheck, ...]


@dataclasses.dataclass(frozen=True)
class ParityReport:
    model_type: str
    head: str
    hf_class: str
    precision: str
    checkpoint: str
    export: str
    rule: str
    #: PASSED, FAILED, or NOT_RUN (with ``reason``): a check that did not run is not a pass.
    status: str
    runners: tuple[str, ...] = ()
    checks: tuple[ShapeCheck, ...] = ()
    reason: str = ""
    #: int8: per-token top-1 agreement over all shapes, per output of class scores.
    agreement: tuple[AgreementCheck, ...] = ()
    #: The policy's constants this report applied (``runtime/tolerances.py``).
    policy: dict[str, float] = dataclasses.field(default_factory=lambda: {
        "FP32_MAX_ABS": tolerances.FP32_MAX_ABS, "FP32_MAX_NMSE": tolerances.FP32_MAX_NMSE,
        "HALF_ERROR_RATIO": tolerances.HALF_ERROR_RATIO, "INT8_MIN_COSINE": tolerances.INT8_MIN_COSINE,
        "INT8_MAX_NMSE": tolerances.INT8_MAX_NMSE,
        "INT8_MIN_TOP1": tolerances.INT8_MIN_TOP1, "INT8_TIE_MARGIN": tolerances.INT8_TIE_MARGIN})

    @property
    def ok(self) -> bool:
        return self.status == PASSED

    def failures(self) -> list[str]:
        return ([f"{check.label} {_sizes(check.sizes)}: {row.output}: {row.reason}"
                 for check in self.checks for row in check.outputs if not row.passed]
                + [f"all shapes: {row.reason}" for row in self.agreement if not row.passed])


def _sizes(sizes: dict[str, int]) -> str:
    short = {mf.BATCH: "batch", mf.SEQUENCE: "seq", mf.PAST: "past", mf.CHOICES: "choices"}
    return "(" + ", ".join(f"{short.get(k, k)} {v}" for k, v in sizes.items()) + ")"


def _number(value: float | None) -> Any:
    """JSON has no inf or nan: write them as strings, so that strict readers (jq) still parse the report."""
    if value is None or math.isfinite(value):
        return value
    return str(value)


def to_json(report: ParityReport) -> dict[str, Any]:
    data = dataclasses.asdict(report)
    for check in data["checks"]:
        for row in check["outputs"]:
            for key in ("max_abs", "nmse", "cosine", "torch_half_max_abs"):
                row[key] = _number(row[key])
            row["bound"] = {k: _number(v) for k, v in row["bound"].items()}
    return data


def _bound(bound: dict[str, float]) -> str:
    names = {"max_abs": "max abs ≤", "nmse": "NMSE ≤", "cosine": "cosine ≥", "labels": "same labels:",
             "top1": "top-1 ≥"}
    return ", ".join(f"{names[k]} {v:.3g}" for k, v in bound.items()) or "-"


def _top1(row: OutputCheck) -> str:
    return "-" if row.agree is None else f"{row.agree}/{row.total}"


def to_markdown(report: ParityReport) -> str:
    verdict = {PASSED: "PASS", FAILED: "FAIL", NOT_RUN: "NOT RUN (not checked)"}[report.status]
    lines = [f"# kiln parity: {report.hf_class} ({report.precision}): {verdict}", "",
             f"- checkpoint: `{report.checkpoint}`", f"- export: `{report.export}`",
             f"- rule: {report.rule}"]
    if report.runners:
        lines.append(f"- runners: {' vs '.join(report.runners)}")
    if report.status == NOT_RUN:
        return "\n".join(lines + ["", f"**NOT RUN**: {report.reason}", ""])
    if not report.checks:  # the run stopped before any comparison (the runtime raised)
        return "\n".join(lines + ["", f"**FAIL**: {report.reason}", ""])
    half, int8 = report.precision == "fp16", report.precision == "int8"
    header = (["shape", "output", "max abs", "NMSE", "cosine"] + (["PyTorch fp16 max abs"] if half else [])
              + (["top-1 agree"] if int8 else []))
    lines += ["", "| " + " | ".join(header + ["bound", "result"]) + " |",
              "|" + "---|" * 2 + "---:|" * (len(header) - 2) + "---|---|"]
    for check in report.checks:
        for row in check.outputs:
            cells = [f"{check.label} {_sizes(check.sizes)}", row.output + (" (real tokens)" if row.compared != "all"
                     else ""), f"{row.max_abs:.3g}", f"{row.nmse:.3g}", f"{row.cosine:.6f}"]
            if half:
                cells.append("-" if row.torch_half_max_abs is None else f"{row.torch_half_max_abs:.3g}")
            if int8:
                cells.append(_top1(row))
            cells += [_bound(row.bound), "PASS" if row.passed else "**FAIL**"]
            lines.append("| " + " | ".join(cells) + " |")
    lines += _agreement_lines(report.agreement)
    total = sum(len(check.outputs) for check in report.checks) + len(report.agreement)
    failures = report.failures()
    lines.append("")
    if report.status == PASSED:
        lines.append(f"**PASS**: {total}/{total} output checks within the bound.")
    elif failures:
        lines.append(f"**FAIL**: {len(failures)} of {total} output checks broke the bound:")
        lines += [f"- {failure}" for failure in failures]
    else:
        lines.append(f"**FAIL**: {report.reason}")
    return "\n".join(lines) + "\n"


def _agreement_lines(rows: tuple[AgreementCheck, ...]) -> list[str]:
    """int8: the per-token top-1 agreement over all shapes (ties counting as agreeing)."""
    if not rows:
        return []
    lines = ["", "| output | top-1 agreement, all shapes (real tokens) | bound | result |", "|---|---:|---|---|"]
    for row in rows:
        share = row.agree / row.total if row.total else 0.0
        lines.append(f"| {row.output} | {share:.2%} ({row.agree}/{row.total}) | ≥ {row.bound:.0%} | "
                     f"{'PASS' if row.passed else '**FAIL**'} |")
    return lines


def default_report_dir(export_dir: str | os.PathLike) -> Path:
    export = Path(export_dir).resolve()
    return export.parent / f"{export.name}-parity"


def is_report_file(path: Path) -> bool:
    """Whether ``path`` (a parity.json or parity.md) is a report kiln parity wrote, which a new one may replace."""
    try:
        with open(path, encoding="utf-8") as f:
            head = f.read(1 << 16)
    except (OSError, UnicodeDecodeError):
        return False
    if path.name == MARKDOWN_NAME:
        return head.startswith("# kiln parity: ")
    return head.startswith("{") and all(f'"{key}"' in head for key in ("model_type", "hf_class", "rule", "status"))


def write_report(report: ParityReport, folder: str | os.PathLike) -> Path:
    """Write ``parity.json`` and ``parity.md`` to ``folder`` (created), each atomically."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the report folder {str(folder)!r}: {exc.strerror or exc}") from None
    write_text(folder / JSON_NAME, json.dumps(to_json(report), indent=2) + "\n")
    write_text(folder / MARKDOWN_NAME, to_markdown(report))
    return folder




__all__ = ["AgreementCheck", "FAILED", "JSON_NAME", "MARKDOWN_NAME", "NOT_RUN", "OutputCheck", "PASSED", "ParityReport",
           "ShapeCheck", "default_report_dir", "is_report_file", "to_json", "to_markdown", "write_report"]
