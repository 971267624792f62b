"""The machine a ``kiln bench`` run measures (CPU, thread count, load, library versions), and the launcher of the
fresh processes that the sgemm peak and the memory figures are measured in (:mod:`.worker`).

A worker runs with its BLAS / OpenMP thread count pinned to the run's ``threads`` and answers with one JSON line,
its last on stdout.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

#: ``python -m WORKER_MODULE KIND ARGS...`` runs one measurement in a fresh process.
WORKER_MODULE = "tensorkiln.export.bench.worker"


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
        "load_average_at_start": load_average(),
        "versions": {p: _version(p) for p in ("numpy", "onnxruntime", "onnx", "torch", "transformers")},
    }


def load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages, where the platform has them."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def thread_env(threads: int) -> dict[str, str]:
    """This process's environment with the BLAS / OpenMP thread counts pinned to ``threads``."""
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(threads)
    return env


def run_worker(args: list[str], threads: int) -> dict[str, Any]:
    """Run ``python -m tensorkiln.export.bench.worker ARGS`` in a fresh process; its last stdout line is JSON.

    A worker that fails answers ``{"error": ...}`` with the last line of its stderr.
    """
    proc = subprocess.run([sys.executable, "-m", WORKER_MODULE, *args], capture_output=True, text=True,
                          env=thread_env(threads))
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": f"worker {args[0]} failed: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])
