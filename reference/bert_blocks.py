"""BERT's building blocks, shared by the BERT-family encoders MRA, Nystromformer and MegatronBERT.

Checked against ``transformers==4.57.6``: ``models/bert/modeling_bert.py`` and the copies of its classes in
``models/mra/modeling_mra.py``, ``models/nystromformer/modeling_nystromformer.py`` and
``models/megatron_bert/modeling_megatron_bert.py`` (HF marks them "Copied from ...Bert..."), and for the
classification head ``models/yoso/modeling_yoso.py``'s ``YosoClassificationHead``, which MRA copies.

Who uses what:

- all three: the masked-LM head (``PredictionHeadTransform``, ``LMPredictionHead``, ``OnlyMLMHead``),
  ``Intermediate``, and the head plumbing ``fold_choices`` and ``split_start_end``;
- MRA and Nystromformer: BERT's post-LayerNorm encoder around their own self-attention (``PostNormEncoder``, with
  ``PostNormOutput``), ``OffsetPositionEmbeddings`` and ``FirstTokenClassificationHead``. MegatronBERT's layers are
  pre-LayerNorm and its embeddings have no LayerNorm, so it keeps its own; it classifies from its pooler.

Attribute names are HF's, so the state_dict keys are HF's whatever the class names; each block also registers its
submodules in HF's order, which ``reference/init.py`` follows when it draws random weights. Inference only: HF's
dropouts are left out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn

from .activations import get_activation

#: MRA's and Nystromformer's position ids start at 2 (RoBERTa's padding offset), so the position table has
#: max_position_embeddings + 2 rows, of which rows 0 and 1 are never used. Unlike RoBERTa the ids do not depend on
#: where the padding is.
POSITION_OFFSET = 2


class BertStyleConfig(Protocol):
    """The config keys these blocks read; every BERT-family config dataclass has them."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    hidden_act: str
    layer_norm_eps: float
    max_position_embeddings: int
    type_vocab_size: int
    pad_token_id: int | None
    position_embedding_type: str
    num_labels: int


# ----------------------------------------------------------------------------------------------- embeddings


class OffsetPositionEmbeddings(nn.Module):
    """Word + token-type (+ absolute position, ids from ``POSITION_OFFSET``) embeddings, then LayerNorm.

    HF adds the positions only when ``position_embedding_type`` is "absolute" (any other value means none).
    """

    def __init__(self, config: BertStyleConfig):
        super().__init__()
        self.config = config
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings + POSITION_OFFSET, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        positions = torch.arange(config.max_position_embeddings) + POSITION_OFFSET
        self.register_buffer("position_ids", positions[None, :], persistent=False)  # (1, max_positions)

    def forward(self, input_ids, token_type_ids, position_ids, inputs_embeds) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)  # (B, L, hidden)
        seq_len = inputs_embeds.shape[1]
        if token_type_ids is None:
            token_type_ids = torch.zeros(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        embeddings = inputs_embeds + self.token_type_embeddings(token_type_ids)
        if self.config.position_embedding_type == "absolute":
            if position_ids is None:
                position_ids = self.position_ids[:, :seq_len]  # (1, L)
            embeddings = embeddings + self.position_embeddings(position_ids)
        return self.LayerNorm(embeddings)


# ----------------------------------------------------------------------------------------------- layers


class Intermediate(nn.Module):
    """The feed-forward's first half: ``hidden_act(dense(x))``, hidden_size -> intermediate_size."""

    def __init__(self, config: BertStyleConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = get_activation(config.hidden_act)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))


class PostNormOutput(nn.Module):
    """``LayerNorm(dense(x) + residual)``, input_size -> hidden_size: HF's ``BertSelfOutput`` and ``BertOutput``."""

    def __init__(self, config: BertStyleConfig, input_size: int):
        super().__init__()
        self.dense = nn.Linear(input_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(hidden_states) + residual)


class PostNormAttention(nn.Module):
    """BERT's attention block around any self-attention: ``LayerNorm(x + dense(self_attention(x, mask)))``."""

    def __init__(self, config: BertStyleConfig, self_attention: nn.Module):
        super().__init__()
        self.self = self_attention
        self.output = PostNormOutput(config, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(hidden_states, attention_mask), hidden_states)


class PostNormLayer(nn.Module):
    def __init__(self, config: BertStyleConfig, self_attention: nn.Module):
        super().__init__()
        self.attention = PostNormAttention(config, self_attention)
        self.intermediate = Intermediate(config)
        self.output = PostNormOutput(config, config.intermediate_size)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        attention_output = self.attention(hidden_states, attention_mask)
        return self.output(self.intermediate(attention_output), attention_output)


class PostNormEncoder(nn.Module):
    """``num_hidden_layers`` post-LayerNorm BERT layers, each around ``self_attention(config)``.

    The self-attention module maps ``(hidden_states (B, L, hidden), attention_mask)`` to ``(B, L, hidden)``; the
    mask is passed through as the architecture prepared it.
    """

    def __init__(self, config: BertStyleConfig, self_attention: Callable[..., nn.Module]):
        super().__init__()
        self.layer = nn.ModuleList(
            [PostNormLayer(config, self_attention(config)) for _ in range(config.num_hidden_layers)]
        )

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            hidden_states = layer(hidden_states, attention_mask)
        return hidden_states


# ----------------------------------------------------------------------------------------------- heads


class PredictionHeadTransform(nn.Module):
    def __init__(self, config: BertStyleConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = get_activation(config.hidden_act)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class LMPredictionHead(nn.Module):
    """Transform, then project onto the vocabulary. ``decoder.bias`` *is* ``bias`` (one Parameter, two names).

    The architecture ties ``decoder.weight`` to its word embeddings when ``tie_word_embeddings`` is set.
    """

    def __init__(self, config: BertStyleConfig):
        super().__init__()
        self.transform = PredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder.bias = self.bias

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(hidden_states))  # (B, L, vocab)


class OnlyMLMHead(nn.Module):
    def __init__(self, config: BertStyleConfig):
        super().__init__()
        self.predictions = LMPredictionHead(config)

    def forward(self, sequence_output: torch.Tensor) -> torch.Tensor:
        return self.predictions(sequence_output)


class FirstTokenClassificationHead(nn.Module):
    """The sentence head of RoBERTa and its copies: the first token through dense -> ``activation`` -> out_proj.

    RoBERTa (and Mega) use tanh; YOSO, MRA and Nystromformer use the config's ``hidden_act``.
    """

    def __init__(self, config: BertStyleConfig, activation: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)
        self.act = activation

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.act(self.dense(features[:, 0])))  # (B, num_labels)


# ----------------------------------------------------------------------------------------------- head plumbing


def fold_choices(x: torch.Tensor | None, keep: int | None = None) -> torch.Tensor | None:
    """Multiple choice: fold the choices into the batch, one row per choice. ``None`` stays ``None``.

    ``keep=None`` folds the first two dimensions, (B, C, ...) -> (B*C, ...). ``keep=k`` keeps the last k
    dimensions and folds all before them, as HF's ``x.view(-1, x.size(-1))`` does: (B, C, L) -> (B*C, L) for
    k = 1, (B, C, L, hidden) -> (B*C, L, hidden) for k = 2.
    """
    if x is None:
        return None
    if keep is None:
        return x.reshape(-1, *x.shape[2:])  # (B*C, ...)
    return x.reshape(-1, *x.shape[x.dim() - keep:])  # (B*C, L[, hidden])


def split_start_end(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Question answering: (B, L, 2) logits -> start and end logits, (B, L) each, contiguous as HF returns them."""
    start, end = logits.unbind(dim=-1)
    return start.contiguous(), end.contiguous()
