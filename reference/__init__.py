"""Reference PyTorch models of MRA, Mega, MegatronBERT, GPT-NeoX and Nystromformer.

Standalone modules with Hugging Face's parameter names and output field names, checked for parity against
``transformers==4.57.6`` (which this package never imports). Load a local HF checkpoint folder with
:func:`from_pretrained` and write one with :func:`save_pretrained`.

The names below are imported on first use (PEP 562), so that torch-free parts of this package (the preset configs
in :mod:`tensorkiln.reference.presets`) can be read on the runtime-only install, which has no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the submodule that defines it.
_EXPORTS = {
    "Architecture": "registry",
    "CheckpointError": "checkpoint",
    "ConfigError": "config",
    "HFConfig": "config",
    "all_architectures": "registry",
    "build_model": "checkpoint",
    "from_pretrained": "checkpoint",
    "get_architecture": "registry",
    "model_types": "registry",
    "read_config": "checkpoint",
    "save_pretrained": "checkpoint",
}

__all__ = sorted([*_EXPORTS, "ops"])


def __getattr__(name: str) -> Any:
    if name == "ops":
        return importlib.import_module(f"{__name__}.ops")
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
