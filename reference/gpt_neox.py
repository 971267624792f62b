"""GPT-NeoX (Pythia, GPT-NeoX-20B): a decoder-only transformer with rotary embeddings on part of each head.

Checked against ``transformers==4.57.6`` (``models/gpt_neox/modeling_gpt_neox.py``, ``modeling_rope_utils.py`` and
the eager path of ``masking_utils.py``) and the papers: Black et al. 2022, "GPT-NeoX-20B" (parallel attention + MLP
residual, partial rotary); Su et al. 2021, "RoFormer" (rotary embeddings); and the RoPE scalings HF offers (linear
position interpolation, dynamic NTK, YaRN, LongRoPE, Llama 3.1).

One block:  x + attn(ln1(x)) + mlp(ln2(x))            (``use_parallel_residual``, Pythia)
       or:  h = x + attn(ln1(x));  h + mlp(ln2(h))    (sequential)

KV cache.  ``past_key_values`` is a tuple with one ``(key, value)`` pair per layer, each ``(B, H, P, head_dim)``,
keys stored *after* the rotary rotation (as HF's ``DynamicCache`` stores them). With ``use_cache`` the model returns
the same structure grown to ``P + T``. ``attention_mask`` (when given) covers the cached tokens too: ``(B, P + T)``.
``position_ids`` default to ``P .. P+T-1``; with left padding the caller passes them, as HF's ``generate`` does:
``position_ids_from_attention_mask(attention_mask)[:, -T:]`` (count of real tokens before each one; pads get 1).

Where HF's numbers depend on hidden state (dynamic NTK scaling keeps the longest length it has seen), this module is
stateless: it equals HF on a fresh model and on non-decreasing lengths (one generate call). See NOTES.md.

The rotary frequencies (every RoPE scaling), the cos/sin tables and the rotation live in ``gpt_neox_rotary.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .activations import get_activation
from .config import HFConfig, require
from .gpt_neox_rotary import GPTNeoXRotaryEmbedding, apply_rotary
from .outputs import (
    BaseModelOutput,
    CausalLMOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from .registry import Architecture

#: HF's ``ROPE_INIT_FUNCTIONS`` keys, and the ``rope_scaling`` keys each one requires (as HF's validation does).
ROPE_REQUIRED_KEYS = {
    "default": (),
    "linear": ("factor",),
    "dynamic": ("factor",),
    "yarn": ("factor",),
    "longrope": ("short_factor", "long_factor"),
    "llama3": ("factor", "original_max_position_embeddings", "low_freq_factor", "high_freq_factor"),
}

#: Buffers old checkpoints carry (causal-mask tables, per-layer rotary tables) that we recompute.
IGNORED_KEYS = (r"\.attention\.bias$", r"\.attention\.masked_bias$", r"rotary_emb\.inv_freq$")


@dataclasses.dataclass(frozen=True)
class GPTNeoXConfig(HFConfig):
    model_type: ClassVar[str] = "gpt_neox"

    vocab_size: int = 50432
    hidden_size: int = 6144
    num_hidden_layers: int = 44
    num_attention_heads: int = 64
    intermediate_size: int = 24576
    hidden_act: str = "gelu"
    rotary_pct: float = 0.25
    rotary_emb_base: float = 10000.0
    attention_dropout: float = 0.0
    hidden_dropout: float = 0.0
    classifier_dropout: float | None = 0.1
    max_position_embeddings: int = 2048
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5
    use_cache: bool = True
    bos_token_id: int | None = 0
    eos_token_id: int | tuple[int, ...] | None = 2
    pad_token_id: int | None = None
    tie_word_embeddings: bool = False
    use_parallel_residual: bool = True
    rope_scaling: Mapping[str, Any] | None = None
    attention_bias: bool = True
    # HF copies rotary_emb_base/rotary_pct into these and ignores the config.json values; validate() rejects a
    # config.json where they disagree, since HF would silently use rotary_emb_base/rotary_pct.
    rope_theta: float | None = None
    partial_rotary_factor: float | None = None
    # A top-level key (not the rope_scaling one) that HF's LongRoPE reads when present.
    original_max_position_embeddings: int | None = None

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def rotary_dim_hf(self) -> int:
        """HF's ``dim`` for the rope formulas: ``int(head_size * rotary_pct)``."""
        return int(self.head_size * self.rotary_pct)

    @property
    def rotary_ndims(self) -> int:
        """Channels per head that rotate: one pair per frequency of ``arange(0, dim, 2)``."""
        return 2 * len(range(0, self.rotary_dim_hf, 2))

    @property
    def rope_type(self) -> str:
        if self.rope_scaling is None:
            return "default"
        # HF's config copies a legacy "type" over "rope_type", so "type" wins when both are present.
        return self.rope_scaling.get("type", self.rope_scaling.get("rope_type"))

    @property
    def longrope_original_max(self) -> int:
        return self.original_max_position_embeddings or self.max_position_embeddings

    def validate(self) -> None:
        super().validate()
        for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                    "max_position_embeddings"):
            require(getattr(self, key) >= 1, key, f"must be a positive integer, got {getattr(self, key)}")
        require(self.hidden_size % self.num_attention_heads == 0, "num_attention_heads",
                f"must divide hidden_size ({self.hidden_size}), got {self.num_attention_heads}")
        require(0.0 <= self.rotary_pct <= 1.0, "rotary_pct", f"must be in [0, 1], got {self.rotary_pct}")
        require(self.rotary_ndims <= self.head_size, "rotary_pct",
                f"gives {self.rotary_ndims} rotary channels, more than head size {self.head_size}")
        require(self.rotary_emb_base > 0, "rotary_emb_base", f"must be positive, got {self.rotary_emb_base}")
        require(self.layer_norm_eps > 0, "layer_norm_eps", f"must be positive, got {self.layer_norm_eps}")
        require(self.rope_theta is None or self.rope_theta == self.rotary_emb_base, "rope_theta",
                f"is {self.rope_theta} but rotary_emb_base is {self.rotary_emb_base}; HF's gpt_neox uses "
                "rotary_emb_base and ignores rope_theta, so set rotary_emb_base")
        require(self.partial_rotary_factor is None or self.partial_rotary_factor == self.rotary_pct,
                "partial_rotary_factor", f"is {self.partial_rotary_factor} but rotary_pct is {self.rotary_pct}; HF's "
                "gpt_neox uses rotary_pct and ignores partial_rotary_factor, so set rotary_pct")
        get_activation(self.hidden_act)
        if self.rope_scaling is not None:
            self._validate_rope_scaling()

    def _validate_rope_scaling(self) -> None:
        rs, dim = self.rope_scaling, self.rotary_dim_hf
        rope_type = self.rope_type
        require(rope_type in ROPE_REQUIRED_KEYS, "rope_scaling",
                f"has rope_type {rope_type!r}; supported: {', '.join(ROPE_REQUIRED_KEYS)}")
        for key in ROPE_REQUIRED_KEYS[rope_type]:
            require(key in rs and rs[key] is not None, "rope_scaling", f"of type {rope_type!r} needs the key {key!r}")

        def number(key: str, positive: bool = True) -> None:
            value = rs.get(key)
            if value is None:
                return
            require(isinstance(value, (int, float)) and not isinstance(value, bool), "rope_scaling",
                    f"key {key!r} must be a number, got {value!r}")
            require(not positive or value > 0, "rope_scaling", f"key {key!r} must be positive, got {value!r}")

        for key in ("factor", "attention_factor", "low_freq_factor", "high_freq_factor",
                    "original_max_position_embeddings"):
            number(key)
        for key in ("beta_fast", "beta_slow", "mscale", "mscale_all_dim"):
            number(key, positive=False)
        if rope_type == "dynamic":
            require(dim != 2, "rotary_pct", "gives a rotary dim of 2, where dynamic NTK's exponent dim/(dim-2) "
                    "divides by zero (HF crashes); choose another rotary_pct")
        if rope_type == "yarn":
            require(dim % 2 == 0, "rotary_pct", f"gives an odd rotary dim {dim}, which YaRN cannot ramp")
        if rope_type == "longrope":
            for key in ("short_factor", "long_factor"):
                value = rs[key]
                require(isinstance(value, (list, tuple)) and len(value) == len(range(0, dim, 2))
                        and all(isinstance(v, (int, float)) for v in value), "rope_scaling",
                        f"key {key!r} must be a list of {len(range(0, dim, 2))} numbers (one per rotary "
                        f"frequency), got {value!r}")
            require(rs.get("factor") is not None or rs.get("attention_factor") is not None
                    or self.original_max_position_embeddings, "rope_scaling",
                    "of type 'longrope' needs 'factor' or 'attention_factor' (or a top-level "
                    "original_max_position_embeddings) to set the attention scaling")

    def to_hf_dict(self) -> dict[str, Any]:
        out = super().to_hf_dict()
        # HF's LongRoPE tests hasattr(config, "original_max_position_embeddings") and then compares with it, so a
        # null would crash it; the aliases are dropped for the same reason of not writing what HF misreads.
        for key in ("original_max_position_embeddings", "rope_theta", "partial_rotary_factor"):
            if out.get(key) is None:
                out.pop(key, None)
        return out


# ----------------------------------------------------------------------------------------------- positions and masks


def position_ids_from_attention_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions for a left-padded batch, as HF's ``generate`` makes them: (B, S) mask -> (B, S) positions.

    Each real token's position counts the real tokens before it; padded slots get 1 (their value does not reach
    real tokens). For a decoding step over T new tokens pass ``[:, -T:]`` of the full mask's positions.
    """
    position_ids = attention_mask.long().cumsum(-1) - 1
    return position_ids.masked_fill(attention_mask == 0, 1)


def causal_mask(
    batch_size: int,
    query_length: int,
    past_length: int,
    attention_mask: torch.Tensor | None,
    packed_position_ids: torch.Tensor | None,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """HF's eager mask: 0 where a query may attend, finfo(dtype).min elsewhere, (B|1, 1, T, P+T).

    The causal rule uses cache positions (P..P+T-1), not position_ids. A query whose every key is masked (a left pad)
    gets the same large negative on every key, so its softmax is uniform rather than NaN, as in HF.
    ``packed_position_ids``: HF's packed-sequence rule, where a position that does not follow its left neighbour
    by one starts a new segment and queries see only their own segment.
    """
    kv_length = past_length + query_length
    query_positions = torch.arange(past_length, kv_length, device=device)
    allowed = torch.arange(kv_length, device=device)[None, :] <= query_positions[:, None]  # (T, S)
    allowed = allowed[None, None]  # (1, 1, T, S)
    if attention_mask is not None:
        allowed = allowed & attention_mask.bool()[:, None, None, :]  # (B, 1, T, S)
    if packed_position_ids is not None:
        positions = packed_position_ids.expand(batch_size, -1)  # (B, T)
        starts = torch.diff(positions, prepend=positions[:, :1] - 1, dim=-1) != 1
        segment = starts.cumsum(-1)  # (B, T)
        allowed = allowed & (segment[:, None, :, None] == segment[:, None, None, :])  # (B, 1, T, T)
    zero = torch.tensor(0.0, dtype=dtype, device=device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)


# ----------------------------------------------------------------------------------------------- modules


class GPTNeoXAttention(nn.Module):
    def __init__(self, config: GPTNeoXConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_size = config.head_size
        self.scaling = self.head_size**-0.5
        self.query_key_value = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.attention_bias)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=config.attention_bias)

    def forward(self, hidden_states, mask, cos, sin, layer_past=None):
        batch, length, _ = hidden_states.shape
        qkv = self.query_key_value(hidden_states)
        # The fused projection is laid out per head as [q | k | v], not as three blocks of hidden_size.
        qkv = qkv.view(batch, length, self.num_heads, 3 * self.head_size).transpose(1, 2)  # (B, H, T, 3D)
        query, key, value = qkv.chunk(3, dim=-1)  # each (B, H, T, D)
        query, key = apply_rotary(query, cos, sin), apply_rotary(key, cos, sin)
        if layer_past is not None:
            key = torch.cat((layer_past[0], key), dim=-2)  # (B, H, P+T, D)
            value = torch.cat((layer_past[1], value), dim=-2)
        scores = torch.matmul(query, key.transpose(2, 3)) * self.scaling  # (B, H, T, P+T)
        probs = F.softmax(scores + mask, dim=-1, dtype=torch.float32).to(query.dtype)
        out = torch.matmul(probs, value).transpose(1, 2)  # (B, H, T, D) -> (B, T, H, D)
        out = out.reshape(batch, length, self.num_heads * self.head_size)  # (B, T, hidden)
        return self.dense(out), (key, value)


class GPTNeoXMLP(nn.Module):
    def __init__(self, config: GPTNeoXConfig) -> None:
        super().__init__()
        self.dense_h_to_4h = nn.Linear(config.hidden_size, config.intermediate_size)
        self.dense_4h_to_h = nn.Linear(config.intermediate_size, config.hidden_size)
        self.act = get_activation(config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense_4h_to_h(self.act(self.dense_h_to_4h(x)))


class GPTNeoXLayer(nn.Module):
    def __init__(self, config: GPTNeoXConfig) -> None:
        super().__init__()
        self.use_parallel_residual = config.use_parallel_residual
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = GPTNeoXAttention(config)
        self.mlp = GPTNeoXMLP(config)

    def forward(self, hidden_states, mask, cos, sin, layer_past=None):
        attn_output, present = self.attention(self.input_layernorm(hidden_states), mask, cos, sin, layer_past)
        if self.use_parallel_residual:
            # Both branches read the block input: x + attn(ln1(x)) + mlp(ln2(x)), summed in HF's order.
            mlp_output = self.mlp(self.post_attention_layernorm(hidden_states))
            return mlp_output + attn_output + hidden_states, present
        attn_output = attn_output + hidden_states
        return self.mlp(self.post_attention_layernorm(attn_output)) + attn_output, present


def _check_inputs(config, input_ids, inputs_embeds, attention_mask, position_ids, past_key_values):
    """Clear errors for inputs HF would crash on or, worse, silently misread."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids or inputs_embeds")
    if input_ids is not None:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")
        if not torch.compiler.is_compiling() and input_ids.numel() and (
                input_ids.min() < 0 or input_ids.max() >= config.vocab_size):
            raise ValueError(f"input_ids must lie in [0, vocab_size={config.vocab_size}), got values in "
                             f"[{int(input_ids.min())}, {int(input_ids.max())}]")
        batch, length = input_ids.shape
    else:
        if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != config.hidden_size:
            raise ValueError(f"inputs_embeds must be (batch, length, {config.hidden_size}), "
                             f"got shape {tuple(inputs_embeds.shape)}")
        batch, length = inputs_embeds.shape[:2]
    past_length = 0
    if past_key_values is not None:
        if len(past_key_values) != config.num_hidden_layers:
            raise ValueError(f"past_key_values must hold one (key, value) pair per layer "
                             f"({config.num_hidden_layers}), got {len(past_key_values)}")
        past_length = past_key_values[0][0].shape[-2]
        expected = (batch, config.num_attention_heads, past_length, config.head_size)
        for i, (key, value) in enumerate(past_key_values):
            if tuple(key.shape) != expected or tuple(value.shape) != expected:
                raise ValueError(f"past_key_values[{i}] must be two tensors of shape {expected} "
                                 f"(batch, heads, past length, head size), got {tuple(key.shape)} "
                                 f"and {tuple(value.shape)}")
    if attention_mask is not None and tuple(attention_mask.shape) != (batch, past_length + length):
        raise ValueError(f"attention_mask must be (batch, past length + length) = {(batch, past_length + length)}: "
                         f"it covers the cached tokens too; got shape {tuple(attention_mask.shape)}")
    if position_ids is not None and (position_ids.dim() != 2 or position_ids.shape[0] not in (1, batch)
                                     or position_ids.shape[1] != length):
        raise ValueError(f"position_ids must be (batch or 1, length) = ({batch}, {length}), "
                         f"got shape {tuple(position_ids.shape)}")
    return batch, length, past_length


class GPTNeoXModel(nn.Module):
    ignored_checkpoint_keys: ClassVar[tuple[str, ...]] = IGNORED_KEYS

    def __init__(self, config: GPTNeoXConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_in = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(GPTNeoXLayer(config) for _ in range(config.num_hidden_layers))
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.rotary_emb = GPTNeoXRotaryEmbedding(config)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        past_key_values: tuple[tuple[torch.Tensor, torch.Tensor], ...] | None = None,
        use_cache: bool | None = None,
    ) -> BaseModelOutput:
        """``past_key_values``/``use_cache``: see the module docstring. ``use_cache=None`` means config.use_cache."""
        use_cache = self.config.use_cache if use_cache is None else use_cache
        batch, length, past_length = _check_inputs(
            self.config, input_ids, inputs_embeds, attention_mask, position_ids, past_key_values)
        hidden_states = self.embed_in(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, hidden)
        device = hidden_states.device
        # HF splits a batch row into packed sequences (by position_ids resets) only when there is no padding mask
        # and no cache in use: the same inputs then give other outputs with use_cache=False than with True.
        packed = position_ids if (attention_mask is None and past_key_values is None and not use_cache) else None
        if position_ids is None:
            position_ids = torch.arange(past_length, past_length + length, device=device)[None]  # (1, T)
        mask = causal_mask(batch, length, past_length, attention_mask, packed, hidden_states.dtype, device)
        cos, sin = self.rotary_emb(position_ids, hidden_states.dtype)

        presents = []
        for i, layer in enumerate(self.layers):
            layer_past = None if past_key_values is None else past_key_values[i]
            hidden_states, present = layer(hidden_states, mask, cos, sin, layer_past)
            presents.append(present)
        hidden_states = self.final_layer_norm(hidden_states)
        return BaseModelOutput(last_hidden_state=hidden_states, past_key_values=tuple(presents) if use_cache else None)


class GPTNeoXForCausalLM(nn.Module):
    ignored_checkpoint_keys: ClassVar[tuple[str, ...]] = IGNORED_KEYS

    def __init__(self, config: GPTNeoXConfig) -> None:
        super().__init__()
        self.config = config
        self.gpt_neox = GPTNeoXModel(config)
        self.embed_out = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.embed_out.weight = self.gpt_neox.embed_in.weight

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None,
                past_key_values=None, use_cache=None) -> CausalLMOutput:
        out = self.gpt_neox(input_ids, attention_mask, position_ids, inputs_embeds, past_key_values, use_cache)
        return CausalLMOutput(logits=self.embed_out(out.last_hidden_state), past_key_values=out.past_key_values)


class GPTNeoXForSequenceClassification(nn.Module):
    """Scores the last token that is not ``pad_token_id`` in each row, as HF does.

    HF's rule, matched exactly: the *rightmost* token that differs from ``pad_token_id`` (so left and right padding
    both work, the attention mask is not consulted, and a row of only pads pools position 0); without
    ``pad_token_id``, the last position, and batches larger than one are refused; with ``inputs_embeds``, the last
    position. ``use_cache`` only changes masking, through HF's packed-sequence rule; no cache is returned.
    """

    ignored_checkpoint_keys: ClassVar[tuple[str, ...]] = IGNORED_KEYS

    def __init__(self, config: GPTNeoXConfig) -> None:
        super().__init__()
        self.config = config
        self.gpt_neox = GPTNeoXModel(config)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None,
                use_cache=None) -> SequenceClassifierOutput:
        hidden = self.gpt_neox(input_ids, attention_mask, position_ids, inputs_embeds, use_cache=use_cache)
        logits = self.score(hidden.last_hidden_state)  # (B, T, C)
        batch = logits.shape[0]
        pad = self.config.pad_token_id
        if pad is None and batch != 1:
            raise ValueError("GPTNeoXForSequenceClassification cannot find the last token of each row in a batch "
                             "without config key 'pad_token_id'; set it or pass one sequence at a time")
        if pad is None or input_ids is None:
            last = torch.full((batch,), logits.shape[1] - 1, device=logits.device, dtype=torch.long)
        else:
            not_pad = (input_ids != pad).to(torch.int32)
            positions = torch.arange(input_ids.shape[-1], device=logits.device, dtype=torch.int32)
            last = (positions * not_pad).argmax(-1)  # (B,)
        return SequenceClassifierOutput(logits=logits[torch.arange(batch, device=logits.device), last])


class GPTNeoXForTokenClassification(nn.Module):
    """``classifier_dropout`` is training-only; ``use_cache`` only changes masking (see sequence classification)."""

    ignored_checkpoint_keys: ClassVar[tuple[str, ...]] = IGNORED_KEYS

    def __init__(self, config: GPTNeoXConfig) -> None:
        super().__init__()
        self.config = config
        self.gpt_neox = GPTNeoXModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None,
                use_cache=None) -> TokenClassifierOutput:
        hidden = self.gpt_neox(input_ids, attention_mask, position_ids, inputs_embeds, use_cache=use_cache)
        return TokenClassifierOutput(logits=self.classifier(hidden.last_hidden_state))


class GPTNeoXForQuestionAnswering(nn.Module):
    """Span start/end logits per token. HF's head takes no use_cache, so masking follows config.use_cache."""

    ignored_checkpoint_keys: ClassVar[tuple[str, ...]] = IGNORED_KEYS

    def __init__(self, config: GPTNeoXConfig) -> None:
        super().__init__()
        self.config = config
        self.gpt_neox = GPTNeoXModel(config)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)

    def forward(self, input_ids=None, attention_mask=None, position_ids=None,
                inputs_embeds=None) -> QuestionAnsweringModelOutput:
        hidden = self.gpt_neox(input_ids, attention_mask, position_ids, inputs_embeds)
        start, end = self.qa_outputs(hidden.last_hidden_state).split(1, dim=-1)  # each (B, T, 1)
        return QuestionAnsweringModelOutput(start_logits=start.squeeze(-1).contiguous(),
                                            end_logits=end.squeeze(-1).contiguous())


ARCHITECTURE = Architecture(
    model_type="gpt_neox",
    class_prefix="GPTNeoX",
    config_class=GPTNeoXConfig,
    heads={
        "Model": GPTNeoXModel,
        "ForCausalLM": GPTNeoXForCausalLM,
        "ForSequenceClassification": GPTNeoXForSequenceClassification,
        "ForTokenClassification": GPTNeoXForTokenClassification,
        "ForQuestionAnswering": GPTNeoXForQuestionAnswering,
    },
    base_model_prefix="gpt_neox",
)
