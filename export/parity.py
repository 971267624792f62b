"""``kiln parity``: an export, run through the tensorkiln runtime, against the reference model of its checkpoint.

Polygraphy drives the comparison (``Comparator.run`` over runners, then ``Comparator.compare_accuracy`` with a compare
function built from ``runtime/tolerances.py``), as in Polygraphy's ``examples/api/01_comparing_frameworks``: the
reference runner (``export/reference_runner.py``) against :class:`SessionRunner`, which wraps the runtime's own
:class:`~tensorkiln.runtime.session.Session`, so its input checks and fixed-length padding are under test too.

Inputs, made by the export spec with padding in the attention mask: the export check's two shapes, batch 1, a
sequence near the maximum length (capped at LONG_CAP), four choices for multiple choice; decoders: a left-padded
prefill, a chunk and a single-token step after a past, one ending at the maximum length; fixed-length graphs
(Nystromformer's landmarks) also take shorter real lengths, which the session pads. fp16 exports also run the
reference in fp16, for the reduced-precision rule, and compare at real tokens only (see
``tolerances.real_tokens``). int8 exports are judged by the int8 rule at real tokens, their per-token top-1
agreement over every shape together (:func:`set_agreement`). The report (``parity.json``, ``parity.md``) goes
beside the export, never inside it: the export's manifest hashes every file in its folder.

Torch-free at import: the reference side (torch) is imported when a check runs.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from polygraphy.backend.base import BaseRunner
from polygraphy.common import TensorMetadata
from polygraphy.comparator import Comparator
from polygraphy.logger import G_LOGGER

from tensorkiln.runtime import manifest as mf
from tensorkiln.runtime import tolerances
from tensorkiln.runtime.backends import BackendUnavailableError
from tensorkiln.runtime.errors import ManifestError, UsageError
from tensorkiln.runtime.jsonfile import read_json_object
from tensorkiln.runtime.paths import check_writable, refuse_overlap
from tensorkiln.runtime.session import Session, load

from .parity_report import (
    FAILED,
    JSON_NAME,
    MARKDOWN_NAME,
    NOT_RUN,
    PASSED,
    AgreementCheck,
    OutputCheck,
    ParityReport,
    ShapeCheck,
    default_report_dir,
    is_report_file,
    to_markdown,
    write_report,
)

if TYPE_CHECKING:  # the specs import torch
    from tensorkiln.export.specs import Shape

#: The longest sequence checked: a base model's 4096 tokens would take minutes on a CPU reference.
LONG_CAP = 512
#: config.json keys that record where a checkpoint came from, not what it is.
PROVENANCE_KEYS = ("transformers_version", "torch_dtype", "dtype")


class ParityUsageError(UsageError):
    """The request cannot be checked: the checkpoint is not the export's, a bad option, a bad report folder."""


class RuntimeFailure(RuntimeError):
    """The runtime raised on inputs the reference accepts: a parity failure, not a usage error."""


# ----------------------------------------------------------------------------------------------- the runtime runner


class SessionRunner(BaseRunner):
    """A Polygraphy runner over a tensorkiln :class:`Session`: HF-named numpy feeds in, the session's outputs out.

    ``session``: a loaded Session, or a callable that loads one on activation (Polygraphy's loader idiom)."""

    def __init__(self, session: Session | Callable[[], Session], name: str = "runtime"):
        super().__init__(name=name)
        self._source = session
        self.session = None

    def activate_impl(self) -> None:
        self.session = self._source() if callable(self._source) else self._source

    def get_input_metadata_impl(self) -> TensorMetadata:
        manifest = self.session.manifest
        fixed = manifest.length_rules.fixed_length
        meta = TensorMetadata()
        for info in manifest.inputs:
            shape = [None if isinstance(d, str) else d for d in info.dims]
            if fixed and info.dtype == "int64":
                shape[-1] = None  # the session pads shorter sequences to the graph's fixed length
            meta.add(info.name, np.dtype(info.dtype), shape)
        return meta

    def infer_impl(self, feed_dict) -> OrderedDict[str, np.ndarray]:
        start = time.perf_counter()
        try:
            outputs = self.session.run(**feed_dict)
        except Exception as exc:
            shapes = {name: tuple(value.shape) for name, value in feed_dict.items()}
            raise RuntimeFailure(f"the runtime failed on inputs of shapes {shapes}: "
                                 f"{type(exc).__name__}: {exc}") from exc
        self.inference_time = time.perf_counter() - start
        return OrderedDict((name, outputs[name]) for name in self.session.output_names if name in outputs)

    def deactivate_impl(self) -> None:
        self.session = None


# ----------------------------------------------------------------------------------------------- the inputs


@dataclasses.dataclass(frozen=True)
class Case:
    """One set of feeds: what it checks, its sizes, and the seed ``spec.dummy_inputs`` made it with."""

    label: str
    shape: Shape
    seed: int
    feeds: dict[str, np.ndarray]


def plan_shapes(spec, config, head: str) -> list[tuple[str, Shape]]:
    """The shapes to check, each with what it is for."""
    from tensorkiln.export.specs import Shape

    rules = spec.length_rules(config)
    longest = min(rules.max_length, LONG_CAP)
    fixed = spec.fixed_sequence(config)
    first, second = spec.check_shapes(config, head, 2, 16)
    shapes = [("export check 1", first), ("export check 2", second)]
    if spec.uses_cache(config, head):
        shapes += [
            ("left-padded prefill, batch 1", Shape(1, min(7, longest))),
            ("long prefill", Shape(2, longest)),
            ("chunk after a past", Shape(2, 4, past=9)),
            ("decode step to the longest length", Shape(2, 1, past=longest - 1)),
        ]
    elif fixed:
        shapes += [
            (f"batch 1, runtime pads to {fixed}", Shape(1, max(1, fixed // 3))),
            (f"runtime pads to {fixed}", Shape(2, max(1, fixed - 1))),
        ]
    else:
        shapes += [("batch 1", Shape(1, min(16, longest))), ("near the max length", Shape(2, max(1, longest - 1)))]
    if head == "ForMultipleChoice":
        shapes.append(("4 choices", Shape(1, min(9, fixed or longest), choices=4)))
    # Tiny configs may be shorter than a fixed shape above: those are left out, not clipped.
    return [(label, shape) for label, shape in shapes if shape.past + shape.sequence <= rules.max_length]


def make_cases(spec, config, head: str, precision: str, seed: int, count: int | None) -> list[Case]:
    import torch

    dtype = torch.float16 if precision == "fp16" else torch.float32
    cases = []
    for index, (label, shape) in enumerate(plan_shapes(spec, config, head)[:count]):
        case_seed = seed + index + 1
        inputs = spec.dummy_inputs(config, head, shape, dtype=dtype, seed=case_seed)
        cases.append(Case(label, shape, case_seed, {name: t.numpy() for name, t in inputs.items()}))
    return cases


# ----------------------------------------------------------------------------------------------- the comparison


class PolicyCompare:
    """A Polygraphy compare function: each output of the runtime (second result) against the fp32 reference (first),
    judged by :func:`tolerances.compare` (the export check's own call); it keeps every figure for the report in
    ``checks``."""

    def __init__(self, manifest: mf.Manifest, cases: Sequence[Case], reference: Sequence,
                 half: Sequence | None):
        self.manifest = manifest
        self.cases = cases
        self.reference = reference
        self.half = half
        self.checks: dict[int, tuple[OutputCheck, ...]] = {}

    def __call__(self, result0, result1) -> OrderedDict[str, bool]:
        index = next((i for i, r in enumerate(self.reference) if r is result0), None)
        if index is None:
            raise RuntimeError("the comparator passed a reference result from another run")
        rows = tuple(self._check(info, index, result0, result1) for info in self.manifest.outputs)
        self.checks[index] = rows
        return OrderedDict((row.output, row.passed) for row in rows)

    def _check(self, info: mf.TensorInfo, index: int, result0, result1) -> OutputCheck:
        precision = self.manifest.precision
        name = info.name
        if name not in result1 or name not in result0:
            side = "runtime" if name not in result1 else "reference"
            return OutputCheck(name, math.inf, math.inf, -1.0, {}, False, f"the {side} returned no {name!r}")
        want, got = np.asarray(result0[name]), np.asarray(result1[name])
        if got.shape != want.shape:
            return OutputCheck(name, math.inf, math.inf, -1.0, {}, False,
                               f"shape {got.shape}, the reference's {want.shape}")
        torch_half = None if self.half is None else self.half[index][name]
        result = tolerances.compare(precision, name, got, want, torch_half=torch_half, token_axis=info.token_axis,
                                    attention_mask=self.cases[index].feeds.get("attention_mask"))
        agree = result.agreement
        return OutputCheck(name, *result.errors, result.verdict.bound, result.verdict.passed, result.verdict.reason,
                           result.torch_half_max_abs, result.compared, *(agree if agree else (None, None)))


# ----------------------------------------------------------------------------------------------- the check


def check_pair(checkpoint_dir: Path, manifest: mf.Manifest, export_config: dict[str, Any]):
    """The checkpoint's architecture, parsed config and head, once it is known to be the export's checkpoint."""
    from tensorkiln.reference.checkpoint import read_config, resolve
    from tensorkiln.reference.config import ConfigError

    hf = read_config(checkpoint_dir)
    if hf["model_type"] != manifest.model_type:
        raise ParityUsageError(f"the checkpoint is a {hf['model_type']!r} model, the export a "
                               f"{manifest.model_type!r} ({manifest.hf_class}): pass the checkpoint it was "
                               "exported from")
    try:
        arch, head = resolve(hf, manifest.head)
    except ConfigError as exc:
        raise ParityUsageError(f"the checkpoint cannot load the export's head {manifest.head!r}: {exc}") from None
    if hf.get("architectures") != export_config.get("architectures"):
        raise ParityUsageError(f"the checkpoint's head is {hf.get('architectures')}, the export's checkpoint's "
                               f"{export_config.get('architectures')}: pass the checkpoint it was exported from")
    keys = sorted(k for k in set(hf) | set(export_config)
                  if not k.startswith("_") and k not in PROVENANCE_KEYS and hf.get(k) != export_config.get(k))
    if keys:
        shown = ", ".join(f"{k} ({hf.get(k)!r} vs {export_config.get(k)!r})" for k in keys[:5])
        raise ParityUsageError(f"the checkpoint's config.json differs from the export's in {shown}"
                               + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
                               + ": pass the checkpoint it was exported from")
    return arch, arch.config_class.from_hf_config(hf), head


def run_parity(checkpoint_dir: str | os.PathLike, export_dir: str | os.PathLike, *, shapes: int | None = None,
               seed: int = 0, backend: str = "auto", kernels: str = "auto") -> ParityReport:
    """Check ``export_dir`` against the reference model of ``checkpoint_dir``; return the report (not written).

    ``kernels`` is :func:`~tensorkiln.runtime.session.load`'s: how the runtime runs the custom nodes ("auto",
    "native": libtensorkiln_ort.so's kernels, "function": their function bodies); the report names what ran.

    Raises ParityUsageError (mismatched pair, bad option), ManifestError (a bad export folder) and the reference's
    CheckpointError / ConfigError; a parity failure, the runtime raising included, is a report with status
    "failed"."""
    from tensorkiln.export.reference_runner import ReferenceRunner
    from tensorkiln.export.specs import get_spec

    if shapes is not None and shapes < 1:
        raise ParityUsageError(f"--shapes must be at least 1, got {shapes}")
    checkpoint, export = Path(checkpoint_dir), Path(export_dir)
    manifest = mf.read_manifest(export)
    export_config = read_json_object(mf.file_path(export, manifest, manifest.config_file), error=ManifestError,
                                     what="the export's config")
    arch, config, head = check_pair(checkpoint, manifest, export_config)
    spec = get_spec(arch.model_type)
    precision = manifest.precision
    half = precision == "fp16"
    base = dict(model_type=manifest.model_type, head=manifest.head, hf_class=manifest.hf_class, precision=precision,
                checkpoint=str(checkpoint.resolve()), export=str(export.resolve()),
                rule=tolerances.rule_text(precision))
    try:
        session = load(export, backend, kernels=kernels)
    except BackendUnavailableError as exc:
        if not half or kernels == "native":
            raise
        return ParityReport(**base, status=NOT_RUN, reason=f"the runtime cannot load this export here: {exc}")

    cases = make_cases(spec, config, head, precision, seed, shapes)
    reference = ReferenceRunner(checkpoint, head, input_precision=precision, name="reference-fp32")
    runtime = SessionRunner(session, name="runtime")
    runners: list[BaseRunner] = [reference, runtime]
    if half:
        import torch

        runners.append(ReferenceRunner(checkpoint, head, dtype=torch.float16, input_precision=precision,
                                       name="reference-fp16"))
    implementations = "".join(f"; {name}: {label}" for name, label in session.custom_node_implementations.items())
    described = ["reference-fp32 (PyTorch fp32)",
                 f"runtime (tensorkiln Session: {session.backend}, {', '.join(session.providers)}{implementations})"]
    described += ["reference-fp16 (PyTorch fp16, for the 2x rule)"] if half else []
    feeds = [OrderedDict(case.feeds) for case in cases]
    with G_LOGGER.verbosity(G_LOGGER.CRITICAL):  # stdout is the report's; Polygraphy's log would interleave
        try:
            results = Comparator.run(runners, data_loader=feeds)
        except RuntimeFailure as exc:
            return ParityReport(**base, status=FAILED, runners=tuple(described), reason=str(exc))
        compare = PolicyCompare(manifest, cases, results[0][1], results[2][1] if len(runners) > 2 else None)
        accuracy = Comparator.compare_accuracy(results, comparisons=[(0, 1)], compare_func=compare)
    checks = tuple(ShapeCheck(case.label, _case_sizes(case, spec, config, head), case.seed, compare.checks[i])
                   for i, case in enumerate(cases))
    agreement = set_agreement(manifest, checks) if precision == "int8" else ()
    passed = (bool(accuracy) and all(row.passed for check in checks for row in check.outputs)
              and all(row.passed for row in agreement))
    return ParityReport(**base, status=PASSED if passed else FAILED, runners=tuple(described), checks=checks,
                        agreement=agreement)


def set_agreement(manifest: mf.Manifest, checks: Sequence[ShapeCheck]) -> tuple[AgreementCheck, ...]:
    """int8: per-token top-1 agreement over every checked shape together, judged by the policy."""
    rows = []
    for info in manifest.outputs:
        counts = [tolerances.Agreement(row.agree, row.total) for check in checks for row in check.outputs
                  if row.output == info.name and row.agree is not None]
        if info.token_axis is None or not counts:
            continue
        verdict = tolerances.judge_agreement(info.name, counts)
        rows.append(AgreementCheck(info.name, sum(c.agree for c in counts), sum(c.total for c in counts),
                                   verdict.bound["top1"], verdict.passed, verdict.reason))
    return tuple(rows)


def _case_sizes(case: Case, spec, config, head: str) -> dict[str, int]:
    sizes = {mf.BATCH: case.shape.batch, mf.SEQUENCE: case.shape.sequence}
    if spec.uses_cache(config, head):
        sizes[mf.PAST] = case.shape.past
    if head == "ForMultipleChoice":
        sizes[mf.CHOICES] = case.shape.choices
    return sizes


def check_report_dir(report_dir: str | os.PathLike | None, export_dir: str | os.PathLike,
                     checkpoint_dir: str | os.PathLike | None = None) -> Path:
    """The report folder: REPORT_DIR, or EXPORT_DIR/../<name>-parity. It may not be, be inside or contain the export
    (whose manifest hashes every file there) or the checkpoint, nor be a file, and a parity.json or parity.md already
    there must be an earlier report: nothing else is overwritten."""
    folder = Path(report_dir) if report_dir is not None else default_report_dir(export_dir)
    refuse_overlap(folder, "the report folder", export_dir, "the export", ParityUsageError)
    if checkpoint_dir is not None:
        refuse_overlap(folder, "the report folder", checkpoint_dir, "the checkpoint", ParityUsageError)
    if folder.exists() and not folder.is_dir():
        raise ParityUsageError(f"the report folder {str(folder)!r} is a file, not a folder: choose a folder for "
                               f"{JSON_NAME} and {MARKDOWN_NAME}")
    check_writable(folder, "the report folder", ParityUsageError)
    for path in (folder / JSON_NAME, folder / MARKDOWN_NAME):
        if (path.exists() or path.is_symlink()) and not is_report_file(path):
            raise ParityUsageError(f"{str(path)!r} exists and is not a kiln parity report: move it away or choose "
                                   "another --report folder")
    return folder


__all__ = ["ParityReport", "ParityUsageError", "PolicyCompare", "SessionRunner", "check_pair", "check_report_dir",
           "default_report_dir", "make_cases", "plan_shapes", "run_parity", "to_markdown", "write_report"]
