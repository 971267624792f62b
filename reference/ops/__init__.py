"""The two custom ops, defined once as ``torch.library`` ops with a pure-PyTorch implementation for every device.

Importing this package registers ``torch.ops.tensorkiln.mra_attention`` and ``torch.ops.tensorkiln.mega_ema``.
Each op's module holds its node contract (inputs, outputs, attributes, dtypes): the ONNX node, the TensorRT
plugin and the CUDA kernels implement exactly that signature.
"""

from .mega_ema import mega_ema
from .mra_attention import mra_attention

__all__ = ["mega_ema", "mra_attention"]
