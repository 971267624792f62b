"""MegatronBERT's task heads (HF's ``MegatronBertFor*`` classes) and the architecture's registry entry.

Split out of ``reference/megatron_bert.py``, which holds the config and the base model that every head wraps under
HF's prefix ``bert``. Checked against the same ``transformers==4.57.6``
``models/megatron_bert/modeling_megatron_bert.py``: state-dict names, the LM decoder tied to the word embeddings,
which heads read the pooled output and which HF builds without a pooler. Inference only: no dropout, no losses.
"""

from __future__ import annotations

import warnings
from typing import ClassVar

import torch
from torch import nn

from .bert_blocks import LMPredictionHead, OnlyMLMHead, fold_choices, split_start_end
from .config import ConfigError
from .megatron_bert import MegatronBertConfig, MegatronBertModel
from .outputs import (
    CausalLMOutput,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    NextSentencePredictorOutput,
    PreTrainingOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from .registry import Architecture

# ----------------------------------------------------------------------------------------------- heads


class MegatronBertOnlyNSPHead(nn.Module):
    def __init__(self, config: MegatronBertConfig):
        super().__init__()
        self.seq_relationship = nn.Linear(config.hidden_size, 2)

    def forward(self, pooled_output: torch.Tensor) -> torch.Tensor:
        return self.seq_relationship(pooled_output)


class MegatronBertPreTrainingHeads(nn.Module):
    def __init__(self, config: MegatronBertConfig):
        super().__init__()
        self.predictions = LMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


def _tie_lm_decoder(model: nn.Module) -> None:
    """With ``tie_word_embeddings`` (HF's default) the vocabulary projection is the word-embedding matrix."""
    if model.config.tie_word_embeddings:
        model.cls.predictions.decoder.weight = model.bert.embeddings.word_embeddings.weight


class _Head(nn.Module):
    """Shared plumbing of the head models: the base model under HF's prefix ``bert``."""

    ignored_checkpoint_keys: ClassVar[tuple[str, ...]] = MegatronBertModel.ignored_checkpoint_keys
    add_pooling_layer: ClassVar[bool] = True

    def __init__(self, config: MegatronBertConfig):
        super().__init__()
        self.config = config
        self.bert = MegatronBertModel(config, add_pooling_layer=self.add_pooling_layer)

    def _encode(self, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, **kwargs):
        return self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, inputs_embeds=inputs_embeds, **kwargs,
        )


class MegatronBertForPreTraining(_Head):
    def __init__(self, config: MegatronBertConfig):
        super().__init__(config)
        self.cls = MegatronBertPreTrainingHeads(config)
        _tie_lm_decoder(self)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None) -> PreTrainingOutput:
        out = self._encode(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)
        return PreTrainingOutput(
            prediction_logits=self.cls.predictions(out.last_hidden_state),
            seq_relationship_logits=self.cls.seq_relationship(out.pooler_output),
        )


class MegatronBertForCausalLM(_Head):
    add_pooling_layer = False

    def __init__(self, config: MegatronBertConfig):
        super().__init__(config)
        if not config.is_decoder:
            warnings.warn("MegatronBertForCausalLM with is_decoder=false attends both ways and keeps no cache "
                          "(as HF does); set is_decoder=true for a causal LM", stacklevel=2)
        self.cls = OnlyMLMHead(config)
        _tie_lm_decoder(self)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, encoder_hidden_states=None, encoder_attention_mask=None,
                past_key_values=None, use_cache=None) -> CausalLMOutput:
        out = self._encode(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
            encoder_hidden_states=encoder_hidden_states, encoder_attention_mask=encoder_attention_mask,
            past_key_values=past_key_values, use_cache=use_cache,
        )
        return CausalLMOutput(logits=self.cls(out.last_hidden_state), past_key_values=out.past_key_values)


class MegatronBertForMaskedLM(_Head):
    add_pooling_layer = False

    def __init__(self, config: MegatronBertConfig):
        super().__init__(config)
        if config.is_decoder:
            warnings.warn("MegatronBertForMaskedLM with is_decoder=true applies a causal mask (as HF does); "
                          "set is_decoder=false for bi-directional attention", stacklevel=2)
        self.cls = OnlyMLMHead(config)
        _tie_lm_decoder(self)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, encoder_hidden_states=None, encoder_attention_mask=None) -> MaskedLMOutput:
        out = self._encode(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
            encoder_hidden_states=encoder_hidden_states, encoder_attention_mask=encoder_attention_mask,
        )
        return MaskedLMOutput(logits=self.cls(out.last_hidden_state))


class MegatronBertForNextSentencePrediction(_Head):
    def __init__(self, config: MegatronBertConfig):
        super().__init__(config)
        self.cls = MegatronBertOnlyNSPHead(config)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None) -> NextSentencePredictorOutput:
        out = self._encode(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)
        return NextSentencePredictorOutput(logits=self.cls(out.pooler_output))


class MegatronBertForSequenceClassification(_Head):
    def __init__(self, config: MegatronBertConfig):
        super().__init__(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None) -> SequenceClassifierOutput:
        out = self._encode(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)
        return SequenceClassifierOutput(logits=self.classifier(out.pooler_output))


class MegatronBertForMultipleChoice(_Head):
    """Inputs are (B, C, L) for C choices; each choice is encoded on its own and scored from its pooled output."""

    def __init__(self, config: MegatronBertConfig):
        super().__init__(config)
        self.classifier = nn.Linear(config.hidden_size, 1)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None) -> MultipleChoiceModelOutput:
        reference = input_ids if input_ids is not None else inputs_embeds
        if reference is None or reference.dim() < 3:
            raise ValueError("multiple choice takes input_ids (batch, choices, length) "
                             "or inputs_embeds (batch, choices, length, hidden)")
        num_choices = reference.shape[1]
        # As HF, fold every leading dimension: (..., L) -> (B*C, L) and (..., L, hidden) -> (B*C, L, hidden).
        out = self._encode(fold_choices(input_ids, keep=1), fold_choices(attention_mask, keep=1),
                           fold_choices(token_type_ids, keep=1), fold_choices(position_ids, keep=1),
                           fold_choices(inputs_embeds, keep=2))
        logits = self.classifier(out.pooler_output)  # (B*C, 1)
        return MultipleChoiceModelOutput(logits=logits.view(-1, num_choices))  # (B, C)


class MegatronBertForTokenClassification(_Head):
    add_pooling_layer = False

    def __init__(self, config: MegatronBertConfig):
        super().__init__(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None) -> TokenClassifierOutput:
        out = self._encode(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)
        return TokenClassifierOutput(logits=self.classifier(out.last_hidden_state))


class MegatronBertForQuestionAnswering(_Head):
    add_pooling_layer = False

    def __init__(self, config: MegatronBertConfig):
        # HF splits the projection into exactly (start, end) and fails at run time for any other num_labels.
        if config.num_labels != 2:
            raise ConfigError(f"config key 'num_labels' must be 2 for MegatronBertForQuestionAnswering "
                              f"(start and end logits), got {config.num_labels}")
        super().__init__(config)
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None) -> QuestionAnsweringModelOutput:
        out = self._encode(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)
        start_logits, end_logits = split_start_end(self.qa_outputs(out.last_hidden_state))  # (B, L) each
        return QuestionAnsweringModelOutput(start_logits=start_logits, end_logits=end_logits)


ARCHITECTURE = Architecture(
    model_type=MegatronBertConfig.model_type,
    class_prefix="MegatronBert",
    config_class=MegatronBertConfig,
    heads={
        "Model": MegatronBertModel,
        "ForPreTraining": MegatronBertForPreTraining,
        "ForCausalLM": MegatronBertForCausalLM,
        "ForMaskedLM": MegatronBertForMaskedLM,
        "ForNextSentencePrediction": MegatronBertForNextSentencePrediction,
        "ForSequenceClassification": MegatronBertForSequenceClassification,
        "ForMultipleChoice": MegatronBertForMultipleChoice,
        "ForTokenClassification": MegatronBertForTokenClassification,
        "ForQuestionAnswering": MegatronBertForQuestionAnswering,
    },
    base_model_prefix="bert",
)
