"""Nystromformer: a BERT-style encoder whose self-attention is approximated with the Nystrom method.

Paper: Xiong et al., "Nystromformer: A Nystrom-Based Algorithm for Approximating Self-Attention", AAAI 2021
(arXiv:2102.03902). Checked for parity against ``transformers==4.57.6``
(``models/nystromformer/modeling_nystromformer.py``), whose numbers we reproduce wherever HF runs correctly.

Attention has two branches, chosen by the config as HF chooses them:

- ``num_landmarks == segment_means_seq_len``: exact softmax attention. Any length up to ``max_position_embeddings``.
  The published ``uw-madison/nystromformer-512`` config (64 and 64) takes this branch.
- otherwise the Nystrom branch: ``m = num_landmarks`` landmarks are the means of ``m`` equal segments of the
  sequence, and softmax(QK^T) is replaced by ``softmax(Q K~^T) pinv(softmax(Q~ K~^T)) softmax(Q~ K^T)``, the
  pseudo-inverse taken by 6 iterations of the Razavi et al. cubic Newton scheme.

Where HF goes wrong we go beyond it (see ``reference/NOTES.md``):

- HF's landmark reshape only works when the input length equals ``segment_means_seq_len``; at other lengths it
  folds batch rows and heads into one another (or returns a batch of the wrong size). We pad the input internally
  to ``segment_means_seq_len`` with ``pad_token_id`` under a zero attention mask and slice the output back, which
  equals HF run on the same explicitly padded input. Longer inputs are refused with a clear error.
- HF's pseudo-inverse starts from ``Z0 = K^T / max(column sums)`` with the max over the whole batch, so one
  request's output depends on its batch neighbours. ``pinv_init_per_sample=True`` (ours, default off = HF) takes
  the max per sample, which gives each row what HF gives it when run alone.
- ``inv_coeff_init_option=True`` crashes in HF (it subscripts the config); we implement the coefficient its code
  intends: ``1 / ||K||_1`` per (sample, head).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch
import torch.nn.functional as F
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
from .outputs import (
    BaseModelOutput,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from .registry import Architecture

#: Iterations of the pseudo-inverse, as HF (``iterative_inv(mat, n_iter=6)``) and the paper.
PINV_ITERATIONS = 6


@dataclasses.dataclass(frozen=True)
class NystromformerConfig(HFConfig):
    model_type: ClassVar[str] = "nystromformer"

    vocab_size: int = 30000
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu_new"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 510
    type_vocab_size: int = 2
    segment_means_seq_len: int = 64
    num_landmarks: int = 64
    #: Depthwise convolution over the values, added to the attention output; None or 0 turns it off.
    conv_kernel_size: int | None = 65
    #: False: HF's conservative Z0 coefficient (max over the batch); True: the exact 1/||K||_1 per (sample, head).
    inv_coeff_init_option: bool = False
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5
    pad_token_id: int | None = 1
    bos_token_id: int | None = 0
    eos_token_id: int | None = 2
    #: HF adds position embeddings only for "absolute"; any other value means none (HF has no relative variant).
    position_embedding_type: str = "absolute"
    tie_word_embeddings: bool = True
    is_decoder: bool = False
    #: tensorkiln's own key (HF ignores it): take the pseudo-inverse's Z0 coefficient per sample, not per batch.
    pinv_init_per_sample: bool = False

    @property
    def uses_landmarks(self) -> bool:
        return self.num_landmarks != self.segment_means_seq_len

    def validate(self) -> None:
        super().validate()
        for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                    "max_position_embeddings", "type_vocab_size", "segment_means_seq_len", "num_landmarks"):
            require(getattr(self, key) >= 1, key, f"must be at least 1, got {getattr(self, key)}")
        require(self.hidden_size % self.num_attention_heads == 0, "num_attention_heads",
                f"must divide hidden_size ({self.hidden_size}), got {self.num_attention_heads}")
        require(self.layer_norm_eps > 0, "layer_norm_eps", f"must be positive, got {self.layer_norm_eps}")
        get_activation(self.hidden_act)
        require(self.conv_kernel_size is None or self.conv_kernel_size == 0
                or (self.conv_kernel_size > 0 and self.conv_kernel_size % 2 == 1), "conv_kernel_size",
                f"must be null, 0 (no convolution) or an odd positive size (HF's 'same' padding of k // 2 "
                f"only keeps the length for odd k), got {self.conv_kernel_size}")
        require(self.pad_token_id is None or 0 <= self.pad_token_id < self.vocab_size, "pad_token_id",
                f"must be a token id below vocab_size ({self.vocab_size}), got {self.pad_token_id}")
        require(not self.is_decoder, "is_decoder",
                "must be false: Nystromformer is an encoder (its landmarks and value convolution see every token)")
        if self.uses_landmarks:
            require(self.segment_means_seq_len % self.num_landmarks == 0, "segment_means_seq_len",
                    f"must be a multiple of num_landmarks ({self.num_landmarks}) so that every landmark averages "
                    f"an equal segment, got {self.segment_means_seq_len}")
            require(self.segment_means_seq_len <= self.max_position_embeddings, "segment_means_seq_len",
                    f"must be at most max_position_embeddings ({self.max_position_embeddings}): every input is "
                    f"padded to it, got {self.segment_means_seq_len}")


# ----------------------------------------------------------------------------------------------- attention


def iterative_pinv(mat: torch.Tensor, coefficient: str, n_iter: int = PINV_ITERATIONS) -> torch.Tensor:
    """Approximate the Moore-Penrose pseudo-inverse of row-stochastic ``mat`` (B, H, m, m) as HF does.

    Z0 = K^T / c, then Z <- Z/4 (13I - KZ(15I - KZ(7I - KZ))). ``coefficient`` picks c:
    "batch" (HF's default): the largest column sum in the whole batch; "sample": the largest per sample, which is
    what "batch" gives a batch of one; "exact": the largest per (sample, head), i.e. ||K||_1.
    """
    identity = torch.eye(mat.shape[-1], dtype=mat.dtype, device=mat.device)  # HF's float32 eye breaks fp16/bf16
    column_sums = mat.sum(dim=-2)  # (B, H, m)
    if coefficient == "batch":
        norm = column_sums.max()
    elif coefficient == "sample":
        norm = column_sums.amax(dim=(-2, -1))[:, None, None, None]  # (B, 1, 1, 1)
    else:
        norm = column_sums.amax(dim=-1)[:, :, None, None]  # (B, H, 1, 1)
    z = 1 / norm * mat.transpose(-1, -2)
    for _ in range(n_iter):
        kz = mat @ z
        z = (0.25 * z) @ (13 * identity - kz @ (15 * identity - kz @ (7 * identity - kz)))
    return z


class NystromformerSelfAttention(nn.Module):
    def __init__(self, config: NystromformerConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        if config.inv_coeff_init_option:
            self.pinv_coefficient = "exact"
        else:
            self.pinv_coefficient = "sample" if config.pinv_init_per_sample else "batch"
        # HF builds the conv whenever the key is not null, so a 0 still carries an (empty) conv.weight tensor.
        self.conv = None
        if config.conv_kernel_size is not None:
            k = config.conv_kernel_size
            # Depthwise over heads, sliding along the sequence only: (k, 1) kernel, "same" padding for odd k.
            self.conv = nn.Conv2d(self.num_heads, self.num_heads, kernel_size=(k, 1), padding=(k // 2, 0),
                                  bias=False, groups=self.num_heads)

    @torch.no_grad()
    def init_weights_(self, generator: torch.Generator, std: float) -> None:
        # HF's _init_weights draws Conv2d weights like Linear ones: N(0, initializer_range).
        if self.conv is not None:
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=generator) * std)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq_len, _ = x.shape
        return x.view(batch, seq_len, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, L, D)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        batch, seq_len, hidden = hidden_states.shape
        # Both Q and K carry D^-1/4, so Q K^T carries the usual D^-1/2 (and so do the landmark products).
        q = self._heads(self.query(hidden_states)) / math.sqrt(math.sqrt(self.head_dim))
        k = self._heads(self.key(hidden_states)) / math.sqrt(math.sqrt(self.head_dim))
        v = self._heads(self.value(hidden_states))

        if not self.config.uses_landmarks:
            probs = torch.softmax(q @ k.transpose(-1, -2) + attention_mask, dim=-1)  # (B, H, L, L)
            context = probs @ v  # (B, H, L, D)
        else:
            m = self.config.num_landmarks
            # Segment means; the batch size is explicit so that rows can never fold into one another.
            q_landmarks = q.reshape(batch, self.num_heads, m, seq_len // m, self.head_dim).mean(dim=-2)  # (B,H,m,D)
            k_landmarks = k.reshape(batch, self.num_heads, m, seq_len // m, self.head_dim).mean(dim=-2)  # (B,H,m,D)
            kernel_1 = torch.softmax(q @ k_landmarks.transpose(-1, -2), dim=-1)  # (B, H, L, m)
            kernel_2 = torch.softmax(q_landmarks @ k_landmarks.transpose(-1, -2), dim=-1)  # (B, H, m, m)
            # As in HF, the padding mask only reaches this kernel: padded tokens still enter the segment means.
            kernel_3 = torch.softmax(q_landmarks @ k.transpose(-1, -2) + attention_mask, dim=-1)  # (B, H, m, L)
            probs = kernel_1 @ iterative_pinv(kernel_2, self.pinv_coefficient)  # (B, H, L, m)
            context = probs @ (kernel_3 @ v)  # (B, H, L, D)

        if self.config.conv_kernel_size:
            # The conv reads every value, padded tokens included (HF does not mask them).
            context = context + self.conv(v)  # (B, H, L, D)
        return context.transpose(1, 2).reshape(batch, seq_len, hidden)  # (B, L, H*D)


# ----------------------------------------------------------------------------------------------- the bare model

#: Buffers old HF checkpoints may carry; we recompute them.
_IGNORED_KEYS = (r"embeddings\.position_ids$", r"embeddings\.token_type_ids$")


class NystromformerModel(nn.Module):
    ignored_checkpoint_keys: ClassVar[tuple[str, ...]] = _IGNORED_KEYS

    def __init__(self, config: NystromformerConfig):
        super().__init__()
        self.config = config
        self.embeddings = OffsetPositionEmbeddings(config)
        self.encoder = PostNormEncoder(config, NystromformerSelfAttention)  # BERT's post-LayerNorm layers

    def _check_length(self, seq_len: int) -> None:
        config = self.config
        if seq_len > config.max_position_embeddings:
            raise ValueError(
                f"sequence length {seq_len} exceeds max_position_embeddings ({config.max_position_embeddings}); "
                f"truncate or split the input"
            )
        if config.uses_landmarks and seq_len > config.segment_means_seq_len:
            raise ValueError(
                f"sequence length {seq_len} exceeds segment_means_seq_len ({config.segment_means_seq_len}): the "
                f"Nystrom landmarks average {config.num_landmarks} fixed segments of that many tokens, so longer "
                f"inputs cannot be represented; truncate or split the input"
            )

    def _pad_to_segments(self, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds):
        """Pad every input to segment_means_seq_len, as a caller of HF would: pad tokens under a zero mask.

        Padded positions take pad_token_id, token type 0 and, where position_ids were given, the positions HF
        would give them by default, so the result equals HF run on the explicitly padded input.
        """
        reference = input_ids if input_ids is not None else inputs_embeds
        batch, seq_len = reference.shape[:2]
        pad = self.config.segment_means_seq_len - seq_len
        pad_id = self.config.pad_token_id
        if pad_id is None:
            raise ValueError(
                f"the input ({seq_len} tokens) is shorter than segment_means_seq_len "
                f"({self.config.segment_means_seq_len}) and the config has no pad_token_id to pad it with; pad "
                f"the input to segment_means_seq_len yourself, with attention_mask 0 on the padding"
            )
        if input_ids is not None:
            input_ids = F.pad(input_ids, (0, pad), value=pad_id)  # (B, S)
        else:
            pad_embedding = self.embeddings.word_embeddings.weight[pad_id].to(inputs_embeds.dtype)
            filler = pad_embedding.expand(batch, pad, -1)  # (B, S - L, hidden)
            inputs_embeds = torch.cat([inputs_embeds, filler], dim=1)  # (B, S, hidden)
        attention_mask = F.pad(attention_mask, (0, pad), value=0)  # (B, S)
        if token_type_ids is not None:
            token_type_ids = F.pad(token_type_ids, (0, pad), value=0)  # (B, S)
        if position_ids is not None:
            default = self.embeddings.position_ids[:, seq_len:seq_len + pad]  # (1, S - L)
            position_ids = torch.cat([position_ids, default.expand(position_ids.shape[0], -1)], dim=1)  # (B, S)
        return input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> BaseModelOutput:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        reference = input_ids if input_ids is not None else inputs_embeds
        if reference.dim() != (2 if input_ids is not None else 3):
            raise ValueError(
                f"expected input_ids of shape (batch, seq_len) or inputs_embeds of shape (batch, seq_len, hidden), "
                f"got {tuple(reference.shape)}"
            )
        batch, seq_len = reference.shape[:2]
        self._check_length(seq_len)
        if attention_mask is None:
            attention_mask = torch.ones(batch, seq_len, device=reference.device)
        elif attention_mask.shape != (batch, seq_len):
            raise ValueError(
                f"attention_mask must have shape (batch, seq_len) = {(batch, seq_len)}, got "
                f"{tuple(attention_mask.shape)}"
            )

        if self.config.uses_landmarks and seq_len < self.config.segment_means_seq_len:
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds = self._pad_to_segments(
                input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds
            )

        hidden_states = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)  # (B, S, hidden)
        # BERT's additive mask: 0 where attended, the dtype's minimum where masked.
        dtype = hidden_states.dtype
        additive_mask = (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min  # (B, 1, 1, S)
        hidden_states = self.encoder(hidden_states, additive_mask)
        return BaseModelOutput(last_hidden_state=hidden_states[:, :seq_len])  # (B, L, hidden)


# ----------------------------------------------------------------------------------------------- heads


class NystromformerForMaskedLM(nn.Module):
    ignored_checkpoint_keys: ClassVar[tuple[str, ...]] = _IGNORED_KEYS

    def __init__(self, config: NystromformerConfig):
        super().__init__()
        self.config = config
        self.nystromformer = NystromformerModel(config)
        self.cls = OnlyMLMHead(config)
        if config.tie_word_embeddings:
            self.cls.predictions.decoder.weight = self.nystromformer.embeddings.word_embeddings.weight

    @torch.no_grad()
    def init_weights_(self, generator: torch.Generator, std: float) -> None:
        # The generic pass may redraw the tied decoder after the embedding; keep the padding row zero as HF does.
        pad_id = self.config.pad_token_id
        if self.config.tie_word_embeddings and pad_id is not None:
            self.nystromformer.embeddings.word_embeddings.weight[pad_id].zero_()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None) -> MaskedLMOutput:
        hidden = self.nystromformer(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)
        return MaskedLMOutput(logits=self.cls(hidden.last_hidden_state))  # (B, L, vocab)


class NystromformerForSequenceClassification(nn.Module):
    ignored_checkpoint_keys: ClassVar[tuple[str, ...]] = _IGNORED_KEYS

    def __init__(self, config: NystromformerConfig):
        super().__init__()
        self.config = config
        self.nystromformer = NystromformerModel(config)
        # HF's sentence head applies hidden_act to the <s> token's dense projection, not RoBERTa's tanh.
        self.classifier = FirstTokenClassificationHead(config, get_activation(config.hidden_act))

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None) -> SequenceClassifierOutput:
        hidden = self.nystromformer(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)
        return SequenceClassifierOutput(logits=self.classifier(hidden.last_hidden_state))


class NystromformerForMultipleChoice(nn.Module):
    ignored_checkpoint_keys: ClassVar[tuple[str, ...]] = _IGNORED_KEYS

    def __init__(self, config: NystromformerConfig):
        super().__init__()
        self.config = config
        self.nystromformer = NystromformerModel(config)
        self.pre_classifier = nn.Linear(config.hidden_size, config.hidden_size)
        self.classifier = nn.Linear(config.hidden_size, 1)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None) -> MultipleChoiceModelOutput:
        reference = input_ids if input_ids is not None else inputs_embeds
        if reference is None or reference.dim() != (3 if input_ids is not None else 4):
            raise ValueError("multiple choice inputs are (batch, num_choices, seq_len[, hidden])")
        num_choices = reference.shape[1]
        inputs = (input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)
        hidden = self.nystromformer(*(fold_choices(x) for x in inputs)).last_hidden_state  # (B*C, L, hidden)
        pooled = torch.relu(self.pre_classifier(hidden[:, 0]))  # (B*C, hidden)
        return MultipleChoiceModelOutput(logits=self.classifier(pooled).view(-1, num_choices))  # (B, C)


class NystromformerForTokenClassification(nn.Module):
    ignored_checkpoint_keys: ClassVar[tuple[str, ...]] = _IGNORED_KEYS

    def __init__(self, config: NystromformerConfig):
        super().__init__()
        self.config = config
        self.nystromformer = NystromformerModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None) -> TokenClassifierOutput:
        hidden = self.nystromformer(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)
        return TokenClassifierOutput(logits=self.classifier(hidden.last_hidden_state))  # (B, L, num_labels)


class NystromformerForQuestionAnswering(nn.Module):
    ignored_checkpoint_keys: ClassVar[tuple[str, ...]] = _IGNORED_KEYS

    def __init__(self, config: NystromformerConfig):
        super().__init__()
        self.config = config
        self.nystromformer = NystromformerModel(config)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)  # HF forces num_labels = 2 here

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None) -> QuestionAnsweringModelOutput:
        hidden = self.nystromformer(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)
        start, end = split_start_end(self.qa_outputs(hidden.last_hidden_state))  # (B, L) each
        return QuestionAnsweringModelOutput(start_logits=start, end_logits=end)


ARCHITECTURE = Architecture(
    model_type="nystromformer",
    class_prefix="Nystromformer",
    config_class=NystromformerConfig,
    heads={
        "Model": NystromformerModel,
        "ForMaskedLM": NystromformerForMaskedLM,
        "ForSequenceClassification": NystromformerForSequenceClassification,
        "ForMultipleChoice": NystromformerForMultipleChoice,
        "ForTokenClassification": NystromformerForTokenClassification,
        "ForQuestionAnswering": NystromformerForQuestionAnswering,
    },
    base_model_prefix="nystromformer",
)
