"""The memory section: each backend's resident set size, measured in a fresh process.

Process RSS is one high-water mark for everything a process ever held, so each backend is measured in a fresh
process (:mod:`.worker`): RSS after its imports, after loading the model, and the peak during one forward at the
run's largest shape (the Linux high-water mark, reset through ``/proc/self/clear_refs`` after loading, where the
kernel allows it).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from .backends import open_backend
from .machine import run_worker
from .options import BACKENDS, BenchOptions, Target, log
from .timing import shapes


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


def measure_memory(backend: str, checkpoint: str, export: str, batch: int, seq: int, threads: int) -> dict:
    """The worker's side: this process's RSS after the backend's imports, its load and one forward."""
    if backend == "onnxruntime":
        import onnxruntime  # noqa: F401
    else:
        import torch  # noqa: F401

        if backend == "hf":
            import transformers  # noqa: F401
    imports_mb, _ = _rss_mb()
    runner = open_backend(backend, checkpoint, Path(export), threads, check_files=False)
    loaded_mb, load_peak_mb = _rss_mb()
    reset = _reset_peak()
    ids = np.random.default_rng(0).integers(3, runner.vocab_size, (batch, seq))
    runner.bind(ids)()
    _, run_peak_mb = _rss_mb()
    return {"imports_mb": imports_mb, "loaded_mb": loaded_mb, "load_peak_mb": load_peak_mb,
            "forward_peak_mb": run_peak_mb, "peak_reset": reset}


def bench_memory(target: Target, options: BenchOptions, with_hf: bool) -> list[dict[str, Any]]:
    """Each backend's RSS in a fresh process, at the largest shape of the run."""
    batch, seq, _ = max(shapes(target, options), key=lambda s: s[0] * s[1])
    rows = []
    for backend in BACKENDS:
        if backend == "hf" and not with_hf:
            continue
        log(options, f"{target.name}: memory of {backend} (fresh process)")
        out = run_worker(["memory", backend, str(target.checkpoint), str(target.export), str(batch), str(seq),
                          str(options.threads)], options.threads)
        rows.append({"model": target.name, "backend": backend, "batch": batch, "seq": seq, **out})
    return rows
