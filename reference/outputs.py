"""Model outputs: small dataclasses whose field names are HF's (``last_hidden_state``, ``logits``, ...).

Fields a head does not produce stay ``None``. Outputs also read like HF's ``ModelOutput`` by key
(``out["logits"]``), and ``to_dict()`` gives the non-``None`` fields, which is what export and parity use.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch


@dataclasses.dataclass
class ModelOutput:
    def __getitem__(self, key: str) -> Any:
        if not isinstance(key, str) or key not in self.to_dict():
            raise KeyError(f"{type(self).__name__} has no output {key!r}; it has {sorted(self.to_dict())}")
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

    def keys(self) -> list[str]:
        return list(self.to_dict())


@dataclasses.dataclass
class BaseModelOutput(ModelOutput):
    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    past_key_values: Any = None


@dataclasses.dataclass
class CausalLMOutput(ModelOutput):
    logits: torch.Tensor | None = None
    past_key_values: Any = None


@dataclasses.dataclass
class MaskedLMOutput(ModelOutput):
    logits: torch.Tensor | None = None


@dataclasses.dataclass
class SequenceClassifierOutput(ModelOutput):
    logits: torch.Tensor | None = None


@dataclasses.dataclass
class MultipleChoiceModelOutput(ModelOutput):
    logits: torch.Tensor | None = None


@dataclasses.dataclass
class TokenClassifierOutput(ModelOutput):
    logits: torch.Tensor | None = None


@dataclasses.dataclass
class QuestionAnsweringModelOutput(ModelOutput):
    start_logits: torch.Tensor | None = None
    end_logits: torch.Tensor | None = None


@dataclasses.dataclass
class NextSentencePredictorOutput(ModelOutput):
    logits: torch.Tensor | None = None


@dataclasses.dataclass
class PreTrainingOutput(ModelOutput):
    prediction_logits: torch.Tensor | None = None
    seq_relationship_logits: torch.Tensor | None = None
