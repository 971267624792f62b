"""int8 exports: ``kiln quantize EXPORT OUT`` and ``kiln export --precision int8``, by ONNX Runtime's own quantizer.

The method is ONNX Runtime's dynamic quantization (``onnxruntime.quantization.quantize_dynamic``, what Optimum's
``optimum-cli onnxruntime quantize`` runs for CPUs): every MatMul whose second input is a weight gets int8 weights,
symmetric, one scale per output channel, and its activations are quantized to uint8 at run time, one scale per
tensor (ONNX's standard ``DynamicQuantizeLinear`` + ``MatMulInteger``, which ORT fuses into one kernel). A Gemm (a
pooler or a classifier on pooled rows) is rewritten by the quantizer as MatMul + Add and quantized the same way.
Measured on MegatronBERT-345m, Pythia-160m and Nystromformer-512 (``scripts/measure_int8_static.py``, batch 1, 2
threads): one weight scale per output channel keeps the logits' cosine 0.0003-0.0005 closer to fp32 than one per
tensor at the same speed (per tensor, MegatronBERT's 0.99878 breaks the 0.999 bound); int8 embedding tables (Gather)
make the file 20-40% smaller, gain no speed and lower the cosine by 0.00002-0.00008, so they are not used; static QDQ
quantization calibrated on 8 sequences (MinMax or percentile) runs at 1.85-1.97x fp32 against dynamic's 2.03-2.51x
and loses accuracy (cosine 0.54-0.998), so it is not used either.

Left in fp32: the ``tensorkiln`` custom nodes and their model-local function bodies (the quantizer does not enter
functions; :func:`check_functions_untouched` proves it on every export), the attention's activation x activation
MatMuls, embeddings, biases, norms and activations. One graph preparation comes first: a weight that reaches its
MatMul through a Transpose (a masked-LM decoder tied to the word embeddings) is folded into a transposed copy by
onnxscript's constant folder, so the quantizer sees a constant and the LM head, up to a tenth of the FLOPs, is
quantized too.

The new graph is checked (``onnx.checker``, the custom-node contract, the function bodies) and judged by the int8
rule of ``runtime/tolerances.py`` on the check's evaluation set (:func:`evaluation_shapes`) against the fp32
reference: the PyTorch model of the checkpoint when there is one (``kiln export``, ``kiln quantize --checkpoint``),
otherwise the fp32 export itself in ONNX Runtime, verified against that model when it was written. Nothing is
written unless the check passes; the manifest records the method, the tool and its version, what was quantized and
what was compared.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from tensorkiln.runtime import manifest as mf
from tensorkiln.runtime.atomic import staged_folder
from tensorkiln.runtime.jsonfile import read_json_object
from tensorkiln.runtime.paths import refuse_overlap, resolve_inside

from .specs import ExportError, ExportSpec, Shape, get_spec
from .verify import PROVIDER, Oracle, not_verified, verify_int8

#: The op types quantized (the dynamic quantizer rewrites a Gemm as MatMul + Add first, and quantizes that MatMul).
QUANTIZED_OPS = ("MatMul", "Gemm")
METHOD = "dynamic"
TOOL = "onnxruntime.quantization.quantize_dynamic"
WEIGHTS = "int8, symmetric, one scale per output channel"
ACTIVATIONS = "uint8, asymmetric, one scale per tensor computed at run time (DynamicQuantizeLinear)"
KEPT_FP32 = ("tensorkiln custom nodes and their model-local function bodies",
             "attention's activation x activation MatMuls", "embedding tables (Gather)", "biases, norms, softmax and "
             "activations")
#: The longest sequence of the evaluation set (a base model's reference takes seconds per shape on a CPU).
EVALUATION_CAP = 128
STEPS = ("quantize", "check", "gate")


def evaluation_shapes(spec: ExportSpec, config, head: str, batch: int, seq: int) -> list[Shape]:
    """The int8 check's inputs (each seeded by its index, padded as ``spec.dummy_inputs`` pads): the export check's
    two shapes, a batch of 4 at the longest evaluated length and batch 1; decoders a prefill, a chunk after a past
    and a one-token step; about 300 real tokens on the tiny presets, 700 on the published ones."""
    rules = spec.length_rules(config)
    longest = min(rules.max_length, EVALUATION_CAP)
    fixed = spec.fixed_sequence(config)
    shapes = list(spec.check_shapes(config, head, batch, min(seq, longest)))
    if spec.uses_cache(config, head):
        past = min(16, rules.max_length - 4)
        shapes += [Shape(4, longest - 1), Shape(2, 4, past=past)]
    elif fixed:
        shapes += [Shape(4, fixed), Shape(1, fixed, choices=4)]
    else:
        shapes += [Shape(4, longest, choices=2), Shape(1, min(64, longest), choices=4)]
    return shapes


# ----------------------------------------------------------------------------------------------- oracles


def reference_oracle(model: torch.nn.Module, spec: ExportSpec, head: str) -> Oracle:
    """The fp32 PyTorch model, by the export's output names."""

    def run(inputs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            return {name: value.float().numpy() for name, value in spec.call(model, head, inputs).items()}

    return run


def export_oracle(folder: Path, manifest: mf.Manifest) -> Oracle:
    """An fp32 export in ONNX Runtime (CPU), by its output names."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(folder / manifest.model_file), options, providers=[PROVIDER])
    names = [o.name for o in manifest.outputs]

    def run(inputs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(names, {k: v.numpy() for k, v in inputs.items()})))

    return run


# ----------------------------------------------------------------------------------------------- the graph


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """The quantizer logs advice (pre-processing) to the root logger at WARNING: not the user's concern here."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _is_transposed_weight(node) -> bool | None:
    """onnxscript's folding rule: fold a Transpose of an initializer that feeds a MatMul's weight; nothing else."""
    if node.op_type != "Transpose" or node.domain not in ("", "ai.onnx"):
        return False
    source = node.inputs[0]
    if source is None or not source.is_initializer():
        return False
    return any(use.node.op_type == "MatMul" and use.idx == 1 for use in node.outputs[0].uses())


def prepare(source: Path, folder: Path, external_data: bool) -> None:
    """``folder/model.onnx``: the fp32 graph with every transposed weight of a MatMul folded into a constant."""
    import onnx_ir as ir
    import onnxscript.optimizer

    from .exporter import _save

    model = ir.load(source)
    onnxscript.optimizer.fold_constants(model, should_fold=_is_transposed_weight, output_size_limit=1 << 62)
    onnxscript.optimizer.remove_unused_nodes(model)
    _save(model, folder, external_data)


def quantize_graph(prepared: Path, out: Path, external_data: bool) -> None:
    """ONNX Runtime's dynamic quantization of ``prepared`` into ``out``: int8 per-channel weights for MatMul and
    Gemm."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_quantizer():
        quantize_dynamic(prepared, out, op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True,
                         weight_type=QuantType.QInt8, use_external_data_format=external_data,
                         extra_options={"MatMulConstBOnly": True})


def _op_counts(model) -> collections.Counter:
    return collections.Counter(node.op_type for node in model.graph.node)


def check_functions_untouched(source, quantized) -> None:
    """The quantized graph keeps every custom node and every model-local function exactly as the fp32 one has
    them (both ``onnx.ModelProto``, weights not needed)."""
    before = {(f.domain, f.name): f.SerializeToString(deterministic=True) for f in source.functions}
    after = {(f.domain, f.name): f.SerializeToString(deterministic=True) for f in quantized.functions}
    if before != after:
        changed = sorted(set(before) ^ set(after)) or sorted(k for k in before if before[k] != after.get(k))
        raise ExportError(f"the quantizer changed the model-local functions {changed}: the custom nodes' bodies "
                          "must stay fp32. This is a bug; please report it with the onnxruntime version")
    custom = [(n.domain, n.op_type) for n in source.graph.node if (n.domain, n.op_type) in before]
    kept = [(n.domain, n.op_type) for n in quantized.graph.node if (n.domain, n.op_type) in before]
    if collections.Counter(custom) != collections.Counter(kept):
        raise ExportError(f"the quantizer changed the custom nodes ({len(custom)} before, {len(kept)} after)")


def _quantized_counts(prepared, quantized) -> dict[str, int]:
    before, after = _op_counts(prepared), _op_counts(quantized)
    counts = {op: before[op] - after[op] for op in QUANTIZED_OPS if before[op] > after[op]}
    if not counts:
        raise ExportError("the quantizer found no MatMul with a constant weight to quantize: an int8 export would "
                          "be the fp32 graph")
    return counts


# ----------------------------------------------------------------------------------------------- the export


def quantize_into(source: Path, manifest: mf.Manifest, out: Path, spec: ExportSpec, config, oracle: Oracle | None,
                  oracle_name: str, *, batch: int = 2, seq: int = 16, step=None) -> mf.Manifest:
    """Quantize the fp32 export in ``source`` (its ``manifest``) into the empty folder ``out``, check it and judge
    it against ``oracle`` (None: unverified, recorded so); write the manifest; return it."""
    import onnx
    import onnxruntime

    from .exporter import _check

    step = step or (lambda name: contextlib.nullcontext())
    external = mf.EXTERNAL_DATA_NAME in manifest.files
    with step("quantize"), tempfile.TemporaryDirectory(prefix=".prepare-", dir=out.parent) as scratch:
        prepare(source / manifest.model_file, Path(scratch), external)
        quantize_graph(Path(scratch) / mf.MODEL_NAME, out / mf.MODEL_NAME, external)
        prepared = onnx.load(str(Path(scratch) / mf.MODEL_NAME), load_external_data=False)
    with step("check"):
        quantized = onnx.load(str(out / mf.MODEL_NAME), load_external_data=False)
        check_functions_untouched(onnx.load(str(source / manifest.model_file), load_external_data=False), quantized)
        counts = _quantized_counts(prepared, quantized)
        _check(out, manifest.custom_nodes)
    with step("gate"):
        if oracle is None:
            verification = not_verified("int8")
        else:
            shapes = evaluation_shapes(spec, config, manifest.head, batch, seq)
            verification = verify_int8(out, spec, config, manifest.head, oracle, oracle_name, shapes)
    shutil.copyfile(mf.file_path(source, manifest, manifest.config_file), out / mf.CONFIG_NAME)
    carried = [*manifest.text.files, manifest.text.generation_config]
    for name in sorted({n for n in carried if n is not None}):  # the tokenizer and generation defaults travel too
        target = resolve_inside(out, name, source=source / mf.MANIFEST_NAME, key="'text' file")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(mf.file_path(source, manifest, name), target)
    quantization = mf.Quantization(
        method=METHOD, tool=TOOL, tool_version=onnxruntime.__version__, weights=WEIGHTS, activations=ACTIVATIONS,
        quantized=counts, kept_fp32=KEPT_FP32, source_sha256=manifest.files[manifest.model_file])
    result = dataclasses.replace(
        manifest, precision="int8", verification=verification, files=mf.hash_files(out), quantization=quantization,
        producer={**manifest.producer, "onnxruntime": onnxruntime.__version__})
    mf.write_manifest(result, out)
    return result


def quantize_export(export_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                    checkpoint_dir: str | os.PathLike | None = None, overwrite: bool = False,
                    progress: bool = True) -> mf.Manifest:
    """``kiln quantize``: the fp32 export ``export_dir`` -> an int8 export in ``out_dir``, judged against the
    checkpoint's reference model when ``checkpoint_dir`` is given, else against the fp32 export in ONNX Runtime."""
    from tensorkiln.reference.registry import get_architecture

    from .exporter import _Progress

    source, out = Path(export_dir), Path(out_dir)
    manifest = mf.read_manifest(source)
    if manifest.precision != "fp32":
        raise ExportError(f"{str(source)!r} is not an fp32 export (its precision is {manifest.precision}); quantize "
                          "the fp32 export of the model")
    refuse_overlap(out, "OUT", source, "the fp32 export", ExportError)
    if checkpoint_dir is not None:
        refuse_overlap(out, "OUT", checkpoint_dir, "the checkpoint", ExportError)
    spec, arch = get_spec(manifest.model_type), get_architecture(manifest.model_type)
    hf_config = read_json_object(mf.file_path(source, manifest, manifest.config_file), error=mf.ManifestError,
                                 what="the export's config")
    oracle, oracle_name = _oracle(source, manifest, hf_config, checkpoint_dir, spec)
    config = arch.config_class.from_hf_config(hf_config)
    with staged_folder(out, overwrite=overwrite, owned=mf.ownership_problem, error=ExportError, what="OUT") as tmp:
        bar = _Progress(progress, f"kiln quantize {manifest.hf_class}", total=len(STEPS))
        try:
            result = quantize_into(source, manifest, tmp, spec, config, oracle, oracle_name, step=bar.step)
        finally:
            bar.close()
    return result


def _oracle(source: Path, manifest: mf.Manifest, hf_config: dict, checkpoint_dir, spec: ExportSpec
            ) -> tuple[Oracle | None, str]:
    if checkpoint_dir is None:
        if manifest.verification.status != mf.PASSED:
            raise ExportError(f"{str(source)!r} was written with --no-verify, so it cannot stand in for the fp32 "
                              "reference: pass --checkpoint with the checkpoint it was exported from")
        return export_oracle(source, manifest), "the fp32 export in ONNX Runtime (CPU)"
    from tensorkiln.reference.checkpoint import from_pretrained

    from .parity import check_pair

    _, _, head = check_pair(Path(checkpoint_dir), manifest, hf_config)
    model = from_pretrained(checkpoint_dir, head).eval()
    return reference_oracle(model, spec, head), "the reference model (PyTorch fp32)"


def export_int8(tmp: Path, checkpoint_dir: Path, arch, head: str, spec: ExportSpec, options, progress) -> mf.Manifest:
    """``kiln export --precision int8``: the fp32 export (verified as usual) in a scratch folder beside ``tmp``, then
    :func:`quantize_into` ``tmp``, judged against the checkpoint's reference model."""
    from tensorkiln.reference.checkpoint import from_pretrained

    from .exporter import _export_into

    fp32 = Path(tempfile.mkdtemp(prefix=".fp32-", dir=tmp.parent))
    try:
        manifest = _export_into(fp32, checkpoint_dir, arch, head, spec, dataclasses.replace(options, precision="fp32"),
                                progress)
        model = from_pretrained(checkpoint_dir, head).eval()
        oracle = reference_oracle(model, spec, head) if options.verify else None
        return quantize_into(fp32, manifest, tmp, spec, model.config, oracle, "the reference model (PyTorch fp32)",
                             batch=options.batch, seq=options.seq, step=progress.step)
    finally:
        shutil.rmtree(fp32, ignore_errors=True)


__all__ = ["ACTIVATIONS", "KEPT_FP32", "METHOD", "QUANTIZED_OPS", "TOOL", "WEIGHTS", "check_functions_untouched",
           "evaluation_shapes", "export_int8", "export_oracle", "prepare", "quantize_export", "quantize_graph",
           "quantize_into", "reference_oracle"]
