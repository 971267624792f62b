"""Triton's model configuration for a ``kiln export``, built with Triton's own protobuf schema and written in its
text format (``config.pbtxt``). Torch-free; the schema is ``tritonclient.grpc.model_config_pb2`` (the optional
extra ``tensorkiln[triton]``), imported when a configuration is built.

Two flavours (``ServingOptions.backend``):

- ``onnxruntime``: the ONNX file in Triton's ONNX Runtime backend. Clients feed the graph's inputs as they are, so
  decoders take and return the whole KV cache every step and stay unbatched. GPU instances may name an execution
  accelerator: TensorRT (precision, engine cache, our plugin library through ``trt_extra_plugin_lib_paths``, and
  shape profiles for encoders) or CUDA.
- ``python``: Triton's Python backend running the tensorkiln runtime (runtime/triton_serving.py). Encoders take
  HF-named inputs under the runtime's rules (masks optional, any length up to the maximum) and batch dynamically
  where rows are independent; causal LMs are decoupled models that generate on the server, one response per step,
  so the cache never leaves it and a client sends only its prompt and the generation parameters.

Batching: a row's outputs must not depend on the other rows, or merged requests would change each other's results:
decoders with a cache and Nystromformer's HF-compatible pseudo-inverse (its init takes a max over the batch) are
served with ``max_batch_size: 0``.

Checked against: tritonclient 2.73's ``model_config.proto`` (tests/test_triton.py parses every written file back)
and the tritonserver 2.51 of the ``nvidia-pytriton`` wheel, which loads the Python flavour and parses the ONNX
Runtime one (tests/test_triton_server.py); the accelerator keys are the ONNX Runtime backend's documented ones.
"""

from __future__ import annotations

import dataclasses

from . import manifest as mf
from .errors import BackendUnavailableError, UsageError

TRITON_TYPES = {"int64": "TYPE_INT64", "int32": "TYPE_INT32", "float32": "TYPE_FP32", "float16": "TYPE_FP16",
                "bool": "TYPE_BOOL"}
BACKENDS = ("onnxruntime", "python")
KINDS = ("KIND_CPU", "KIND_GPU")
ACCELERATORS = ("tensorrt", "cuda")
#: Inputs of a served causal LM besides the prompt: (name, Triton type, what it is). Each is optional but
#: ``max_new_tokens``; each holds one value. Floats are FP64 so a request reproduces a local call bit for bit.
GENERATION_PARAMETERS = (
    ("max_new_tokens", "TYPE_INT32", "tokens to generate at most (required)"),
    ("do_sample", "TYPE_BOOL", "sample instead of greedy"),
    ("temperature", "TYPE_FP64", "softmax temperature when sampling"),
    ("top_k", "TYPE_INT32", "keep the k most likely tokens when sampling"),
    ("top_p", "TYPE_FP64", "nucleus sampling mass"),
    ("seed", "TYPE_INT64", "seed of the sampler"),
    ("ignore_eos", "TYPE_BOOL", "generate all max_new_tokens, past EOS"),
)
#: Outputs of a served causal LM: each response carries one step, (batch,) values.
TOKEN_OUTPUT = "token_ids"
TEXT_OUTPUT = "text"
#: The Python flavour's copy of the export, inside the version folder.
EXPORT_FOLDER = "export"


class TritonError(UsageError):
    """A repository that cannot be written as asked."""


@dataclasses.dataclass(frozen=True)
class ServingOptions:
    """How Triton serves the model. ``gpus``: device ids for GPU instances (empty: every GPU). ``accelerator``:
    "tensorrt" or "cuda" (ONNX Runtime backend, GPU instances). ``trt_precision``: "FP32" or "FP16" (default: the
    export's precision). ``trt_plugins``: path of the self-registering ``libtensorkiln_plugins_autoreg.so`` as the
    server sees it (ONNX Runtime's ``trt_extra_plugin_lib_paths`` dlopens it into TensorRT's plugin registry).
    ``threads``: ONNX Runtime's intra-op threads per instance. ``max_generations``: generations one Python-backend
    instance runs at once (causal LMs)."""

    backend: str = "onnxruntime"
    max_batch_size: int = 8
    max_queue_delay_us: int = 0
    instances: int = 1
    kind: str = "KIND_CPU"
    gpus: tuple[int, ...] = ()
    accelerator: str | None = None
    trt_precision: str | None = None
    trt_plugins: str | None = None
    trt_engine_cache: str | None = None
    threads: int | None = None
    max_generations: int = 4

    def check(self) -> None:
        """Raise :class:`TritonError` naming the first option that cannot be used as given."""
        if self.backend not in BACKENDS:
            raise TritonError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.kind not in KINDS:
            raise TritonError(f"kind must be KIND_CPU or KIND_GPU, got {self.kind!r}")
        if self.max_batch_size < 0 or self.instances < 1 or self.max_queue_delay_us < 0 or self.max_generations < 1:
            raise TritonError("max_batch_size and max_queue_delay_us must be >= 0, instances and max_generations >= 1")
        if self.threads is not None and self.threads < 1:
            raise TritonError(f"threads must be >= 1, got {self.threads}")
        if self.gpus and self.kind != "KIND_GPU":
            raise TritonError("gpus names devices for GPU instances: pass --kind gpu with --gpus")
        if any(g < 0 for g in self.gpus):
            raise TritonError(f"gpu ids must be >= 0, got {list(self.gpus)}")
        if self.accelerator is not None:
            if self.accelerator not in ACCELERATORS:
                raise TritonError(f"accelerator must be one of {', '.join(ACCELERATORS)}, got {self.accelerator!r}")
            if self.backend != "onnxruntime" or self.kind != "KIND_GPU":
                raise TritonError("execution accelerators are for the onnxruntime backend on GPU instances: pass "
                                  "--backend onnxruntime --kind gpu")
        trt_options = (self.trt_precision, self.trt_plugins, self.trt_engine_cache)
        if any(o is not None for o in trt_options) and self.accelerator != "tensorrt":
            raise TritonError("the TensorRT options need --accelerator tensorrt")
        if self.trt_precision not in (None, "FP32", "FP16"):
            raise TritonError(f"trt_precision must be FP32 or FP16, got {self.trt_precision!r}")


def schema():
    """``tritonclient``'s ``model_config_pb2``, or a :class:`BackendUnavailableError` with the install hint."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        raise BackendUnavailableError(f"writing a Triton configuration needs Triton's protobuf schema from "
                                      f"tritonclient ({exc}): pip install 'tensorkiln[triton]'") from None
    return model_config_pb2


def to_text(config) -> str:
    """``config.pbtxt``: the ModelConfig in protobuf text format."""
    from google.protobuf import text_format

    return text_format.MessageToString(config)


def batch_independent(manifest: mf.Manifest, config: dict) -> bool:
    """Whether a row's outputs are independent of the other rows in its batch (so requests may be merged)."""
    if manifest.cache is not None:
        return False
    if manifest.model_type == "nystromformer" and manifest.length_rules.fixed_length is not None:
        return bool(config.get("pinv_init_per_sample", False))
    return True


def _add_tensor(entries, pb, name: str, data_type: str, dims, *, optional: bool = False) -> None:
    entry = entries.add(name=name, data_type=pb.DataType.Value(data_type), dims=list(dims))
    if optional:
        entry.optional = True


def _graph_dims(tensor: mf.TensorInfo, batched: bool) -> list[int]:
    """Triton's dims of a manifest tensor: symbolic dims are -1; with Triton batching the batch dim is implicit."""
    dims = [d if isinstance(d, int) else -1 for d in tensor.dims]
    return dims[1:] if batched else dims


def _common(pb, manifest: mf.Manifest, name: str, options: ServingOptions, max_batch_size: int):
    """The parts both flavours share: name, backend, batching, instances, and the export's facts as parameters."""
    config = pb.ModelConfig(name=name, backend=options.backend, max_batch_size=max_batch_size)
    if max_batch_size > 0:
        config.dynamic_batching.SetInParent()
        if options.max_queue_delay_us:
            config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    group = config.instance_group.add(count=options.instances, kind=pb.ModelInstanceGroup.Kind.Value(options.kind))
    group.gpus.extend(options.gpus)
    rules = manifest.length_rules
    parameters = {"tensorkiln.model_type": manifest.model_type, "tensorkiln.head": manifest.head,
                  "tensorkiln.precision": manifest.precision, "tensorkiln.max_length": str(rules.max_length)}
    if rules.fixed_length is not None:
        parameters["tensorkiln.fixed_length"] = str(rules.fixed_length)
        parameters["tensorkiln.pad_token_id"] = str(rules.pad_token_id)
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    return config


def onnxruntime_config(manifest: mf.Manifest, config: dict, name: str, options: ServingOptions):
    """The ModelConfig for Triton's ONNX Runtime backend: the graph's own inputs and outputs."""
    pb = schema()
    batched = batch_independent(manifest, config) and options.max_batch_size > 0
    model = _common(pb, manifest, name, options, options.max_batch_size if batched else 0)
    for entries, tensors in ((model.input, manifest.inputs), (model.output, manifest.outputs)):
        for tensor in tensors:
            _add_tensor(entries, pb, tensor.name, TRITON_TYPES[tensor.dtype], _graph_dims(tensor, batched))
    if options.threads:
        model.parameters["intra_op_thread_count"].string_value = str(options.threads)
    if options.accelerator is not None:
        accelerator = model.optimization.execution_accelerators.gpu_execution_accelerator.add(name=options.accelerator)
        if options.accelerator == "tensorrt":
            for key, value in _tensorrt_parameters(manifest, options, batched).items():
                accelerator.parameters[key] = value
    return model


def _tensorrt_parameters(manifest: mf.Manifest, options: ServingOptions, batched: bool) -> dict[str, str]:
    """ONNX Runtime's TensorRT execution provider options, as the ONNX Runtime backend's config keys."""
    precision = options.trt_precision or ("FP16" if manifest.precision == "fp16" else "FP32")
    parameters = {"precision_mode": precision}
    if options.trt_engine_cache:
        parameters.update(trt_engine_cache_enable="1", trt_engine_cache_path=options.trt_engine_cache)
    if options.trt_plugins:
        parameters["trt_extra_plugin_lib_paths"] = options.trt_plugins
    if batched:
        # One engine for every shape an encoder takes (batch 1..max, length 1..max), instead of a rebuild each time
        # a request falls outside the shapes seen so far. Decoders' cache shapes are left to the provider.
        rules = manifest.length_rules
        longest = rules.fixed_length or rules.max_length
        shortest = rules.fixed_length or 1
        typical = rules.fixed_length or min(128, longest)
        for key, (batch, length) in (("trt_profile_min_shapes", (1, shortest)),
                                     ("trt_profile_opt_shapes", (options.max_batch_size, typical)),
                                     ("trt_profile_max_shapes", (options.max_batch_size, longest))):
            parameters[key] = ",".join(f"{t.name}:{batch}x{length}" for t in manifest.inputs)
    return parameters


def python_config(manifest: mf.Manifest, config: dict, name: str, options: ServingOptions, *,
                  has_tokenizer: bool = False):
    """The ModelConfig for Triton's Python backend running tensorkiln.runtime (runtime/triton_serving.py)."""
    pb = schema()
    generates = manifest.head == "ForCausalLM"
    batched = not generates and batch_independent(manifest, config) and options.max_batch_size > 0
    model = _common(pb, manifest, name, options, options.max_batch_size if batched else 0)
    if options.threads:
        model.parameters["tensorkiln.threads"].string_value = str(options.threads)
    if not generates:
        # The runtime applies the length rules: any length up to the maximum goes in (a fixed-length graph's inputs
        # are padded and its per-token outputs sliced back), and it fills every input but the ids.
        for tensor in manifest.inputs:
            _add_tensor(model.input, pb, tensor.name, TRITON_TYPES[tensor.dtype],
                        [-1] * len(_graph_dims(tensor, batched)), optional=tensor.name != "input_ids")
        for tensor in manifest.outputs:
            dims = _graph_dims(tensor, batched)
            if tensor.token_axis is not None:
                dims[tensor.token_axis - (1 if batched else 0)] = -1
            _add_tensor(model.output, pb, tensor.name, TRITON_TYPES[tensor.dtype], dims)
        return model
    model.model_transaction_policy.decoupled = True
    model.parameters["tensorkiln.max_generations"].string_value = str(options.max_generations)
    _add_tensor(model.input, pb, "input_ids", "TYPE_INT64", [-1, -1])
    _add_tensor(model.input, pb, "attention_mask", "TYPE_INT64", [-1, -1], optional=True)
    _add_tensor(model.input, pb, "eos_token_id", "TYPE_INT64", [-1], optional=True)
    for parameter, data_type, _ in GENERATION_PARAMETERS:
        _add_tensor(model.input, pb, parameter, data_type, [1], optional=parameter != "max_new_tokens")
    _add_tensor(model.output, pb, TOKEN_OUTPUT, "TYPE_INT64", [-1])
    if has_tokenizer:
        _add_tensor(model.output, pb, TEXT_OUTPUT, "TYPE_STRING", [-1])
    return model
