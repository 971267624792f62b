"""MRA: a RoBERTa-style encoder whose self-attention is MRA-2 multi-resolution block-sparse attention.

Paper: Zeng et al., "Multi Resolution Analysis (MRA) for Approximate Self-Attention", ICML 2022. Checked for parity
against ``transformers==4.57.6`` (``models/mra/modeling_mra.py``, ``MraModel`` and its five heads), with HF's CUDA
kernels emulated on CPU (``tests/hf_mra_kernels.py``); the attention itself is the custom op
``tensorkiln::mra_attention`` (``reference/ops/mra_attention.py``).

Where HF is wrong we do the correct thing (details in reference/NOTES.md):

* HF turns the 0/1 attention mask into a 1/-2**31 mask (an int32 overflow) and hands batch row b's mask to the
  wrong (batch, head) rows when B > 1, so padded batches are garbage. We pass the 0/1 mask as it is.
* HF only runs when the sequence length is a multiple of 32 and the configured block budget fits the input's
  blocks (short inputs fail in ``topk``). The op pads the length and clamps the budget, and it is exact (dense
  softmax attention) when the budget covers every block.
* HF's attention is only defined on CUDA (it returns zeros elsewhere); ours runs on any device.

HF zero-pads head_dim up to 32 before its kernels, which changes nothing but the softmax scale: it divides by
``sqrt(32)`` for head_dim < 32. We keep that scale, ``1/sqrt(max(head_dim, 32))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from .activations import get_activation
from .bert_blocks import (
    FirstTokenClassificationHead,
    OffsetPositionEmbeddings,
    OnlyMLMHead,
    PostNormEncoder,
    fold_choices,
    split_start_end,
)
from .config import HFConfig, require
from .ops.mra_attention import BLOCK_SIZE, mra_attention
from .outputs import (
    BaseModelOutput,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from .registry import Architecture


@dataclass(frozen=True)
class MraConfig(HFConfig):
    model_type: ClassVar[str] = "mra"

    vocab_size: int = 50265
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5
    position_embedding_type: str = "absolute"
    block_per_row: int = 4
    approx_mode: Literal["full", "sparse"] = "full"
    initial_prior_first_n_blocks: int = 0
    initial_prior_diagonal_n_blocks: int = 0
    pad_token_id: int | None = 1
    bos_token_id: int | None = 0
    eos_token_id: int | None = 2
    tie_word_embeddings: bool = True

    def validate(self) -> None:
        super().validate()
        for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                    "type_vocab_size", "block_per_row"):
            require(getattr(self, key) >= 1, key, f"must be at least 1, got {getattr(self, key)}")
        require(self.hidden_size % self.num_attention_heads == 0, "hidden_size",
                f"({self.hidden_size}) must be a multiple of num_attention_heads ({self.num_attention_heads})")
        require(self.max_position_embeddings >= BLOCK_SIZE, "max_position_embeddings",
                f"must be at least {BLOCK_SIZE} (one attention block), got {self.max_position_embeddings}")
        require(self.initial_prior_first_n_blocks >= 0, "initial_prior_first_n_blocks",
                f"must be >= 0, got {self.initial_prior_first_n_blocks}")
        require(self.initial_prior_diagonal_n_blocks >= 0, "initial_prior_diagonal_n_blocks",
                f"must be >= 0, got {self.initial_prior_diagonal_n_blocks}")
        # HF would silently drop position information for any other value: MRA has no relative positions.
        require(self.position_embedding_type == "absolute", "position_embedding_type",
                f"must be 'absolute' (MRA has no relative position embeddings), got {self.position_embedding_type!r}")
        require(self.layer_norm_eps > 0, "layer_norm_eps", f"must be positive, got {self.layer_norm_eps}")
        require(self.pad_token_id is None or 0 <= self.pad_token_id < self.vocab_size, "pad_token_id",
                f"must be a token id below vocab_size ({self.vocab_size}), got {self.pad_token_id}")
        get_activation(self.hidden_act)

    @property
    def num_blocks(self) -> int:
        """HF's block budget: block_per_row blocks per row of the longest input, at most every block of it."""
        rows = self.max_position_embeddings // BLOCK_SIZE
        return min(rows * self.block_per_row, rows * rows)


class MraSelfAttention(nn.Module):
    def __init__(self, config: MraConfig):
        super().__init__()
        self.config = config
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        # HF zero-pads head_dim below 32 (its kernels' warp size) and divides by sqrt of the padded size.
        self.scale = 1.0 / math.sqrt(max(self.attention_head_size, BLOCK_SIZE))

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = hidden_states.shape

        def heads(x: torch.Tensor) -> torch.Tensor:
            x = x.view(batch, length, self.num_attention_heads, self.attention_head_size)  # (B, L, H, D)
            return x.transpose(1, 2)  # (B, H, L, D)

        context = mra_attention(
            heads(self.query(hidden_states)),
            heads(self.key(hidden_states)),
            heads(self.value(hidden_states)),
            attention_mask,
            num_blocks=self.config.num_blocks,
            scale=self.scale,
            approx_mode=self.config.approx_mode,
            initial_prior_first_n_blocks=self.config.initial_prior_first_n_blocks,
            initial_prior_diagonal_n_blocks=self.config.initial_prior_diagonal_n_blocks,
        )  # (B, H, L, D)
        return context.transpose(1, 2).reshape(batch, length, hidden)  # (B, L, H*D)


_IGNORED_KEYS = (r"embeddings\.position_ids$", r"embeddings\.token_type_ids$")


class MraModel(nn.Module):
    """The bare encoder. HF's MraModel has no pooler, so ``pooler_output`` stays None."""

    ignored_checkpoint_keys: ClassVar[tuple[str, ...]] = _IGNORED_KEYS

    def __init__(self, config: MraConfig):
        super().__init__()
        self.config = config
        self.embeddings = OffsetPositionEmbeddings(config)
        self.encoder = PostNormEncoder(config, MraSelfAttention)  # BERT's post-LayerNorm layers

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> BaseModelOutput:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("MraModel: pass exactly one of input_ids and inputs_embeds")
        source = input_ids if input_ids is not None else inputs_embeds
        if source.dim() != (2 if input_ids is not None else 3):
            raise ValueError(
                f"MraModel: input_ids must be (batch, seq_len) and inputs_embeds (batch, seq_len, hidden_size), "
                f"got {tuple(source.shape)}"
            )
        batch, length = source.shape[:2]
        if length < 1:
            raise ValueError("MraModel: the input sequence is empty")
        if position_ids is None and length > self.config.max_position_embeddings:
            raise ValueError(
                f"MraModel: sequence length {length} exceeds max_position_embeddings "
                f"({self.config.max_position_embeddings}); truncate or split the input"
            )
        if attention_mask is None:
            attention_mask = torch.ones(batch, length, device=source.device)
        elif tuple(attention_mask.shape) != (batch, length):
            raise ValueError(
                f"MraModel: attention_mask must be (batch, seq_len) = {(batch, length)}, "
                f"got {tuple(attention_mask.shape)}"
            )
        hidden_states = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)  # (B, L, hidden)
        mask = attention_mask.to(torch.float32)  # 1.0 = token, 0.0 = padding
        return BaseModelOutput(last_hidden_state=self.encoder(hidden_states, mask))


class MraForMaskedLM(nn.Module):
    ignored_checkpoint_keys: ClassVar[tuple[str, ...]] = _IGNORED_KEYS

    def __init__(self, config: MraConfig):
        super().__init__()
        self.config = config
        self.mra = MraModel(config)
        self.cls = OnlyMLMHead(config)
        if config.tie_word_embeddings:
            self.cls.predictions.decoder.weight = self.mra.embeddings.word_embeddings.weight

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None) -> MaskedLMOutput:
        hidden = self.mra(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds).last_hidden_state
        return MaskedLMOutput(logits=self.cls(hidden))  # (B, L, vocab)


class MraForSequenceClassification(nn.Module):
    ignored_checkpoint_keys: ClassVar[tuple[str, ...]] = _IGNORED_KEYS

    def __init__(self, config: MraConfig):
        super().__init__()
        self.config = config
        self.mra = MraModel(config)
        # HF's sentence head (YOSO's): the first token through dense -> hidden_act (not tanh) -> out_proj.
        self.classifier = FirstTokenClassificationHead(config, get_activation(config.hidden_act))

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None) -> SequenceClassifierOutput:
        hidden = self.mra(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds).last_hidden_state
        return SequenceClassifierOutput(logits=self.classifier(hidden))  # (B, num_labels)


class MraForMultipleChoice(nn.Module):
    ignored_checkpoint_keys: ClassVar[tuple[str, ...]] = _IGNORED_KEYS

    def __init__(self, config: MraConfig):
        super().__init__()
        self.config = config
        self.mra = MraModel(config)
        self.pre_classifier = nn.Linear(config.hidden_size, config.hidden_size)
        self.classifier = nn.Linear(config.hidden_size, 1)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None) -> MultipleChoiceModelOutput:
        source = input_ids if input_ids is not None else inputs_embeds
        if source is None or source.dim() != (3 if input_ids is not None else 4):
            raise ValueError("MraForMultipleChoice: input_ids must be (batch, num_choices, seq_len)")
        num_choices = source.shape[1]
        inputs = (input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)
        hidden = self.mra(*(fold_choices(x) for x in inputs)).last_hidden_state  # (B*C, L, hidden)
        pooled = torch.relu(self.pre_classifier(hidden[:, 0]))  # (B*C, hidden)
        return MultipleChoiceModelOutput(logits=self.classifier(pooled).view(-1, num_choices))  # (B, C)


class MraForTokenClassification(nn.Module):
    ignored_checkpoint_keys: ClassVar[tuple[str, ...]] = _IGNORED_KEYS

    def __init__(self, config: MraConfig):
        super().__init__()
        self.config = config
        self.mra = MraModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None) -> TokenClassifierOutput:
        hidden = self.mra(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds).last_hidden_state
        return TokenClassifierOutput(logits=self.classifier(hidden))  # (B, L, num_labels)


class MraForQuestionAnswering(nn.Module):
    ignored_checkpoint_keys: ClassVar[tuple[str, ...]] = _IGNORED_KEYS

    def __init__(self, config: MraConfig):
        super().__init__()
        self.config = config
        self.mra = MraModel(config)
        # HF overwrites config.num_labels with 2 here: one start and one end logit per token.
        self.qa_outputs = nn.Linear(config.hidden_size, 2)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None) -> QuestionAnsweringModelOutput:
        hidden = self.mra(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds).last_hidden_state
        start, end = split_start_end(self.qa_outputs(hidden))  # (B, L) each
        return QuestionAnsweringModelOutput(start_logits=start, end_logits=end)


ARCHITECTURE = Architecture(
    model_type="mra",
    class_prefix="Mra",
    config_class=MraConfig,
    heads={
        "Model": MraModel,
        "ForMaskedLM": MraForMaskedLM,
        "ForSequenceClassification": MraForSequenceClassification,
        "ForMultipleChoice": MraForMultipleChoice,
        "ForTokenClassification": MraForTokenClassification,
        "ForQuestionAnswering": MraForQuestionAnswering,
    },
    base_model_prefix="mra",
)
