"""The backends that ``kiln bench`` times, behind one small interface, and the token ids they are fed.

Each runner has ``vocab_size``, ``bind(ids)`` (a no-argument call of one forward over those ids, the thing the timer
times) and ``output(outputs, name)`` (one named output of such a call as numpy, or None):

  * :class:`Reference`: the reference model, eager, fp32, under ``torch.inference_mode``;
  * :class:`HF`: transformers' eager model loaded from the same checkpoint folder;
  * :class:`Ort`: the export's ``model.onnx`` (or an optimised copy) on ORT's CPU execution provider with every graph
    optimisation on, its custom nodes on the native kernels or their function bodies as ``kernels`` says (the
    runtime's ``load`` choice; ``implementations`` records what ran).

torch and ORT both get the run's ``threads`` intra-op threads. torch, transformers and the reference models are
imported when a runner is opened.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tensorkiln.runtime import backends as runtime_backends
from tensorkiln.runtime import manifest as mf
from tensorkiln.runtime import native
from tensorkiln.runtime.inputs import ModelLimits, prepare


def token_ids(vocab_size: int, batch: int, seq: int) -> np.ndarray:
    """Random (batch, seq) int64 ids, the same for every backend and run."""
    # Ids 0-2 are pad/bos/eos in most of these vocabularies: stay clear of them.
    return np.random.default_rng(0).integers(3, vocab_size, (batch, seq), dtype=np.int64)


class Reference:
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


class HF(Reference):
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


class Ort:
    """ONNX Runtime on the CPU execution provider over an export (or an optimised copy of its model)."""

    name = "onnxruntime"

    def __init__(self, export: Path, threads: int, *, model_path: Path | None = None, check_files: bool = True,
                 kernels: str = "auto"):
        self.manifest = mf.read_manifest(export, check_files=check_files)
        mf.model_files(export, self.manifest)  # the graph's external data: inside the export and hashed
        config = json.loads(mf.file_path(export, self.manifest, self.manifest.config_file).read_text())
        self.limits = ModelLimits.from_config(config)
        self.vocab_size = self.limits.vocab_size
        path = model_path or export / self.manifest.model_file
        plan = native.plan_kernels(kernels, bool(self.manifest.custom_nodes))
        self.session = runtime_backends.ort_session(path, [runtime_backends.CPU], threads, self.manifest.precision,
                                                    plan.library)
        custom_ops = [f"{n.domain}::{n.op_type}" for n in self.manifest.custom_nodes]
        self.implementations = native.describe(self.session.get_session_options(), [runtime_backends.CPU],
                                               custom_ops, plan)
        self.names = [o.name for o in self.session.get_outputs()]

    def bind(self, ids: np.ndarray) -> Callable[[], Any]:
        feeds = prepare(self.manifest, self.limits, {"input_ids": ids}).feeds
        return lambda: self.session.run(None, feeds)

    def output(self, outputs: Any, name: str) -> np.ndarray | None:
        return outputs[self.names.index(name)] if name in self.names else None


def open_backend(kind: str, checkpoint: str | Path, export: Path, threads: int, check_files: bool = True,
                 kernels: str = "auto"):
    """The runner of one of :data:`~.options.BACKENDS` over a checkpoint folder and its export."""
    if kind == "reference":
        return Reference(Path(checkpoint), threads)
    if kind == "hf":
        return HF(Path(checkpoint), threads)
    if kind == "onnxruntime":
        return Ort(export, threads, check_files=check_files, kernels=kernels)
    raise ValueError(kind)
