"""The ``kiln`` command line: the runtime's commands plus the ones that need torch.

This is the top of the stack, so it may reach every layer, but only when a command runs: at import it loads nothing
but the standard library and the torch-free runtime. On the runtime-only install (``pip install tensorkiln``) the
runtime's commands (``info``, ``triton``) and ``presets`` work, and the torch commands say which extra to install.

Every error meant for people derives from :class:`~tensorkiln.runtime.errors.KilnError`: it is printed as one line
and the process exits with the error's ``exit_code`` (2: bad input, 1: a check failed). Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import warnings
from pathlib import Path

from tensorkiln.runtime import commands as runtime_commands
from tensorkiln.runtime.errors import KilnError, KilnWarning, UsageError
from tensorkiln.runtime.version import package_version

#: What the torch commands import, and the extra that installs it.
EXPORT_EXTRA_MODULES = ("torch", "safetensors", "onnx", "onnxscript", "polygraphy", "tqdm")
INSTALL_HINT = "pip install 'tensorkiln[export]'"


class MissingExtraError(UsageError):
    """A command that needs an optional extra which is not installed."""


def require_export_extra(command: str) -> None:
    missing = [name for name in EXPORT_EXTRA_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtraError(f"`kiln {command}` needs the reference models and the exporter, which this install "
                                f"lacks ({', '.join(missing)} not found): {INSTALL_HINT}")


# ----------------------------------------------------------------------------------------------- torch-free commands


def cmd_presets(args: argparse.Namespace) -> int:
    from tensorkiln.reference.presets import get_preset, preset_names

    print("| preset | model_type | source | description |")
    print("|---|---|---|---|")
    for name in preset_names():
        p = get_preset(name)
        print(f"| {name} | {p.model_type} | {p.source} | {p.description} |")
    return 0


# ----------------------------------------------------------------------------------------------- torch commands


def cmd_init_checkpoint(args: argparse.Namespace) -> int:
    from tensorkiln.reference.presets import init_checkpoint

    out = init_checkpoint(args.preset, args.out_dir, seed=args.seed, head=args.head, overwrite=args.overwrite)
    print(f"wrote {args.preset} (seed {args.seed}) to {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import torch

    from tensorkiln.reference.presets import DEMO_PRESETS

    from .demo import format_table, run_demo, tiny_presets

    if args.threads:
        torch.set_num_threads(args.threads)
    presets = tiny_presets() if args.size == "tiny" else DEMO_PRESETS
    rows = run_demo(Path(args.out), presets, batch=args.batch, seq=args.seq, threads=args.threads or None)
    print(format_table(rows, args.batch))
    print(f"\ncheckpoints, exports and parity reports (parity.md, parity.json) are under {args.out}/")
    return 0 if all(r.ok for r in rows) else 1


def cmd_export(args: argparse.Namespace) -> int:
    from .exporter import ExportOptions, export

    options = ExportOptions(task=args.task, opset=args.opset, precision=args.precision, batch=args.batch,
                            seq=args.seq, overwrite=args.overwrite, progress=not args.no_progress,
                            verify=not args.no_verify, atol=args.atol)
    manifest = export(args.checkpoint_dir, args.out_dir, options)
    if manifest.precision == "int8":
        _print_int8(manifest, args.out_dir)
        return 0
    verification = manifest.verification
    worst: dict[str, float] = {}
    for check in verification.checks:
        for error in check.errors:
            name = "present.*" if error.output.startswith("present.") else error.output  # the cache, in one figure
            worst[name] = max(worst.get(name, 0.0), error.max_abs)
    print(f"wrote {manifest.hf_class} ({manifest.task}, {manifest.precision}, opset {manifest.opset}) "
          f"to {args.out_dir}")
    if verification.status == "passed":
        summary = ", ".join(f"{name} {value:.2g}" for name, value in worst.items())
        print(f"verified with ONNX Runtime at {len(verification.checks)} shapes ({verification.rule}): "
              f"max abs {summary}")
    else:
        print(f"kiln: warning: not verified: {verification.reason}", file=sys.stderr)
    return 0


def _print_int8(manifest, out_dir: str) -> None:
    """What an int8 export is and how its check went: the worst cosine and the top-1 agreement over the set."""
    quantization, verification = manifest.quantization, manifest.verification
    counts = ", ".join(f"{op} x{n}" for op, n in quantization.quantized.items())
    print(f"wrote {manifest.hf_class} ({manifest.task}, int8: {quantization.method} quantization by "
          f"{quantization.tool} {quantization.tool_version}, {counts}) to {out_dir}")
    if verification.status != "passed":
        print(f"kiln: warning: not verified: {verification.reason}", file=sys.stderr)
        return
    cosine: dict[str, float] = {}
    for check in verification.checks:
        for error in check.errors:
            name = "present.*" if error.output.startswith("present.") else error.output
            cosine[name] = min(cosine.get(name, 1.0), error.cosine)
    parts = [f"{name} cosine >= {value:.5f}" for name, value in cosine.items()]
    parts += [f"{name} top-1 {a['agree'] / a['total']:.2%} of {a['total']:.0f} tokens"
              for name, a in verification.agreement.items()]
    print(f"checked against {verification.oracle} at {len(verification.checks)} shapes: " + ", ".join(parts))


def cmd_quantize(args: argparse.Namespace) -> int:
    from .quantize import quantize_export

    manifest = quantize_export(args.export_dir, args.out_dir, checkpoint_dir=args.checkpoint,
                               overwrite=args.overwrite, progress=not args.no_progress)
    _print_int8(manifest, args.out_dir)
    return 0


def cmd_parity(args: argparse.Namespace) -> int:
    from .parity import check_report_dir, run_parity, to_markdown, write_report

    folder = check_report_dir(args.report, args.export_dir, args.checkpoint_dir)
    report = run_parity(args.checkpoint_dir, args.export_dir, shapes=args.shapes, seed=args.seed,
                        kernels=args.kernels)
    write_report(report, folder)
    print(to_markdown(report), end="")
    print(f"kiln parity: {report.status}; report in {folder}", file=sys.stderr)
    return 0 if report.ok else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import BenchOptions, format_markdown, run_bench

    given = {"threads": args.threads, "work": Path(args.work), "json_path": args.json and Path(args.json),
             "skip": frozenset(args.skip), "ort_fusions": args.ort_fusions, "progress": not args.no_progress,
             "presets": tuple(args.presets or ()), "models": tuple(args.models or ()),
             "batches": args.batch and tuple(args.batch), "seqs": args.seq and tuple(args.seq),
             "repeats": args.repeats, "warmup": args.warmup, "prompt": args.prompt, "new_tokens": args.new_tokens,
             "mra_preset": args.mra_preset, "sgemm_size": args.sgemm_size, "kernels": args.kernels}
    given = {k: v for k, v in given.items() if v is not None}  # unset options keep the (quick) defaults
    options = BenchOptions.quick_run(**given) if args.quick else BenchOptions(**given)
    if options.threads < 1 or options.repeats < 1 or options.warmup < 1:
        raise UsageError("--threads, --repeats and --warmup must be at least 1")
    result = run_bench(options)
    print(format_markdown(result))
    print(f"kiln bench: results in {result['json_path']} ({result['elapsed_s']:.0f} s)", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------------------------- the parser


def _torch_command(sub: argparse._SubParsersAction, name: str, func, **kwargs) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, **kwargs)
    parser.set_defaults(func=func, needs_export_extra=True)
    return parser


def _add_reference_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("presets", help="list the shipped checkpoint configs")
    p.set_defaults(func=cmd_presets)

    p = _torch_command(sub, "init-checkpoint", cmd_init_checkpoint,
                       help="write a random-weight HF checkpoint folder from a preset")
    p.add_argument("preset", help="a preset name (see `kiln presets`)")
    p.add_argument("out_dir", help="the folder to write (config.json + model.safetensors)")
    p.add_argument("--seed", type=int, default=0, help="random seed for the weights (default 0)")
    p.add_argument("--head", default=None, help="head to build instead of the preset's, e.g. ForSequenceClassification")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUT_DIR if it is a checkpoint init-checkpoint wrote; any other folder is refused")

    p = _torch_command(sub, "demo", cmd_demo, help="the main job: build the five demo checkpoints, export them, "
                                                   "check parity, run them with the runtime, print one summary table")
    p.add_argument("--out", default="kiln-demo", help="where the demo checkpoints live (reused if present)")
    p.add_argument("--size", choices=("base", "tiny"), default="base", help="published base configs or tiny ones")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq", type=int, default=128,
                   help="sequence length of the timed run (clipped to each model's maximum)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch and ORT (default: their choice)")


def _add_kernels_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kernels", choices=("auto", "native", "function"), default="auto",
                        help="how ONNX Runtime runs the custom nodes (MraAttention, MegaEma): native kernels of "
                             "libtensorkiln_ort.so (`kiln build-kernels`), their function bodies, or auto: native "
                             "where built (default)")


def _add_export_commands(sub: argparse._SubParsersAction) -> None:
    p = _torch_command(sub, "export", cmd_export,
                       help="export a checkpoint to ONNX (model.onnx + manifest.json), checked with ORT")
    p.add_argument("checkpoint_dir", help="an HF checkpoint folder (config.json + weights)")
    p.add_argument("out_dir", help="the folder to write; it must not exist (or pass --overwrite), nor overlap the "
                                   "checkpoint")
    p.add_argument("--task", default=None,
                   help="the head to export, e.g. ForSequenceClassification or text-classification (default: the "
                        "one config.json names)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.add_argument("--precision", "--dtype", dest="precision", choices=("fp32", "fp16", "int8"), default="fp32",
                   help="fp16 exports half weights and activations (ids stay int64); int8 quantizes the fp32 export "
                        "for CPUs with ONNX Runtime (see `kiln quantize`); --dtype is Optimum's spelling")
    p.add_argument("--batch", "--batch_size", "--batch-size", dest="batch", type=int, default=2,
                   help="batch size of the export-time check (a hint; --batch_size is Optimum's spelling)")
    p.add_argument("--seq", "--sequence_length", "--sequence-length", dest="seq", type=int, default=16,
                   help="sequence length of the export-time check (a hint; --sequence_length is Optimum's spelling)")
    p.add_argument("--atol", type=float, default=None,
                   help="also hold the export check to this max abs error (recorded in the manifest); it can only "
                        "tighten the tolerance policy (fp32: at most 1e-4)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUT_DIR if it is an earlier export (kept as OUT_DIR.kiln-old until the new one is in "
                        "place); any other folder is refused")
    p.add_argument("--no-verify", action="store_true",
                   help="write the export without the ONNX Runtime check (recorded in the manifest); by default an "
                        "export that cannot be checked here, e.g. fp16 without an fp16 kernel, fails")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    p = _torch_command(sub, "quantize", cmd_quantize,
                       help="an fp32 export -> an int8 export (ONNX Runtime dynamic quantization), checked by the int8 "
                            "rule before it is written")
    p.add_argument("export_dir", help="an fp32 folder written by `kiln export`")
    p.add_argument("out_dir", help="the folder to write; it must not exist (or pass --overwrite)")
    p.add_argument("--checkpoint", default=None,
                   help="the checkpoint the export was made from: judge against its PyTorch model (default: against "
                        "the fp32 export in ONNX Runtime)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    p = _torch_command(sub, "parity", cmd_parity,
                       help="check an export through the runtime against its checkpoint's reference model")
    p.add_argument("checkpoint_dir", help="the HF checkpoint folder the export was made from")
    p.add_argument("export_dir", help="a folder written by `kiln export`")
    p.add_argument("--report", default=None,
                   help="where to write parity.json and parity.md (default: EXPORT_DIR/../<name>-parity)")
    p.add_argument("--shapes", type=int, default=None, help="check only the first N input shapes (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    _add_kernels_option(p)

    p = _torch_command(sub, "bench", cmd_bench, help="latency, throughput, FLOP/s vs the sgemm peak, generation and "
                                                     "memory: the reference, ONNX Runtime and HF eager on this machine")
    p.add_argument("--presets", nargs="+", default=None,
                   help="presets to build into --work and measure (default: the five base demo presets)")
    p.add_argument("--models", nargs="+", default=None, metavar="CKPT[:EXPORT]",
                   help="checkpoint folders, each with its `kiln export` folder (exported into --work if absent)")
    p.add_argument("--batch", nargs="+", type=int, default=None, help="batch sizes (default 1 8)")
    p.add_argument("--seq", nargs="+", type=int, default=None,
                   help="sequence lengths (default 128 512), clipped to each model's maximum")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads of torch and ORT (default 2)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per measurement; the median is kept (5)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs before timing (default 1)")
    p.add_argument("--prompt", type=int, default=None, help="generation prompt length (default 32)")
    p.add_argument("--new-tokens", type=int, default=None, help="generated tokens per run (default 32)")
    p.add_argument("--mra-preset", default=None, help="the MRA preset of the MRA-vs-dense section "
                                                      "(default mra-base-4096-8, at its full length)")
    p.add_argument("--sgemm-size", type=int, default=None, help="n of the n x n sgemm peak (default 4096)")
    p.add_argument("--skip", nargs="+", default=[],
                   choices=("hf", "memory", "generation", "mra-dense", "native", "int8"), help="sections to leave out")
    _add_kernels_option(p)
    p.add_argument("--ort-fusions", action="store_true",
                   help="also time the export after ONNX Runtime's transformer optimizer (onnxruntime.transformers)")
    p.add_argument("--work", default="kiln-bench", help="where checkpoints and exports are built (default kiln-bench)")
    p.add_argument("--json", default=None, help="where to write the results (default WORK/bench.json)")
    p.add_argument("--quick", action="store_true", help="tiny presets at one shape: a check that everything runs")
    p.add_argument("--no-progress", action="store_true", help="no progress messages on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiln", description="tensorkiln: reference models, ONNX export, runtime")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_reference_commands(sub)
    _add_export_commands(sub)
    runtime_commands.add_commands(sub)
    return parser


def _one_line_warnings(shown):
    """``warnings.showwarning`` that prints tensorkiln's own warnings as ``kiln: warning: ...`` lines."""

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, KilnWarning):
            print(f"kiln: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    return show


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("always", KilnWarning)
        warnings.showwarning = _one_line_warnings(warnings.showwarning)
        try:
            if getattr(args, "needs_export_extra", False):
                require_export_extra(args.command)
            return args.func(args)
        except KilnError as exc:
            print(f"kiln: error: {exc}", file=sys.stderr)
            return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
