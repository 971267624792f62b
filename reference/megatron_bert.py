"""MegatronBERT: BERT with pre-LayerNorm residual blocks, as trained by NVIDIA's Megatron-LM.

The model of Shoeybi et al., "Megatron-LM: Training Multi-Billion Parameter Language Models Using Model
Parallelism" (2019), section 3 / figure 7: the LayerNorm moves from after each residual sum (BERT) to the input of
each sub-layer, the embedding LayerNorm is removed and one final LayerNorm closes the encoder.

Checked against ``transformers==4.57.6`` ``models/megatron_bert/modeling_megatron_bert.py`` (state-dict names,
masks, the relative position scores of Shaw et al. / Huang et al., the decoder's causal mask, cross-attention and the
KV cache). Where HF's numbers depend on whether a cache object happens to exist (relative positions, see
``MegatronBertSelfAttention``), we compute what HF computes without a cache, so that incremental decoding equals full
recomputation; ``reference/NOTES.md`` lists that and the other HF quirks.

Inference only: no dropout, no losses, no head masks, no attention-probability outputs.
The KV cache is HF's legacy layout: one tuple per layer, ``(key, value)`` of shape ``(B, H, T, head_dim)`` for
self-attention, followed by the cross-attention ``(key, value)`` when the decoder has cross-attention.

This file holds the config and the base model; the task heads and ``ARCHITECTURE`` are in ``megatron_bert_heads.py``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Literal

import torch
from torch import nn

from .activations import get_activation
from .bert_blocks import Intermediate
from .config import HFConfig, require
from .outputs import BaseModelOutput

#: One layer's cache: (self_key, self_value) or (self_key, self_value, cross_key, cross_value), each (B, H, T, D).
LayerCache = tuple[torch.Tensor, ...]


@dataclasses.dataclass(frozen=True)
class MegatronBertConfig(HFConfig):
    """``config.json`` of HF's ``MegatronBertConfig`` (defaults are nvidia/megatron-bert-cased-345m's)."""

    model_type: ClassVar[str] = "megatron-bert"

    vocab_size: int = 29056
    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int = 4096
    hidden_act: str = "gelu"
    # Dropout is inactive at inference; the keys are kept so that a saved config.json reads back the same in HF.
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    position_embedding_type: Literal["absolute", "relative_key", "relative_key_query"] = "absolute"
    use_cache: bool = True
    # Generic PretrainedConfig keys that this model reads.
    is_decoder: bool = False
    add_cross_attention: bool = False
    tie_word_embeddings: bool = True

    def validate(self) -> None:
        super().validate()
        for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                    "max_position_embeddings", "type_vocab_size"):
            require(getattr(self, key) >= 1, key, f"must be at least 1, got {getattr(self, key)}")
        require(self.hidden_size % self.num_attention_heads == 0, "num_attention_heads",
                f"must divide hidden_size ({self.hidden_size}), got {self.num_attention_heads}")
        require(self.layer_norm_eps > 0, "layer_norm_eps", f"must be positive, got {self.layer_norm_eps}")
        require(self.pad_token_id is None or 0 <= self.pad_token_id < self.vocab_size, "pad_token_id",
                f"must be null or a token id below vocab_size ({self.vocab_size}), got {self.pad_token_id}")
        require(not self.add_cross_attention or self.is_decoder, "add_cross_attention",
                "needs is_decoder=true: cross-attention layers only exist in a decoder")
        get_activation(self.hidden_act)


# ----------------------------------------------------------------------------------------------- masks


def extended_attention_mask(
    attention_mask: torch.Tensor, query_length: int, is_decoder: bool, dtype: torch.dtype
) -> torch.Tensor:
    """HF's additive mask: 0 where a query may attend, ``finfo(dtype).min`` where not; broadcasts to (B, H, L, T).

    ``attention_mask`` is (B, T) with T = past + L keys (a decoder adds the causal mask), or (B, L, T), used as
    given (HF adds no causal mask to a 3D mask, even in a decoder). The finite minimum, not -inf, matters: a query
    whose keys are all masked gets a uniform softmax, as in HF, rather than NaN.
    """
    if attention_mask.dim() == 3:
        mask = attention_mask[:, None, :, :].to(dtype)  # (B, 1, L, T)
    elif attention_mask.dim() == 2:
        mask = attention_mask[:, None, None, :].to(dtype)  # (B, 1, 1, T)
        if is_decoder:
            key_length = attention_mask.shape[1]
            past = key_length - query_length
            # Query i (absolute position past + i) sees keys 0 .. past + i.
            keys = torch.arange(key_length, device=attention_mask.device)
            queries = torch.arange(past, key_length, device=attention_mask.device)
            causal = (keys[None, :] <= queries[:, None]).to(dtype)  # (L, T)
            mask = causal[None, None, :, :] * mask  # (B, 1, L, T)
    else:
        raise ValueError(
            f"attention_mask must be (batch, key_length) or (batch, query_length, key_length), "
            f"got shape {tuple(attention_mask.shape)}"
        )
    return (1.0 - mask) * torch.finfo(dtype).min


# ----------------------------------------------------------------------------------------------- modules


class MegatronBertEmbeddings(nn.Module):
    """Word + token-type (+ absolute position) embeddings. No LayerNorm: Megatron moved it into the layers."""

    def __init__(self, config: MegatronBertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.position_embedding_type = config.position_embedding_type
        # Recomputed, never loaded: some checkpoints carry it (see ignored_checkpoint_keys).
        self.register_buffer(
            "position_ids", torch.arange(config.max_position_embeddings).expand((1, -1)), persistent=False
        )

    def forward(
        self,
        input_ids: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        past_length: int,
    ) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        batch, length = inputs_embeds.shape[:2]
        if token_type_ids is None:
            token_type_ids = torch.zeros((batch, length), dtype=torch.long, device=inputs_embeds.device)
        embeddings = inputs_embeds + self.token_type_embeddings(token_type_ids)
        if self.position_embedding_type == "absolute":
            if position_ids is None:
                position_ids = self.position_ids[:, past_length : past_length + length]  # (1, L)
            embeddings = embeddings + self.position_embeddings(position_ids)
        return embeddings


class MegatronBertSelfAttention(nn.Module):
    """Multi-head attention, with optional relative-position scores and a key/value cache.

    Relative positions (``relative_key``: Shaw et al. 2018; ``relative_key_query``: Huang et al. 2020, method 4)
    add ``q . e(i - j)`` (and ``k . e(i - j)``) to the scores before the 1/sqrt(d) scaling, as HF does. Query i's
    position is ``past_length + i``. HF instead puts *every* query at ``key_length - 1`` whenever a cache object
    exists, which is right only for one-token steps: its prompt pass with ``use_cache=True`` (the default of
    decoder configs) differs from its own ``use_cache=False`` result, and its cross-attention puts every query at
    ``encoder_length - 1``. We give the no-cache numbers in every case.
    """

    def __init__(self, config: MegatronBertConfig):
        super().__init__()
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        self.all_head_size = config.hidden_size
        self.query = nn.Linear(config.hidden_size, self.all_head_size)
        self.key = nn.Linear(config.hidden_size, self.all_head_size)
        self.value = nn.Linear(config.hidden_size, self.all_head_size)
        self.position_embedding_type = config.position_embedding_type
        if self.position_embedding_type in ("relative_key", "relative_key_query"):
            self.max_position_embeddings = config.max_position_embeddings
            # Distances -(P-1) .. P-1, stored at index distance + P - 1.
            self.distance_embedding = nn.Embedding(2 * config.max_position_embeddings - 1, self.attention_head_size)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        x = x.view(batch, length, self.num_attention_heads, self.attention_head_size)  # (B, L, H, D)
        return x.transpose(1, 2)  # (B, H, L, D)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        encoder_hidden_states: torch.Tensor | None = None,
        past_key_value: tuple[torch.Tensor, torch.Tensor] | None = None,
        past_length: int = 0,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Return the context (B, L, H*D) and this attention's cache entry (key, value), each (B, H, T, D).

        Self-attention appends the new keys/values to ``past_key_value``; cross-attention reuses a cached entry
        as a whole (the encoder states do not change while decoding), else projects ``encoder_hidden_states``.
        """
        query = self._split_heads(self.query(hidden_states))  # (B, H, L, D)
        if encoder_hidden_states is None:
            key = self._split_heads(self.key(hidden_states))  # (B, H, L, D)
            value = self._split_heads(self.value(hidden_states))
            if past_key_value is not None:
                key = torch.cat([past_key_value[0], key], dim=2)  # (B, H, T, D)
                value = torch.cat([past_key_value[1], value], dim=2)
        elif past_key_value is not None:
            key, value = past_key_value  # (B, H, S, D)
        else:
            key = self._split_heads(self.key(encoder_hidden_states))  # (B, H, S, D)
            value = self._split_heads(self.value(encoder_hidden_states))

        scores = torch.matmul(query, key.transpose(-1, -2))  # (B, H, L, T)
        if self.position_embedding_type in ("relative_key", "relative_key_query"):
            query_length, key_length = query.shape[2], key.shape[2]
            device = hidden_states.device
            query_positions = torch.arange(past_length, past_length + query_length, device=device).view(-1, 1)
            key_positions = torch.arange(key_length, device=device).view(1, -1)
            distance = query_positions - key_positions  # (L, T)
            positional = self.distance_embedding(distance + self.max_position_embeddings - 1)  # (L, T, D)
            positional = positional.to(query.dtype)
            scores = scores + torch.einsum("bhld,lrd->bhlr", query, positional)
            if self.position_embedding_type == "relative_key_query":
                scores = scores + torch.einsum("bhrd,lrd->bhlr", key, positional)
        scores = scores / math.sqrt(self.attention_head_size)
        if attention_mask is not None:
            scores = scores + attention_mask
        probs = torch.softmax(scores, dim=-1)
        context = torch.matmul(probs, value)  # (B, H, L, D)
        context = context.transpose(1, 2).contiguous()  # (B, L, H, D)
        context = context.view(context.shape[0], context.shape[1], self.all_head_size)  # (B, L, H*D)
        return context, (key, value)


class MegatronBertOutput(nn.Module):
    """``residual + dense(x)``, input_size -> hidden_size: HF's ``MegatronBertSelfOutput`` and ``MegatronBertOutput``.

    BERT's LayerNorm after the sum is gone: Megatron normalises each sub-layer's input instead.
    """

    def __init__(self, config: MegatronBertConfig, input_size: int):
        super().__init__()
        self.dense = nn.Linear(input_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return residual + self.dense(hidden_states)


class MegatronBertAttention(nn.Module):
    """Pre-LN attention block: ``x + dense(attention(ln(x)))``. Cross-attention reads the raw encoder states."""

    def __init__(self, config: MegatronBertConfig):
        super().__init__()
        self.ln = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self = MegatronBertSelfAttention(config)
        self.output = MegatronBertOutput(config, config.hidden_size)

    def forward(self, hidden_states, attention_mask, encoder_hidden_states=None, past_key_value=None, past_length=0):
        context, cache = self.self(
            self.ln(hidden_states), attention_mask, encoder_hidden_states, past_key_value, past_length
        )
        return self.output(context, hidden_states), cache


class MegatronBertLayer(nn.Module):
    def __init__(self, config: MegatronBertConfig):
        super().__init__()
        self.attention = MegatronBertAttention(config)
        if config.add_cross_attention:
            self.crossattention = MegatronBertAttention(config)
        self.ln = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.intermediate = Intermediate(config)
        self.output = MegatronBertOutput(config, config.intermediate_size)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        encoder_hidden_states: torch.Tensor | None,
        encoder_attention_mask: torch.Tensor | None,
        past: LayerCache | None,
        past_length: int,
    ) -> tuple[torch.Tensor, LayerCache]:
        self_past = past[:2] if past is not None else None
        hidden_states, cache = self.attention(hidden_states, attention_mask, None, self_past, past_length)
        if encoder_hidden_states is not None:
            cross_past = past[2:] if past is not None and len(past) == 4 else None
            hidden_states, cross_cache = self.crossattention(
                hidden_states, encoder_attention_mask, encoder_hidden_states, cross_past, past_length
            )
            cache = cache + cross_cache
        hidden_states = self.output(self.intermediate(self.ln(hidden_states)), hidden_states)
        return hidden_states, cache


class MegatronBertEncoder(nn.Module):
    def __init__(self, config: MegatronBertConfig):
        super().__init__()
        self.layer = nn.ModuleList([MegatronBertLayer(config) for _ in range(config.num_hidden_layers)])
        # The final LayerNorm: with pre-LN layers, the residual stream is un-normalised until here.
        self.ln = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states, attention_mask, encoder_hidden_states, encoder_attention_mask, past, past_length):
        caches = []
        for i, layer in enumerate(self.layer):
            hidden_states, cache = layer(
                hidden_states, attention_mask, encoder_hidden_states, encoder_attention_mask,
                past[i] if past is not None else None, past_length,
            )
            caches.append(cache)
        return self.ln(hidden_states), tuple(caches)


class MegatronBertPooler(nn.Module):
    """tanh(dense(first token)): the [CLS] summary the NSP and classification heads read."""

    def __init__(self, config: MegatronBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden_states[:, 0]))


class MegatronBertModel(nn.Module):
    """The bare encoder (or decoder, with ``is_decoder``). HF builds some heads' base without the pooler."""

    ignored_checkpoint_keys: ClassVar[tuple[str, ...]] = (r"(^|\.)embeddings\.position_ids$",)

    def __init__(self, config: MegatronBertConfig, add_pooling_layer: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = MegatronBertEmbeddings(config)
        self.encoder = MegatronBertEncoder(config)
        self.pooler = MegatronBertPooler(config) if add_pooling_layer else None

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        past_key_values: tuple[LayerCache, ...] | None = None,
        use_cache: bool | None = None,
    ) -> BaseModelOutput:
        """``use_cache`` defaults to ``config.use_cache`` in a decoder and is off in an encoder (as in HF).

        A decoder built with ``add_cross_attention`` skips its cross-attention layers when no
        ``encoder_hidden_states`` are given, as HF does.
        """
        config = self.config
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids (B, L) and inputs_embeds (B, L, hidden_size)")
        shape = tuple(input_ids.shape) if input_ids is not None else tuple(inputs_embeds.shape[:-1])
        if len(shape) != 2:
            raise ValueError(f"input_ids must be (batch, length), inputs_embeds (batch, length, hidden); got {shape}")
        batch, length = shape
        device = input_ids.device if input_ids is not None else inputs_embeds.device
        use_cache = (config.use_cache if use_cache is None else use_cache) and config.is_decoder

        past_length = self._check_past(past_key_values, batch)
        self._check_lengths(length, past_length, position_ids, encoder_hidden_states)
        self_mask, cross_mask = self._masks(
            attention_mask, encoder_hidden_states, encoder_attention_mask, batch, length, past_length, device
        )

        hidden_states = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds, past_length)
        sequence_output, caches = self.encoder(
            hidden_states, self_mask, encoder_hidden_states, cross_mask, past_key_values, past_length
        )
        pooled_output = self.pooler(sequence_output) if self.pooler is not None else None
        return BaseModelOutput(
            last_hidden_state=sequence_output,
            pooler_output=pooled_output,
            past_key_values=caches if use_cache else None,
        )

    def _check_lengths(self, length: int, past_length: int, position_ids, encoder_hidden_states) -> None:
        """Clear errors for positions past the embedding tables, and for encoder states the model cannot read."""
        config = self.config
        if past_length + length > config.max_position_embeddings and (
            position_ids is None or config.position_embedding_type != "absolute"
        ):
            raise ValueError(
                f"sequence of {past_length + length} positions (past {past_length} + new {length}) exceeds "
                f"max_position_embeddings={config.max_position_embeddings}; shorten or split the input"
            )
        if encoder_hidden_states is not None:
            if not config.add_cross_attention:
                raise ValueError("encoder_hidden_states given, but the config has no cross-attention "
                                 "(set is_decoder=true and add_cross_attention=true)")
            if encoder_hidden_states.shape[1] > config.max_position_embeddings and (
                config.position_embedding_type != "absolute"
            ):
                raise ValueError(f"encoder_hidden_states has {encoder_hidden_states.shape[1]} positions; relative "
                                 f"distances allow at most max_position_embeddings={config.max_position_embeddings}")

    def _masks(
        self, attention_mask, encoder_hidden_states, encoder_attention_mask, batch: int, length: int,
        past_length: int, device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The additive self-attention mask and (with encoder states) the cross-attention mask; all-ones defaults."""
        dtype = self.embeddings.word_embeddings.weight.dtype
        if attention_mask is None:
            attention_mask = torch.ones((batch, past_length + length), device=device)
        if attention_mask.shape[-1] != past_length + length or (
            attention_mask.dim() == 3 and attention_mask.shape[1] != length
        ):
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, but there are {length} queries "
                             f"and {past_length + length} keys (past {past_length} + new {length}); pass a "
                             f"(batch, keys) or (batch, queries, keys) mask")
        self_mask = extended_attention_mask(attention_mask, length, self.config.is_decoder, dtype)
        cross_mask = None
        if encoder_hidden_states is not None:
            if encoder_attention_mask is None:
                encoder_attention_mask = torch.ones(encoder_hidden_states.shape[:2], device=device)
            cross_mask = extended_attention_mask(encoder_attention_mask, length, False, dtype)
        return self_mask, cross_mask

    def _check_past(self, past_key_values, batch: int) -> int:
        """The cached length; a clear error for a cache that cannot belong to this model."""
        if past_key_values is None:
            return 0
        config = self.config
        if not config.is_decoder:
            raise ValueError("past_key_values needs a decoder (is_decoder=true); an encoder attends both ways")
        if len(past_key_values) != config.num_hidden_layers:
            raise ValueError(f"past_key_values has {len(past_key_values)} layers, the model {config.num_hidden_layers}")
        heads = config.num_attention_heads
        head_dim = config.hidden_size // heads
        past_length = past_key_values[0][0].shape[2]
        for i, entry in enumerate(past_key_values):
            if len(entry) not in (2, 4):
                raise ValueError(f"past_key_values[{i}] must be (key, value) or (key, value, cross_key, cross_value)")
            for tensor in entry:
                if tensor.dim() != 4 or (tensor.shape[0], tensor.shape[1], tensor.shape[3]) != (batch, heads, head_dim):
                    raise ValueError(f"past_key_values[{i}] tensors must be (batch={batch}, heads={heads}, T, "
                                     f"head_dim={head_dim}); got {tuple(tensor.shape)}")
            if entry[0].shape[2] != past_length or entry[1].shape[2] != past_length:
                raise ValueError(f"past_key_values[{i}] holds {entry[0].shape[2]} positions, layer 0 {past_length}")
        return past_length
