"""Mega: Moving Average Equipped Gated Attention (a single-head gated attention fed by a damped multi-dim EMA).

Checked against ``transformers==4.57.6`` (``models/deprecated/mega/modeling_mega.py``, HF's numbers, quirks
included) and Ma et al. 2022, "Mega: Moving Average Equipped Gated Attention" (https://arxiv.org/abs/2209.10655),
whose fairseq code HF ported. Batch-first throughout; HF is time-first ``(L, B, D)`` inside its blocks.

One block (``MegaBlock``), x being (B, L, D):
    x' = norm(x) (pre-norm)        v = act(v_proj(x'))                 e = silu(EMA(x') + omega * x')
    r, qk, g, i = split(mx_proj(e))  q, k = silu(qk) * qk_weight + qk_bias    (one shared head of width S)
    h = act(i + h_proj(attention(q, k, v) * silu(g)))     out = x + sigmoid(r) * (h - x)
then, with ``add_cross_attention``, the gated cross-attention to the encoder output (``MegaGatedCrossAttention``),
then the NFFN. The EMA is the custom op ``tensorkiln::mega_ema`` (``reference/ops/mega_ema.py``); the embeddings, the
EMA module, the norms, the relative position biases and the NFFN are in ``reference/mega_layers.py``; the task heads
and ``ARCHITECTURE`` in ``reference/mega_heads.py``.

Where we differ from HF (only where HF errors or returns NaN; see NOTES.md):
  * ``use_chunking`` with a length that is not a multiple of ``chunk_size``: HF fails in a reshape; we pad the
    attention's keys/queries to the next multiple with masked positions, as fairseq's Mega encoder pads its tokens.
    The output equals HF's on the same input explicitly padded and masked.
  * a causal softmax row with every key masked (left padding): HF gives NaN, which its EMA then spreads to the
    whole sequence; we give that row zero attention.
  * incremental decoding: HF's laplace/relu2 attention divides by 1 instead of the number of visible keys once a
    cache is passed, and it masks the past keys with the newest token's mask only; its cross-attention takes the
    relative bias of the position after the right one (``prev_self_key.size(1) + 1``). We reproduce its full pass.
    HF cannot cache with chunking (a shape error); we can.
  * cross-attention to an encoder output that is all padding: HF gives NaN; those queries attend to nothing here.
The EMA ignores ``truncation`` whenever the decoder caches (HF's ``ema_step`` builds the full kernel), and HF's
RMSNorm discards its normalisation (it only multiplies by the weight): both are reproduced.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .activations import get_activation
from .config import HFConfig, require
from .mega_layers import (
    MegaEmbeddings,
    MegaMultiDimensionDampedEma,
    MegaNormalizedFeedForwardNetwork,
    MegaSequenceNorm,
    relative_position_bias,
)
from .outputs import BaseModelOutput

#: Checkpoint tensors we recompute: the rotary bias's dtype marker and the token-type default buffer.
IGNORED_KEYS = (r"rel_pos_bias\._float_tensor$", r"embedding_layer\.token_type_ids$")


@dataclasses.dataclass(frozen=True)
class MegaConfig(HFConfig):
    model_type: ClassVar[str] = "mega"

    vocab_size: int = 30522
    hidden_size: int = 128
    num_hidden_layers: int = 4
    intermediate_size: int = 256
    ema_projection_size: int = 16
    bidirectional: bool = True
    shared_representation_size: int = 64
    use_chunking: bool = False
    chunk_size: int = -1
    truncation: int | None = None
    normalize_before_mega: bool = True
    normalization_type: Literal["layernorm", "scalenorm", "rmsnorm", "batchnorm", "syncbatchnorm"] = "scalenorm"
    norm_affine: bool = True
    activation: str = "silu"
    attention_activation: Literal["softmax", "laplace", "relu2"] = "softmax"
    dropout_prob: float = 0.1
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    use_feature_dropout: bool = False
    use_normalized_ffn: bool = True
    nffn_hidden_size: int = 256
    normalize_before_ffn: bool = True
    nffn_activation_dropout_prob: float = 0.1
    max_positions: int = 2048
    add_token_type_embeddings: bool = False
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    ema_delta_alpha_range: float = 0.2
    ema_beta_range: float = 0.02
    ema_gamma_omega_range: float = 1.0
    pad_token_id: int | None = 1
    bos_token_id: int | None = 0
    eos_token_id: int | None = 2
    relative_positional_bias: Literal["rotary", "simple"] = "rotary"
    classifier_dropout: float | None = None
    use_cache: bool = True
    add_lm_hidden_dense_layer: bool = True
    is_decoder: bool = False
    add_cross_attention: bool = False
    tie_word_embeddings: bool = True

    def validate(self) -> None:
        super().validate()
        for key in ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size", "ema_projection_size",
                    "shared_representation_size", "nffn_hidden_size", "max_positions", "type_vocab_size"):
            require(getattr(self, key) >= 1, key, f"must be at least 1, got {getattr(self, key)}")
        require(self.chunk_size != 0, "chunk_size", "must be positive, or -1 for no chunk")
        require(not self.use_chunking or self.chunk_size > 0, "chunk_size",
                f"must be positive when use_chunking is true, got {self.chunk_size}")
        require(self.truncation is None or self.truncation >= 1, "truncation",
                f"must be null or at least 1, got {self.truncation}")
        if self.relative_positional_bias == "rotary":
            require(self.shared_representation_size % 2 == 0, "shared_representation_size",
                    f"must be even for the rotary relative bias, got {self.shared_representation_size}")
        else:
            require(self.chunk_size <= self.max_positions, "chunk_size",
                    f"must not exceed max_positions ({self.max_positions}) with the simple relative bias")
        require(self.pad_token_id is None or 0 <= self.pad_token_id < self.vocab_size, "pad_token_id",
                f"must be a token id below vocab_size ({self.vocab_size}), got {self.pad_token_id}")
        require(not self.add_cross_attention or self.is_decoder, "add_cross_attention",
                "needs is_decoder=true: only a decoder attends to an encoder's output")
        get_activation(self.activation, "activation")


def _attention_function(config: MegaConfig):
    """laplace / relu2 for element-wise attention (HF's ACT2FN entries); None for softmax."""
    if config.attention_activation == "softmax":
        return None
    return get_activation(config.attention_activation, "attention_activation")


class MegaLayerCache(NamedTuple):
    """One decoder layer's incremental state. The first five fields are HF's per-layer tuple, in its order
    ``(self_key, self_value, self_ema_state[, cross_key, cross_value])``, so HF's tuples load as they are.

    key         (B, P, S)  self-attention keys of the P tokens the next token can attend to: all past tokens, or
                           with ``use_chunking`` those of the current chunk (empty at a chunk boundary)
    value       (B, P, intermediate_size)  the matching self-attention values
    ema_state   (B, hidden_size, ema_projection_size)  the EMA state after the last token
    cross_key   (B, Ls, S) cross-attention keys of the encoder output (``add_cross_attention``; else None)
    cross_value (B, Ls, hidden_size)  the matching cross-attention values; both are computed once, on the first pass
    length      the number of decoder tokens seen, i.e. the next token's position, which the cross-attention's
                relative bias needs. None in HF's tuples, where it is the key length (HF cannot cache with chunking).
    """

    key: torch.Tensor
    value: torch.Tensor
    ema_state: torch.Tensor
    cross_key: torch.Tensor | None = None
    cross_value: torch.Tensor | None = None
    length: int | None = None


# ----------------------------------------------------------------------------------------------- attention


class MegaMovingAverageGatedAttention(nn.Module):
    """The Mega sub-layer: EMA, then single-head attention with a relative bias, gated and mixed back into x."""

    def __init__(self, config: MegaConfig):
        super().__init__()
        self.config = config
        hidden, shared, inner = config.hidden_size, config.shared_representation_size, config.intermediate_size
        self.activation = get_activation(config.activation, "activation")
        self.attention_function = _attention_function(config)
        self.norm = MegaSequenceNorm(config)
        self.ema_gate = MegaMultiDimensionDampedEma(config)
        self.v_proj = nn.Linear(hidden, inner)
        self.mx_proj = nn.Linear(hidden, shared + inner + 2 * hidden)
        self.h_proj = nn.Linear(inner, hidden)
        self.qk_weight = nn.Parameter(torch.empty(2, shared))
        self.qk_bias = nn.Parameter(torch.empty(2, shared))
        self.rel_pos_bias = relative_position_bias(config)

    def forward(self, hidden, mask, cache: MegaLayerCache | None, stateful: bool):
        """hidden (B, L, D); mask (B, P + L) in hidden's dtype or None; returns (B, L, D) and the new cache."""
        config = self.config
        length = hidden.shape[1]
        residual = hidden
        x = self.norm(hidden) if config.normalize_before_mega else hidden
        value = self.activation(self.v_proj(x))  # (B, L, V)
        current_mask = None if mask is None else mask[:, -length:]  # (B, L)
        ema_out, ema_state = self.ema_gate(x, current_mask, None if cache is None else cache.ema_state, stateful)

        residual_weight, query_key, attention_gate, intermediate = torch.split(
            self.mx_proj(ema_out),
            [config.hidden_size, config.shared_representation_size, config.intermediate_size, config.hidden_size],
            dim=-1,
        )
        residual_weight = torch.sigmoid(residual_weight)
        query_key, attention_gate = F.silu(query_key), F.silu(attention_gate)
        query, key = (query_key.unsqueeze(2) * self.qk_weight + self.qk_bias).unbind(2)  # (B, L, 2, S) -> (B, L, S)

        if cache is not None:
            key = torch.cat([cache.key, key], dim=1)  # (B, P + L, S)
            value = torch.cat([cache.value, value], dim=1)  # (B, P + L, V)
        key_mask = None if mask is None else mask[:, -key.shape[1]:]  # (B, P + L)
        attended = self._attend(query, key, value, key_mask)  # (B, L, V)

        weighted = self.activation(intermediate + self.h_proj(attended * attention_gate))
        out = torch.addcmul(residual, residual_weight, weighted - residual)
        if not config.normalize_before_mega:
            out = self.norm(out)

        new_cache = None
        if stateful:
            # With chunking, the next token sees only its own chunk: keep the keys of the unfinished chunk.
            keep = key.shape[1] % config.chunk_size if config.use_chunking else key.shape[1]
            new_cache = MegaLayerCache(key[:, key.shape[1] - keep:], value[:, value.shape[1] - keep:], ema_state)
        return out, new_cache

    def _attend(self, query, key, value, key_mask):
        """query (B, Lq, S) holds the last Lq of the Lk positions of key (B, Lk, S) and value (B, Lk, V)."""
        config = self.config
        batch, q_len, _ = query.shape
        k_len = key.shape[1]
        chunk = config.chunk_size
        if config.use_chunking:
            # Align the queries with the keys (dummy queries in front), pad to whole chunks with masked positions.
            # Also when k_len <= chunk (one padded chunk, the same numbers): a branch on the length would make
            # torch.export keep one side only, and the ONNX graph be wrong at other lengths.
            offset, front = 0, k_len - q_len
            pad = -k_len % chunk
            if key_mask is None:
                key_mask = key.new_ones(batch, k_len)
            query = F.pad(query, (0, 0, front, pad))  # (B, Lk + pad, S)
            key, value = F.pad(key, (0, 0, 0, pad)), F.pad(value, (0, 0, 0, pad))
            if key_mask is not None:
                key_mask = F.pad(key_mask, (0, pad))  # (B, Lk + pad)
            n_chunks, size = (k_len + pad) // chunk, chunk
        else:
            offset, front, pad = k_len - q_len, 0, 0
            n_chunks, size = 1, k_len
        query = query.reshape(batch, n_chunks, -1, query.shape[-1])  # (B, C, Lq', S)
        key = key.reshape(batch, n_chunks, size, key.shape[-1])  # (B, C, Lk', S)
        value = value.reshape(batch, n_chunks, size, value.shape[-1])  # (B, C, Lk', V)
        if key_mask is not None:
            key_mask = key_mask.reshape(batch, n_chunks, size)  # (B, C, Lk')

        bias = self.rel_pos_bias(size - offset, size, offset)  # (Lq', Lk')
        causal = None
        if config.is_decoder:
            causal = torch.ones(size, size, dtype=query.dtype, device=query.device).tril()[offset:]  # (Lq', Lk')
        if config.attention_activation == "softmax":
            weights = self._softmax_weights(query, key, bias, key_mask, causal)
        else:
            weights = self._elementwise_weights(query, key, bias, key_mask, causal)
        out = (weights @ value).reshape(batch, -1, value.shape[-1])  # (B, C * Lq', V)
        return out[:, front:front + q_len]  # (B, Lq, V)

    def _softmax_weights(self, query, key, bias, key_mask, causal):
        scores = (query * self.config.shared_representation_size**-0.5) @ key.transpose(2, 3) + bias  # (B,C,Lq,Lk)
        if causal is not None:
            scores = scores.masked_fill(causal == 0, float("-inf"))
        if key_mask is not None:
            padded = key_mask == 0  # (B, C, Lk)
            # HF (from fairseq): a chunk that is all padding masks nothing, which keeps its softmax finite.
            padded = padded & ~padded.all(dim=-1, keepdim=True)
            scores = scores.masked_fill(padded.unsqueeze(2), float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        # A row with no visible key (a causal row over left padding) is NaN in HF; it attends to nothing here.
        return weights.masked_fill(torch.isneginf(scores).all(dim=-1, keepdim=True), 0.0)

    def _elementwise_weights(self, query, key, bias, key_mask, causal):
        # laplace / relu2 attention: scores are normalised by the number of visible keys instead of a softmax.
        if causal is not None:
            lengths = causal.sum(dim=-1, keepdim=True)  # (Lq, 1)
        elif key_mask is not None:
            lengths = key_mask.sum(dim=-1, keepdim=True).clamp(min=1.0).unsqueeze(-1)  # (B, C, 1, 1)
        else:
            lengths = key.shape[2]
        scores = query @ key.transpose(2, 3) / lengths + bias  # (B, C, Lq, Lk)
        weights = self.attention_function(scores)
        if key_mask is not None:
            weights = weights * key_mask.unsqueeze(2)
        if causal is not None:
            weights = weights * causal
        return weights

    def init_weights_(self, generator, std):
        with torch.no_grad():
            self.qk_weight.copy_(torch.randn(self.qk_weight.shape, generator=generator) * std)
            self.qk_bias.zero_()


class MegaGatedCrossAttention(nn.Module):
    """The decoder's gated single-head attention to the encoder output (``add_cross_attention``); no EMA.

    x being the decoder states (B, L, D) and src the encoder output (B, Ls, D), used as given (not normalised):
        r, g, q = split(q_proj(norm(x)))  (no activation on q)     k = k_proj(src)     v = act(v_proj(src))
        h = act(h_proj(attention(q, k, v) * silu(g)))              out = x + sigmoid(r) * (h - x)
    No causal mask and no chunking. The relative bias pairs the query's decoder position i with the key's encoder
    position j (HF: row i of the square bias of the longer of the two lengths).
    """

    def __init__(self, config: MegaConfig):
        super().__init__()
        self.config = config
        hidden, shared = config.hidden_size, config.shared_representation_size
        self.activation = get_activation(config.activation, "activation")
        self.attention_function = _attention_function(config)
        self.norm = MegaSequenceNorm(config)
        self.k_proj = nn.Linear(hidden, shared)
        self.v_proj = nn.Linear(hidden, hidden)
        self.q_proj = nn.Linear(hidden, 2 * hidden + shared)
        self.h_proj = nn.Linear(hidden, hidden)
        self.rel_pos_bias = relative_position_bias(config)

    def project_encoder(self, encoder_hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys (B, Ls, S) and values (B, Ls, D) of the encoder output, cached while decoding."""
        return self.k_proj(encoder_hidden), self.activation(self.v_proj(encoder_hidden))

    def forward(self, hidden, key, value, key_mask, position: int):
        """hidden (B, L, D) holds decoder positions position..position + L - 1; key (B, Ls, S), value (B, Ls, D);
        key_mask (B, Ls) in hidden's dtype, 0 at encoder padding, or None. Returns (B, L, D)."""
        config = self.config
        x = self.norm(hidden) if config.normalize_before_mega else hidden
        residual_weight, gate, query = torch.split(
            self.q_proj(x), [config.hidden_size, config.hidden_size, config.shared_representation_size], dim=-1
        )
        bias = self.rel_pos_bias(query.shape[1], key.shape[1], position)  # (L, Ls)
        if self.attention_function is None:  # softmax
            scores = (query * config.shared_representation_size**-0.5) @ key.transpose(1, 2) + bias  # (B, L, Ls)
            if key_mask is not None:
                scores = scores.masked_fill(key_mask.unsqueeze(1) == 0, float("-inf"))
            weights = torch.softmax(scores, dim=-1)
            # An encoder output that is all padding: HF's softmax gives NaN; its queries attend to nothing here.
            weights = weights.masked_fill(torch.isneginf(scores).all(dim=-1, keepdim=True), 0.0)
        else:
            # laplace / relu2: normalised by the number of real encoder tokens. HF does not clamp it, so an
            # all-padding encoder output divides by 0 (NaN with relu2); its weights are 0 either way.
            lengths = key.shape[1] if key_mask is None else key_mask.sum(dim=-1).clamp(min=1.0)[:, None, None]
            weights = self.attention_function(query @ key.transpose(1, 2) / lengths + bias)  # (B, L, Ls)
            if key_mask is not None:
                weights = weights * key_mask.unsqueeze(1)
        attended = weights @ value  # (B, L, D)
        weighted = self.activation(self.h_proj(attended * F.silu(gate)))
        out = torch.addcmul(hidden, torch.sigmoid(residual_weight), weighted - hidden)
        return out if config.normalize_before_mega else self.norm(out)


class MegaBlock(nn.Module):
    """The Mega sub-layer, then the cross-attention (``add_cross_attention``), then the NFFN."""

    def __init__(self, config: MegaConfig):
        super().__init__()
        self.mega_layer = MegaMovingAverageGatedAttention(config)
        self.nffn = MegaNormalizedFeedForwardNetwork(config) if config.use_normalized_ffn else None
        self.cross_attn = MegaGatedCrossAttention(config) if config.add_cross_attention else None

    def forward(self, hidden, mask, cache, stateful, encoder_hidden, encoder_mask, position: int):
        """position: the decoder position of hidden's first token (the tokens the cache has seen)."""
        hidden, new_cache = self.mega_layer(hidden, mask, cache, stateful)
        cross_key = cross_value = None
        if self.cross_attn is not None:
            if cache is not None and cache.cross_key is not None:
                cross_key, cross_value = cache.cross_key, cache.cross_value  # the encoder output does not change
            else:
                cross_key, cross_value = self.cross_attn.project_encoder(encoder_hidden)
            hidden = self.cross_attn(hidden, cross_key, cross_value, encoder_mask, position)
        if self.nffn is not None:
            hidden = self.nffn(hidden)
        if new_cache is not None:
            new_cache = new_cache._replace(cross_key=cross_key, cross_value=cross_value,
                                           length=position + hidden.shape[1])
        return hidden, new_cache


# ----------------------------------------------------------------------------------------------- models


class MegaPooler(nn.Module):
    def __init__(self, config: MegaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden):
        return torch.tanh(self.dense(hidden[:, 0]))  # (B, D): the first token


class MegaModel(nn.Module):
    """The Mega encoder (or decoder with ``is_decoder``: causal attention, and a cache with ``use_cache``).

    Incremental decoding: ``past_key_values`` is a tuple with one :class:`MegaLayerCache` per layer (HF's tuples
    load as they are). Pass the new tokens (any number) with the cache; an ``attention_mask`` then covers the cached
    tokens and the new ones, right-aligned: its last P + L columns are used, P being the cached key length.
    ``use_cache`` defaults to the config's for decoders and is off for encoders.

    Cross-attention (``add_cross_attention``): ``encoder_hidden_states`` (B, Ls, D) and ``encoder_attention_mask``
    (B, Ls), 1 for real encoder tokens. Both are needed on the first pass; with a cache the encoder keys/values come
    from the cache (``encoder_hidden_states`` may then be left out, and is ignored if given, as in HF), but the
    ``encoder_attention_mask`` is not cached: pass it on every step, as HF does.
    """

    ignored_checkpoint_keys: ClassVar[tuple[str, ...]] = IGNORED_KEYS

    def __init__(self, config: MegaConfig, add_pooling_layer: bool = True):
        super().__init__()
        self.config = config
        self.embedding_layer = MegaEmbeddings(config)
        self.layers = nn.ModuleList(MegaBlock(config) for _ in range(config.num_hidden_layers))
        self.pooler = MegaPooler(config) if add_pooling_layer else None

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None,
                encoder_hidden_states=None, encoder_attention_mask=None, past_key_values=None,
                use_cache=None) -> BaseModelOutput:
        config = self.config
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids (batch, sequence) and inputs_embeds (batch, sequence, "
                             "hidden)")
        shape = tuple(input_ids.shape if input_ids is not None else inputs_embeds.shape[:-1])
        if len(shape) != 2 or shape[1] == 0:
            raise ValueError(f"inputs must be (batch, sequence) with a non-empty sequence, got {shape}")
        stateful = bool(config.use_cache if use_cache is None else use_cache) and config.is_decoder
        if past_key_values is not None:
            if not config.is_decoder:
                raise ValueError("past_key_values needs a decoder (is_decoder=true); encoders keep no cache")
            if len(past_key_values) != config.num_hidden_layers:
                raise ValueError(f"past_key_values has {len(past_key_values)} layers; the model has "
                                 f"{config.num_hidden_layers}")
            past_key_values = [MegaLayerCache(*layer) for layer in past_key_values]
        if (stateful or past_key_values is not None) and config.bidirectional:
            raise ValueError("a bidirectional EMA cannot be cached: pass use_cache=False, or use a model with "
                             "bidirectional=false for incremental decoding")
        past = 0 if past_key_values is None else past_key_values[0].key.shape[1]

        hidden = self.embedding_layer(input_ids, token_type_ids, inputs_embeds)  # (B, L, D)
        mask = None
        if attention_mask is not None:
            # Right-aligned: its last P + L columns are the cached and the new tokens. A chunked cache holds only
            # the current chunk (P may be less than the tokens seen), so with a cache a wider mask is allowed.
            width = attention_mask.shape[-1]
            fits = width >= past + shape[1] if past_key_values is not None else width == shape[1]
            if attention_mask.dim() != 2 or attention_mask.shape[0] != shape[0] or not fits:
                raise ValueError(f"attention_mask must be (batch, cached + new tokens) = ({shape[0]}, "
                                 f"{past + shape[1]}), got {tuple(attention_mask.shape)}")
            mask = attention_mask.to(hidden.dtype)  # (B, P + L)
        encoder_mask = self._check_encoder(encoder_hidden_states, encoder_attention_mask, past_key_values, shape[0])
        if encoder_mask is not None:
            encoder_mask = encoder_mask.to(hidden.dtype)  # (B, Ls)
        position = self._past_length(past_key_values)

        new_cache = []
        for i, layer in enumerate(self.layers):
            cache = None if past_key_values is None else past_key_values[i]
            hidden, layer_cache = layer(hidden, mask, cache, stateful or cache is not None, encoder_hidden_states,
                                        encoder_mask, position)
            new_cache.append(layer_cache)
        pooled = self.pooler(hidden) if self.pooler is not None else None
        return BaseModelOutput(last_hidden_state=hidden, pooler_output=pooled,
                               past_key_values=tuple(new_cache) if stateful else None)

    def _past_length(self, past_key_values) -> int:
        """The decoder tokens the cache has seen: the position of the first new token."""
        if past_key_values is None:
            return 0
        cache = past_key_values[0]
        if cache.length is not None:
            return cache.length
        if self.config.use_chunking and self.config.add_cross_attention:
            # A chunked cache keeps only the current chunk, so its key length is not the position.
            raise ValueError("a cache for a chunked decoder with cross-attention must carry its length: pass the "
                             "MegaLayerCache tuples this model returned")
        return cache.key.shape[1]

    def _check_encoder(self, encoder_hidden, encoder_mask, past_key_values, batch: int):
        """Clear errors for encoder inputs that do not fit; returns the encoder mask (B, Ls) or None."""
        config = self.config
        if not config.add_cross_attention:
            if encoder_hidden is not None or encoder_mask is not None:
                raise ValueError("encoder_hidden_states / encoder_attention_mask given, but this model has no "
                                 "cross-attention (the config needs is_decoder=true and add_cross_attention=true)")
            return None
        cached = past_key_values is not None and past_key_values[0].cross_key is not None
        if cached:
            source_length = past_key_values[0].cross_key.shape[1]
        elif encoder_hidden is None:
            raise ValueError("this model has cross-attention (add_cross_attention=true): pass encoder_hidden_states "
                             "(batch, source length, hidden_size), or a cache that holds their keys and values")
        elif encoder_hidden.dim() != 3 or encoder_hidden.shape[0] != batch or (
                encoder_hidden.shape[2] != config.hidden_size):
            raise ValueError(f"encoder_hidden_states must be (batch, source length, hidden_size) = ({batch}, Ls, "
                             f"{config.hidden_size}), got {tuple(encoder_hidden.shape)}")
        else:
            source_length = encoder_hidden.shape[1]
        if encoder_mask is not None and tuple(encoder_mask.shape) != (batch, source_length):
            raise ValueError(f"encoder_attention_mask must be (batch, source length) = ({batch}, {source_length}), "
                             f"got {tuple(encoder_mask.shape)}")
        return encoder_mask
