"""The parity policy (docs/ARCHITECTURE.md, "Parity policy"): the one place that says how close an exported model
must be to the reference, and the error figures every check reports.

Torch-free, so the exporter's own check (``export/verify.py``), ``kiln parity`` (``export/parity.py``) and the tests
apply the same numbers through :func:`compare`. The bounds are named by what they guard:

* ``REFERENCE_VS_HF_MAX_ABS``: the reference models vs Hugging Face's, fp32, at unit-scale activations (the
  ``tests/test_parity_*.py`` oracles; recorded here for the documentation, no runtime check uses it).
* ``FP32_MAX_ABS`` and ``FP32_MAX_NMSE``: an fp32 runtime (ONNX Runtime, TensorRT) vs the fp32 reference.
* ``OP_VS_ORACLE_MAX_ABS``: one custom op's implementations (the pure-PyTorch op, its ONNX function body, the
  native and CUDA kernels) against each other or an independent oracle (dense attention, an fp64 recurrence), fp32.
* ``HALF_ERROR_RATIO``: a reduced-precision runtime's error vs the fp32 reference is at most this multiple of
  PyTorch's own error in the same precision, both measured against the fp32 reference (flash-attention's rule).
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import numpy as np

#: fp32 reference vs HF transformers, max abs error at unit-scale activations.
REFERENCE_VS_HF_MAX_ABS = 1e-5
#: One custom op's implementations vs each other or an independent oracle, fp32, max abs error.
OP_VS_ORACLE_MAX_ABS = 1e-5
#: fp32 runtime vs the fp32 reference, max abs error.
FP32_MAX_ABS = 1e-4
#: ... and relative to the output's power: random-weight checkpoints give outputs of 1e-3 (a wrong graph stays
#: under 1e-4 there), while a faithful fp32 graph measures NMSE below 1e-12.
FP32_MAX_NMSE = 1e-8
#: Reduced precision: the runtime's error vs the fp32 reference is at most this multiple of PyTorch's own error.
HALF_ERROR_RATIO = 2.0


class Errors(NamedTuple):
    """One output's error against the reference (float64 math)."""

    max_abs: float
    nmse: float
    cosine: float


def errors(name: str, got: np.ndarray, want: np.ndarray) -> Errors:
    """Max abs error, NMSE (squared error over the reference's power) and cosine similarity of ``got`` vs
    ``want``. Anything non-finite on either side gives (inf, inf, -1): no bound can pass it."""
    got64, want64 = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got64.shape != want64.shape:
        raise ValueError(f"output {name!r} has shape {got64.shape}, the reference {want64.shape}")
    if not (np.all(np.isfinite(got64)) and np.all(np.isfinite(want64))):
        return Errors(math.inf, math.inf, -1.0)
    diff = got64 - want64
    max_abs = float(np.abs(diff).max()) if diff.size else 0.0
    power = float(np.square(want64).sum())
    squared = float(np.square(diff).sum())
    nmse = squared / power if power > 0 else squared
    norms = float(np.linalg.norm(got64) * np.linalg.norm(want64))
    cosine = float((got64 * want64).sum() / norms) if norms > 0 else 1.0
    return Errors(max_abs, nmse, cosine)


def half_resolution(want: np.ndarray) -> float:
    """One fp16 step at the reference's largest magnitude: below it the 2x rule cannot tell graphs apart (a few
    pooled logits of 1e-2 differ by ulps, whichever side rounds first)."""
    want = np.asarray(want)
    if want.size == 0 or not np.all(np.isfinite(want)):
        return 0.0
    return float(np.spacing(np.float16(np.abs(want).max())))


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Whether one output passed, the bound it was held to (``max_abs``, and ``nmse`` for fp32), and why not."""

    passed: bool
    bound: dict[str, float]
    reason: str = ""


def rule_text(precision: str, atol: float | None = None) -> str:
    extra = f", and max abs <= {atol:g} (--atol)" if atol is not None else ""
    if precision == "fp32":
        return f"max abs error vs the fp32 reference <= {FP32_MAX_ABS:g} and NMSE <= {FP32_MAX_NMSE:g}{extra}"
    return (f"max abs error vs the fp32 reference <= {HALF_ERROR_RATIO:g}x PyTorch {precision}'s own + one fp16 "
            f"step at the output's largest value, at real (unmasked) tokens{extra}")


def atol_problem(precision: str, atol: float) -> str | None:
    """Why an export-time ``--atol`` cannot be used, or None. ``--atol`` (Optimum's spelling) is an extra max abs
    bound on top of the policy, never instead of it: it can only tighten the check. For fp32 a value above
    :data:`FP32_MAX_ABS` would promise a looser check than the one that runs, so it is refused; reduced precision
    has a relative bound, so any positive ``atol`` is one more cap on it."""
    if isinstance(atol, bool) or not isinstance(atol, (int, float)) or not math.isfinite(atol) or atol <= 0:
        return f"--atol must be a finite number > 0, got {atol!r}"
    if precision == "fp32" and atol > FP32_MAX_ABS:
        return (f"--atol {atol:g} is looser than the tolerance policy's fp32 bound {FP32_MAX_ABS:g}; --atol can only "
                "tighten the export check (see runtime/tolerances.py)")
    return None


def judge(precision: str, error: Errors, *, torch_half_max_abs: float | None = None,
          resolution: float = 0.0) -> Verdict:
    """The policy for one output. fp32: both the absolute and the NMSE bound. Reduced precision: the runtime's max
    abs error <= HALF_ERROR_RATIO x PyTorch's own (``torch_half_max_abs``) + ``resolution``; without PyTorch's
    figure, or when it is not finite, the rule cannot judge, and that is a failure, never a pass."""
    if precision == "fp32":
        bound = {"max_abs": FP32_MAX_ABS, "nmse": FP32_MAX_NMSE}
        if not error.max_abs <= FP32_MAX_ABS:
            return Verdict(False, bound, f"max abs {error.max_abs:.3g} > {FP32_MAX_ABS:g}")
        if not error.nmse <= FP32_MAX_NMSE:
            return Verdict(False, bound, f"NMSE {error.nmse:.3g} > {FP32_MAX_NMSE:g}")
        return Verdict(True, bound)
    if torch_half_max_abs is None or not math.isfinite(torch_half_max_abs):
        return Verdict(False, {}, f"PyTorch {precision}'s own error is {torch_half_max_abs}: the "
                                  f"{HALF_ERROR_RATIO:g}x rule cannot judge this output")
    limit = HALF_ERROR_RATIO * torch_half_max_abs + resolution
    bound = {"max_abs": limit}
    if not (math.isfinite(error.max_abs) and error.max_abs <= limit):
        return Verdict(False, bound, f"max abs {error.max_abs:.3g} > {HALF_ERROR_RATIO:g} x PyTorch {precision}'s "
                                     f"{torch_half_max_abs:.3g} + one fp16 step {resolution:.3g}")
    return Verdict(True, bound)


def real_tokens(token_axis: int | None, attention_mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """A boolean mask of an output's elements at real (unpadded) tokens; None when it has no token axis.

    Reduced-precision checks compare there only: a padded query attends to nothing, which the fp32 reference turns
    into a uniform softmax over the masked keys, while in fp16 that row's scores are the mask value -65504 plus a
    score, rounded at a step of 32 or overflowing to -inf, so its output is arbitrary (and ignored by every
    consumer).
    """
    if token_axis is None or attention_mask.ndim != 2:
        return None
    length = shape[token_axis]
    tokens = attention_mask[:, attention_mask.shape[1] - length:].astype(bool)  # (B, L): the mask's last L columns
    view = [1] * len(shape)
    view[0], view[token_axis] = tokens.shape
    return np.broadcast_to(tokens.reshape(view), shape)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One output judged by the policy: its errors, the verdict, PyTorch's own reduced-precision error (or None) and
    which elements were compared ("all", or "real tokens" for reduced precision)."""

    errors: Errors
    verdict: Verdict
    torch_half_max_abs: float | None = None
    compared: str = "all"


def compare(precision: str, name: str, got: np.ndarray, want: np.ndarray, *, torch_half: np.ndarray | None = None,
            token_axis: int | None = None, attention_mask: np.ndarray | None = None) -> Comparison:
    """Judge one runtime output ``got`` against the fp32 reference ``want``: the whole policy in one call.

    fp32: :func:`judge` on every element. Reduced precision: ``torch_half`` is the same output from PyTorch run in
    that precision (None when it could not run: then the rule cannot judge, a failure); both are compared at real
    tokens only (:func:`real_tokens`) when the output has a token axis and an ``attention_mask`` is given, and
    the bound allows one fp16 step at the reference's largest value (:func:`half_resolution`).
    """
    got, want = np.asarray(got), np.asarray(want)
    if precision == "fp32":
        error = errors(name, got, want)
        return Comparison(error, judge(precision, error))
    select = None
    if attention_mask is not None and got.shape == want.shape:
        select = real_tokens(token_axis, np.asarray(attention_mask), want.shape)
    own = None if torch_half is None else np.asarray(torch_half)
    if select is not None:
        got, want = got[select], want[select]
        own = None if own is None else own[select]
    error = errors(name, got, want)
    own_max_abs = None if own is None else errors(name, own, want).max_abs
    verdict = judge(precision, error, torch_half_max_abs=own_max_abs, resolution=half_resolution(want))
    return Comparison(error, verdict, own_max_abs, "all" if select is None else "real tokens")


__all__ = ["Comparison", "Errors", "FP32_MAX_ABS", "FP32_MAX_NMSE", "HALF_ERROR_RATIO", "OP_VS_ORACLE_MAX_ABS",
           "REFERENCE_VS_HF_MAX_ABS",
           "Verdict", "atol_problem", "compare", "errors", "half_resolution", "judge", "real_tokens", "rule_text"]
