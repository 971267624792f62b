"""What a ``kiln bench`` run is asked to do (:class:`BenchOptions`), what it measures (:class:`Target`), its error
type, the backends' column labels and the acceptance figures that ``targets`` in the result is checked against.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from tensorkiln.runtime import manifest as mf
from tensorkiln.runtime.errors import KilnError

BACKENDS = ("reference", "onnxruntime", "hf")
LABELS = {"reference": "reference eager", "onnxruntime": "ORT CPU", "hf": "HF eager",
          "onnxruntime_fused": "ORT + transformers optimizer", "onnxruntime_int8": "ORT int8"}
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
    #: How the ORT columns run the custom nodes (the runtime's load(kernels=...)); the native section runs both.
    kernels: str = "auto"

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
    manifest: mf.Manifest
    #: Its int8 export (the int8 section), when made and checked.
    int8: Path | None = None

    @property
    def model_type(self) -> str:
        return self.config["model_type"]


def log(options: BenchOptions, message: str) -> None:
    """One progress line on stderr, unless the run was asked to be quiet."""
    if options.progress:
        print(f"kiln bench: {message}", file=sys.stderr, flush=True)
