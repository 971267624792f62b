"""``kiln export``: a reference checkpoint -> ``model.onnx`` + ``manifest.json`` + ``config.json``, checked.

Steps (shown as a progress bar on stderr): load the reference model; trace it with ``torch.export`` (dynamic
batch, sequence, choice and past axes, from the architecture's spec in ``export/specs.py``); translate to ONNX
(``torch.onnx.export(dynamo=True)`` with the custom-op translation table, so MRA attention and the Mega EMA become
one ``tensorkiln`` node each, backed by a model-local function); optimise and name every input, output and dim
after the spec; save (weights as external data beyond 2 GB) and run ``onnx.checker`` with ``full_check``; verify:
run ONNX Runtime (CPU) at two different shapes and judge it against the reference with the one tolerance policy
(``export/verify.py``); write the manifest. An export that cannot be verified here fails unless ``--no-verify``
asks for it unchecked, which the manifest records.

Everything is written to a staging folder beside OUT_DIR and renamed at the end (``runtime/atomic.py``): a failure
at any step, the verification included, leaves nothing behind. OUT_DIR may not be, be inside or contain the
checkpoint, and ``--overwrite`` replaces only an earlier export (a folder holding our manifest and its files).

Precision ``fp16`` exports the reference model cast to half (weights and activations; the reference keeps its own
fp32 islands: GPT-NeoX's softmax and rotary tables, the Mega EMA, and ONNX LayerNormalization accumulates in fp32
by its ``stash_type``). Inputs ids and masks stay int64. Its check compares with the fp32 reference and applies the
reduced-precision rule: ORT's max abs error <= 2x PyTorch's own fp16 error on the same inputs.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import os
import shutil
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import onnxscript
import torch
from torch import nn

from tensorkiln.runtime import manifest as mf
from tensorkiln.runtime import tolerances
from tensorkiln.runtime.atomic import staged_folder
from tensorkiln.runtime.paths import refuse_overlap
from tensorkiln.runtime.version import package_version

from . import quantize
from .specs import HEAD_TASKS, ExportError, ExportSpec, TensorSpec, get_spec, resolve_task
from .text_side import copy_text_side
from .verify import VerificationError, not_verified, verify

DEFAULT_OPSET = 18
#: The dynamo exporter emits opset 18 and newer (LayerNormalization needs 17).
MIN_OPSET = 18
CUSTOM_DOMAIN = "tensorkiln"
#: protobuf's limit: bigger models keep their weights in EXTERNAL_DATA_NAME.
PROTOBUF_LIMIT = 2 * 1024**3
__all__ = ["ExportOptions", "VerificationError", "check_ranges", "export"]

STEPS = ("load", "trace", "export", "optimize", "check", "verify", "write")


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    task: str | None = None
    opset: int = DEFAULT_OPSET
    precision: str = "fp32"
    batch: int = 2
    seq: int = 16
    overwrite: bool = False
    progress: bool = True
    #: False writes the export without the ONNX Runtime check (``--no-verify``); the manifest records it.
    verify: bool = True
    #: None: external data only when the weights pass the protobuf limit; True forces it.
    external_data: bool | None = None
    #: ``--atol``: an extra max abs bound for the check, recorded in the manifest; it can only tighten the policy.
    atol: float | None = None


# ----------------------------------------------------------------------------------------------- progress


class _Progress:
    """tqdm over the export steps, on stderr; silent when disabled."""

    def __init__(self, enabled: bool, title: str, total: int = len(STEPS)):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=title, file=sys.stderr, unit="step", leave=True,
                            bar_format="{desc}{bar:20} {n_fmt}/{total_fmt} [{elapsed}]")
        self.title = title

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        if self.bar is not None:
            self.bar.set_description(f"{self.title} ({name})")
        yield
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's own chatter (optional torchvision ops, deprecations) is noise for a user of this command."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


# ----------------------------------------------------------------------------------------------- tracing


class _Graph(nn.Module):
    """The traced function: one dict of named tensors (the spec's inputs, in order) -> outputs in the spec's
    order. A dict rather than ``*args``: torch.export's guards cannot address varargs, and the names keep dots."""

    def __init__(self, model: nn.Module, spec: ExportSpec, head: str):
        super().__init__()
        self.model = model
        self.spec = spec
        self.head = head

    def forward(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return tuple(self.spec.call(self.model, self.head, inputs).values())


def _dynamic_shapes(specs: Sequence[TensorSpec]) -> dict[str, dict[int, Any]]:
    dynamic = torch.export.Dim.DYNAMIC
    return {spec.name: {axis: dynamic for axis, dim in enumerate(spec.dims) if isinstance(dim, str)}
            for spec in specs}


def _trace(graph: _Graph, example: Mapping[str, torch.Tensor], inputs: Sequence[TensorSpec]):
    args = ({spec.name: example[spec.name] for spec in inputs},)
    try:
        # Size-oblivious tracing, as torch.onnx's own capture does: a dim that is 0 or 1 at run time (an empty
        # past at prefill, one new token per decoding step) must take the same graph as the traced sizes.
        with torch.fx.experimental._config.patch(backed_size_oblivious=True):
            return torch.export.export(graph, args, dynamic_shapes=(_dynamic_shapes(inputs),), strict=False)
    except Exception as exc:  # torch's message says which line and which guard; keep it, say what failed
        traced = type(getattr(graph, "model", graph)).__name__
        raise ExportError(f"torch.export could not trace {traced}: {exc}") from exc


def check_ranges(exported, inputs: Sequence[TensorSpec], max_length: int) -> None:
    """Refuse a trace whose dynamic dims torch.export narrowed: a Python branch on a length (``if L > chunk``)
    keeps one side and records the range it is valid for. ONNX keeps no such range, so that graph would give
    silently wrong outputs elsewhere. Sequence dims must reach ``max_length``; batch and choices are unbounded."""
    import sympy
    from torch.utils._sympy.numbers import int_oo

    ranges = exported.range_constraints
    placeholders = {n.name: n for n in exported.graph.nodes if n.op == "placeholder"}
    user_inputs = exported.graph_signature.user_inputs
    problems = []
    for spec, name in zip(inputs, user_inputs):
        value = placeholders[name].meta.get("val")
        for axis, dim in enumerate(spec.dims):
            if not isinstance(dim, str) or value is None:
                continue
            size = value.shape[axis]
            expr = size.node.expr if isinstance(size, torch.SymInt) else sympy.Integer(size)
            if not expr.free_symbols:
                problems.append(f"{spec.name} axis {axis} ({dim}) was fixed to {expr}")
                continue
            for symbol in expr.free_symbols:
                bounds = ranges.get(symbol)
                if bounds is None:
                    continue
                needed = (max_length - 1 if dim == mf.PAST else max_length) if "sequence" in dim else None
                unbounded = bounds.upper in (int_oo, sympy.oo)
                upper_ok = unbounded or (needed is not None and int(bounds.upper) >= needed)
                if not upper_ok or bounds.lower > (0 if dim == mf.PAST else 1):
                    problems.append(f"{spec.name} axis {axis} ({dim}) only holds in [{bounds.lower}, {bounds.upper}]")
    if problems:
        raise ExportError(
            "torch.export specialised the graph to part of a dynamic range (a Python branch on a length or batch "
            "in the model), so the ONNX graph would be wrong elsewhere: " + "; ".join(sorted(set(problems)))
            + ". Make that branch shape-independent in the reference model."
        )


def _translation_table() -> dict:
    from .custom_ops import TRANSLATION_TABLE

    return dict(TRANSLATION_TABLE)


def _to_onnx(exported, args: tuple[dict[str, torch.Tensor]], opset: int):
    return torch.onnx.export(exported, args, dynamo=True, opset_version=opset, optimize=False, verbose=False,
                             custom_translation_table=_translation_table() or None)


# ----------------------------------------------------------------------------------------------- naming the graph

def _dtype_name(spec: TensorSpec, precision: str) -> str:
    if spec.dtype != "float":
        return spec.dtype
    return "float16" if precision == "fp16" else "float32"


def _name_graph(model, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> None:
    """Give the graph's inputs and outputs the spec's HF names and symbolic dims; refuse specialised dims."""
    import onnx_ir as ir

    for kind, values, specs in (("input", model.graph.inputs, inputs), ("output", model.graph.outputs, outputs)):
        if len(values) != len(specs):
            raise ExportError(f"the graph has {len(values)} {kind}s, the spec {len(specs)}: "
                              f"{[s.name for s in specs]}")
        for value, spec in zip(values, specs):
            dims = list(value.shape) if value.shape is not None else None
            if dims is not None:
                if len(dims) != len(spec.dims):
                    raise ExportError(f"{kind} {spec.name!r} has rank {len(dims)} in the graph, {len(spec.dims)} in "
                                      "the spec")
                for axis, (got, want) in enumerate(zip(dims, spec.dims)):
                    if isinstance(want, str) and isinstance(got, int):
                        raise ExportError(f"{kind} {spec.name!r} axis {axis} ({want}) was fixed to {got} while "
                                          "tracing: the model specialised a dim that must stay dynamic")
                    if isinstance(want, int) and isinstance(got, int) and got != want:
                        raise ExportError(f"{kind} {spec.name!r} axis {axis} is {got} in the graph, {want} in the "
                                          "spec")
            value.name = spec.name
            value.shape = ir.Shape([d if isinstance(d, int) else ir.SymbolicDim(d) for d in spec.dims])


def _custom_nodes(model) -> tuple[mf.CustomNode, ...]:
    from onnx_ir.traversal import RecursiveGraphIterator

    counts: dict[tuple[str, str], int] = {}
    for node in RecursiveGraphIterator(model.graph):
        if node.domain not in ("", "ai.onnx", "pkg.onnxscript.torch_lib.common"):
            key = (node.domain, node.op_type)
            counts[key] = counts.get(key, 0) + 1
    return tuple(mf.CustomNode(domain=d, op_type=o, count=c) for (d, o), c in sorted(counts.items()))


def _save(model, folder: Path, external_data: bool | None) -> None:
    import onnx_ir as ir

    size = sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)
    path = folder / mf.MODEL_NAME
    if external_data or (external_data is None and size > PROTOBUF_LIMIT):
        ir.save(model, path, external_data=mf.EXTERNAL_DATA_NAME)
    else:
        ir.save(model, path)


def _check(folder: Path, custom_nodes: Sequence[mf.CustomNode]) -> None:
    import onnx

    path = folder / mf.MODEL_NAME
    try:
        # A path (not a proto) so that external data and models over 2 GB are checked too.
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise ExportError(f"onnx.checker rejected the exported graph: {exc}") from exc
    if any(node.domain == CUSTOM_DOMAIN for node in custom_nodes):
        from .custom_ops import check_custom_nodes

        try:  # each custom node against the contract (attributes, inputs) and its model-local function
            check_custom_nodes(onnx.load(str(path), load_external_data=False))
        except ValueError as exc:
            raise ExportError(str(exc)) from exc


# ----------------------------------------------------------------------------------------------- the export


def _validate(options: ExportOptions) -> None:
    import onnx

    if options.precision not in mf.PRECISIONS:
        raise ExportError(f"precision must be one of {', '.join(mf.PRECISIONS)}, got {options.precision!r}")
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= options.opset <= newest:
        raise ExportError(f"opset must be between {MIN_OPSET} and {newest} (this onnx's newest), got {options.opset}")
    if options.batch < 1 or options.seq < 1:
        raise ExportError(f"--batch and --seq must be at least 1, got {options.batch} and {options.seq}")
    if options.atol is not None:
        problem = tolerances.atol_problem(options.precision, options.atol)
        if problem:
            raise ExportError(problem)
        if not options.verify:
            raise ExportError("--atol bounds the export check, which --no-verify skips: pass one or the other")


def _resolve(checkpoint_dir: Path, task: str | None):
    from tensorkiln.reference.checkpoint import read_config, resolve
    from tensorkiln.reference.config import ConfigError
    from tensorkiln.reference.registry import get_architecture

    config = read_config(checkpoint_dir)
    arch = get_architecture(config["model_type"])
    try:
        arch, head = resolve(config, resolve_task(task))
    except ConfigError as exc:
        if task is None:
            raise
        tasks = ", ".join(HEAD_TASKS[h] for h in arch.heads if h in HEAD_TASKS)
        raise ExportError(f"--task {task!r}: {exc}; or one of the tasks {tasks}") from None
    spec = get_spec(arch.model_type)
    if head not in spec.heads:
        raise ExportError(f"{arch.model_type} head {head!r} has no export spec; specs: {', '.join(spec.heads)}")
    return arch, head, spec


def export(checkpoint_dir: str | os.PathLike, out_dir: str | os.PathLike, options: ExportOptions | None = None,
           **kwargs: Any) -> mf.Manifest:
    """Export a checkpoint folder to ``out_dir`` (model.onnx, manifest.json, config.json); return the manifest.

    ``kwargs`` are :class:`ExportOptions` fields. Raises ExportError (bad request), VerificationError (tolerance),
    and the reference's ConfigError / CheckpointError (bad checkpoint); on any error nothing is written. ``out_dir``
    may not overlap the checkpoint, and ``overwrite`` replaces only an earlier export (runtime/atomic.py).
    """
    options = dataclasses.replace(options or ExportOptions(), **kwargs)
    _validate(options)
    checkpoint_dir, out = Path(checkpoint_dir), Path(out_dir)
    arch, head, spec = _resolve(checkpoint_dir, options.task)
    refuse_overlap(out, "OUT_DIR", checkpoint_dir, "the checkpoint", ExportError)
    int8 = options.precision == "int8"
    with staged_folder(out, overwrite=options.overwrite, owned=mf.ownership_problem, error=ExportError,
                       what="OUT_DIR") as tmp:
        progress = _Progress(options.progress, f"kiln export {arch.hf_class_name(head)}",
                             len(STEPS) + (len(quantize.STEPS) if int8 else 0))
        try:
            if int8:  # the fp32 export, then ONNX Runtime's quantization of it (export/quantize.py)
                manifest = quantize.export_int8(tmp, checkpoint_dir, arch, head, spec, options, progress)
            else:
                manifest = _export_into(tmp, checkpoint_dir, arch, head, spec, options, progress)
        finally:
            progress.close()
    return manifest


def _export_into(tmp: Path, checkpoint_dir: Path, arch, head: str, spec: ExportSpec, options: ExportOptions,
                 progress: _Progress) -> mf.Manifest:
    from tensorkiln.reference.checkpoint import CONFIG_NAME, from_pretrained
    from tensorkiln.reference.weights import check_finite

    precision = options.precision
    with progress.step("load"):
        reference = from_pretrained(checkpoint_dir, head)
        config = reference.config
        half = copy.deepcopy(reference).half().eval() if precision == "fp16" else None
        check_finite(reference, checkpoint_dir, half)
        model = half if half is not None else reference
        rules = spec.length_rules(config)
        if options.seq > rules.max_length:
            raise ExportError(f"--seq {options.seq} exceeds the model's max length {rules.max_length}")
        inputs, outputs = spec.inputs(config, head), spec.outputs(config, head)
        dtype = torch.float16 if precision == "fp16" else torch.float32
        example = spec.dummy_inputs(config, head, spec.trace_shape(config, head), dtype=dtype)

    with progress.step("trace"), _quiet():
        exported = _trace(_Graph(model, spec, head), example, inputs)
        check_ranges(exported, inputs, rules.max_length)

    with progress.step("export"), _quiet():
        try:
            program = _to_onnx(exported, ({s.name: example[s.name] for s in inputs},), options.opset)
        except Exception as exc:
            raise ExportError(f"torch.onnx could not translate {arch.hf_class_name(head)}: {exc}") from exc

    with progress.step("optimize"), _quiet():
        onnx_model = program.model
        if any(node.domain == CUSTOM_DOMAIN for node in _custom_nodes(onnx_model)):
            from .custom_ops import add_local_functions

            add_local_functions(onnx_model)  # each tensorkiln node's standard-ops body, for runtimes without plugins
        # onnxscript's optimizer as torch.onnx runs it, but keeping local functions: inlining would replace each
        # custom node by its body, and TensorRT's plugins match the nodes.
        onnxscript.optimizer.optimize_ir(onnx_model, inline=False)
        _name_graph(onnx_model, inputs, outputs)
        onnx_model.producer_name = "tensorkiln"
        onnx_model.doc_string = f"{arch.hf_class_name(head)} exported by kiln export ({precision})"
        onnx_model.metadata_props.update({"model_type": arch.model_type, "head": head, "precision": precision,
                                          "manifest": mf.MANIFEST_NAME})
        custom_nodes = _custom_nodes(onnx_model)

    with progress.step("check"):
        _save(onnx_model, tmp, options.external_data)
        _check(tmp, custom_nodes)

    with progress.step("verify"):
        shapes = spec.check_shapes(config, head, options.batch, options.seq)
        if options.verify:
            verification = verify(tmp, spec, head, reference, half, shapes, precision, options.atol)
        else:
            verification = not_verified(precision)

    with progress.step("write"):
        shutil.copyfile(checkpoint_dir / CONFIG_NAME, tmp / mf.CONFIG_NAME)
        text = copy_text_side(checkpoint_dir, tmp, config.to_hf_dict())
        manifest = mf.Manifest(
            model_type=arch.model_type,
            task=HEAD_TASKS[head] + ("-with-past" if spec.uses_cache(config, head) else ""),
            head=head,
            hf_class=arch.hf_class_name(head),
            opset=options.opset,
            precision=precision,
            inputs=tuple(mf.TensorInfo(s.name, _dtype_name(s, precision), s.dims) for s in inputs),
            outputs=tuple(mf.TensorInfo(s.name, _dtype_name(s, precision), s.dims, s.token_axis) for s in outputs),
            length_rules=rules,
            custom_nodes=custom_nodes,
            cache=spec.cache_layout(config, head),
            verification=verification,
            files=mf.hash_files(tmp),
            producer=_producer(),
            text=text,
        )
        mf.write_manifest(manifest, tmp)
    return manifest


def _producer() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {"tensorkiln": package_version(), "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__}
