"""GPT-NeoX's rotary position embeddings: ``inv_freq`` for each RoPE scaling, the cos/sin tables, and the rotation.

Split out of ``reference/gpt_neox.py`` (which imports it). Checked against ``transformers==4.57.6``
(``models/gpt_neox/modeling_gpt_neox.py``: ``GPTNeoXRotaryEmbedding``, ``rotate_half``, ``apply_rotary_pos_emb``;
and ``modeling_rope_utils.py``) and the papers: Su et al. 2021, "RoFormer" (rotary embeddings); Black et al. 2022,
"GPT-NeoX-20B" (partial rotary: only the first ``rotary_ndims`` channels of each head rotate); and the RoPE scalings
HF offers (linear position interpolation, dynamic NTK, YaRN, LongRoPE, Llama 3.1).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from .config import ConfigError

if TYPE_CHECKING:  # gpt_neox.py imports this module; the config is only needed for annotations here
    from .gpt_neox import GPTNeoXConfig

# ----------------------------------------------------------------------------------------------- rotary frequencies
# Each function mirrors HF's formula and operation order in float32, so inv_freq matches bit for bit.


def _exponents(dim: int) -> torch.Tensor:
    return torch.arange(0, dim, 2, dtype=torch.int64).float() / dim  # (F,)


def rope_parameters(config: GPTNeoXConfig, long: bool = False) -> tuple[torch.Tensor, float]:
    """``(inv_freq (F,), attention_scaling)`` for the config's rope type at model build time.

    ``long`` picks LongRoPE's long factors (used once positions pass the original context).
    """
    base, dim, rs = config.rotary_emb_base, config.rotary_dim_hf, config.rope_scaling
    rope_type = config.rope_type
    if rope_type in ("default", "dynamic"):
        # Dynamic NTK equals the default rope up to max_position_embeddings; longer inputs use dynamic_ntk_inv_freq.
        return 1.0 / (base ** _exponents(dim)), 1.0
    if rope_type == "linear":
        return 1.0 / (base ** _exponents(dim)) / rs["factor"], 1.0
    if rope_type == "yarn":
        return _yarn_parameters(config)
    if rope_type == "longrope":
        return _longrope_parameters(config, long)
    if rope_type == "llama3":
        return _llama3_inv_freq(config), 1.0
    raise ConfigError(f"config key 'rope_scaling' has unsupported rope_type {rope_type!r}")


def dynamic_ntk_inv_freq(config: GPTNeoXConfig, seq_len: torch.Tensor) -> torch.Tensor:
    """Dynamic NTK: grow the base with the current length ``seq_len`` (a 0-d tensor > max_position_embeddings)."""
    dim, factor, max_pos = config.rotary_dim_hf, config.rope_scaling["factor"], config.max_position_embeddings
    base = config.rotary_emb_base * ((factor * seq_len / max_pos) - (factor - 1)) ** (dim / (dim - 2))
    return 1.0 / (base ** _exponents(dim).to(seq_len.device))


def _yarn_parameters(config: GPTNeoXConfig) -> tuple[torch.Tensor, float]:
    base, dim, rs = config.rotary_emb_base, config.rotary_dim_hf, config.rope_scaling
    factor = rs["factor"]
    original_max = rs.get("original_max_position_embeddings") or config.max_position_embeddings

    def get_mscale(scale: float, mscale: float = 1) -> float:
        return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0

    attention_factor = rs.get("attention_factor")
    if attention_factor is None:
        mscale, mscale_all_dim = rs.get("mscale"), rs.get("mscale_all_dim")
        if mscale and mscale_all_dim:
            attention_factor = float(get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim))
        else:
            attention_factor = get_mscale(factor)
    # HF uses `or`, so a 0 in the config falls back to the paper's defaults too.
    beta_fast, beta_slow = rs.get("beta_fast") or 32, rs.get("beta_slow") or 1

    def correction_dim(num_rotations: float) -> float:
        # The dimension whose wavelength fits num_rotations times into the original context.
        return (dim * math.log(original_max / (num_rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if rs.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # HF's guard against a zero-width ramp
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)  # (F,)
    extrapolation_weight = 1 - ramp
    pos_freqs = base ** (torch.arange(0, dim, 2).float() / dim)
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolation_weight) + (1.0 / pos_freqs) * extrapolation_weight
    return inv_freq, attention_factor


def _longrope_parameters(config: GPTNeoXConfig, long: bool) -> tuple[torch.Tensor, float]:
    base, dim, rs = config.rotary_emb_base, config.rotary_dim_hf, config.rope_scaling
    factor = rs.get("factor")
    if config.original_max_position_embeddings:
        # Phi-3 style: HF derives the factor from the two context lengths and ignores rope_scaling["factor"].
        factor = config.max_position_embeddings / config.original_max_position_embeddings
    attention_factor = rs.get("attention_factor")
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1.0 else math.sqrt(
            1 + math.log(factor) / math.log(config.longrope_original_max))
    ext_factors = torch.tensor(rs["long_factor"] if long else rs["short_factor"], dtype=torch.float32)
    return 1.0 / (ext_factors * base ** _exponents(dim)), attention_factor


def _llama3_inv_freq(config: GPTNeoXConfig) -> torch.Tensor:
    rs, dim = config.rope_scaling, config.rotary_dim_hf
    inv_freq = 1.0 / (config.rotary_emb_base ** _exponents(dim))
    factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old_context = rs["original_max_position_embeddings"]
    low_freq_wavelen, high_freq_wavelen = old_context / low, old_context / high
    wavelen = 2 * math.pi / inv_freq
    # Long wavelengths are interpolated by `factor`, short ones kept, the band between blended smoothly.
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


class GPTNeoXRotaryEmbedding(nn.Module):
    """cos/sin tables for the given positions; the rope scaling is chosen per call from the positions alone."""

    def __init__(self, config: GPTNeoXConfig) -> None:
        super().__init__()
        self.config = config
        self.rope_type = config.rope_type
        inv_freq, self.attention_scaling = rope_parameters(config)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        if self.rope_type == "longrope":
            self.register_buffer("long_inv_freq", rope_parameters(config, long=True)[0], persistent=False)

    def _inv_freq(self, position_ids: torch.Tensor) -> torch.Tensor:
        inv_freq = self.inv_freq.float()
        if self.rope_type not in ("dynamic", "longrope"):
            return inv_freq
        # HF measures the length as the largest position of this call (over the whole batch) plus one.
        seq_len = position_ids.max() + 1
        if self.rope_type == "dynamic":
            scaled = dynamic_ntk_inv_freq(self.config, seq_len)
            return torch.where(seq_len > self.config.max_position_embeddings, scaled, inv_freq)
        return torch.where(seq_len > self.config.longrope_original_max, self.long_inv_freq.float(), inv_freq)

    @torch.no_grad()
    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """position_ids (B|1, T) -> cos, sin (B|1, T, rotary_ndims), computed in float32 as HF does."""
        inv_freq = self._inv_freq(position_ids)
        inv_freq = inv_freq[None, :, None].expand(position_ids.shape[0], -1, 1)  # (B, F, 1)
        freqs = (inv_freq @ position_ids[:, None, :].float()).transpose(1, 2)  # (B, F, T) -> (B, T, F)
        emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, 2F)
        cos, sin = emb.cos() * self.attention_scaling, emb.sin() * self.attention_scaling
        return cos.to(dtype), sin.to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first rotary_ndims channels of x (B, H, T, D); the rest pass through (partial rotary)."""
    cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, R)
    rotary_dim = cos.shape[-1]
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    return torch.cat((x_rot * cos + rotate_half(x_rot) * sin, x_pass), dim=-1)
