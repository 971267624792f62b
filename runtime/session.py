"""A session over one ``kiln export`` folder: HF-named numpy inputs in, HF-named numpy outputs out.

Torch-free. ``load`` reads and checks the manifest (and, by default, every file's sha256), builds the backend
session, and returns a :class:`Session`:

    session = load("exports/pythia")                      # ONNX Runtime, CPU (CUDA where onnxruntime-gpu is)
    out = session.run(input_ids=ids, attention_mask=mask)  # {"logits": ...}
    tokens = session.generate(ids, max_new_tokens=20)      # causal LMs, with the exported KV cache

``run`` is safe to call from several threads at once: it keeps no state between calls, and ONNX Runtime's
``InferenceSession.run`` is thread-safe.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import backends
from . import manifest as mf
from .errors import ManifestError, RuntimeInputError
from .hub import hub_hint
from .inputs import ModelLimits, prepare


class Session:
    """One loaded export. Build it with :func:`load`."""

    def __init__(self, folder: Path, manifest: mf.Manifest, config: dict[str, Any], backend: str,
                 providers: Sequence[str], threads: int | None):
        self.folder = folder
        self.manifest = manifest
        self.config = config
        self.limits = ModelLimits.from_config(config)
        self.backend = backend
        self._session = backends.ort_session(folder / manifest.model_file, providers, threads, manifest.precision)
        self.providers = tuple(self._session.get_providers())
        graph_inputs = [i.name for i in self._session.get_inputs()]
        if graph_inputs != [i.name for i in manifest.inputs]:
            raise ManifestError(f"the graph's inputs {graph_inputs} differ from the manifest's "
                                   f"{[i.name for i in manifest.inputs]}: re-export the model")
        self._output_names = [o.name for o in self._session.get_outputs()]

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.manifest.inputs]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.manifest.outputs]

    @property
    def is_causal_lm(self) -> bool:
        return self.manifest.head == "ForCausalLM"

    def run(self, **inputs: Any) -> dict[str, np.ndarray]:
        """Run the model on HF-named inputs (``input_ids`` and optionally ``attention_mask``,
        ``token_type_ids``, ``position_ids``, ``past_key_values.{layer}.{kind}``); return HF-named outputs."""
        prepared = prepare(self.manifest, self.limits, inputs)
        values = self._session.run(self._output_names, prepared.feeds)
        return prepared.trim(self.manifest, dict(zip(self._output_names, values)))

    def generate(self, input_ids: Any, max_new_tokens: int, **options: Any) -> np.ndarray:
        """Continue each prompt by up to ``max_new_tokens`` tokens; see :func:`tensorkiln.runtime.generate.generate`."""
        from .generate import generate

        return generate(self, input_ids, max_new_tokens, **options)

    def stream(self, input_ids: Any, max_new_tokens: int, **options: Any) -> Iterator[np.ndarray]:
        """Yield each step's new tokens, shape (batch,); see :func:`tensorkiln.runtime.generate.stream`."""
        from .generate import stream

        return stream(self, input_ids, max_new_tokens, **options)

    def __repr__(self) -> str:
        return (f"Session({self.manifest.hf_class}, {self.manifest.precision}, backend={self.backend!r}, "
                f"providers={list(self.providers)})")


def load(export_dir: str | Path, backend: str = "auto", *, providers: Sequence[str] | None = None,
         threads: int | None = None, check_files: bool = True) -> Session:
    """Load a ``kiln export`` folder.

    ``backend``: "auto" or "onnxruntime" (ONNX Runtime; CUDA execution provider first where installed);
    "tensorrt" is not available yet. ``providers`` overrides ORT's execution providers. ``threads``: ORT's
    intra-op threads (default: ORT's choice). ``check_files``: verify every file's sha256 against the manifest.
    """
    folder = Path(export_dir)
    if not folder.is_dir():
        raise ManifestError(f"{str(folder)!r} is not a folder; pass the OUT_DIR that `kiln export` wrote."
                            + hub_hint(folder, export=True))
    chosen = backends.choose_providers(backend, providers)
    manifest = mf.read_manifest(folder, check_files=check_files)
    config_path = folder / manifest.config_file
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{str(config_path)!r} cannot be read: {exc}") from None
    return Session(folder, manifest, config, "onnxruntime", chosen, threads)


__all__ = ["RuntimeInputError", "Session", "load"]
