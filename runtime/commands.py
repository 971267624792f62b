"""The ``kiln`` commands that need only the runtime (numpy + onnxruntime): ``info`` and ``triton``.

The ``kiln`` program itself is assembled in ``export/cli.py``, the top layer, which adds the commands that need torch;
each command here registers its arguments with :func:`add_commands` and imports nothing beyond the runtime, so it
works on the runtime-only install.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import manifest as mf


def cmd_info(args: argparse.Namespace) -> int:
    """Print what an export is and how to drive it, from its manifest (files checked unless --no-check)."""
    manifest = mf.read_manifest(args.export_dir, check_files=not args.no_check)
    print(describe_export(manifest, Path(args.export_dir)))
    return 0


def describe_export(manifest: mf.Manifest, folder: Path) -> str:
    """A markdown summary of an export: the model, its tensors, length rules, custom nodes and verification."""
    rules = manifest.length_rules
    lines = [f"# {manifest.hf_class} ({manifest.task}, {manifest.precision}, opset {manifest.opset})", "",
             f"- folder: `{folder}`", f"- model type: {manifest.model_type}, head {manifest.head}",
             f"- longest sequence: {rules.max_length} tokens"
             + (f"; the graph's length is fixed at {rules.fixed_length}" if rules.fixed_length else "")]
    if manifest.custom_nodes:
        nodes = ", ".join(f"{n.domain}::{n.op_type} x{n.count}" for n in manifest.custom_nodes)
        lines.append(f"- custom nodes: {nodes}")
    if manifest.cache is not None:
        lines.append(f"- cache: {len(manifest.cache.entries)} tensors fed back each step (generation)")
    quantization = manifest.quantization
    if quantization is not None:
        counts = ", ".join(f"{op} x{n}" for op, n in quantization.quantized.items())
        lines.append(f"- int8: {quantization.method} quantization by {quantization.tool} {quantization.tool_version} "
                     f"({counts}; weights {quantization.weights}; activations {quantization.activations}); fp32: "
                     + "; ".join(quantization.kept_fp32))
    verification = manifest.verification
    lines.append(f"- verification: {verification.status}" + (f" ({verification.reason})" if verification.reason
                                                              else f" ({verification.rule})")
                 + (f", against {verification.oracle}" if verification.oracle else ""))
    lines += ["", "| tensor | kind | dtype | dims |", "|---|---|---|---|"]
    for kind, tensors in (("input", manifest.inputs), ("output", manifest.outputs)):
        for tensor in tensors:
            dims = ", ".join(str(d) for d in tensor.dims)
            lines.append(f"| {tensor.name} | {kind} | {tensor.dtype} | ({dims}) |")
    return "\n".join(lines)


def cmd_triton(args: argparse.Namespace) -> int:
    from .triton import write_repository

    target = write_repository(args.export_dir, args.repo_dir, name=args.name, max_batch_size=args.max_batch_size,
                              instances=args.instances, kind="KIND_GPU" if args.gpu else "KIND_CPU",
                              overwrite=args.overwrite)
    print(f"wrote the Triton model {target.name!r} to {target} (serve with: tritonserver --model-repository "
          f"{target.parent})")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the runtime's commands on the ``kiln`` parser."""
    p = sub.add_parser("info", help="describe a `kiln export` folder: model, tensors, length rules, verification")
    p.add_argument("export_dir", help="a folder written by `kiln export`")
    p.add_argument("--no-check", action="store_true", help="skip checking every file's sha256 against the manifest")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("triton", help="write a Triton Inference Server model repository (ONNX Runtime backend)")
    p.add_argument("export_dir", help="a folder written by `kiln export`")
    p.add_argument("repo_dir", help="the model repository (created if absent); the model goes in REPO_DIR/NAME")
    p.add_argument("--name", default=None, help="model name (default: <model_type>_<head>)")
    p.add_argument("--max-batch-size", type=int, default=8,
                   help="Triton batching for encoders whose rows are independent (default 8; 0 turns it off)")
    p.add_argument("--instances", type=int, default=1, help="model instances per device (default 1)")
    p.add_argument("--gpu", action="store_true", help="place instances on GPUs (KIND_GPU) instead of CPUs")
    p.add_argument("--overwrite", action="store_true", help="replace REPO_DIR/NAME if it exists")
    p.set_defaults(func=cmd_triton)
