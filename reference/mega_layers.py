"""Mega's building blocks around the gated attention: the embeddings, the damped multi-dimensional EMA, the two
relative position biases, the norms and the normalised feed-forward network (NFFN).

Split out of ``reference/mega.py`` (which imports them, and holds the config, the cache, the gated attentions, the
block and the base model) to keep that file readable; checked against the same ``transformers==4.57.6``
(``models/deprecated/mega/modeling_mega.py``). The EMA's recurrence is the custom op ``tensorkiln::mega_ema``
(``reference/ops/mega_ema.py``); its module here holds the parameters, the padding mask and the residual around it.
Parameter names are HF's state_dict keys.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .activations import get_activation
from .ops.mega_ema import mega_ema

if TYPE_CHECKING:  # mega.py imports this module; the config is only needed for annotations here
    from .mega import MegaConfig

# ----------------------------------------------------------------------------------------------- position biases


def _bias_limit(config: MegaConfig) -> int:
    # HF bounds the bias by chunk_size whenever chunk_size is set, even with use_chunking off.
    return config.max_positions if config.chunk_size < 0 else config.chunk_size


class MegaSimpleRelativePositionalBias(nn.Module):
    """A learned scalar per relative offset: bias[i, j] = rel_pos_bias[limit - 1 + j - i]."""

    def __init__(self, config: MegaConfig):
        super().__init__()
        self.limit = _bias_limit(config)
        self.rel_pos_bias = nn.Parameter(torch.empty(2 * config.max_positions - 1))

    def forward(self, q_len: int, k_len: int, q_start: int = 0) -> torch.Tensor:
        """The (q_len, k_len) bias of query positions q_start.. against key positions 0..k_len - 1."""
        # HF builds the square bias of the longer side and refuses it beyond the limit; so do we.
        span = max(q_start + q_len, k_len)
        if span > self.limit:
            raise ValueError(
                f"the simple relative bias covers at most {self.limit} positions (max_positions, or chunk_size when "
                f"set), but this attention spans {span} (query positions up to {q_start + q_len}, {k_len} keys; "
                "cross-attention counts the decoder positions and the encoder length); shorten the input, or use "
                "chunking for self-attention"
            )
        device = self.rel_pos_bias.device
        rows = torch.arange(q_start, q_start + q_len, device=device)
        cols = torch.arange(k_len, device=device)
        return self.rel_pos_bias[self.limit - 1 + cols[None, :] - rows[:, None]]  # (Lq, Lk): offset j - i

    def init_weights_(self, generator: torch.Generator, std: float) -> None:
        with torch.no_grad():
            self.rel_pos_bias.copy_(torch.randn(self.rel_pos_bias.shape, generator=generator) * std)


class MegaRotaryRelativePositionalBias(nn.Module):
    """bias[i, j] = rot_i(alpha) . rot_j(b_param): a function of j - i that extrapolates past max_positions."""

    def __init__(self, config: MegaConfig):
        super().__init__()
        self.embed_dim = config.shared_representation_size
        self.alpha = nn.Parameter(torch.empty(1, self.embed_dim))
        self.b_param = nn.Parameter(torch.empty(1, self.embed_dim))

    def _rotate(self, vector: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """vector (1, S) rotated to each position start..stop - 1: (stop - start, S)."""
        half = self.embed_dim // 2
        # HF's get_sinusoid_embeddings, op for op (its table rows do not depend on the table's length).
        device = vector.device
        freq = torch.exp(torch.arange(half, dtype=torch.int64, device=device).float() * -(math.log(10000) / half))
        positions = torch.arange(start, stop, dtype=torch.float, device=device)
        angles = positions.unsqueeze(1) * freq.unsqueeze(0)  # (L, S/2)
        sin, cos = angles.sin().to(vector), angles.cos().to(vector)
        first, second = vector.expand(stop - start, self.embed_dim).chunk(2, dim=-1)  # (L, S/2) each
        return torch.cat([first * cos - second * sin, second * cos + first * sin], dim=1)  # (L, S)

    def forward(self, q_len: int, k_len: int, q_start: int = 0) -> torch.Tensor:
        """The (q_len, k_len) bias of query positions q_start.. against key positions 0..k_len - 1."""
        return self._rotate(self.alpha, q_start, q_start + q_len) @ self._rotate(self.b_param, 0, k_len).T

    def init_weights_(self, generator: torch.Generator, std: float) -> None:
        with torch.no_grad():
            self.alpha.copy_(torch.randn(self.alpha.shape, generator=generator) * std)
            self.b_param.copy_(torch.randn(self.b_param.shape, generator=generator) * std)


def relative_position_bias(config: MegaConfig) -> nn.Module:
    """The configured bias; called as ``bias(q_len, k_len, q_start)``, it returns the (q_len, k_len) bias."""
    if config.relative_positional_bias == "simple":
        return MegaSimpleRelativePositionalBias(config)
    return MegaRotaryRelativePositionalBias(config)


# ----------------------------------------------------------------------------------------------- norms


class MegaScaleNorm(nn.Module):
    """x * scalar / sqrt(mean(x^2) + eps): RMSNorm with one learned scalar."""

    def __init__(self, eps: float, affine: bool):
        super().__init__()
        self.eps = eps
        self.scalar = nn.Parameter(torch.ones(1)) if affine else None

    def forward(self, x):
        mean_square = x.square().mean(dim=-1, keepdim=True)
        if self.scalar is not None:
            x = self.scalar * x
        return x * torch.rsqrt(mean_square + self.eps)

    def init_weights_(self, generator, std):
        if self.scalar is not None:
            nn.init.ones_(self.scalar)


class MegaRMSNorm(nn.Module):
    """HF's MegaRMSNorm as it behaves: it computes the RMS but drops the product, so it only scales by ``weight``
    (and is the identity with ``norm_affine=False``). Reproduced because checkpoints were trained that way."""

    def __init__(self, hidden_size: int, affine: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size)) if affine else None

    def forward(self, x):
        return x if self.weight is None else x * self.weight

    def init_weights_(self, generator, std):
        if self.weight is not None:
            nn.init.ones_(self.weight)


class MegaBatchNorm(nn.Module):
    """Inference BatchNorm over the channel axis with the checkpoint's running statistics (HF's BatchNorm1d and
    SyncBatchNorm in eval mode, both with track_running_stats). Per token, so the layout does not matter."""

    def __init__(self, hidden_size: int, eps: float, affine: bool):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size)) if affine else None
        self.bias = nn.Parameter(torch.zeros(hidden_size)) if affine else None
        self.register_buffer("running_mean", torch.zeros(hidden_size))
        self.register_buffer("running_var", torch.ones(hidden_size))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x):
        flat = x.reshape(-1, x.shape[-1])  # (B*L, D)
        out = F.batch_norm(flat, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return out.view_as(x)

    def init_weights_(self, generator, std):
        with torch.no_grad():
            if self.weight is not None:
                self.weight.fill_(1.0)
                self.bias.zero_()
            self.running_mean.zero_()
            self.running_var.fill_(1.0)


class MegaSequenceNorm(nn.Module):
    """Holds the configured norm under ``.norm``, as HF's wrapper does (checkpoint keys ``...norm.norm.*``)."""

    def __init__(self, config: MegaConfig, eps: float = 1e-5):
        super().__init__()
        kind, size, affine = config.normalization_type, config.hidden_size, config.norm_affine
        if kind == "layernorm":
            self.norm = nn.LayerNorm(size, eps=eps, elementwise_affine=affine)
        elif kind == "scalenorm":
            self.norm = MegaScaleNorm(eps, affine)
        elif kind == "rmsnorm":
            self.norm = MegaRMSNorm(size, affine)
        else:  # batchnorm, syncbatchnorm: identical at inference
            self.norm = MegaBatchNorm(size, eps, affine)

    def forward(self, x):
        return self.norm(x)


# ----------------------------------------------------------------------------------------------- embeddings


class MegaEmbeddings(nn.Module):
    """Word embeddings plus optional token-type embeddings; Mega has no absolute positions."""

    def __init__(self, config: MegaConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.token_type_embeddings = (
            nn.Embedding(config.type_vocab_size, config.hidden_size) if config.add_token_type_embeddings else None
        )

    def forward(self, input_ids, token_type_ids, inputs_embeds) -> torch.Tensor:
        embeddings = self.word_embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        if self.token_type_embeddings is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros(embeddings.shape[:2], dtype=torch.long, device=embeddings.device)
            embeddings = embeddings + self.token_type_embeddings(token_type_ids)
        return embeddings  # (B, L, D)


# ----------------------------------------------------------------------------------------------- EMA


class MegaMultiDimensionDampedEma(nn.Module):
    """silu(EMA(x) + omega * x): the EMA expands each channel into N damped dimensions and projects them back."""

    def __init__(self, config: MegaConfig):
        super().__init__()
        self.config = config
        rows = 2 * config.hidden_size if config.bidirectional else config.hidden_size
        ndim = config.ema_projection_size
        self.damping_factor = nn.Parameter(torch.empty(rows, ndim, 1))  # delta
        self.decay_factor = nn.Parameter(torch.empty(rows, ndim, 1))  # alpha
        self.ema_expansion_matrix = nn.Parameter(torch.empty(rows, ndim, 1))  # beta
        self.kernel_projection_matrix = nn.Parameter(torch.empty(rows, ndim))  # gamma
        self.residual_weight = nn.Parameter(torch.empty(config.hidden_size))  # omega

    def forward(self, x, padding_mask, prev_state, stateful: bool):
        residual = x * self.residual_weight
        if padding_mask is not None:
            x = x * padding_mask.unsqueeze(-1)  # (B, L, D): padded tokens feed nothing into the EMA
        # HF's cached path (ema_step) builds the full kernel: truncation applies only to stateless passes.
        truncation = 0 if stateful or self.config.truncation is None else self.config.truncation
        ema, state = mega_ema(
            x, self.damping_factor, self.decay_factor, self.ema_expansion_matrix, self.kernel_projection_matrix,
            prev_state, bidirectional=self.config.bidirectional, truncation=truncation,
        )
        return F.silu(ema + residual), state

    def init_weights_(self, generator, std):
        config = self.config
        with torch.no_grad():
            for param in (self.damping_factor, self.decay_factor):
                param.copy_(torch.randn(param.shape, generator=generator) * config.ema_delta_alpha_range)
            # beta starts at [1, -1, 1, -1, ...] (HF: "seems more stable") plus noise
            signs = torch.ones(config.ema_projection_size, 1)
            signs[1::2] = -1.0
            noise = torch.randn(self.ema_expansion_matrix.shape, generator=generator) * config.ema_beta_range
            self.ema_expansion_matrix.copy_(noise + signs)
            for param in (self.kernel_projection_matrix, self.residual_weight):
                param.copy_(torch.randn(param.shape, generator=generator) * config.ema_gamma_omega_range)


# ----------------------------------------------------------------------------------------------- feed-forward


class MegaNormalizedFeedForwardNetwork(nn.Module):
    def __init__(self, config: MegaConfig):
        super().__init__()
        self.prenorm = config.normalize_before_ffn
        self.activation = get_activation(config.activation, "activation")
        self.norm = MegaSequenceNorm(config)
        self.fc1 = nn.Linear(config.hidden_size, config.nffn_hidden_size)
        self.fc2 = nn.Linear(config.nffn_hidden_size, config.hidden_size)

    def forward(self, hidden):
        x = self.norm(hidden) if self.prenorm else hidden
        out = self.fc2(self.activation(self.fc1(x))) + hidden
        return out if self.prenorm else self.norm(out)
