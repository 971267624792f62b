"""The two custom ops, defined once as ``torch.library`` ops with a pure-PyTorch implementation for every device.

Importing this package registers ``torch.ops.tensorkiln.mra_attention`` and ``torch.ops.tensorkiln.mega_ema``.
Each op's module holds its node contract (inputs, outputs, attributes, dtypes): the ONNX node, the TensorRT
plugin and the CUDA kernels implement exactly that signature.

Where CUDA is available, the kernels of ``plugins/`` are registered as the ops' CUDA implementation
(:mod:`.cuda_kernels`; built with ninja on first use, ``TENSORKILN_CUDA_KERNELS=0`` keeps the pure ops). On a
machine without CUDA this does nothing.
"""

from . import cuda_kernels
from .mega_ema import mega_ema
from .mra_attention import mra_attention

cuda_kernels.load_if_available()

__all__ = ["cuda_kernels", "mega_ema", "mra_attention"]
