"""The MRA vs dense section: the MRA model at its full length against the same weights with the MRA op replaced by
dense softmax attention (``scaled_dot_product_attention``), in the reference and in an ORT export of each.

ORT is left out, with the reason, when either export fails its own check; the reference is timed regardless.
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .backends import Ort, Reference, token_ids
from .flops import count_matmul_flops
from .options import BenchOptions, Target, log
from .targets import build_target
from .timing import alternate, max_abs


def dense_attention(query, key, value, attention_mask, *, scale, **_: Any):
    """Dense masked softmax attention with MRA's contract: (B, H, L, D) in, zero rows at padded queries."""
    import torch

    keep = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, L)
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=keep, scale=scale)
    return out * attention_mask[:, None, :, None].to(out.dtype)


@contextlib.contextmanager
def dense_mra() -> Iterator[None]:
    """The reference MRA model with its attention op replaced by dense softmax attention, while in the block."""
    from unittest import mock

    from tensorkiln.reference import mra

    with mock.patch.object(mra, "mra_attention", dense_attention):
        yield


@dataclasses.dataclass
class MraPair:
    """The MRA preset's checkpoint and its two exports (MRA and dense); an export that failed leaves its error."""

    name: str
    checkpoint: Path
    exports: dict[str, Target | None]
    errors: dict[str, str]


def build_mra_pair(options: BenchOptions) -> MraPair:
    from tensorkiln.reference.presets import get_preset

    work = Path(options.work)
    preset = get_preset(options.mra_preset)
    checkpoint = work / "checkpoints" / preset.name
    pair = MraPair(preset.name, checkpoint, {}, {})
    for kind, name in (("mra", preset.name), ("dense", f"{preset.name}-dense")):
        try:
            pair.exports[kind] = build_target(name, preset, checkpoint, work / "exports" / name, options,
                                              patch=dense_mra if kind == "dense" else None)
        except Exception as exc:  # an export that fails its own check: time the reference alone, and say why
            pair.exports[kind] = None
            pair.errors[kind] = f"{type(exc).__name__}: {exc}"
            log(options, f"{name}: export failed, ORT is left out of MRA vs dense: {pair.errors[kind]}")
    return pair


def _medians(times: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    """Per backend that ran both: MRA's and dense's median ms, MRA's speed-up and the backend's raw times."""
    backends = {}
    for backend in ("reference", "onnxruntime"):
        if f"{backend}_mra" not in times:
            continue
        mra_ms = 1000 * statistics.median(times[f"{backend}_mra"])
        dense_ms = 1000 * statistics.median(times[f"{backend}_dense"])
        backends[backend] = {"mra_ms": mra_ms, "dense_ms": dense_ms, "mra_speedup": dense_ms / mra_ms,
                             "times_ms": {k: [1000 * t for t in v] for k, v in times.items()
                                          if k.startswith(backend)}}
    return backends


def bench_mra_dense(pair: MraPair, options: BenchOptions) -> dict[str, Any]:
    """MRA at its full length vs dense attention of the same weights, in the reference and (when both exported)
    in ORT."""
    reference = Reference(pair.checkpoint, options.threads)
    seq = reference.model.config.max_position_embeddings
    log(options, f"{pair.name}: MRA vs dense attention at batch 1, seq {seq}")
    ids = token_ids(reference.vocab_size, 1, seq)
    ref_call = reference.bind(ids)

    def ref_dense():
        with dense_mra():
            return ref_call()

    runners: dict[str, Any] = {"reference_mra": reference, "reference_dense": reference}
    calls = {"reference_mra": ref_call, "reference_dense": ref_dense}
    if not pair.errors:
        for kind in ("mra", "dense"):
            runners[f"onnxruntime_{kind}"] = Ort(pair.exports[kind].export, options.threads, kernels=options.kernels)
            calls[f"onnxruntime_{kind}"] = runners[f"onnxruntime_{kind}"].bind(ids)
    outputs = {name: call() for name, call in calls.items()}
    repeats = max(1, min(options.repeats, 3))
    times = alternate(calls, repeats)
    flops_mra = count_matmul_flops(reference.model, 1, seq, reference.vocab_size)
    with dense_mra():
        flops_dense = count_matmul_flops(reference.model, 1, seq, reference.vocab_size)
    name = next(k for k, v in outputs["reference_mra"].to_dict().items() if v is not None)
    values = {k: runners[k].output(v, name) for k, v in outputs.items()}
    return {"model": pair.name, "batch": 1, "seq": seq, "repeats": repeats,
            "matmul_flops": {"mra": flops_mra, "dense": flops_dense}, "backends": _medians(times),
            "export_errors": pair.errors,
            "max_abs_onnxruntime_vs_reference": {
                kind: max_abs(values.get(f"onnxruntime_{kind}"), values[f"reference_{kind}"])
                for kind in ("mra", "dense")},
            "max_abs_mra_vs_dense": max_abs(values["reference_mra"], values["reference_dense"])}
