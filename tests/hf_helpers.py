"""Test helpers shared by the parity tests: random weights in HF models and the HF -> reference round trip.

The oracle is ``transformers==4.57.6``. Every parameter (biases and norm scales included) is randomised so that a
wrongly wired bias or norm cannot hide behind HF's zero/one initialisation.
"""

from __future__ import annotations

import torch
from torch import nn

from tensorkiln.reference import from_pretrained


@torch.no_grad()
def randomize_parameters(model: nn.Module, seed: int = 0, scale: float = 0.05) -> nn.Module:
    """Fill every floating parameter with N(0, scale), norm-like weights with 1 + N(0, scale)."""
    generator = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if not param.dtype.is_floating_point:
            continue
        noise = torch.randn(param.shape, generator=generator, dtype=torch.float32) * scale
        is_norm = "norm" in name.lower() or name.endswith("LayerNorm.weight")
        if param.dim() == 1 and is_norm and name.endswith("weight"):
            noise = noise + 1.0
        param.copy_(noise.to(param.dtype))
    return model


def load_into_reference(hf_model: nn.Module, tmp_path, head: str | None = None) -> nn.Module:
    """Save the HF model with HF's own ``save_pretrained`` and load the folder with ours."""
    folder = tmp_path / "hf_checkpoint"
    hf_model.save_pretrained(folder)
    return from_pretrained(folder, head=head)


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.double() - b.double()).abs().max().item()
