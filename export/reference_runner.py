"""A Polygraphy runner over the reference PyTorch model: the oracle side of ``kiln parity``.

It takes numpy feeds with the export's ONNX names (``input_ids``, ``past_key_values.0.key``, ...) and returns numpy
outputs with the export's names, float32, by way of the architecture's export spec (``spec.call``), so the
reference sees exactly what the exported graph was traced from. Following Polygraphy's runner contract
(``polygraphy/backend/base/runner.py``): the model is loaded on activation and released on deactivation, so
``Comparator.run`` holds one model in memory at a time.

Load it in fp32 for the oracle, or in fp16 to measure PyTorch's own reduced-precision error (the reduced-precision
rule of ``runtime/tolerances.py``). Float inputs are cast to the model's dtype; what they arrive as is the
``input_precision`` its metadata declares (the export's), so the same feeds reach every runner unchanged.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from polygraphy.backend.base import BaseRunner
from polygraphy.common import TensorMetadata

from .specs import get_spec

#: The float inputs (decoder caches) of an export of each precision: an int8 export's stay float32.
_NUMPY_FLOATS = {"fp32": np.float32, "fp16": np.float16, "int8": np.float32}
_TORCH_PRECISIONS = {torch.float32: "fp32", torch.float16: "fp16"}


class ReferenceRunner(BaseRunner):
    """The reference model of ``checkpoint_dir`` (head ``head``, default: config.json's) in ``dtype``."""

    def __init__(self, checkpoint_dir: str | os.PathLike, head: str | None = None, *,
                 dtype: torch.dtype = torch.float32, input_precision: str | None = None, name: str | None = None):
        if dtype not in _TORCH_PRECISIONS:
            raise ValueError(f"the reference runs in {list(_TORCH_PRECISIONS)}, not {dtype}")
        precision = _TORCH_PRECISIONS[dtype]
        input_precision = input_precision or precision
        if input_precision not in _NUMPY_FLOATS:
            raise ValueError(f"input_precision must be one of {list(_NUMPY_FLOATS)}, got {input_precision!r}")
        super().__init__(name=name, prefix=f"reference-{precision}")
        self.checkpoint_dir = Path(checkpoint_dir)
        self.requested_head = head
        self.dtype = dtype
        self.input_dtype = _NUMPY_FLOATS[input_precision]
        self.model = None
        self.spec = None
        self.head = None

    def activate_impl(self) -> None:
        from tensorkiln.reference.checkpoint import from_pretrained, read_config, resolve

        arch, head = resolve(read_config(self.checkpoint_dir), self.requested_head)
        self.spec = get_spec(arch.model_type)
        self.head = head
        self.model = from_pretrained(self.checkpoint_dir, head, dtype=self.dtype)

    def get_input_metadata_impl(self) -> TensorMetadata:
        config = self.model.config
        # A fixed-length graph (Nystromformer's landmarks) takes only that length, but the reference pads shorter
        # inputs itself, in the same way the runtime does: its ids and masks take any length.
        fixed = self.spec.fixed_sequence(config)
        meta = TensorMetadata()
        for spec in self.spec.inputs(config, self.head):
            shape = [None if isinstance(d, str) else d for d in spec.dims]
            if fixed and spec.dtype == "int64":
                shape[-1] = None
            meta.add(spec.name, np.int64 if spec.dtype == "int64" else self.input_dtype, shape)
        return meta

    def infer_impl(self, feed_dict) -> OrderedDict[str, np.ndarray]:
        start = time.perf_counter()
        inputs = {}
        for name, value in feed_dict.items():
            tensor = torch.from_numpy(np.ascontiguousarray(value))
            inputs[name] = tensor.to(self.dtype) if tensor.is_floating_point() else tensor
        with torch.no_grad():
            outputs = self.spec.call(self.model, self.head, inputs)
        result = OrderedDict((name, tensor.float().numpy()) for name, tensor in outputs.items())
        self.inference_time = time.perf_counter() - start
        return result

    def deactivate_impl(self) -> None:
        self.model = None
        self.spec = None
        self.head = None


__all__ = ["ReferenceRunner"]
