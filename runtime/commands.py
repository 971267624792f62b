"""The ``kiln`` commands that need only the runtime (numpy + onnxruntime): ``info``, ``build-kernels``,
``build-runtime``, ``triton`` (which also needs Triton's protobuf schema, the extra ``tensorkiln[triton]``), and
``generate`` and ``run``, which also need HF's ``tokenizers`` (``pip install 'tensorkiln[text]'``) for their text.

The ``kiln`` program itself is assembled in ``export/cli.py``, the top layer, which adds the commands that need torch;
each command here registers its arguments with :func:`add_commands` and imports nothing beyond the runtime, so it
works on the runtime-only install.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from . import manifest as mf
from . import native
from .errors import KilnWarning, UsageError


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
        lines.append(f"- custom nodes run on (load's default, kernels='auto'): {native.auto_summary()}")
    if manifest.cache is not None:
        lines.append(f"- cache: {len(manifest.cache.entries)} tensors fed back each step (generation)")
    quantization = manifest.quantization
    if quantization is not None:
        counts = ", ".join(f"{op} x{n}" for op, n in quantization.quantized.items())
        lines.append(f"- int8: {quantization.method} quantization by {quantization.tool} {quantization.tool_version} "
                     f"({counts}; weights {quantization.weights}; activations {quantization.activations}); fp32: "
                     + "; ".join(quantization.kept_fp32))
    text = manifest.text
    lines.append(f"- tokenizer: {text.tokenizer}" if text.tokenizer else "- tokenizer: none (token ids only)")
    if text.generation_config:
        lines.append(f"- generation defaults: {text.generation_config}")
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


def _gpu_ids(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"--gpus takes device ids separated by commas (e.g. 0,1), got {text!r}") from None


def cmd_triton(args: argparse.Namespace) -> int:
    from .triton import write_repository
    from .triton_config import ServingOptions

    options = ServingOptions(
        backend=args.backend, max_batch_size=args.max_batch_size, max_queue_delay_us=args.max_queue_delay_us,
        instances=args.instances, kind="KIND_GPU" if args.gpu or args.kind == "gpu" else "KIND_CPU",
        gpus=_gpu_ids(args.gpus), accelerator=args.accelerator,
        trt_precision=args.trt_precision.upper() if args.trt_precision else None, trt_plugins=args.trt_plugins,
        trt_engine_cache=args.trt_engine_cache, threads=args.threads, max_generations=args.max_generations)
    target = write_repository(args.export_dir, args.repo_dir, name=args.name, overwrite=args.overwrite,
                              python_path=args.python_path, options=options)
    print(f"wrote the Triton model {target.name!r} ({args.backend} backend) to {target} (serve with: tritonserver "
          f"--model-repository {target.parent})")
    return 0


def _add_triton_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("triton", help="write a Triton Inference Server model repository (ONNX Runtime or Python "
                                      "backend)")
    p.add_argument("export_dir", help="a folder written by `kiln export`")
    p.add_argument("repo_dir", help="the model repository (created if absent); the model goes in REPO_DIR/NAME")
    p.add_argument("--name", default=None, help="model name (default: <model_type>_<head>)")
    p.add_argument("--backend", choices=("onnxruntime", "python"), default="onnxruntime",
                   help="onnxruntime: the ONNX file in Triton's ONNX Runtime backend (default); python: the "
                        "tensorkiln runtime in Triton's Python backend (causal LMs generate on the server)")
    p.add_argument("--max-batch-size", type=int, default=8,
                   help="Triton batching for encoders whose rows are independent (default 8; 0 turns it off)")
    p.add_argument("--max-queue-delay-us", type=int, default=0,
                   help="how long the dynamic batcher may hold a request to fill a batch (default 0)")
    p.add_argument("--instances", type=int, default=1, help="model instances per device (default 1)")
    p.add_argument("--kind", choices=("cpu", "gpu"), default="cpu", help="where instances run (default cpu)")
    p.add_argument("--gpu", action="store_true", help="same as --kind gpu")
    p.add_argument("--gpus", default=None, help="GPU ids for the instances, e.g. 0,1 (default: every GPU)")
    p.add_argument("--accelerator", choices=("tensorrt", "cuda"), default=None,
                   help="ONNX Runtime backend on GPUs: TensorRT or CUDA execution accelerator")
    p.add_argument("--trt-precision", choices=("fp32", "fp16"), default=None,
                   help="TensorRT precision (default: the export's)")
    p.add_argument("--trt-plugins", default=None,
                   help="path on the server of the self-registering plugin library "
                        "(libtensorkiln_plugins_autoreg.so), for ONNX Runtime's TensorRT provider to load")
    p.add_argument("--trt-engine-cache", default=None, help="folder on the server where TensorRT caches engines")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads per instance")
    p.add_argument("--max-generations", type=int, default=4,
                   help="python backend, causal LMs: generations one instance runs at once (default 4)")
    p.add_argument("--python-path", action="append", default=None, metavar="DIR",
                   help="python backend: a folder the server's Python puts first on sys.path to import tensorkiln, "
                        "numpy<2 and onnxruntime (repeatable; default: where this tensorkiln, numpy and "
                        "onnxruntime are installed)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace REPO_DIR/NAME if kiln triton wrote it; any other folder is refused")
    p.set_defaults(func=cmd_triton)


def cmd_build_kernels(args: argparse.Namespace) -> int:
    from .native_build import build_kernels

    path = build_kernels(cuda=args.cuda, ort_include=args.ort_include and Path(args.ort_include),
                         destination=args.out and Path(args.out), jobs=args.jobs,
                         log=lambda message: print(f"kiln build-kernels: {message}", flush=True))
    if args.out and Path(args.out).resolve() != native.default_library_path().resolve():
        print(f"load() finds it with {native.ENV_LIBRARY}={path}")
    return 0


def cmd_build_runtime(args: argparse.Namespace) -> int:
    from .runtime_build import build_runtime

    build_runtime(ort_include=args.ort_include and Path(args.ort_include), prefix=args.prefix and Path(args.prefix),
                  jobs=args.jobs, tensorrt_root=args.tensorrt_root,
                  log=lambda message: print(f"kiln build-runtime: {message}", flush=True))
    return 0


def _add_build_runtime_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build-runtime", help="build the C++ runtime (libtensorkiln_runtime.so, kiln-run, CMake "
                                             "package tensorkiln) and install it (needs a source checkout)")
    p.add_argument("--prefix", default=None,
                   help=f"install prefix (default {native.cache_dir() / 'runtime'}; a service's CMake finds it with "
                        "-DCMAKE_PREFIX_PATH=PREFIX)")
    p.add_argument("--ort-include", default=None, help="a folder holding ONNX Runtime's onnxruntime_cxx_api.h "
                                                       "(default: fetched from Debian's libonnxruntime-dev, or npm)")
    p.add_argument("--tensorrt-root", default=None,
                   help="TensorRT prefix (include/, lib/) for the TensorRT backend (default: $TensorRT_ROOT)")
    p.add_argument("--jobs", type=int, default=None, help="parallel compile jobs (default: the CPU count)")
    p.set_defaults(func=cmd_build_runtime)


#: ``kiln generate`` options that map one to one onto generate()'s keyword arguments.
GENERATE_OPTIONS = ("max_new_tokens", "min_new_tokens", "do_sample", "temperature", "top_k", "top_p", "seed",
                    "num_beams", "length_penalty", "early_stopping", "repetition_penalty", "no_repeat_ngram_size",
                    "eos_token_id", "stop_strings", "ignore_eos")


def cmd_generate(args: argparse.Namespace) -> int:
    """Continue a prompt with a causal LM export and print the text (as it comes with --stream)."""
    from .session import load

    session = load(args.export_dir, args.backend, threads=args.threads)
    options = {name: getattr(args, name) for name in GENERATE_OPTIONS if getattr(args, name) is not None}
    beams = options.get("num_beams") or session.generation_defaults.get("num_beams") or 1
    if args.stream and beams > 1:
        warnings.warn("beam search knows its text only at the end: printing it then", KilnWarning, stacklevel=1)
    if args.stream and beams == 1:
        pieces = session.stream(text=args.prompt, **options)  # checks every option before anything is printed
        if not args.no_prompt:
            print(args.prompt, end="", flush=True)
        for piece in pieces:
            print(piece, end="", flush=True)
        print()
    else:
        print(session.generate(text=args.prompt, return_full_text=not args.no_prompt, **options))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run an encoder export on one text and print its result for a person (see runtime/readout.py)."""
    from .readout import describe
    from .session import load

    session = load(args.export_dir, args.backend, threads=args.threads)
    print(describe(session, args.text, pair=args.pair, choices=args.choice or (), top=args.top))
    return 0


def _early_stopping(value: str) -> bool | str:
    choices = {"true": True, "false": False, "never": "never"}
    if value.lower() not in choices:
        raise argparse.ArgumentTypeError("choose true, false or never")
    return choices[value.lower()]


def _add_backend_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=("auto", "onnxruntime", "tensorrt"), default="auto",
                        help="onnxruntime (auto, the default) or tensorrt: an engine built for the export and cached "
                             "(needs the tensorrt and polygraphy packages and an NVIDIA GPU)")


def _add_text_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="continue a text prompt with a causal LM export (needs tensorkiln[text])")
    p.add_argument("export_dir", help="a folder written by `kiln export` (a causal LM with a tokenizer)")
    p.add_argument("prompt", help="the text to continue")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="tokens to generate at most (default: generation_config.json's, else 20)")
    p.add_argument("--min-new-tokens", type=int, default=None, help="tokens to generate before EOS may end it")
    p.add_argument("--stream", action="store_true", help="print the text as it is generated")
    p.add_argument("--no-prompt", action="store_true", help="print the continuation only")
    p.add_argument("--do-sample", action="store_true", default=None, help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature (> 0)")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest tokens (0: all; HF: 50)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass, in (0, 1]")
    p.add_argument("--seed", type=int, default=None, help="seed of the sampler, for reproducible samples")
    p.add_argument("--num-beams", type=int, default=None, help="beam search with this many beams")
    p.add_argument("--length-penalty", type=float, default=None, help="beam score / length ** this (default 1)")
    p.add_argument("--early-stopping", type=_early_stopping, default=None, help="beam search: true, false, never")
    p.add_argument("--repetition-penalty", type=float, default=None, help="penalise tokens already present (> 0)")
    p.add_argument("--no-repeat-ngram-size", type=int, default=None, help="never repeat an n-gram of this size")
    p.add_argument("--eos-token-id", type=int, action="append", default=None,
                   help="stop at this token id (repeat for several; default: generation_config / config)")
    p.add_argument("--stop", dest="stop_strings", action="append", default=None,
                   help="stop once this text is generated (repeat for several)")
    p.add_argument("--ignore-eos", action="store_true", default=None, help="generate all --max-new-tokens")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    _add_backend_option(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("run", help="run an encoder export on a text and print the result (needs tensorkiln[text])")
    p.add_argument("export_dir", help="a folder written by `kiln export` (with a tokenizer)")
    p.add_argument("text", help="the text; for a masked LM, put the mask token where a word should be predicted")
    p.add_argument("--pair", default=None,
                   help="a second segment: the context for question answering, the next sentence for NSP")
    p.add_argument("--choice", action="append", default=None, help="a choice for multiple choice (repeat)")
    p.add_argument("--top", type=int, default=5, help="how many tokens to list for a language model (default 5)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    _add_backend_option(p)
    p.set_defaults(func=cmd_run)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the runtime's commands on the ``kiln`` parser."""
    p = sub.add_parser("info", help="describe a `kiln export` folder: model, tensors, length rules, verification")
    p.add_argument("export_dir", help="a folder written by `kiln export`")
    p.add_argument("--no-check", action="store_true", help="skip checking every file's sha256 against the manifest")
    p.set_defaults(func=cmd_info)

    _add_triton_command(sub)

    p = sub.add_parser("build-kernels", help="build libtensorkiln_ort.so, the native MraAttention/MegaEma kernels "
                                             "for ONNX Runtime, where load() finds it (needs a source checkout)")
    p.add_argument("--cuda", choices=("auto", "on", "off"), default="auto",
                   help="add the CUDA execution provider's kernels (auto: where onnxruntime has the CUDA provider "
                        "and nvcc is found)")
    p.add_argument("--ort-include", default=None, help="a folder holding ONNX Runtime's onnxruntime_cxx_api.h "
                                                       "(default: fetched from Debian's libonnxruntime-dev, or npm)")
    p.add_argument("--out", default=None,
                   help=f"where to install the library (default {native.default_library_path()})")
    p.add_argument("--jobs", type=int, default=None, help="parallel compile jobs (default: the CPU count)")
    p.set_defaults(func=cmd_build_kernels)
    _add_build_runtime_command(sub)
    _add_text_commands(sub)
