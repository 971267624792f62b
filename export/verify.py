"""The export-time check: the freshly written ``model.onnx`` in ONNX Runtime (CPU) against the reference model.

Runs the graph at the spec's check shapes and judges every output with the one tolerance policy
(:func:`tensorkiln.runtime.tolerances.compare`, the same call ``kiln parity`` makes). A check that breaks the bound
raises :class:`VerificationError` (exit status 1) and the export writes nothing. A check that cannot run here (ONNX
Runtime's CPU provider has no kernel for an fp16 graph) is not a pass either: it raises
:class:`VerificationUnavailableError`, unless the user asked for an unverified export (``--no-verify``), which the
manifest then records.

int8 exports (``export/quantize.py``) are judged by :func:`verify_int8`: the int8 rule of the policy on a larger
evaluation set, against an oracle (the PyTorch reference, or an fp32 export in ONNX Runtime), with top-1 agreement
counted over the whole set.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tensorkiln.runtime import manifest as mf
from tensorkiln.runtime import tolerances
from tensorkiln.runtime.errors import CheckFailed

from .specs import ExportError, ExportSpec, Shape

PROVIDER = "CPUExecutionProvider"
#: The fp32 outputs of one set of inputs, by the export's output names.
Oracle = Callable[[dict[str, torch.Tensor]], dict[str, np.ndarray]]


class VerificationError(CheckFailed):
    """The exported graph does not reproduce the reference within the tolerance; nothing was written."""


class VerificationUnavailableError(ExportError):
    """The export-time check cannot run on this machine; nothing was written unless ``--no-verify`` was given."""


def not_verified(precision: str) -> mf.Verification:
    """The manifest's record of an export written with ``--no-verify``."""
    return mf.Verification(status=mf.UNVERIFIED, rule=tolerances.rule_text(precision), provider="",
                           reason="written with --no-verify: ONNX Runtime did not check it against the reference")


def _session(folder: Path, precision: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: ORT's notes on unused initializers are not the user's concern
    try:
        return ort.InferenceSession(str(folder / mf.MODEL_NAME), options, providers=[PROVIDER])
    except Exception as exc:
        first_line = str(exc).splitlines()[0]
        if precision != "fp32" and ("NOT_IMPLEMENTED" in first_line or "Could not find an implementation" in
                                    first_line):
            raise VerificationUnavailableError(
                f"ONNX Runtime's CPU provider cannot run this {precision} graph ({first_line}), so the export "
                "cannot be checked here. Export on a machine with onnxruntime-gpu, export --precision fp32, or "
                "pass --no-verify to write it unchecked (the manifest records that)") from None
        raise ExportError(f"ONNX Runtime could not load the exported graph: {exc}") from exc


def _reference_outputs(spec: ExportSpec, head: str, reference: nn.Module, half: nn.Module | None,
                       inputs: dict[str, torch.Tensor]) -> tuple[dict, dict | None]:
    """The fp32 reference's outputs and, for reduced precision, PyTorch's own in that precision (None when torch
    lacks a CPU kernel for it: the policy then cannot judge, which fails the check)."""
    with torch.no_grad():
        fp32_inputs = {k: v.float() if v.is_floating_point() else v for k, v in inputs.items()}
        want = spec.call(reference, head, fp32_inputs)
        own = None
        if half is not None:
            with contextlib.suppress(RuntimeError, NotImplementedError):
                own = spec.call(half, head, inputs)
    return want, own


def verify(folder: Path, spec: ExportSpec, head: str, reference: nn.Module, half: nn.Module | None,
           shapes: Sequence[Shape], precision: str, atol: float | None = None) -> mf.Verification:
    """Run ORT at each shape and judge every output; raise VerificationError past the tolerance, or past ``atol``
    (``--atol``, an extra max abs bound that can only tighten the policy)."""
    config = reference.config
    rule = tolerances.rule_text(precision, atol)
    session = _session(folder, precision)
    out_specs = spec.outputs(config, head)
    dtype = torch.float16 if precision == "fp16" else torch.float32
    used = {d for s in spec.inputs(config, head) for d in s.dims if isinstance(d, str)}
    checks, failures = [], []
    for index, shape in enumerate(shapes):
        inputs = spec.dummy_inputs(config, head, shape, dtype=dtype, seed=index + 1)
        feeds = {name: tensor.numpy() for name, tensor in inputs.items()}
        try:
            got = session.run([s.name for s in out_specs], feeds)
        except Exception as exc:
            raise VerificationError(f"ONNX Runtime failed at shape {shape.sizes()}: {exc}") from exc
        want, own = _reference_outputs(spec, head, reference, half, inputs)
        sizes = {name: size for name, size in shape.sizes().items() if any(name in d for d in used)}
        errors, torch_half = [], {}
        for out_spec, value in zip(out_specs, got):
            _check_shape(out_spec, value, sizes)
            result = tolerances.compare(
                precision, out_spec.name, value, want[out_spec.name].float().numpy(),
                torch_half=None if own is None else own[out_spec.name].float().numpy(),
                token_axis=out_spec.token_axis, attention_mask=feeds.get("attention_mask"))
            errors.append(mf.OutputError(out_spec.name, *result.errors))
            if result.torch_half_max_abs is not None:
                torch_half[out_spec.name] = result.torch_half_max_abs
            if not result.verdict.passed:
                failures.append(f"{out_spec.name} at {sizes}: {result.verdict.reason}")
            elif atol is not None and not result.errors.max_abs <= atol:
                failures.append(f"{out_spec.name} at {sizes}: max abs {result.errors.max_abs:.3g} > --atol {atol:g}")
        checks.append(mf.CheckResult(shape=sizes, errors=tuple(errors),
                                     torch_half_max_abs=torch_half if precision != "fp32" else None))
    if failures:
        raise VerificationError("the exported graph breaks the tolerance (" + rule + "):\n  " + "\n  ".join(failures))
    return mf.Verification(status=mf.PASSED, rule=rule, provider=PROVIDER, checks=tuple(checks), atol=atol)


def _check_shape(out_spec, value: np.ndarray, sizes: dict[str, int]) -> None:
    expected = mf.TensorInfo(out_spec.name, "float32", out_spec.dims).resolve(sizes)
    if tuple(value.shape) != expected:
        raise VerificationError(f"output {out_spec.name!r} has shape {tuple(value.shape)} at {sizes}; the spec says "
                                f"{out_spec.dims} = {expected}")


def verify_int8(folder: Path, spec: ExportSpec, config, head: str, oracle: Oracle, oracle_name: str,
                shapes: Sequence[Shape]) -> mf.Verification:
    """Judge the int8 graph in ``folder`` against ``oracle`` at each shape by the int8 rule; per-token top-1
    agreement over all shapes together. Raise VerificationError past the rule."""
    rule = tolerances.rule_text("int8")
    session = _session(folder, "int8")
    out_specs = spec.outputs(config, head)
    used = {d for s in spec.inputs(config, head) for d in s.dims if isinstance(d, str)}
    checks, failures, counts = [], [], {}
    for index, shape in enumerate(shapes):
        inputs = spec.dummy_inputs(config, head, shape, seed=index + 1)
        feeds = {name: tensor.numpy() for name, tensor in inputs.items()}
        try:
            got = session.run([s.name for s in out_specs], feeds)
        except Exception as exc:
            raise VerificationError(f"ONNX Runtime failed at shape {shape.sizes()}: {exc}") from exc
        want = oracle(inputs)
        sizes = {name: size for name, size in shape.sizes().items() if any(name in d for d in used)}
        errors = []
        for out_spec, value in zip(out_specs, got):
            _check_shape(out_spec, value, sizes)
            result = tolerances.compare("int8", out_spec.name, value, want[out_spec.name],
                                        token_axis=out_spec.token_axis, attention_mask=feeds.get("attention_mask"))
            agree = result.agreement
            errors.append(mf.OutputError(out_spec.name, *result.errors, *(agree if agree else (None, None))))
            if agree is not None and out_spec.token_axis is not None:
                counts.setdefault(out_spec.name, []).append(agree)
            if not result.verdict.passed:
                failures.append(f"{out_spec.name} at {sizes}: {result.verdict.reason}")
        checks.append(mf.CheckResult(shape=sizes, errors=tuple(errors)))
    summary = {}
    for name, per_shape in counts.items():
        verdict = tolerances.judge_agreement(name, per_shape)
        summary[name] = {"agree": sum(c.agree for c in per_shape), "total": sum(c.total for c in per_shape),
                         "min_fraction": tolerances.INT8_MIN_TOP1}
        if not verdict.passed:
            failures.append(f"{verdict.reason} over the {len(shapes)} shapes")
    if failures:
        raise VerificationError(f"the int8 graph breaks the int8 rule against {oracle_name} ({rule}):\n  "
                                + "\n  ".join(failures))
    return mf.Verification(status=mf.PASSED, rule=rule, provider=PROVIDER, checks=tuple(checks),
                           oracle=oracle_name, agreement=summary)


__all__ = ["Oracle", "VerificationError", "VerificationUnavailableError", "not_verified", "verify", "verify_int8"]
