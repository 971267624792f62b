"""Random weights for new checkpoints, following HF's ``_init_weights`` conventions.

Linear and embedding weights are drawn from N(0, ``initializer_range``), biases are zero and norm scales one.
A module with parameters of its own kind (Mega's EMA, for one) defines ``init_weights_(generator, std)`` and is
initialised by it instead, after the generic pass.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def initialize_weights(model: nn.Module, seed: int, std: float) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * std)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
        elif isinstance(module, nn.LayerNorm):
            if module.weight is not None:
                module.weight.fill_(1.0)
            if module.bias is not None:
                module.bias.zero_()
    for module in model.modules():
        custom = getattr(module, "init_weights_", None)
        if callable(custom):
            custom(generator, std)
    return model
