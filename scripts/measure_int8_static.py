"""Measures the int8 variants ``kiln quantize`` did not take against the one it did, on a ``kiln bench`` work folder.

Run: ``python scripts/measure_int8_static.py --work kiln-bench [--models NAME ...] [--threads 2]``, after a
``kiln bench`` run has built ``WORK/checkpoints/NAME`` and ``WORK/exports/NAME``. For each model:

* ``dynamic``: the shipped method (``export/quantize.py``: the prepared graph through ``quantize_dynamic``, int8
  per-channel weights for MatMul and Gemm, activations quantized at run time);
* ``dynamic-per-tensor``: the same with one weight scale per tensor instead of one per output channel;
* ``dynamic+gather``: the same, with the embedding tables (Gather) in int8 too;
* ``static-minmax``, ``static-percentile``: ONNX Runtime's static QDQ quantization (``quantize_static``) of the
  same prepared graph, per-channel int8 weights, uint8 activations with scales calibrated on 8 seeded random-id
  sequences (MinMax, or the 99.999th percentile).

Figures: latency at batch 1 and the longest length up to 512, the median of 5 rounds with every variant and the fp32
export taking turns; the int8 rule's figures against the reference model on the check's evaluation set
(``quantize.evaluation_shapes``, judged with ``tolerances.compare``): the worst cosine and NMSE of the main output and
its top-1 agreement over the set; the size on disk. The choice they led to is in ``export/quantize.py``'s docstring.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import numpy as np
import torch

from tensorkiln.export import quantize
from tensorkiln.export.bench.timing import alternate
from tensorkiln.export.specs import Shape, get_spec
from tensorkiln.reference.checkpoint import from_pretrained
from tensorkiln.runtime import backends, tolerances
from tensorkiln.runtime import manifest as mf
from tensorkiln.runtime.inputs import ModelLimits, prepare

__all__ = ["build_variant", "figures", "main"]

VARIANTS = ("dynamic", "dynamic-per-tensor", "dynamic+gather", "static-minmax", "static-percentile")
TARGET_MODELS = ("megatron-bert-cased-345m", "pythia-160m", "nystromformer-512")
CALIBRATION_SAMPLES = 8


def _calibration(spec, config, head: str, length: int):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            feeds = [spec.dummy_inputs(config, head, Shape(1, length), seed=100 + i)
                     for i in range(CALIBRATION_SAMPLES)]
            self.items = iter([{k: v.numpy() for k, v in f.items()} for f in feeds])

        def get_next(self):
            return next(self.items, None)

    return Reader()


def build_variant(variant: str, export: Path, manifest: mf.Manifest, out: Path, model, spec) -> Path:
    """``out/VARIANT.onnx`` from the fp32 export (made when absent)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    path = out / f"{variant}.onnx"
    if path.is_file():
        return path
    prepared = out / "prepared"
    if not (prepared / mf.MODEL_NAME).is_file():
        prepared.mkdir(parents=True, exist_ok=True)
        quantize.prepare(export / manifest.model_file, prepared, False)
    source = prepared / mf.MODEL_NAME
    if variant == "dynamic":
        quantize.quantize_graph(source, path, False)
    elif variant.startswith("dynamic"):
        ops = ["MatMul", "Gemm"] + (["Gather"] if variant == "dynamic+gather" else [])
        quantize_dynamic(source, path, op_types_to_quantize=ops, per_channel=variant != "dynamic-per-tensor",
                         weight_type=QuantType.QInt8, extra_options={"MatMulConstBOnly": True})
    else:
        method = CalibrationMethod.MinMax if variant == "static-minmax" else CalibrationMethod.Percentile
        length = min(manifest.length_rules.fixed_length or 128, manifest.length_rules.max_length)
        quantize_static(source, path, _calibration(spec, model.config, manifest.head, length),
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul", "Gemm"], per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=method,
                        extra_options={"MatMulConstBOnly": True})
    return path


def figures(path: Path, manifest: mf.Manifest, model, spec, threads: int) -> dict:
    """The int8 rule's figures of the graph at ``path`` on the check's evaluation set, for the main output."""
    session = backends.ort_session(path, [backends.CPU], threads, "int8")
    info = manifest.outputs[0]
    oracle = quantize.reference_oracle(model, spec, manifest.head)
    cosines, nmses, agree, total = [], [], 0, 0
    for index, shape in enumerate(quantize.evaluation_shapes(spec, model.config, manifest.head, 2, 16)):
        inputs = spec.dummy_inputs(model.config, manifest.head, shape, seed=index + 1)
        feeds = {name: value.numpy() for name, value in inputs.items()}
        (got,) = session.run([info.name], feeds)
        result = tolerances.compare("int8", info.name, got, oracle(inputs)[info.name], token_axis=info.token_axis,
                                    attention_mask=feeds.get("attention_mask"))
        cosines.append(result.errors.cosine)
        nmses.append(result.errors.nmse)
        if result.agreement is not None:
            agree, total = agree + result.agreement.agree, total + result.agreement.total
    return {"output": info.name, "min_cosine": min(cosines), "max_nmse": max(nmses),
            "top1": agree / total if total else None}


def _latency(paths: dict[str, Path], manifest: mf.Manifest, config: dict, threads: int) -> dict[str, float]:
    length = manifest.length_rules.fixed_length or min(512, manifest.length_rules.max_length)
    ids = np.random.default_rng(0).integers(3, config["vocab_size"], (1, length), dtype=np.int64)
    feeds = prepare(manifest, ModelLimits.from_config(config), {"input_ids": ids}).feeds
    calls = {}
    for name, path in paths.items():
        session = backends.ort_session(path, [backends.CPU], threads, manifest.precision)
        calls[name] = lambda s=session: s.run(None, feeds)
        calls[name]()  # warm-up
    return {name: 1000 * statistics.median(t) for name, t in alternate(calls, 5).items()}


def _size_mb(path: Path) -> float:
    data = path.with_name(path.name + ".data")
    return (path.stat().st_size + (data.stat().st_size if data.is_file() else 0)) / 2**20


def measure(work: Path, name: str, threads: int) -> list[dict]:
    export = work / "exports" / name
    manifest = mf.read_manifest(export, check_files=False)
    config = json.loads((export / manifest.config_file).read_text())
    model = from_pretrained(work / "checkpoints" / name, manifest.head).eval()
    spec = get_spec(manifest.model_type)
    out = work / "int8-variants" / name
    out.mkdir(parents=True, exist_ok=True)
    paths = {"fp32": export / manifest.model_file}
    paths.update({v: build_variant(v, export, manifest, out, model, spec) for v in VARIANTS})
    times = _latency(paths, manifest, config, threads)
    rows = []
    for variant, path in paths.items():
        row = {"model": name, "variant": variant, "ms": times[variant], "speedup": times["fp32"] / times[variant],
               "mb": _size_mb(path)}
        if variant != "fp32":
            row.update(figures(path, manifest, model, spec, threads))
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="kiln-bench", help="a kiln bench work folder")
    parser.add_argument("--models", nargs="+", default=list(TARGET_MODELS))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"1-min load average at the start: {os.getloadavg()[0]:.2f}")
    print("| model | variant | batch 1 latency (ms) | vs fp32 | size (MiB) | output | worst cosine | worst NMSE | "
          "top-1 agreement |\n|---|---|---:|---:|---:|---|---:|---:|---:|")
    for name in args.models:
        for r in measure(Path(args.work), name, args.threads):
            top1 = "-" if r.get("top1") is None else f"{r['top1']:.2%}"
            cells = (f"{r['output']} | {r['min_cosine']:.5f} | {r['max_nmse']:.2e} | {top1}" if "output" in r
                     else "- | - | - | -")
            print(f"| {r['model']} | {r['variant']} | {r['ms']:.0f} | {r['speedup']:.2f}x | {r['mb']:.0f} | {cells} |",
                  flush=True)
    print(f"1-min load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
