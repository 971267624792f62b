"""Mega's task heads (HF's ``MegaFor*`` classes) and the architecture's registry entry.

Split out of ``reference/mega.py``, which holds the config, the cache and the base model that every head wraps under
HF's prefix ``mega``. Checked against the same ``transformers==4.57.6`` (``models/deprecated/mega/modeling_mega.py``):
state-dict names, the optional tanh dense layer before the LM projection (``add_lm_hidden_dense_layer``), the tied LM
decoder, and which heads HF builds without the pooler. Inference only: no dropout, no losses.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from .config import ConfigError
from .mega import IGNORED_KEYS, MegaConfig, MegaModel
from .outputs import (
    CausalLMOutput,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from .registry import Architecture

# ----------------------------------------------------------------------------------------------- heads


def _lm_dense(config: MegaConfig) -> nn.Linear | None:
    return nn.Linear(config.hidden_size, config.hidden_size) if config.add_lm_hidden_dense_layer else None


class MegaForCausalLM(nn.Module):
    """Next-token logits, with incremental decoding when ``is_decoder`` is true and ``bidirectional`` false.

    ``use_cache`` (default: the config's) returns ``past_key_values``: a tuple with one :class:`MegaLayerCache`
    per layer (self-attention keys/values, EMA state, cross-attention keys/values, tokens seen), whose first fields
    are HF's per-layer tuple, so HF's cache tuples load as they are. Feed it back with the next tokens (one or
    more), an ``attention_mask`` covering past and new tokens and, with cross-attention, the
    ``encoder_attention_mask``; the logits equal a full recomputation. With a cache the EMA runs untruncated, as
    HF's cached path does. See :class:`MegaModel` for the cross-attention inputs.
    """

    ignored_checkpoint_keys: ClassVar[tuple[str, ...]] = IGNORED_KEYS

    def __init__(self, config: MegaConfig):
        super().__init__()
        self.config = config
        self.mega = MegaModel(config, add_pooling_layer=False)
        self.dense = _lm_dense(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.mega.embedding_layer.word_embeddings.weight

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None,
                encoder_hidden_states=None, encoder_attention_mask=None, past_key_values=None,
                use_cache=None) -> CausalLMOutput:
        out = self.mega(input_ids, attention_mask, token_type_ids, inputs_embeds, encoder_hidden_states,
                        encoder_attention_mask, past_key_values, use_cache)
        hidden = out.last_hidden_state
        if self.dense is not None:
            hidden = torch.tanh(self.dense(hidden))
        return CausalLMOutput(logits=self.lm_head(hidden), past_key_values=out.past_key_values)


class MegaForMaskedLM(nn.Module):
    ignored_checkpoint_keys: ClassVar[tuple[str, ...]] = IGNORED_KEYS

    def __init__(self, config: MegaConfig):
        super().__init__()
        self.config = config
        self.mega = MegaModel(config, add_pooling_layer=False)
        self.dense = _lm_dense(config)
        self.mlm_head = nn.Linear(config.hidden_size, config.vocab_size)
        if config.tie_word_embeddings:
            self.mlm_head.weight = self.mega.embedding_layer.word_embeddings.weight

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None,
                encoder_hidden_states=None, encoder_attention_mask=None) -> MaskedLMOutput:
        hidden = self.mega(input_ids, attention_mask, token_type_ids, inputs_embeds, encoder_hidden_states,
                           encoder_attention_mask).last_hidden_state
        if self.dense is not None:
            hidden = torch.tanh(self.dense(hidden))
        return MaskedLMOutput(logits=self.mlm_head(hidden))


class MegaClassificationHead(nn.Module):
    def __init__(self, config: MegaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, hidden):
        return self.out_proj(torch.tanh(self.dense(hidden[:, 0])))  # (B, num_labels): the first token


class MegaForSequenceClassification(nn.Module):
    ignored_checkpoint_keys: ClassVar[tuple[str, ...]] = IGNORED_KEYS

    def __init__(self, config: MegaConfig):
        super().__init__()
        self.config = config
        self.mega = MegaModel(config, add_pooling_layer=False)
        self.classifier = MegaClassificationHead(config)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None,
                inputs_embeds=None) -> SequenceClassifierOutput:
        hidden = self.mega(input_ids, attention_mask, token_type_ids, inputs_embeds).last_hidden_state
        return SequenceClassifierOutput(logits=self.classifier(hidden))


class MegaForMultipleChoice(nn.Module):
    ignored_checkpoint_keys: ClassVar[tuple[str, ...]] = IGNORED_KEYS

    def __init__(self, config: MegaConfig):
        super().__init__()
        self.config = config
        self.mega = MegaModel(config)
        self.classifier = nn.Linear(config.hidden_size, 1)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None,
                inputs_embeds=None) -> MultipleChoiceModelOutput:
        source = input_ids if input_ids is not None else inputs_embeds
        if source is None or source.dim() < 3:
            raise ValueError("multiple choice inputs must be (batch, choices, sequence) ids or embeddings")
        num_choices = source.shape[1]

        def flat(t, keep):  # (B, C, L, ...) -> (B * C, L, ...)
            return None if t is None else t.reshape(-1, *t.shape[2:2 + keep])

        pooled = self.mega(flat(input_ids, 1), flat(attention_mask, 1), flat(token_type_ids, 1),
                           flat(inputs_embeds, 2)).pooler_output  # (B * C, D)
        return MultipleChoiceModelOutput(logits=self.classifier(pooled).view(-1, num_choices))  # (B, C)


class MegaForTokenClassification(nn.Module):
    ignored_checkpoint_keys: ClassVar[tuple[str, ...]] = IGNORED_KEYS

    def __init__(self, config: MegaConfig):
        super().__init__()
        self.config = config
        self.mega = MegaModel(config, add_pooling_layer=False)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None,
                inputs_embeds=None) -> TokenClassifierOutput:
        hidden = self.mega(input_ids, attention_mask, token_type_ids, inputs_embeds).last_hidden_state
        return TokenClassifierOutput(logits=self.classifier(hidden))


class MegaForQuestionAnswering(nn.Module):
    ignored_checkpoint_keys: ClassVar[tuple[str, ...]] = IGNORED_KEYS

    def __init__(self, config: MegaConfig):
        super().__init__()
        if config.num_labels != 2:
            # HF sizes qa_outputs by num_labels but splits it into exactly (start, end).
            raise ConfigError(f"config key 'num_labels' must be 2 for question answering, got {config.num_labels}")
        self.config = config
        self.mega = MegaModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None,
                inputs_embeds=None) -> QuestionAnsweringModelOutput:
        hidden = self.mega(input_ids, attention_mask, token_type_ids, inputs_embeds).last_hidden_state
        start, end = self.qa_outputs(hidden).split(1, dim=-1)  # (B, L, 1) each
        return QuestionAnsweringModelOutput(start_logits=start.squeeze(-1).contiguous(),
                                            end_logits=end.squeeze(-1).contiguous())


ARCHITECTURE = Architecture(
    model_type="mega",
    class_prefix="Mega",
    config_class=MegaConfig,
    heads={
        "Model": MegaModel,
        "ForCausalLM": MegaForCausalLM,
        "ForMaskedLM": MegaForMaskedLM,
        "ForSequenceClassification": MegaForSequenceClassification,
        "ForMultipleChoice": MegaForMultipleChoice,
        "ForTokenClassification": MegaForTokenClassification,
        "ForQuestionAnswering": MegaForQuestionAnswering,
    },
    base_model_prefix="mega",
)
