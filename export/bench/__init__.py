"""``kiln bench``: latency, throughput, compute efficiency, generation speed and memory of the reference models,
their ONNX Runtime exports and HF transformers eager, measured in one run on one machine.

Torch-free at import: torch, the reference models and transformers are imported by the columns that need them.

What is measured, and how:
  * Latency: one forward at each batch x sequence shape, the median of ``repeats`` timed runs after ``warmup``
    untimed ones. The backends run in turn (the order rotating each round), so that all of them see the same
    machine state; torch and ORT both get ``threads`` intra-op threads. The reference runs eager under
    ``torch.inference_mode`` in fp32; ORT runs the export's ``model.onnx`` on the CPU execution provider with
    every graph optimisation on; HF is transformers' eager model loaded from the same checkpoint folder.
  * FLOPs: matmul FLOPs only, counted on the reference forward by ``torch.utils.flop_counter.FlopCounterMode``
    (mm, addmm, bmm, baddbmm, convolution, scaled_dot_product_attention) at batch 1 and scaled by the batch, so the
    count does not depend on the backend. MRA's attention op is counted from its block budget (its tile matmuls);
    Mega's EMA (an FFT convolution), elementwise ops, norms and softmax are not counted.
  * sgemm peak: the best GFLOP/s of an n x n fp32 matmul in numpy, torch and an ORT MatMul graph, each in a fresh
    process with its thread count pinned, so the peak that the efficiencies divide by is not understated.
  * Memory: process RSS is one high-water mark for everything a process ever held, so each backend is measured in
    a fresh process: RSS after its imports, after loading the model, and the peak during one forward (the Linux
    high-water mark, reset through ``/proc/self/clear_refs`` after loading, where the kernel allows it).
  * Generation: greedy decoding with the cache (ORT: :meth:`Session.stream`; reference: the same loop over its
    ``past_key_values``); prefill is the prompt's pass, decode tokens/s counts the tokens after the first.
  * MRA vs dense: the MRA model at its long length against the same weights with the MRA op replaced by dense
    softmax attention (``scaled_dot_product_attention``), in the reference and in an ORT export of each (ORT is
    left out, with the reason, when either export fails its own check).

A section that fails is recorded under ``errors`` and the others still run; the JSON is rewritten after each one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from tensorkiln.runtime.errors import KilnError

BACKENDS = ("reference", "onnxruntime", "hf")
LABELS = {"reference": "reference eager", "onnxruntime": "ORT CPU", "hf": "HF eager",
          "onnxruntime_fused": "ORT + transformers optimizer"}
QUICK_SEQ = 32
#: The issue's acceptance figures, evaluated on the rows they name.
EFFICIENCY_TARGET = 0.85
EFFICIENCY_MODELS = ("megatron-bert", "gpt_neox", "nystromformer")
MEGA_TARGET = 1.5
TARGET_SEQ = 512


class BenchError(KilnError, RuntimeError):
    """A benchmark that cannot run as asked (a bad model spec, a failed build)."""


@dataclasses.dataclass(frozen=True)
class BenchOptions:
    presets: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    batches: tuple[int, ...] = (1, 8)
    seqs: tuple[int, ...] = (128, 512)
    threads: int = 2
    repeats: int = 5
    warmup: int = 1
    work: Path = Path("kiln-bench")
    json_path: Path | None = None
    prompt: int = 32
    new_tokens: int = 32
    mra_preset: str = "mra-base-4096-8"
    sgemm_size: int = 4096
    skip: frozenset[str] = frozenset()
    ort_fusions: bool = False
    quick: bool = False
    progress: bool = True

    @classmethod
    def quick_run(cls, **changes: Any) -> BenchOptions:
        """The tiny presets at one shape: an end-to-end check in about a minute, not a measurement."""
        base = dict(batches=(1,), seqs=(QUICK_SEQ,), repeats=2, prompt=8, new_tokens=8, mra_preset="tiny-mra",
                    sgemm_size=512, quick=True)
        return cls(**{**base, **changes})


@dataclasses.dataclass
class Target:
    """One model under test: its checkpoint folder, its export folder and where they came from."""

    name: str
    checkpoint: Path
    export: Path
    config: dict[str, Any]
    manifest: Any  # tensorkiln.runtime.manifest.Manifest

    @property
    def model_type(self) -> str:
        return self.config["model_type"]


def _log(options: BenchOptions, message: str) -> None:
    if options.progress:
        print(f"kiln bench: {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------- machine


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info(threads: int) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "threads": threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": {p: _version(p) for p in ("numpy", "onnxruntime", "onnx", "torch", "transformers")},
    }


# ----------------------------------------------------------------------------------------------- subprocess workers


def _thread_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(threads)
    return env


def _worker(args: list[str], threads: int) -> dict[str, Any]:
    """Run ``python -m tensorkiln.runtime.bench ARGS`` in a fresh process; its last stdout line is JSON."""
    proc = subprocess.run([sys.executable, "-m", "tensorkiln.runtime.bench", *args], capture_output=True, text=True,
                          env=_thread_env(threads))
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": f"worker {args[0]} failed: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _sgemm_one(lib: str, size: int, threads: int, runs: int = 3) -> float:
    """GFLOP/s of the best of ``runs`` n x n fp32 matmuls (after one untimed) in ``lib``."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    if lib == "numpy":
        call = lambda: a @ b  # noqa: E731
    elif lib == "torch":
        import torch

        torch.set_num_threads(threads)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        call = lambda: ta @ tb  # noqa: E731
    elif lib == "onnxruntime":
        import onnxruntime as ort
        from onnx import TensorProto, helper

        graph = helper.make_graph(
            [helper.make_node("MatMul", ["a", "b"], ["c"])], "sgemm",
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, [size, size]) for n in ("a", "b")],
            [helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        model.ir_version = 9
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        call = lambda: session.run(None, {"a": a, "b": b})  # noqa: E731
    else:
        raise ValueError(lib)
    call()
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def sgemm_peak(size: int, threads: int) -> dict[str, Any]:
    """The machine's fp32 matmul peak: best of numpy, torch and ORT, each in a fresh process."""
    libs = ["numpy"]
    libs += [lib for lib, module in (("torch", "torch"), ("onnxruntime", "onnx")) if importlib.util.find_spec(module)]
    gflops, errors = {}, {}
    for lib in libs:
        out = _worker(["sgemm", lib, str(size), str(threads)], threads)
        if "error" in out:
            errors[lib] = out["error"]
        else:
            gflops[lib] = out["gflops"]
    if not gflops:
        raise BenchError(f"no sgemm measurement succeeded: {errors}")
    best = max(gflops, key=gflops.get)
    return {"size": size, "threads": threads, "gflops": gflops, "best_gflops": gflops[best], "best_by": best,
            "errors": errors}


def _rss_mb() -> tuple[float, float]:
    """(current RSS, high-water RSS) of this process in MiB, from /proc (Linux) or getrusage."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024
    except (OSError, KeyError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak_mb = peak / 2**20 if sys.platform == "darwin" else peak / 1024
        return peak_mb, peak_mb


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _memory_worker(backend: str, checkpoint: str, export: str, batch: int, seq: int, threads: int) -> dict:
    if backend == "onnxruntime":
        import onnxruntime  # noqa: F401
    else:
        import torch  # noqa: F401

        if backend == "hf":
            import transformers  # noqa: F401
    imports_mb, _ = _rss_mb()
    runner = _open_backend(backend, checkpoint, Path(export), threads, check_files=False)
    loaded_mb, load_peak_mb = _rss_mb()
    reset = _reset_peak()
    ids = np.random.default_rng(0).integers(3, runner.vocab_size, (batch, seq))
    runner.bind(ids)()
    _, run_peak_mb = _rss_mb()
    return {"imports_mb": imports_mb, "loaded_mb": loaded_mb, "load_peak_mb": load_peak_mb,
            "forward_peak_mb": run_peak_mb, "peak_reset": reset}


def _worker_main(argv: list[str]) -> None:
    kind = argv[0]
    if kind == "sgemm":
        lib, size, threads = argv[1], int(argv[2]), int(argv[3])
        print(json.dumps({"gflops": _sgemm_one(lib, size, threads)}))
    elif kind == "memory":
        backend, checkpoint, export, batch, seq, threads = argv[1:7]
        print(json.dumps(_memory_worker(backend, checkpoint, export, int(batch), int(seq), int(threads))))
    else:
        raise SystemExit(f"unknown worker {kind!r}")


# ----------------------------------------------------------------------------------------------- backends


class _Reference:
    """The reference model, eager, fp32, under inference_mode."""

    name = "reference"

    def __init__(self, checkpoint: Path, threads: int):
        import torch

        from tensorkiln.reference.checkpoint import from_pretrained

        torch.set_num_threads(threads)
        self.torch = torch
        self.model = from_pretrained(checkpoint).eval()
        self.vocab_size = self.model.config.vocab_size

    def bind(self, ids: np.ndarray) -> Callable[[], Any]:
        torch = self.torch
        input_ids = torch.from_numpy(ids)
        mask = torch.ones_like(input_ids)

        def call():
            with torch.inference_mode():
                return self.model(input_ids=input_ids, attention_mask=mask)

        return call

    def output(self, outputs: Any, name: str) -> np.ndarray | None:
        value = outputs.to_dict().get(name)
        return None if value is None else value.float().numpy()


class _HF(_Reference):
    """transformers' eager model of the same checkpoint folder."""

    name = "hf"

    def __init__(self, checkpoint: Path, threads: int):
        import torch
        import transformers

        transformers.logging.set_verbosity_error()
        torch.set_num_threads(threads)
        self.torch = torch
        config = json.loads((checkpoint / "config.json").read_text())
        cls = getattr(transformers, config["architectures"][0])
        self.model = cls.from_pretrained(checkpoint, attn_implementation="eager").eval()
        self.vocab_size = config["vocab_size"]

    def output(self, outputs: Any, name: str) -> np.ndarray | None:
        value = outputs.get(name) if hasattr(outputs, "get") else None
        return None if value is None else value.float().numpy()


class _Ort:
    """ONNX Runtime on the CPU execution provider over an export (or an optimised copy of its model)."""

    name = "onnxruntime"

    def __init__(self, export: Path, threads: int, *, model_path: Path | None = None, check_files: bool = True):
        from tensorkiln.runtime import manifest as mf

        from . import backends
        from .inputs import ModelLimits

        self.manifest = mf.read_manifest(export, check_files=check_files)
        config = json.loads((export / self.manifest.config_file).read_text())
        self.limits = ModelLimits.from_config(config)
        self.vocab_size = self.limits.vocab_size
        path = model_path or export / self.manifest.model_file
        self.session = backends.ort_session(path, [backends.CPU], threads, self.manifest.precision)
        self.names = [o.name for o in self.session.get_outputs()]

    def bind(self, ids: np.ndarray) -> Callable[[], Any]:
        from .inputs import prepare

        feeds = prepare(self.manifest, self.limits, {"input_ids": ids}).feeds
        return lambda: self.session.run(None, feeds)

    def output(self, outputs: Any, name: str) -> np.ndarray | None:
        return outputs[self.names.index(name)] if name in self.names else None


def _open_backend(kind: str, checkpoint: str | Path, export: Path, threads: int, check_files: bool = True):
    if kind == "reference":
        return _Reference(Path(checkpoint), threads)
    if kind == "hf":
        return _HF(Path(checkpoint), threads)
    if kind == "onnxruntime":
        return _Ort(export, threads, check_files=check_files)
    raise ValueError(kind)


# ----------------------------------------------------------------------------------------------- building


def _preset_targets(options: BenchOptions) -> list[tuple[str, Any]]:
    from tensorkiln.reference.presets import DEMO_PRESETS, get_preset

    if options.presets:
        names = options.presets
    elif options.models:
        names = ()
    elif options.quick:
        names = tuple("tiny-" + get_preset(n).model_type.replace("_", "-") for n in DEMO_PRESETS)
    else:
        names = DEMO_PRESETS
    return [(name, get_preset(name)) for name in names]


def _causal_variant(preset):
    """A Mega causal LM of the same size as a Mega preset (for the generation section), or None."""
    from tensorkiln.reference.presets import Preset

    if preset.model_type != "mega" or preset.config["architectures"][0] == "MegaForCausalLM":
        return None
    config = {**preset.config, "architectures": ["MegaForCausalLM"], "is_decoder": True, "bidirectional": False,
              "use_cache": True}
    return Preset(f"{preset.name}-causal", preset.source, f"{preset.description} (causal LM variant)", config)


def _build(name: str, preset, checkpoint: Path, export: Path, options: BenchOptions, dense: bool = False) -> Target:
    from tensorkiln.runtime import manifest as mf

    if not (checkpoint / "config.json").is_file():
        if preset is None:
            raise BenchError(f"{str(checkpoint)!r} has no config.json: pass an HF checkpoint folder")
        from tensorkiln.reference.presets import init_checkpoint

        _log(options, f"{name}: writing a random-weight checkpoint to {checkpoint}")
        init_checkpoint(preset, checkpoint, seed=0)
    if not (export / mf.MANIFEST_NAME).is_file():
        from tensorkiln.export.exporter import ExportOptions, export as run_export

        _log(options, f"{name}: exporting to {export}")
        with _dense_mra() if dense else contextlib.nullcontext():
            run_export(checkpoint, export, ExportOptions(progress=options.progress))
    manifest = mf.read_manifest(export, check_files=False)
    config = json.loads((checkpoint / "config.json").read_text())
    return Target(name, checkpoint, export, config, manifest)


def build_targets(options: BenchOptions) -> tuple[list[Target], list[Target]]:
    """(models for the latency sections, extra causal LMs for generation), built into the work dir if absent."""
    work = Path(options.work)
    targets, extra = [], []
    for name, preset in _preset_targets(options):
        targets.append(_build(name, preset, work / "checkpoints" / name, work / "exports" / name, options))
        variant = _causal_variant(preset) if "generation" not in options.skip else None
        if variant is not None:
            extra.append(_build(variant.name, variant, work / "checkpoints" / variant.name,
                                work / "exports" / variant.name, options))
    for spec in options.models:
        checkpoint, _, export = spec.partition(":")
        checkpoint_path = Path(checkpoint)
        name = checkpoint_path.resolve().name
        export_path = Path(export) if export else work / "exports" / name
        targets.append(_build(name, None, checkpoint_path, export_path, options))
    return targets, extra


# ----------------------------------------------------------------------------------------------- measuring


def _alternate(calls: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each call, ``repeats`` rounds, the order rotating each round."""
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        for name in names[round_ % len(names):] + names[: round_ % len(names)]:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return times


def _token_ids(vocab_size: int, batch: int, seq: int) -> np.ndarray:
    # Ids 0-2 are pad/bos/eos in most of these vocabularies: stay clear of them.
    return np.random.default_rng(0).integers(3, vocab_size, (batch, seq), dtype=np.int64)


def _shapes(target: Target, options: BenchOptions) -> list[tuple[int, int, int]]:
    """(batch, length, asked length): lengths clipped to the model's maximum, or its fixed length."""
    rules = target.manifest.length_rules
    shapes, seen = [], set()
    for batch in options.batches:
        for seq in options.seqs:
            length = rules.fixed_length or min(seq, rules.max_length)
            if (batch, length) not in seen:
                seen.add((batch, length))
                shapes.append((batch, length, seq))
    return shapes


def _mra_flops(query, key, value, mask, *, num_blocks, scale, approx_mode="full", initial_prior_first_n_blocks=0,
               initial_prior_diagonal_n_blocks=0, out_shape=None, **_: Any) -> int:
    """Matmul FLOPs of ``tensorkiln::mra_attention`` (shapes in): the block means' logits, the selected 32 x 32
    tiles' q.k and attn.v, and (mode "full") the low-resolution attn.v of the block means."""
    batch, heads, length, dim = query
    bh, nb = batch * heads, -(-length // 32)
    selected = min(num_blocks, nb * nb)
    flops = 2 * bh * nb * nb * dim + 2 * 2 * bh * selected * 32 * 32 * dim
    if approx_mode == "full":
        flops += 2 * bh * nb * nb * dim
    return flops


def _cpu_sdpa_flops(query, key, value, *args: Any, out_shape=None, **_: Any) -> int:
    """``aten._scaled_dot_product_flash_attention_for_cpu``, which torch's table leaves out: q.k^T and attn.v."""
    batch, heads, length, dim = query
    keys, value_dim = key[-2], value[-1]
    return 2 * batch * heads * length * keys * (dim + value_dim)


def count_matmul_flops(model: Any, batch: int, seq: int, vocab_size: int) -> int:
    """Matmul FLOPs of one reference forward at (batch, seq): counted at batch 1, scaled by the batch."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from tensorkiln.reference.ops import mra_attention  # noqa: F401  (registers the op)

    ids = torch.from_numpy(_token_ids(vocab_size, 1, seq))
    counter = FlopCounterMode(display=False, custom_mapping={
        torch.ops.tensorkiln.mra_attention: _mra_flops,  # keyed by the op packet, as torch keys its table
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops})
    with torch.inference_mode(), counter:
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    return counter.get_total_flops() * batch


def _max_abs(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    if a is None or b is None or a.shape != b.shape:
        return None
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def _stats(times: list[float], tokens: int, flops: int | None, peak_gflops: float | None) -> dict[str, Any]:
    median = statistics.median(times)
    out = {"median_ms": 1000 * median, "min_ms": 1000 * min(times), "times_ms": [1000 * t for t in times],
           "tokens_per_s": tokens / median}
    if flops is not None:
        out["gflops_per_s"] = flops / median / 1e9
        if peak_gflops:
            out["fraction_of_peak"] = out["gflops_per_s"] / peak_gflops
            # The peak is a best-of figure too: the best run is the like-for-like number on a shared machine.
            out["fraction_of_peak_best_run"] = flops / min(times) / 1e9 / peak_gflops
    return out


def _hf_note(target: Target) -> str:
    if target.model_type == "mra":
        return "HF's MRA skips attention without its CUDA kernels: its CPU time leaves attention out"
    return ""


def _fused_model(target: Target, work: Path) -> tuple[Path | None, dict[str, int]]:
    """ORT's transformer optimizer (onnxruntime.transformers) applied to a copy of the export, outside it."""
    from onnxruntime.transformers.optimizer import optimize_model

    model_type = {"gpt_neox": "gpt_neox", "mega": None}.get(target.model_type, "bert")
    if model_type is None:
        return None, {}
    config = target.config
    out = work / "ort-fused" / f"{target.manifest.files[target.manifest.model_file][:16]}.onnx"
    optimized = optimize_model(str(target.export / target.manifest.model_file), model_type=model_type,
                               num_heads=config["num_attention_heads"], hidden_size=config["hidden_size"],
                               opt_level=0)
    fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        optimized.save_model_to_file(str(tmp))
        os.replace(tmp, out)
    return out, fused


def bench_model(target: Target, options: BenchOptions, peak_gflops: float | None) -> tuple[list[dict], dict]:
    """The latency rows of one model (every shape) and what was skipped or fused."""
    runners: dict[str, Any] = {}
    info: dict[str, Any] = {"skipped": {}}
    _log(options, f"{target.name}: loading the reference, ORT{'' if 'hf' in options.skip else ' and HF'}")
    runners["reference"] = _Reference(target.checkpoint, options.threads)
    runners["onnxruntime"] = _Ort(target.export, options.threads)
    if options.ort_fusions:
        path, fused = _fused_model(target, Path(options.work))
        info["ort_fusions"] = fused
        if path is not None:
            runners["onnxruntime_fused"] = _Ort(target.export, options.threads, model_path=path, check_files=False)
    if "hf" in options.skip:
        info["skipped"]["hf"] = "skipped (--skip hf)"
    elif importlib.util.find_spec("transformers") is None:
        info["skipped"]["hf"] = "transformers is not installed"
    else:
        try:
            runners["hf"] = _HF(target.checkpoint, options.threads)
        except Exception as exc:  # an HF class that is missing or refuses the checkpoint: skip the column
            info["skipped"]["hf"] = f"HF could not load the checkpoint: {type(exc).__name__}: {exc}"
    main_output = target.manifest.outputs[0].name
    rows = []
    for batch, seq, asked in _shapes(target, options):
        _log(options, f"{target.name}: batch {batch}, seq {seq}")
        ids = _token_ids(runners["reference"].vocab_size, batch, seq)
        calls = {name: runner.bind(ids) for name, runner in runners.items()}
        outputs = {name: call() for name, call in calls.items()}
        for _ in range(options.warmup - 1):
            for call in calls.values():
                call()
        flops = count_matmul_flops(runners["reference"].model, batch, seq, runners["reference"].vocab_size)
        times = _alternate(calls, options.repeats)
        reference_out = runners["reference"].output(outputs["reference"], main_output)
        row = {
            "model": target.name, "model_type": target.model_type, "hf_class": target.manifest.hf_class,
            "batch": batch, "seq": seq, "asked_seq": asked, "matmul_flops": flops,
            "backends": {name: _stats(t, batch * seq, flops, peak_gflops) for name, t in times.items()},
            "max_abs_vs_reference": {
                name: _max_abs(runners[name].output(outputs[name], main_output), reference_out)
                for name in runners if name != "reference"},
            "compared_output": main_output,
            "note": _hf_note(target) if "hf" in runners else "",
        }
        row["speedup"] = _speedups(row["backends"])
        rows.append(row)
    return rows, info


def _speedups(backends: dict[str, dict]) -> dict[str, float]:
    """ORT's speed-up over each other backend: their median latency over ORT's."""
    ort = backends["onnxruntime"]["median_ms"]
    return {f"onnxruntime_vs_{name}": b["median_ms"] / ort for name, b in backends.items() if name != "onnxruntime"}


def _reference_stream(model: Any, prompt: np.ndarray, new_tokens: int) -> Iterator[np.ndarray]:
    """Greedy decoding with the reference's own cache, one step's tokens (batch,) at a time."""
    import torch

    ids = torch.from_numpy(prompt)
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, use_cache=True)
        for step in range(new_tokens):
            tokens = out.logits[:, -1].argmax(dim=-1)  # (B,)
            yield tokens.numpy()
            if step + 1 == new_tokens:
                return
            mask = torch.cat([mask, torch.ones_like(tokens)[:, None]], dim=1)
            out = model(input_ids=tokens[:, None], attention_mask=mask, past_key_values=out.past_key_values,
                        use_cache=True)


def _time_stream(stream: Iterator[np.ndarray]) -> tuple[np.ndarray, float, float]:
    """(tokens (batch, new), prefill seconds, seconds of the steps after the first token)."""
    start = time.perf_counter()
    first = next(stream)
    prefill = time.perf_counter() - start
    rest = list(stream)
    decode = time.perf_counter() - start - prefill
    return np.stack([first, *rest], axis=1), prefill, decode


def bench_generation(target: Target, options: BenchOptions) -> dict[str, Any] | None:
    """Greedy generation tokens/s: ORT with the exported cache vs the reference with its own."""
    from .session import load

    if target.manifest.head != "ForCausalLM":
        return None
    _log(options, f"{target.name}: generation, {options.new_tokens} tokens")
    session = load(target.export, threads=options.threads, check_files=False)
    reference = _Reference(target.checkpoint, options.threads)
    prompt_length = min(options.prompt, target.manifest.length_rules.max_length - options.new_tokens)
    prompt = _token_ids(reference.vocab_size, 1, prompt_length)
    runs = {
        "onnxruntime": lambda: session.stream(prompt, options.new_tokens, ignore_eos=True),
        "reference": lambda: _reference_stream(reference.model, prompt, options.new_tokens),
    }
    results: dict[str, list] = {name: [] for name in runs}
    tokens: dict[str, np.ndarray] = {}
    for name, run in runs.items():  # warm-up
        tokens[name], _, _ = _time_stream(run())
    for round_ in range(max(1, min(options.repeats, 3))):
        for name in (list(runs) if round_ % 2 == 0 else list(runs)[::-1]):
            _, prefill, decode = _time_stream(runs[name]())
            results[name].append((prefill, decode))
    backends = {}
    for name, pairs in results.items():
        prefill = statistics.median(p for p, _ in pairs)
        decode = statistics.median(d for _, d in pairs)
        backends[name] = {"prefill_ms": 1000 * prefill,
                          "decode_tokens_per_s": (options.new_tokens - 1) / decode if decode > 0 else None,
                          "total_tokens_per_s": options.new_tokens / (prefill + decode)}
    ort_rate, ref_rate = backends["onnxruntime"]["decode_tokens_per_s"], backends["reference"]["decode_tokens_per_s"]
    return {"model": target.name, "hf_class": target.manifest.hf_class, "batch": 1, "prompt": prompt_length,
            "new_tokens": options.new_tokens, "cache": target.manifest.cache is not None, "backends": backends,
            "decode_speedup_onnxruntime_vs_reference": ort_rate / ref_rate if ort_rate and ref_rate else None,
            "same_tokens": bool(np.array_equal(tokens["onnxruntime"], tokens["reference"]))}


def bench_memory(target: Target, options: BenchOptions, with_hf: bool) -> list[dict[str, Any]]:
    """Each backend's RSS in a fresh process, at the largest shape of the run."""
    batch, seq, _ = max(_shapes(target, options), key=lambda s: s[0] * s[1])
    rows = []
    for backend in BACKENDS:
        if backend == "hf" and not with_hf:
            continue
        _log(options, f"{target.name}: memory of {backend} (fresh process)")
        out = _worker(["memory", backend, str(target.checkpoint), str(target.export), str(batch), str(seq),
                       str(options.threads)], options.threads)
        rows.append({"model": target.name, "backend": backend, "batch": batch, "seq": seq, **out})
    return rows


# ----------------------------------------------------------------------------------------------- MRA vs dense


def _dense_attention(query, key, value, attention_mask, *, scale, **_: Any):
    """Dense masked softmax attention with MRA's contract: (B, H, L, D) in, zero rows at padded queries."""
    import torch

    keep = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, L)
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=keep, scale=scale)
    return out * attention_mask[:, None, :, None].to(out.dtype)


@contextlib.contextmanager
def _dense_mra() -> Iterator[None]:
    """The reference MRA model with its attention op replaced by dense softmax attention, while in the block."""
    from unittest import mock

    from tensorkiln.reference import mra

    with mock.patch.object(mra, "mra_attention", _dense_attention):
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
            pair.exports[kind] = _build(name, preset, checkpoint, work / "exports" / name, options,
                                        dense=kind == "dense")
        except Exception as exc:  # an export that fails its own check: time the reference alone, and say why
            pair.exports[kind] = None
            pair.errors[kind] = f"{type(exc).__name__}: {exc}"
            _log(options, f"{name}: export failed, ORT is left out of MRA vs dense: {pair.errors[kind]}")
    return pair


def bench_mra_dense(pair: MraPair, options: BenchOptions) -> dict[str, Any]:
    """MRA at its full length vs dense attention of the same weights, in the reference and (when both exported)
    in ORT."""
    reference = _Reference(pair.checkpoint, options.threads)
    seq = reference.model.config.max_position_embeddings
    _log(options, f"{pair.name}: MRA vs dense attention at batch 1, seq {seq}")
    ids = _token_ids(reference.vocab_size, 1, seq)
    ref_call = reference.bind(ids)

    def ref_dense():
        with _dense_mra():
            return ref_call()

    runners: dict[str, Any] = {"reference_mra": reference, "reference_dense": reference}
    calls = {"reference_mra": ref_call, "reference_dense": ref_dense}
    if not pair.errors:
        for kind in ("mra", "dense"):
            runners[f"onnxruntime_{kind}"] = _Ort(pair.exports[kind].export, options.threads)
            calls[f"onnxruntime_{kind}"] = runners[f"onnxruntime_{kind}"].bind(ids)
    outputs = {name: call() for name, call in calls.items()}
    repeats = max(1, min(options.repeats, 3))
    times = _alternate(calls, repeats)
    flops_mra = count_matmul_flops(reference.model, 1, seq, reference.vocab_size)
    with _dense_mra():
        flops_dense = count_matmul_flops(reference.model, 1, seq, reference.vocab_size)
    backends = {}
    for backend in ("reference", "onnxruntime"):
        if f"{backend}_mra" not in times:
            continue
        mra_ms = 1000 * statistics.median(times[f"{backend}_mra"])
        dense_ms = 1000 * statistics.median(times[f"{backend}_dense"])
        backends[backend] = {"mra_ms": mra_ms, "dense_ms": dense_ms, "mra_speedup": dense_ms / mra_ms,
                             "times_ms": {k: [1000 * t for t in v] for k, v in times.items()
                                          if k.startswith(backend)}}
    name = next(k for k, v in outputs["reference_mra"].to_dict().items() if v is not None)
    values = {k: runners[k].output(v, name) for k, v in outputs.items()}
    return {"model": pair.name, "batch": 1, "seq": seq, "repeats": repeats,
            "matmul_flops": {"mra": flops_mra, "dense": flops_dense}, "backends": backends,
            "export_errors": pair.errors,
            "max_abs_onnxruntime_vs_reference": {
                kind: _max_abs(values.get(f"onnxruntime_{kind}"), values[f"reference_{kind}"])
                for kind in ("mra", "dense")},
            "max_abs_mra_vs_dense": _max_abs(values["reference_mra"], values["reference_dense"])}


# ----------------------------------------------------------------------------------------------- the run


def _targets_met(result: dict[str, Any]) -> list[dict[str, Any]]:
    checks = []
    for row in result["latency"]:
        ort = row["backends"]["onnxruntime"]
        if row["model_type"] in EFFICIENCY_MODELS and row["batch"] == 1 and row["asked_seq"] == TARGET_SEQ:
            value = ort.get("fraction_of_peak")
            checks.append({"target": f"{row['model']} ORT at batch 1, seq {row['seq']}: >= "
                                     f"{EFFICIENCY_TARGET:.0%} of the sgemm peak (median run)",
                           "value": value, "met": value is not None and value >= EFFICIENCY_TARGET,
                           "best_run": ort.get("fraction_of_peak_best_run")})
        if row["model_type"] == "mega" and "onnxruntime_vs_hf" in row["speedup"]:
            value = row["speedup"]["onnxruntime_vs_hf"]
            checks.append({"target": f"{row['model']} ORT >= {MEGA_TARGET}x HF eager (batch {row['batch']}, "
                                     f"seq {row['seq']})", "value": value, "met": value >= MEGA_TARGET})
    mra = result.get("mra_vs_dense")
    if mra:
        for backend, b in mra["backends"].items():
            checks.append({"target": f"{mra['model']} at seq {mra['seq']} faster than dense attention ({backend})",
                           "value": b["mra_speedup"], "met": b["mra_speedup"] > 1})
    return checks


def _write_json(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, path)


def _guarded(result: dict[str, Any], what: str, options: BenchOptions, run: Callable[[], Any]) -> Any:
    """``run()``, or None with the error recorded: one failing section must not lose the others' figures."""
    try:
        return run()
    except Exception as exc:
        result["errors"].append({"section": what, "error": f"{type(exc).__name__}: {exc}"})
        _log(options, f"{what} failed: {type(exc).__name__}: {exc}")
        return None


def run_bench(options: BenchOptions) -> dict[str, Any]:
    """Build what is missing, measure every section, write the JSON (after each section); return the result."""
    work = Path(options.work)
    work.mkdir(parents=True, exist_ok=True)
    path = Path(options.json_path) if options.json_path else work / "bench.json"
    started = time.time()
    result: dict[str, Any] = {"machine": machine_info(options.threads), "settings": {
        "batches": list(options.batches), "seqs": list(options.seqs), "threads": options.threads,
        "repeats": options.repeats, "warmup": options.warmup, "quick": options.quick, "skip": sorted(options.skip),
        "ort_fusions": options.ort_fusions,
        "onnxruntime_model": "the export's model.onnx, CPU execution provider, ORT_ENABLE_ALL graph optimisations"},
        "errors": [], "latency": [], "skipped": {}, "ort_fusions": {}, "generation": [], "memory": [],
        "mra_vs_dense": None, "targets": []}
    _log(options, f"sgemm peak ({options.sgemm_size}^2, {options.threads} threads)")
    result["sgemm_peak"] = sgemm_peak(options.sgemm_size, options.threads)
    peak = result["sgemm_peak"]["best_gflops"]
    targets, extra = build_targets(options)
    mra_pair = None if "mra-dense" in options.skip else build_mra_pair(options)
    result["models"] = [{"name": t.name, "checkpoint": str(t.checkpoint), "export": str(t.export),
                         "model_type": t.model_type, "hf_class": t.manifest.hf_class} for t in targets]
    for target in targets:
        measured = _guarded(result, f"{target.name} latency", options, lambda t=target: bench_model(t, options, peak))
        if measured is None:
            continue
        rows, info = measured
        result["latency"] += rows
        if info["skipped"]:
            result["skipped"][target.name] = info["skipped"]
        if "ort_fusions" in info:
            result["ort_fusions"][target.name] = info["ort_fusions"]
        _write_json(result, path)
    if "generation" not in options.skip:
        for target in targets + extra:
            row = _guarded(result, f"{target.name} generation", options, lambda t=target: bench_generation(t, options))
            if row is not None:
                result["generation"].append(row)
        _write_json(result, path)
    if "memory" not in options.skip:
        for target in targets:
            with_hf = "hf" not in result["skipped"].get(target.name, {})
            result["memory"] += _guarded(result, f"{target.name} memory", options,
                                         lambda t=target, h=with_hf: bench_memory(t, options, h)) or []
        _write_json(result, path)
    if mra_pair is not None:
        result["mra_vs_dense"] = _guarded(result, "MRA vs dense", options, lambda: bench_mra_dense(mra_pair, options))
    result["targets"] = _targets_met(result)
    result["elapsed_s"] = time.time() - started
    result["machine"]["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    _write_json(result, path)
    result["json_path"] = str(path)
    return result


# ----------------------------------------------------------------------------------------------- markdown


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _err(value: float | None) -> str:
    return "-" if value is None else f"{value:.1e}"


def format_markdown(result: dict[str, Any]) -> str:
    m, s = result["machine"], result["settings"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    peak = result["sgemm_peak"]
    lines = [f"Machine: {m['cpu']}, {m['usable_cpus']} usable of {m['logical_cpus']} logical CPUs, "
             f"{s['threads']} threads; python {m['python']}, {versions}",
             f"fp32 sgemm peak ({peak['size']}^2): {peak['best_gflops']:.1f} GFLOP/s by {peak['best_by']} ("
             + ", ".join(f"{k} {v:.1f}" for k, v in peak["gflops"].items()) + f"); latency = median of "
             f"{s['repeats']} runs after {s['warmup']} warm-up, backends alternating",
             f"ORT CPU: {s['onnxruntime_model']}"]
    if m.get("load_average_at_start") and m.get("load_average_at_end"):
        lines.append(f"1-min load average {m['load_average_at_start'][0]:.2f} at the start, "
                     f"{m['load_average_at_end'][0]:.2f} at the end (other processes on this machine skew timings)")
    lines.append("")

    names = [b for b in ("reference", "onnxruntime", "onnxruntime_fused", "hf")
             if any(b in r["backends"] for r in result["latency"])]
    others = [b for b in names if b != "onnxruntime"]
    lines += ["### Latency and throughput", "",
              "| model | batch | seq | " + " | ".join(f"{LABELS[b]} (ms)" for b in names)
              + " | ORT tokens/s | " + " | ".join(f"ORT speed-up vs {LABELS[b]}" for b in others)
              + " | ORT max abs vs reference | note |",
              "|---|---:|---:|" + "---:|" * (len(names) + 1 + len(others) + 1) + "---|"]
    for r in result["latency"]:
        b = r["backends"]
        lines.append(f"| {r['model']} | {r['batch']} | {r['seq']} | "
                     + " | ".join(_ms(b[n]["median_ms"]) if n in b else "-" for n in names)
                     + f" | {b['onnxruntime']['tokens_per_s']:.0f} | "
                     + " | ".join(_x(r["speedup"].get(f"onnxruntime_vs_{n}")) for n in others)
                     + f" | {_err(r['max_abs_vs_reference'].get('onnxruntime'))} | {r['note']} |")

    lines += ["", "### Efficiency (fraction of the sgemm peak)", "",
              "Matmul FLOPs only, counted on the reference forward (MRA's attention from its selected blocks; Mega's "
              "FFT EMA, elementwise ops, norms and softmax not counted).", "",
              "| model | batch | seq | GFLOP | " + " | ".join(f"{LABELS[b]} GFLOP/s (of peak)" for b in names) + " |",
              "|---|---:|---:|---:|" + "---:|" * len(names)]
    for r in result["latency"]:
        b = r["backends"]
        cells = [f"{b[n]['gflops_per_s']:.1f} ({_pct(b[n].get('fraction_of_peak'))}; best run "
                 f"{_pct(b[n].get('fraction_of_peak_best_run'))})" if n in b else "-" for n in names]
        lines.append(f"| {r['model']} | {r['batch']} | {r['seq']} | {r['matmul_flops'] / 1e9:.2f} | "
                     + " | ".join(cells) + " |")

    if result["generation"]:
        lines += ["", "### Generation (greedy, batch 1, with the cache)", "",
                  "| model | prompt | new tokens | ORT prefill (ms) | ORT decode tokens/s | reference prefill (ms) "
                  "| reference decode tokens/s | ORT decode speed-up | same tokens |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for g in result["generation"]:
            o, r = g["backends"]["onnxruntime"], g["backends"]["reference"]
            lines.append(f"| {g['model']} | {g['prompt']} | {g['new_tokens']} | {_ms(o['prefill_ms'])} | "
                         f"{o['decode_tokens_per_s']:.1f} | {_ms(r['prefill_ms'])} | {r['decode_tokens_per_s']:.1f} | "
                         f"{_x(g['decode_speedup_onnxruntime_vs_reference'])} | "
                         f"{'yes' if g['same_tokens'] else 'NO'} |")

    if result["memory"]:
        lines += ["", "### Memory (RSS in MiB, each backend in a fresh process)", "",
                  "After imports: the runtime's own libraries; after load: with the weights; forward peak: the RSS "
                  "high-water mark during one forward, reset after loading. HF memory-maps safetensors, so its "
                  "weights enter RSS during the forward: compare forward peaks.", "",
                  "| model | batch | seq | backend | after imports | after load | forward peak | forward peak - load |",
                  "|---|---:|---:|---|---:|---:|---:|---:|"]
        for r in result["memory"]:
            if "error" in r:
                lines.append(f"| {r['model']} | {r['batch']} | {r['seq']} | {LABELS[r['backend']]} | "
                             f"{r['error']} | | | |")
                continue
            lines.append(f"| {r['model']} | {r['batch']} | {r['seq']} | {LABELS[r['backend']]} | "
                         f"{r['imports_mb']:.0f} | {r['loaded_mb']:.0f} | {r['forward_peak_mb']:.0f} | "
                         f"{r['forward_peak_mb'] - r['loaded_mb']:.0f} |")
        if not all(r.get("peak_reset", True) for r in result["memory"]):
            lines.append("(the kernel refused a high-water reset: forward peak includes loading)")

    mra = result.get("mra_vs_dense")
    if mra:
        f = mra["matmul_flops"]
        lines += ["", f"### MRA vs dense attention ({mra['model']}, batch 1, seq {mra['seq']}, median of "
                      f"{mra['repeats']})", "",
                  "| backend | MRA (ms) | dense (ms) | MRA speed-up | MRA GFLOP | dense GFLOP |",
                  "|---|---:|---:|---:|---:|---:|"]
        for backend, b in mra["backends"].items():
            lines.append(f"| {LABELS[backend]} | {_ms(b['mra_ms'])} | {_ms(b['dense_ms'])} | "
                         f"{_x(b['mra_speedup'])} | {f['mra'] / 1e9:.1f} | {f['dense'] / 1e9:.1f} |")
        for kind, error in mra["export_errors"].items():
            lines.append(f"\nORT left out: the {kind} export failed: {error}")

    if result.get("ort_fusions"):
        fusions = (f"{k}: {', '.join(f'{op} {n}' for op, n in v.items()) or 'none'}"
                   for k, v in result["ort_fusions"].items())
        lines += ["", "ORT transformer optimizer fusions: " + "; ".join(fusions)]
    if result["targets"]:
        lines += ["", "### Targets", "", "| target | value | met |", "|---|---:|---|"]
        for t in result["targets"]:
            value = t["value"]
            shown = "-" if value is None else _pct(value) if "%" in t["target"] else _x(value)
            if t.get("best_run") is not None:
                shown += f" (best run {_pct(t['best_run'])})"
            lines.append(f"| {t['target']} | {shown} | {'yes' if t['met'] else 'no'} |")
    for error in result["errors"]:
        lines.append(f"\n{error['section']}: not measured: {error['error']}")
    for model, skipped in result["skipped"].items():
        for column, reason in skipped.items():
            lines.append(f"\n{model}: {column} column skipped: {reason}")
    return "\n".join(lines)


if __name__ == "__main__":
    _worker_main(sys.argv[1:])
