"""Reference PyTorch models of MRA, Mega, MegatronBERT, GPT-NeoX and Nystromformer.

Standalone modules with Hugging Face's parameter names and output field names, checked for parity against
``transformers==4.57.6`` (which this package never imports). Load a local HF checkpoint folder with
:func:`from_pretrained` and write one with :func:`save_pretrained`.
"""

from . import ops
from .checkpoint import CheckpointError, build_model, from_pretrained, read_config, save_pretrained
from .config import ConfigError, HFConfig
from .registry import Architecture, all_architectures, get_architecture, model_types

__all__ = [
    "Architecture",
    "CheckpointError",
    "ConfigError",
    "HFConfig",
    "all_architectures",
    "build_model",
    "from_pretrained",
    "get_architecture",
    "model_types",
    "ops",
    "read_config",
    "save_pretrained",
]
