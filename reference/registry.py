"""The architecture registry: ``model_type`` -> config class and one module class per HF head.

Each architecture defines ``ARCHITECTURE = Architecture(...)`` at the end of its heads' module (the model file, or
its ``*_heads.py`` where the heads have a file of their own); this module collects the five. Head names
are HF's class-name suffixes (``"Model"``, ``"ForMaskedLM"``, ...), so ``MraForMaskedLM`` in a checkpoint's
``architectures`` list resolves to ``("mra", "ForMaskedLM")``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping

from torch import nn

from .config import ConfigError, HFConfig

# model_type -> the module (in this package) that defines its ARCHITECTURE: the model file, or for Mega and
# MegatronBERT the heads file split out of it. Different architectures' files do not import each other.
_MODULES = {
    "mra": "mra",
    "mega": "mega_heads",
    "megatron-bert": "megatron_bert_heads",
    "gpt_neox": "gpt_neox",
    "nystromformer": "nystromformer",
}


@dataclasses.dataclass(frozen=True)
class Architecture:
    model_type: str
    #: HF's class-name prefix: "Mra", "Mega", "MegatronBert", "GPTNeoX", "Nystromformer".
    class_prefix: str
    config_class: type[HFConfig]
    #: head suffix ("Model", "ForCausalLM", ...) -> module class taking the config.
    heads: Mapping[str, type[nn.Module]]
    #: The attribute name of the base model inside head models, as HF names it ("mra", "bert", "gpt_neox", ...).
    base_model_prefix: str

    def head_class(self, head: str) -> type[nn.Module]:
        suffix = normalize_head(head, self.class_prefix)
        if suffix not in self.heads:
            raise ConfigError(
                f"{self.model_type} has no head {head!r}; available: {', '.join(sorted(self.heads))}"
            )
        return self.heads[suffix]

    def hf_class_name(self, head: str) -> str:
        return self.class_prefix + normalize_head(head, self.class_prefix)


def normalize_head(head: str, class_prefix: str = "") -> str:
    """Accept "ForMaskedLM", "MraForMaskedLM", "Model" or "MraModel"; return the suffix."""
    if class_prefix and head.startswith(class_prefix) and head != class_prefix:
        head = head[len(class_prefix):]
    return head


def get_architecture(model_type: str) -> Architecture:
    if not isinstance(model_type, str) or model_type not in _MODULES:
        raise ConfigError(
            f"config key 'model_type' is {model_type!r}, which tensorkiln does not support; "
            f"supported: {', '.join(sorted(_MODULES))}"
        )
    module = importlib.import_module(f"{__package__}.{_MODULES[model_type]}")
    arch = module.ARCHITECTURE
    assert arch.model_type == model_type, (arch.model_type, model_type)
    return arch


def all_architectures() -> dict[str, Architecture]:
    return {model_type: get_architecture(model_type) for model_type in _MODULES}


def model_types() -> list[str]:
    return list(_MODULES)
