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
* ``INT8_MIN_COSINE``, ``INT8_MAX_NMSE``, ``INT8_MIN_TOP1``, ``INT8_TIE_MARGIN``: an int8 export (ONNX Runtime's
  dynamic quantization: int8 weights, activations quantized at run time) vs the fp32 reference, on the check's
  evaluation set (seeded inputs, several shapes, padding), at real (unmasked) tokens. Quantization error is noise
  spread over every element, not a bound on any one, so the rule judges what a user of each output sees:

  - every output, at every shape: cosine similarity >= ``INT8_MIN_COSINE`` and NMSE <= ``INT8_MAX_NMSE``. Basis:
    cosine 0.999 is a relative RMS error of sqrt(2 x (1 - 0.999)) = 4.5%; the published demo configs (HF init,
    12-24 layers) measure 0.9993-0.9996 on their logits, so the bound leaves room for depth but not for a broken
    layer (one MLP weight scale 10x off takes the tiny MegatronBERT of the tests to 0.6). For noise uncorrelated
    with the output NMSE = 2 x (1 - cosine) (measured equal to three digits), so NMSE <= 2 x (1 - 0.999) admits
    the same error, and it sees what cosine cannot: a wrong magnitude (logits 1.5x too large keep cosine 1 and
    every top-1, and change every probability);
  - per-token class scores (LM, masked-LM and token-classification logits): the int8 top-1 agrees with the
    reference's on >= ``INT8_MIN_TOP1`` of the evaluation set's real tokens, counted over the whole set (a shape of
    30 tokens cannot resolve 1%);
  - pooled class scores (sequence classification, next sentence, multiple choice): the same label on every row.
    Their cosine is reported, not judged: two numbers a row make it noise, and the label is what a classifier is
    used for;

  where a choice the reference scores within ``INT8_TIE_MARGIN`` x the RMS of its output of its own top-1 counts as
  agreeing (a tie). Basis: at the cosine bound an element's error has an RMS of 4.5% of the output's, the difference
  of two elements' errors sqrt(2) x that, and three standard deviations of it are 0.19 x the RMS: a near-tie inside
  that can flip under any quantization that meets the cosine bound (counting it would tighten that bound in
  disguise), a flip beyond it is a 3-sigma event. Random-weight logits are a maximum over tens of thousands of
  near-equal scores, so their flips are such ties (measured on the demo configs: 1-9% of the tokens flip, none by
  more than 0.11 x the RMS); a trained model's decisive tokens are not ties and count in full.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

#: fp32 reference vs HF transformers, max abs error at unit-scale activations.
REFERENCE_VS_HF_MAX_ABS = 1e-5
#: One custom op's implementations vs each other or an independent oracle, fp32, max abs error.
OP_VS_ORACLE_MAX_ABS = 1e-5
#: The C++ runtime vs the Python runtime on the same graph, kernels and ONNX Runtime, max abs error (the same
#: arithmetic: anything above rounding noise means the two fed the graph differently).
SAME_KERNELS_MAX_ABS = 1e-6
#: fp32 runtime vs the fp32 reference, max abs error.
FP32_MAX_ABS = 1e-4
#: ... and relative to the output's power: random-weight checkpoints give outputs of 1e-3 (a wrong graph stays
#: under 1e-4 there), while a faithful fp32 graph measures NMSE below 1e-12.
FP32_MAX_NMSE = 1e-8
#: Reduced precision: the runtime's error vs the fp32 reference is at most this multiple of PyTorch's own error.
HALF_ERROR_RATIO = 2.0
#: int8: cosine similarity to the fp32 reference, every output, every shape, at real tokens.
INT8_MIN_COSINE = 0.999
#: int8: NMSE, the cosine bound's twin that also sees a wrong scale: 2 x (1 - cosine) for uncorrelated noise.
INT8_MAX_NMSE = 2 * (1 - INT8_MIN_COSINE)
#: int8: top-1 agreement over the evaluation set's real tokens, per-token class scores.
INT8_MIN_TOP1 = 0.99
#: int8: a choice the reference scores within this fraction of its output's RMS of its top-1 is a tie (agrees).
INT8_TIE_MARGIN = 0.2
#: The precisions the policy has a rule for.
PRECISIONS = ("fp32", "fp16", "int8")


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
    if precision == "int8":
        return (f"vs the fp32 reference at real tokens: cosine >= {INT8_MIN_COSINE:g} and NMSE <= "
                f"{INT8_MAX_NMSE:.3g} at every shape; top-1 "
                f"agreement >= {INT8_MIN_TOP1:.0%} of the evaluation set's tokens for per-token logits and the same "
                f"label on every row for pooled logits, a choice within {INT8_TIE_MARGIN:g} x the output's RMS of "
                "the reference's top-1 counting as a tie")
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


class Agreement(NamedTuple):
    """How many decisions (rows of class scores) of the runtime agree with the reference's, of how many."""

    agree: int
    total: int

    @property
    def fraction(self) -> float:
        return self.agree / self.total if self.total else 0.0


def class_scores(name: str, shape: tuple[int, ...], token_axis: int | None) -> bool:
    """Whether an output's last axis holds class scores to take a top-1 over: a ``*logits`` output with two or more
    entries on a last axis that is not its token axis (QA's start/end logits run over tokens: not classes; a
    one-label head is a regression)."""
    return (name.endswith("logits") and len(shape) >= 2 and token_axis != len(shape) - 1
            and shape[-1] >= 2)


def agreement(got: np.ndarray, want: np.ndarray, rows: np.ndarray | None = None) -> Agreement:
    """Top-1 agreement over the rows of class scores (the last axis), those where ``rows`` (the leading axes' shape)
    is true; a runtime choice the reference scores within ``INT8_TIE_MARGIN`` x the RMS of its compared scores of its
    own top-1 is a tie and agrees. Non-finite scores agree nowhere."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    classes = want.shape[-1]
    got2, want2 = got.reshape(-1, classes), want.reshape(-1, classes)  # (rows, classes)
    if rows is not None:
        keep = np.asarray(rows, bool).reshape(-1)
        got2, want2 = got2[keep], want2[keep]
    if not len(want2):
        return Agreement(0, 0)
    if not (np.all(np.isfinite(got2)) and np.all(np.isfinite(want2))):
        return Agreement(0, len(want2))
    tie = INT8_TIE_MARGIN * float(np.sqrt(np.mean(np.square(want2))))
    chosen = want2[np.arange(len(want2)), got2.argmax(-1)]  # the reference's score of the runtime's choice
    return Agreement(int(np.count_nonzero(chosen >= want2.max(-1) - tie)), len(want2))


def judge(precision: str, error: Errors, *, torch_half_max_abs: float | None = None,
          resolution: float = 0.0, labels: Agreement | None = None) -> Verdict:
    """The policy for one output. fp32: both the absolute and the NMSE bound. Reduced precision: the runtime's max
    abs error <= HALF_ERROR_RATIO x PyTorch's own (``torch_half_max_abs``) + ``resolution``; without PyTorch's
    figure, or when it is not finite, the rule cannot judge, and that is a failure, never a pass. int8: the cosine
    bound, or, for pooled class scores (``labels``), the same label on every row (per-token top-1 agreement is
    judged over the whole evaluation set by :func:`judge_agreement`)."""
    if precision == "int8":
        return _judge_int8(error, labels)
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


def _judge_int8(error: Errors, labels: Agreement | None) -> Verdict:
    if labels is not None:
        bound = {"labels": 1.0}
        if labels.total == 0 or labels.agree < labels.total:
            return Verdict(False, bound, f"{labels.total - labels.agree} of {labels.total} rows change label")
        return Verdict(True, bound)
    bound = {"cosine": INT8_MIN_COSINE, "nmse": INT8_MAX_NMSE}
    if not error.cosine >= INT8_MIN_COSINE:
        return Verdict(False, bound, f"cosine {error.cosine:.6f} < {INT8_MIN_COSINE:g}")
    if not error.nmse <= INT8_MAX_NMSE:
        return Verdict(False, bound, f"NMSE {error.nmse:.3g} > {INT8_MAX_NMSE:.3g} (cosine {error.cosine:.6f}: a "
                                     "wrong scale)")
    return Verdict(True, bound)


def judge_agreement(name: str, counts: Sequence[Agreement]) -> Verdict:
    """int8, per-token class scores: top-1 agreement over the whole evaluation set (every shape's real tokens)
    >= INT8_MIN_TOP1. No decision at all cannot be judged: a failure."""
    total = Agreement(sum(c.agree for c in counts), sum(c.total for c in counts))
    bound = {"top1": INT8_MIN_TOP1}
    if total.total == 0:
        return Verdict(False, bound, f"{name}: no real token to judge top-1 agreement on")
    if not total.fraction >= INT8_MIN_TOP1:
        return Verdict(False, bound, f"{name}: top-1 agreement {total.fraction:.2%} ({total.agree}/{total.total} "
                                     f"tokens) < {INT8_MIN_TOP1:.0%}")
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
    #: int8, outputs of class scores: top-1 agreement at this shape (per-token ones are judged over the whole set).
    agreement: Agreement | None = None


def compare(precision: str, name: str, got: np.ndarray, want: np.ndarray, *, torch_half: np.ndarray | None = None,
            token_axis: int | None = None, attention_mask: np.ndarray | None = None) -> Comparison:
    """Judge one runtime output ``got`` against the fp32 reference ``want``: the whole policy in one call.

    fp32: :func:`judge` on every element. Reduced precision: ``torch_half`` is the same output from PyTorch run in
    that precision (None when it could not run: then the rule cannot judge, a failure); both are compared at real
    tokens only (:func:`real_tokens`) when the output has a token axis and an ``attention_mask`` is given, and
    the bound allows one fp16 step at the reference's largest value (:func:`half_resolution`). int8: at real
    tokens too, the cosine bound, and for class scores (:func:`class_scores`) the top-1 :func:`agreement`: pooled
    ones judged here (the same labels), per-token ones left to :func:`judge_agreement` over the whole set.
    """
    got, want = np.asarray(got), np.asarray(want)
    if precision not in PRECISIONS:
        raise ValueError(f"the policy has no rule for precision {precision!r}; it has {PRECISIONS}")
    if precision == "fp32":
        error = errors(name, got, want)
        return Comparison(error, judge(precision, error))
    select = None
    if attention_mask is not None and got.shape == want.shape:
        select = real_tokens(token_axis, np.asarray(attention_mask), want.shape)
    if precision == "int8":
        return _compare_int8(name, got, want, select, token_axis)
    own = None if torch_half is None else np.asarray(torch_half)
    if select is not None:
        got, want = got[select], want[select]
        own = None if own is None else own[select]
    error = errors(name, got, want)
    own_max_abs = None if own is None else errors(name, own, want).max_abs
    verdict = judge(precision, error, torch_half_max_abs=own_max_abs, resolution=half_resolution(want))
    return Comparison(error, verdict, own_max_abs, "all" if select is None else "real tokens")


def _compare_int8(name: str, got: np.ndarray, want: np.ndarray, select: np.ndarray | None,
                  token_axis: int | None) -> Comparison:
    compared = "all" if select is None else "real tokens"
    error = errors(name, got[select], want[select]) if select is not None else errors(name, got, want)
    if not class_scores(name, want.shape, token_axis):
        return Comparison(error, judge("int8", error), compared=compared)
    rows = None if select is None else select[..., 0]  # (leading axes): the real tokens' rows of class scores
    counts = agreement(got, want, rows)
    if token_axis is None:  # pooled: the same label on every row
        return Comparison(error, judge("int8", error, labels=counts), compared=compared, agreement=counts)
    return Comparison(error, judge("int8", error), compared=compared, agreement=counts)


__all__ = ["Agreement", "Comparison", "Errors", "FP32_MAX_ABS", "FP32_MAX_NMSE", "HALF_ERROR_RATIO", "INT8_MAX_NMSE",
           "INT8_MIN_COSINE", "INT8_MIN_TOP1", "INT8_TIE_MARGIN", "OP_VS_ORACLE_MAX_ABS", "PRECISIONS",
           "REFERENCE_VS_HF_MAX_ABS", "SAME_KERNELS_MAX_ABS",
           "Verdict", "agreement", "atol_problem", "class_scores", "compare", "errors", "half_resolution", "judge",
           "judge_agreement", "real_tokens", "rule_text"]
