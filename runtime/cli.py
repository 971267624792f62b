"""The ``kiln`` command line.

This module imports no torch: commands that need the reference models import them when they run, and say which
extra to install when torch is absent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

INSTALL_HINT = "this command needs the reference models: pip install 'tensorkiln[export]'"


class CliError(Exception):
    """An error to print as one line, with exit status 2."""


def _need_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise CliError(INSTALL_HINT) from None


def cmd_presets(args: argparse.Namespace) -> int:
    from tensorkiln.reference.presets import get_preset, preset_names

    print("| preset | model_type | source | description |")
    print("|---|---|---|---|")
    for name in preset_names():
        p = get_preset(name)
        print(f"| {name} | {p.model_type} | {p.source} | {p.description} |")
    return 0


def cmd_init_checkpoint(args: argparse.Namespace) -> int:
    _need_torch()
    from tensorkiln.reference.presets import init_checkpoint

    try:
        out = init_checkpoint(args.preset, args.out_dir, seed=args.seed, head=args.head, overwrite=args.overwrite)
    except (KeyError, FileExistsError) as exc:
        raise CliError(str(exc).strip("\"'")) from None
    print(f"wrote {args.preset} (seed {args.seed}) to {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    _need_torch()
    import torch

    from tensorkiln.export.demo import format_table, run_demo, tiny_presets
    from tensorkiln.reference.presets import DEMO_PRESETS

    if args.threads:
        torch.set_num_threads(args.threads)
    presets = tiny_presets() if args.size == "tiny" else DEMO_PRESETS
    rows = run_demo(Path(args.out), presets, batch=args.batch, seq=args.seq, threads=args.threads or None)
    print(format_table(rows, args.batch))
    print(f"\ncheckpoints, exports and parity reports (parity.md, parity.json) are under {args.out}/")
    return 0 if all(r.ok for r in rows) else 1


def cmd_export(args: argparse.Namespace) -> int:
    _need_torch()
    from tensorkiln.export.exporter import ExportOptions, export

    options = ExportOptions(task=args.task, opset=args.opset, precision=args.precision, batch=args.batch,
                            seq=args.seq, overwrite=args.overwrite, progress=not args.no_progress)
    manifest = export(args.checkpoint_dir, args.out_dir, options)
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


def cmd_triton(args: argparse.Namespace) -> int:
    from tensorkiln.runtime.triton import TritonError, write_repository

    try:
        target = write_repository(args.export_dir, args.repo_dir, name=args.name, max_batch_size=args.max_batch_size,
                                  instances=args.instances, kind="KIND_GPU" if args.gpu else "KIND_CPU",
                                  overwrite=args.overwrite)
    except TritonError as exc:
        raise CliError(str(exc)) from None
    print(f"wrote the Triton model {target.name!r} to {target} (serve with: tritonserver --model-repository "
          f"{target.parent})")
    return 0


def cmd_parity(args: argparse.Namespace) -> int:
    _need_torch()
    from tensorkiln.runtime.parity import ParityUsageError, check_report_dir, run_parity, to_markdown, write_report

    try:
        folder = check_report_dir(args.report, args.export_dir)
        report = run_parity(args.checkpoint_dir, args.export_dir, shapes=args.shapes, seed=args.seed)
    except ParityUsageError as exc:
        raise CliError(str(exc)) from None
    write_report(report, folder)
    print(to_markdown(report), end="")
    print(f"kiln parity: {report.status}; report in {folder}", file=sys.stderr)
    return 0 if report.ok else 1


def cmd_bench(args: argparse.Namespace) -> int:
    _need_torch()
    from tensorkiln.runtime.bench import BenchError, BenchOptions, format_markdown, run_bench

    given = {"threads": args.threads, "work": Path(args.work), "json_path": args.json and Path(args.json),
             "skip": frozenset(args.skip), "ort_fusions": args.ort_fusions, "progress": not args.no_progress,
             "presets": tuple(args.presets or ()), "models": tuple(args.models or ()),
             "batches": args.batch and tuple(args.batch), "seqs": args.seq and tuple(args.seq),
             "repeats": args.repeats, "warmup": args.warmup, "prompt": args.prompt, "new_tokens": args.new_tokens,
             "mra_preset": args.mra_preset, "sgemm_size": args.sgemm_size}
    given = {k: v for k, v in given.items() if v is not None}  # unset options keep the (quick) defaults
    options = BenchOptions.quick_run(**given) if args.quick else BenchOptions(**given)
    if options.threads < 1 or options.repeats < 1 or options.warmup < 1:
        raise CliError("--threads, --repeats and --warmup must be at least 1")
    try:
        result = run_bench(options)
    except BenchError as exc:
        raise CliError(str(exc)) from None
    print(format_markdown(result))
    print(f"kiln bench: results in {result['json_path']} ({result['elapsed_s']:.0f} s)", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiln", description="tensorkiln: reference models, export and runtime")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("presets", help="list the shipped checkpoint configs")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("init-checkpoint", help="write a random-weight HF checkpoint folder from a preset")
    p.add_argument("preset", help="a preset name (see `kiln presets`)")
    p.add_argument("out_dir", help="the folder to write (config.json + model.safetensors)")
    p.add_argument("--seed", type=int, default=0, help="random seed for the weights (default 0)")
    p.add_argument("--head", default=None, help="head to build instead of the preset's, e.g. ForSequenceClassification")
    p.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
    p.set_defaults(func=cmd_init_checkpoint)

    p = sub.add_parser("demo", help="the main job: build the five demo checkpoints, export them, check parity, "
                                    "run them with the runtime, print one summary table")
    p.add_argument("--out", default="kiln-demo", help="where the demo checkpoints live (reused if present)")
    p.add_argument("--size", choices=("base", "tiny"), default="base", help="published base configs or tiny ones")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq", type=int, default=128,
                   help="sequence length of the timed run (clipped to each model's maximum)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch and ORT (default: their choice)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("export", help="export a checkpoint to ONNX (model.onnx + manifest.json), checked with ORT")
    p.add_argument("checkpoint_dir", help="an HF checkpoint folder (config.json + weights)")
    p.add_argument("out_dir", help="the folder to write; it must not exist (or pass --overwrite)")
    p.add_argument("--task", default=None,
                   help="the head to export, e.g. ForSequenceClassification or text-classification (default: the "
                        "one config.json names)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                   help="fp16 exports half weights and activations (ids stay int64)")
    p.add_argument("--batch", type=int, default=2, help="batch size of the export-time check (a hint)")
    p.add_argument("--seq", type=int, default=16, help="sequence length of the export-time check (a hint)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=cmd_export)

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

    p = sub.add_parser("parity", help="check an export through the runtime against its checkpoint's reference model")
    p.add_argument("checkpoint_dir", help="the HF checkpoint folder the export was made from")
    p.add_argument("export_dir", help="a folder written by `kiln export`")
    p.add_argument("--report", default=None,
                   help="where to write parity.json and parity.md (default: EXPORT_DIR/../<name>-parity)")
    p.add_argument("--shapes", type=int, default=None, help="check only the first N input shapes (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    p.set_defaults(func=cmd_parity)

    p = sub.add_parser("bench", help="latency, throughput, FLOP/s vs the sgemm peak, generation and memory: the "
                                     "reference, ONNX Runtime and HF eager on this machine")
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
    p.add_argument("--skip", nargs="+", default=[], choices=("hf", "memory", "generation", "mra-dense"),
                   help="sections to leave out")
    p.add_argument("--ort-fusions", action="store_true",
                   help="also time the export after ONNX Runtime's transformer optimizer (onnxruntime.transformers)")
    p.add_argument("--work", default="kiln-bench", help="where checkpoints and exports are built (default kiln-bench)")
    p.add_argument("--json", default=None, help="where to write the results (default WORK/bench.json)")
    p.add_argument("--quick", action="store_true", help="tiny presets at one shape: a check that everything runs")
    p.add_argument("--no-progress", action="store_true", help="no progress messages on stderr")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as exc:
        print(f"kiln: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the reference's own errors (ConfigError, CheckpointError) are meant for people
        name = type(exc).__name__
        if name in {"ConfigError", "CheckpointError", "ExportError", "ManifestError", "RuntimeInputError",
                    "BackendUnavailableError"}:
            print(f"kiln: error: {exc}", file=sys.stderr)
            return 2
        if name == "VerificationError":  # the export ran but failed its check: nothing was written
            print(f"kiln: error: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
