"""The external-data file names an ONNX model refers to, read from its protobuf without onnx (torch-free runtime).

ONNX Runtime loads a tensor's ``external_data`` "location" relative to the model's folder, so a hostile model could
make it read any file. :func:`external_locations` walks the protobuf wire format (``onnx.proto``: ModelProto ->
graphs, functions, training graphs -> nodes -> attributes -> tensors, sparse tensors and subgraphs) and returns every
location, for the manifest check to keep each inside the export and in its hashed ``files``. The walk uses an
explicit stack (a deeply nested model cannot exhaust Python's recursion) and reads through ``mmap`` without copying
the weights. Field numbers are onnx.proto's; tests/test_hostile_files.py compares the result with onnx's own reader.
"""

from __future__ import annotations

import mmap
import os

from .errors import ManifestError

# Message kinds and, for each, field number -> the kind of the embedded message (onnx.proto's field numbers).
_MODEL, _GRAPH, _FUNCTION, _TRAINING, _NODE, _ATTRIBUTE, _TENSOR, _SPARSE, _ENTRY = range(9)
_CHILDREN = {
    _MODEL: {7: _GRAPH, 20: _TRAINING, 25: _FUNCTION},  # graph, training_info, functions
    _TRAINING: {1: _GRAPH, 2: _GRAPH},  # initialization, algorithm
    _GRAPH: {1: _NODE, 5: _TENSOR, 15: _SPARSE},  # node, initializer, sparse_initializer
    _FUNCTION: {7: _NODE, 11: _ATTRIBUTE},  # node, attribute_proto (defaults)
    _NODE: {5: _ATTRIBUTE},
    _ATTRIBUTE: {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE},  # t, g, tensors, graphs
    _SPARSE: {1: _TENSOR, 2: _TENSOR},  # values, indices
    _TENSOR: {13: _ENTRY},  # external_data
    _ENTRY: {},
}
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


class _Truncated(Exception):
    pass


def _varint(data, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Truncated
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(data, start: int, end: int):
    """(field number, value start, value end) of each length-delimited field in ``data[start:end]``."""
    pos = start
    while pos < end:
        key, pos = _varint(data, pos, end)
        wire = key & 7
        if wire == _VARINT:
            _, pos = _varint(data, pos, end)
        elif wire == _FIXED64:
            pos += 8
        elif wire == _FIXED32:
            pos += 4
        elif wire == _LENGTH:
            size, pos = _varint(data, pos, end)
            if pos + size > end:
                raise _Truncated
            yield key >> 3, pos, pos + size
            pos += size
        else:  # groups (3, 4) are not in onnx.proto; anything else is not protobuf
            raise _Truncated
        if pos > end:
            raise _Truncated


def _entry(data, start: int, end: int) -> tuple[str, str]:
    key = value = ""
    for field, lo, hi in _fields(data, start, end):
        text = bytes(data[lo:hi]).decode("utf-8", errors="replace")
        if field == 1:
            key = text
        elif field == 2:
            value = text
    return key, value


def locations_in(data) -> list[str]:
    """Every external-data location in a serialized ModelProto (bytes, or any buffer)."""
    found: list[str] = []
    stack = [(_MODEL, 0, len(data))]
    while stack:
        kind, start, end = stack.pop()
        children = _CHILDREN[kind]
        for field, lo, hi in _fields(data, start, end):
            child = children.get(field)
            if child == _ENTRY:
                key, value = _entry(data, lo, hi)
                if key == "location":
                    found.append(value)
            elif child is not None:
                stack.append((child, lo, hi))
    return found


def external_locations(path: str | os.PathLike) -> list[str]:
    """The external-data locations of the ONNX model at ``path``, in file order, duplicates kept once."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise ManifestError(f"{str(path)!r} is empty, not an ONNX model: re-export it")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                found = locations_in(data)
    except _Truncated:
        raise ManifestError(f"{str(path)!r} is not a complete ONNX model (its protobuf ends early or is damaged): "
                            "re-export it") from None
    except OSError as exc:
        raise ManifestError(f"{str(path)!r} cannot be read: {exc.strerror or exc}") from None
    return list(dict.fromkeys(found))


__all__ = ["external_locations", "locations_in"]
