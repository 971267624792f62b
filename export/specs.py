"""Declarative export specs: for each architecture and head, the ONNX inputs and outputs with HF's names and dims,
the dummy inputs to trace and check with, the length rules a runtime must apply, and the decoder cache layout.

In the manner of optimum's ``exporters/onnx/model_configs.py``: one small frozen dataclass per architecture,
registered with :func:`register`. A spec covers every head of its architecture (``tests/test_export_specs.py``
fails when an architecture or a head lacks one). Dims are ints (fixed) or the symbolic names of
``runtime/manifest.py`` (``batch_size``, ``sequence_length``, ...); tensors whose dtype is ``"float"`` take the
exported precision.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from tensorkiln.runtime.errors import KilnError
from tensorkiln.runtime.manifest import BATCH, CHOICES, PAST, SEQUENCE, TOTAL, CacheEntry, CacheLayout, Dim, LengthRules

#: optimum-style task names accepted by ``--task``, next to HF's head names (``ForMaskedLM``, ``MraForMaskedLM``).
TASK_ALIASES = {
    "feature-extraction": "Model",
    "fill-mask": "ForMaskedLM",
    "text-generation-with-past": "ForCausalLM",
    "text-generation": "ForCausalLM",
    "text-classification": "ForSequenceClassification",
    "multiple-choice": "ForMultipleChoice",
    "token-classification": "ForTokenClassification",
    "question-answering": "ForQuestionAnswering",
    "pretraining": "ForPreTraining",
    "next-sentence-prediction": "ForNextSentencePrediction",
}
#: head -> the task name recorded in the manifest.
HEAD_TASKS = {
    "Model": "feature-extraction",
    "ForMaskedLM": "fill-mask",
    "ForCausalLM": "text-generation",
    "ForSequenceClassification": "text-classification",
    "ForMultipleChoice": "multiple-choice",
    "ForTokenClassification": "token-classification",
    "ForQuestionAnswering": "question-answering",
    "ForPreTraining": "pretraining",
    "ForNextSentencePrediction": "next-sentence-prediction",
}


class ExportError(KilnError, ValueError):
    """An export that cannot be made as asked: unknown task, missing spec, bad option. Nothing is written."""


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # "int64", or "float": the exported precision
    dims: tuple[Dim, ...]
    #: Outputs: the axis that runs over tokens (the attention mask's last columns), if any.
    token_axis: int | None = None


@dataclasses.dataclass(frozen=True)
class Shape:
    """Sizes of one set of dummy inputs: ``past`` cached tokens (decoders), ``choices`` (multiple choice)."""

    batch: int
    sequence: int
    past: int = 0
    choices: int = 2

    def sizes(self) -> dict[str, int]:
        return {BATCH: self.batch, SEQUENCE: self.sequence, PAST: self.past, CHOICES: self.choices}


def _fixed(specs: tuple[TensorSpec, ...], length: int | None) -> tuple[TensorSpec, ...]:
    """With a fixed sequence length (Nystromformer's landmarks) the sequence dim is that int, not a name."""
    if length is None:
        return specs
    return tuple(dataclasses.replace(s, dims=tuple(length if d == SEQUENCE else d for d in s.dims)) for s in specs)


def _ids(name: str, multiple_choice: bool) -> TensorSpec:
    return TensorSpec(name, "int64", (BATCH, CHOICES, SEQUENCE) if multiple_choice else (BATCH, SEQUENCE))


# ----------------------------------------------------------------------------------------------- the base spec


@dataclasses.dataclass(frozen=True)
class ExportSpec:
    """The generic encoder recipe; architectures set the class fields and override what differs.

    Fields: ``heads``: every head this spec exports (must equal the registry's). ``model_pooler``: whether the
    bare ``Model`` head also returns ``pooler_output``. ``cache_heads``: heads exported as one decoder graph with
    cache inputs and outputs (when :meth:`uses_cache` says the config can cache).
    """

    model_type: ClassVar[str] = ""
    heads: ClassVar[tuple[str, ...]] = ()
    model_pooler: ClassVar[bool] = False
    cache_heads: ClassVar[frozenset[str]] = frozenset()
    #: Cache tensors per layer, in the reference model's per-layer tuple order.
    cache_kinds: ClassVar[tuple[str, ...]] = ("key", "value")
    #: Whether decoding takes explicit ``position_ids`` (GPT-NeoX: left padding shifts the rotary positions).
    decoder_position_ids: ClassVar[bool] = False
    #: What the cache holds, for the manifest's readers.
    cache_note: ClassVar[str] = ""

    # -- what the config decides
    def uses_token_type_ids(self, config: Any) -> bool:
        return True

    def uses_cache(self, config: Any, head: str) -> bool:
        return head in self.cache_heads

    def length_rules(self, config: Any) -> LengthRules:
        return LengthRules(max_length=config.max_position_embeddings)

    def cache_dims(self, config: Any, kind: str, length: str) -> tuple[Dim, ...]:
        heads = config.num_attention_heads
        return (BATCH, heads, length, config.hidden_size // heads)  # (B, H, P, head_dim)

    def fixed_sequence(self, config: Any) -> int | None:
        return self.length_rules(config).fixed_length

    # -- inputs and outputs
    def inputs(self, config: Any, head: str) -> tuple[TensorSpec, ...]:
        mc = head == "ForMultipleChoice"
        if self.uses_cache(config, head):
            specs = [TensorSpec("input_ids", "int64", (BATCH, SEQUENCE)),
                     TensorSpec("attention_mask", "int64", (BATCH, TOTAL))]
            if self.uses_token_type_ids(config):
                specs.append(TensorSpec("token_type_ids", "int64", (BATCH, SEQUENCE)))  # the new tokens' types
            if self.decoder_position_ids:
                specs.append(TensorSpec("position_ids", "int64", (BATCH, SEQUENCE)))
            specs += [TensorSpec(entry.input, "float", entry.dims) for entry in self.cache_layout(config, head).entries]
            return tuple(specs)
        specs = [_ids("input_ids", mc), _ids("attention_mask", mc)]
        if self.uses_token_type_ids(config):
            specs.append(_ids("token_type_ids", mc))
        return _fixed(tuple(specs), self.fixed_sequence(config))

    def outputs(self, config: Any, head: str) -> tuple[TensorSpec, ...]:
        hidden, vocab, labels = config.hidden_size, config.vocab_size, config.num_labels

        def per_token(name: str, *rest: int) -> TensorSpec:
            return TensorSpec(name, "float", (BATCH, SEQUENCE, *rest), token_axis=1)

        def pooled(name: str, size: Dim) -> TensorSpec:
            return TensorSpec(name, "float", (BATCH, size))

        table: dict[str, tuple[TensorSpec, ...]] = {
            "Model": (per_token("last_hidden_state", hidden),)
            + ((pooled("pooler_output", hidden),) if self.model_pooler else ()),
            "ForMaskedLM": (per_token("logits", vocab),),
            "ForCausalLM": (per_token("logits", vocab),),
            "ForSequenceClassification": (pooled("logits", labels),),
            "ForMultipleChoice": (pooled("logits", CHOICES),),
            "ForTokenClassification": (per_token("logits", labels),),
            "ForQuestionAnswering": (per_token("start_logits"), per_token("end_logits")),
            "ForPreTraining": (per_token("prediction_logits", vocab), pooled("seq_relationship_logits", 2)),
            "ForNextSentencePrediction": (pooled("logits", 2),),
        }
        if head not in table or head not in self.heads:
            raise ExportError(f"{self.model_type} has no export spec for head {head!r}; specs: {', '.join(self.heads)}")
        specs = _fixed(table[head], self.fixed_sequence(config))
        if self.uses_cache(config, head):
            specs = specs + tuple(
                TensorSpec(e.output, "float", self.cache_dims(config, e.kind, TOTAL), token_axis=e.sequence_axis)
                for e in self.cache_layout(config, head).entries
            )
        return specs

    def cache_layout(self, config: Any, head: str) -> CacheLayout | None:
        if not self.uses_cache(config, head):
            return None
        entries = []
        for layer in range(config.num_hidden_layers):
            for kind in self.cache_kinds:
                dims = self.cache_dims(config, kind, PAST)
                entries.append(CacheEntry(
                    layer=layer, kind=kind, input=f"past_key_values.{layer}.{kind}", output=f"present.{layer}.{kind}",
                    dims=dims, sequence_axis=dims.index(PAST) if PAST in dims else None,
                ))
        return CacheLayout(past_dim=PAST, entries=tuple(entries),
                           position_ids="position_ids" if self.decoder_position_ids else None, note=self.cache_note)

    # -- dummy inputs
    def trace_shape(self, config: Any, head: str) -> Shape:
        """The example shape torch.export traces with: every dynamic size >= 2, so none is specialised."""
        fixed = self.fixed_sequence(config)
        past = 3 if self.uses_cache(config, head) else 0
        return Shape(batch=2, sequence=fixed or 5, past=past, choices=2)

    def check_shapes(self, config: Any, head: str, batch: int, sequence: int) -> tuple[Shape, Shape]:
        """Two different shapes to verify the dynamic axes with: decoders check a prefill, then a 1-token step."""
        rules = self.length_rules(config)
        fixed = self.fixed_sequence(config)
        if fixed:
            return Shape(batch, fixed, choices=2), Shape(batch + 1, fixed, choices=3)
        if self.uses_cache(config, head):
            sequence = min(sequence, rules.max_length - 1)
            return Shape(batch, sequence, past=0), Shape(batch + 1, 1, past=sequence)
        other = sequence // 2 + 1 if sequence > 2 else sequence + 1
        other = min(other, rules.max_length)
        if other == sequence:
            other = sequence - 1
        return Shape(batch, sequence, choices=2), Shape(batch + 1, other, choices=3)

    def dummy_inputs(self, config: Any, head: str, shape: Shape, *, dtype: torch.dtype = torch.float32,
                     seed: int = 0) -> dict[str, torch.Tensor]:
        """Random inputs with padding: encoders pad row 0 on the right, decoders on the left (as generate does).
        Padded positions hold ``pad_token_id`` (when the config has one) and token type 0."""
        g = torch.Generator().manual_seed(seed)
        cache = self.uses_cache(config, head)
        lead = (shape.batch, shape.choices) if head == "ForMultipleChoice" else (shape.batch,)
        total = shape.past + shape.sequence
        mask = torch.ones(*lead, total, dtype=torch.long)
        pad_len = total // 3
        if pad_len:
            if cache:
                mask[0, ..., :pad_len] = 0  # left padding (in the cached part when there is one)
            else:
                mask[0, ..., total - pad_len:] = 0
        ids = torch.randint(0, config.vocab_size, (*lead, shape.sequence), generator=g)
        pad_id = getattr(config, "pad_token_id", None)
        new_mask = mask[..., shape.past:]
        if pad_id is not None:
            ids = torch.where(ids == pad_id, (ids + 1) % config.vocab_size, ids)
            ids = torch.where(new_mask.bool(), ids, torch.full_like(ids, pad_id))
        inputs = {"input_ids": ids, "attention_mask": mask}
        names = [spec.name for spec in self.inputs(config, head)]
        if "token_type_ids" in names:
            types = torch.randint(0, config.type_vocab_size, ids.shape, generator=g)
            inputs["token_type_ids"] = types * new_mask
        if cache:
            if self.decoder_position_ids:
                positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)  # HF generate's rule
                inputs["position_ids"] = positions[:, shape.past:]
            sizes = {**shape.sizes(), PAST: shape.past}
            for entry in self.cache_layout(config, head).entries:
                dims = tuple(d if isinstance(d, int) else sizes[d] for d in entry.dims)
                inputs[entry.input] = (torch.randn(dims, generator=g) * self.cache_scale(entry.kind)).to(dtype)
        return {name: inputs[name] for name in names}

    def cache_scale(self, kind: str) -> float:
        return 1.0

    # -- calling the reference model with ONNX-named tensors
    def call(self, model: nn.Module, head: str, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run ``model`` on the named inputs; return the outputs by their ONNX names, in the spec's order."""
        config = model.config
        names = [spec.name for spec in self.outputs(config, head)]
        if not self.uses_cache(config, head):
            out = model(**inputs).to_dict()
            missing = [n for n in names if n not in out]
            if missing:
                raise ExportError(f"{type(model).__name__} did not return {missing}; the spec expects {names}")
            return {n: out[n] for n in names}
        kwargs = {k: v for k, v in inputs.items() if not k.startswith("past_key_values.")}
        past = tuple(
            self.make_layer_cache(tuple(inputs[f"past_key_values.{layer}.{kind}"] for kind in self.cache_kinds))
            for layer in range(config.num_hidden_layers)
        )
        out = model(**kwargs, past_key_values=past, use_cache=True)
        result = {"logits": out.logits}
        for layer, layer_cache in enumerate(out.past_key_values):
            for kind, tensor in zip(self.cache_kinds, layer_cache):
                result[f"present.{layer}.{kind}"] = tensor
        return {n: result[n] for n in names}

    def make_layer_cache(self, tensors: tuple[torch.Tensor, ...]) -> Any:
        return tensors


# ----------------------------------------------------------------------------------------------- the registry

_SPECS: dict[str, ExportSpec] = {}


def register(cls: type[ExportSpec]) -> type[ExportSpec]:
    """Class decorator: register one instance of the spec under its ``model_type``."""
    if cls.model_type in _SPECS:
        raise ValueError(f"an export spec for {cls.model_type!r} is already registered")
    _SPECS[cls.model_type] = cls()
    return cls


def get_spec(model_type: str) -> ExportSpec:
    if model_type not in _SPECS:
        raise ExportError(f"no export spec for model_type {model_type!r}; specs exist for {', '.join(sorted(_SPECS))}")
    return _SPECS[model_type]


def all_specs() -> dict[str, ExportSpec]:
    return dict(_SPECS)


def resolve_task(task: str | None) -> str | None:
    """``--task``: an optimum task name, HF's head name or class name; None keeps config.json's head."""
    if task is None:
        return None
    return TASK_ALIASES.get(task, task)


# ----------------------------------------------------------------------------------------------- architectures


#: MRA's block size (``reference/ops/mra_attention.py``).
MRA_BLOCK = 32


@register
@dataclasses.dataclass(frozen=True)
class MraExportSpec(ExportSpec):
    model_type: ClassVar[str] = "mra"
    heads: ClassVar[tuple[str, ...]] = ("Model", "ForMaskedLM", "ForSequenceClassification", "ForMultipleChoice",
                                        "ForTokenClassification", "ForQuestionAnswering")

    def length_rules(self, config):
        return LengthRules(max_length=config.max_position_embeddings, pad_multiple=MRA_BLOCK,
                           note="MRA pads to whole 32-token blocks inside the MraAttention node, so any length up to "
                                "max_length runs as it is")

    def check_shapes(self, config, head, batch, sequence):
        first, second = super().check_shapes(config, head, batch, sequence)
        if first.sequence // MRA_BLOCK == second.sequence // MRA_BLOCK:
            # Check across a block boundary: the node's internal padding changes with the number of blocks.
            longer = min(first.sequence + MRA_BLOCK, config.max_position_embeddings)
            second = dataclasses.replace(second, sequence=longer)
        return first, second


@register
@dataclasses.dataclass(frozen=True)
class MegaExportSpec(ExportSpec):
    model_type: ClassVar[str] = "mega"
    heads: ClassVar[tuple[str, ...]] = ("Model", "ForCausalLM", "ForMaskedLM", "ForSequenceClassification",
                                        "ForMultipleChoice", "ForTokenClassification", "ForQuestionAnswering")
    model_pooler: ClassVar[bool] = True
    cache_heads: ClassVar[frozenset[str]] = frozenset({"ForCausalLM"})
    cache_kinds: ClassVar[tuple[str, ...]] = ("key", "value", "ema_state")
    cache_note: ClassVar[str] = ("Mega's per-layer state (MegaLayerCache): the attention's keys (B, P, S) and "
                                 "values (B, P, V) of every past token, and the EMA state (B, D, N) after the last "
                                 "token, replaced each step. Start with P = 0 and a zero EMA state.")

    def uses_token_type_ids(self, config):
        return config.add_token_type_embeddings

    def uses_cache(self, config, head):
        # A bidirectional EMA sees the future and an encoder keeps no state: those export without a cache. A
        # chunked decoder caches only its current chunk ((P + T) mod chunk_size keys, under a mask of every token
        # seen), which the one-graph layout here cannot express: it exports as a full-recomputation causal LM.
        return (head in self.cache_heads and config.is_decoder and not config.bidirectional
                and not config.use_chunking)

    def length_rules(self, config):
        note = "the rotary relative bias extrapolates, the simple one stops at max_positions (or chunk_size)"
        if config.use_chunking:
            note += f"; attention runs in chunks of {config.chunk_size} tokens (the model pads the last one)"
        return LengthRules(max_length=config.max_positions, note=note)

    def cache_dims(self, config, kind, length):
        if kind == "key":
            return (BATCH, length, config.shared_representation_size)  # (B, P, S)
        if kind == "value":
            return (BATCH, length, config.intermediate_size)  # (B, P, V)
        return (BATCH, config.hidden_size, config.ema_projection_size)  # (B, D, N)

    def cache_scale(self, kind):
        return 0.1 if kind == "ema_state" else 1.0

    def make_layer_cache(self, tensors):
        from tensorkiln.reference.mega import MegaLayerCache

        return MegaLayerCache(*tensors)


@register
@dataclasses.dataclass(frozen=True)
class MegatronBertExportSpec(ExportSpec):
    model_type: ClassVar[str] = "megatron-bert"
    heads: ClassVar[tuple[str, ...]] = ("Model", "ForPreTraining", "ForCausalLM", "ForMaskedLM",
                                        "ForNextSentencePrediction", "ForSequenceClassification", "ForMultipleChoice",
                                        "ForTokenClassification", "ForQuestionAnswering")
    model_pooler: ClassVar[bool] = True
    cache_heads: ClassVar[frozenset[str]] = frozenset({"ForCausalLM"})
    cache_note: ClassVar[str] = ("Self-attention keys and values (B, H, P, head_dim) of every past token; the "
                                 "positions of new tokens continue from P.")

    def uses_cache(self, config, head):
        # Only a decoder config (is_decoder) attends causally and caches; otherwise ForCausalLM is bidirectional.
        return head in self.cache_heads and config.is_decoder


@register
@dataclasses.dataclass(frozen=True)
class GPTNeoXExportSpec(ExportSpec):
    model_type: ClassVar[str] = "gpt_neox"
    heads: ClassVar[tuple[str, ...]] = ("Model", "ForCausalLM", "ForSequenceClassification", "ForTokenClassification",
                                        "ForQuestionAnswering")
    cache_heads: ClassVar[frozenset[str]] = frozenset({"ForCausalLM"})
    decoder_position_ids: ClassVar[bool] = True
    cache_note: ClassVar[str] = ("Keys (after the rotary rotation) and values (B, H, P, head_dim) of every past "
                                 "token. position_ids: for left padding, the count of real tokens before each new "
                                 "token (HF generate's rule); pads take 1.")

    def uses_token_type_ids(self, config):
        return False


@register
@dataclasses.dataclass(frozen=True)
class NystromformerExportSpec(ExportSpec):
    model_type: ClassVar[str] = "nystromformer"
    heads: ClassVar[tuple[str, ...]] = ("Model", "ForMaskedLM", "ForSequenceClassification", "ForMultipleChoice",
                                        "ForTokenClassification", "ForQuestionAnswering")

    def length_rules(self, config):
        if config.uses_landmarks:
            # The landmarks average fixed segments of segment_means_seq_len / num_landmarks tokens: the graph is
            # exported at that one length, and the runtime pads (the reference pads the same way internally).
            length = config.segment_means_seq_len
            return LengthRules(max_length=length, fixed_length=length, pad_token_id=config.pad_token_id,
                               note="Nystrom landmarks: pad every input on the right to fixed_length with "
                                    "pad_token_id and attention_mask 0, then slice per-token outputs back")
        return LengthRules(max_length=config.max_position_embeddings,
                           note="num_landmarks == segment_means_seq_len: exact softmax attention at any length")


__all__ = [
    "ExportError",
    "ExportSpec",
    "HEAD_TASKS",
    "Shape",
    "TASK_ALIASES",
    "TensorSpec",
    "all_specs",
    "get_spec",
    "register",
    "resolve_task",
]
