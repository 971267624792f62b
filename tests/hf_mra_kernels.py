"""Plain-PyTorch stand-ins for HF's MRA CUDA kernels, so that HF's own ``mra2_attention`` runs on CPU as an oracle.

``transformers==4.57.6``'s ``mra2_attention`` returns zeros when its CUDA extension is not loaded (``mra_cuda_kernel
is None``), so HF's MRA is silently wrong on CPU. This module emulates the extension's entry points from the
semantics of ``transformers/kernels/mra/cuda_kernel.cu`` and ``cuda_launch.cu``; it is independent of
``reference/ops/mra_attention.py`` (written from the kernels, not from our op).

Kernel conventions, as read from the CUDA source:

* ``indices`` is ``(batch, num_block)`` int32; each entry is ``A_block * B_num_block + B_block`` (query block row,
  key block column).
* A dense operand is laid out block-wise and token-minor: ``(batch, num_blocks, dim, 32)``.
* A sparse tile ``sparse[b, n]`` is ``(32, 32)`` indexed ``[key, query]``: ``mm_to_sparse`` writes
  ``C_buffer[(reg_2_idx*4+j)*32 + reg_1_idx*4+i]`` where ``i`` runs over A (query) rows and ``j`` over B (key) rows.
* ``index_max`` takes ``index_vals`` ``(batch, 32, num_block)`` (per tile, the max over keys for each query) and
  returns ``max_vals`` ``(batch, A_num_block*32)`` (per query token, the max over all tiles of its block row) and
  ``max_vals_scatter`` ``(batch, 32, num_block)`` (that max sent back to each tile). The kernel reduces with an
  integer ``atomicMax`` on ``(int)(value * 1000)`` (C truncation toward zero) from an initial ``(int)-1e8``, and
  divides by ``1000.`` in double precision: maxima are quantised to 1e-3 and a row with no tile gets -1e5.

The real kernels also assume launch geometry that HF never checks (``num_block % 8 == 0`` for ``index_max``,
``% 4`` for ``mm_to_sparse``, ``% 2`` for ``sparse_dense_mm``; ``dim % 16 == 0`` for ``mm_to_sparse`` and
``dim % 64 == 0`` for ``sparse_dense_mm``, which reads and writes 64 dims per step). This emulation implements what
the kernels compute when those hold, for any sizes.
"""

from __future__ import annotations

import contextlib

import torch


class EmulatedMraKernels:
    """The five functions of HF's ``mra_cuda_kernel`` extension (``torch_extension.cpp``), in plain PyTorch."""

    @staticmethod
    def _split(indices: torch.Tensor, b_num_block: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        indices = indices.long()
        batch = torch.arange(indices.shape[0], device=indices.device)[:, None].expand_as(indices)
        return batch, torch.div(indices, b_num_block, rounding_mode="floor"), indices % b_num_block

    def index_max(self, index_vals, indices, A_num_block, B_num_block):
        batch_size, num_block = indices.shape
        assert index_vals.shape == (batch_size, 32, num_block), index_vals.shape
        batch, a_block, _ = self._split(indices, B_num_block)
        quantised = (index_vals * 1000).to(torch.int32).transpose(1, 2)  # (batch, num_block, 32 queries)
        max_buffer = torch.full((batch_size, A_num_block, 32), int(-1e8), dtype=torch.int32)
        target = a_block[:, :, None].expand(-1, -1, 32)
        max_buffer = max_buffer.scatter_reduce(1, target, quantised, "amax", include_self=True)  # atomicMax
        values = (max_buffer.double() / 1000.0).float()  # (batch, A_num_block, 32)
        max_vals = values.reshape(batch_size, A_num_block * 32)
        max_vals_scatter = values[batch, a_block].transpose(1, 2).contiguous()  # (batch, 32, num_block)
        return [max_vals, max_vals_scatter]

    def mm_to_sparse(self, dense_A, dense_B, indices):
        # dense_A (batch, A_num_block, dim, 32), dense_B (batch, B_num_block, dim, 32) -> (batch, num_block, 32, 32)
        batch, a_block, b_block = self._split(indices, dense_B.shape[1])
        a_tiles = dense_A[batch, a_block]  # (batch, num_block, dim, 32 queries)
        b_tiles = dense_B[batch, b_block]  # (batch, num_block, dim, 32 keys)
        return torch.einsum("bndq,bndk->bnkq", a_tiles, b_tiles).contiguous()

    def sparse_dense_mm(self, sparse_A, indices, dense_B, A_num_block):
        # sparse_A (batch, num_block, 32 keys, 32 queries), dense_B (batch, B_num_block, dim, 32 keys)
        # -> dense_C (batch, A_num_block, dim, 32 queries), each tile's product added into its query block row.
        batch_size, _, dim, _ = dense_B.shape
        batch, a_block, b_block = self._split(indices, dense_B.shape[1])
        products = torch.einsum("bnkq,bndk->bndq", sparse_A, dense_B[batch, b_block])
        dense_C = torch.zeros(batch_size, A_num_block, dim, 32, dtype=dense_B.dtype)
        dense_C.index_put_((batch, a_block), products, accumulate=True)
        return dense_C

    def reduce_sum(self, sparse_A, indices, A_num_block, B_num_block):
        # Sum of each tile over keys, added into its query block row: (batch, A_num_block, 32).
        batch_size = sparse_A.shape[0]
        batch, a_block, _ = self._split(indices, B_num_block)
        dense_C = torch.zeros(batch_size, A_num_block, 32, dtype=sparse_A.dtype)
        dense_C.index_put_((batch, a_block), sparse_A.sum(dim=2), accumulate=True)
        return dense_C

    def scatter(self, dense_A, indices, B_num_block):
        # dense_A (batch, A_num_block, 32 queries) copied to every key row of each tile of that block row.
        batch, a_block, _ = self._split(indices, B_num_block)
        return dense_A[batch, a_block][:, :, None, :].expand(-1, -1, 32, -1).contiguous()


@contextlib.contextmanager
def emulated_mra_kernels():
    """Patch the emulation into ``transformers.models.mra.modeling_mra.mra_cuda_kernel`` for the block's duration."""
    from transformers.models.mra import modeling_mra

    saved = modeling_mra.mra_cuda_kernel
    modeling_mra.mra_cuda_kernel = EmulatedMraKernels()
    try:
        yield modeling_mra
    finally:
        modeling_mra.mra_cuda_kernel = saved
