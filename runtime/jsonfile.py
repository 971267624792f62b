"""Reading a JSON file a person or a tool handed us (config.json, manifest.json, a shard index) into one clear error.

Torch-free. :func:`read_json_object` turns every way such a file can be wrong into the caller's error type, naming
the file: missing, a folder, unreadable, over :data:`MAX_JSON_BYTES`, not UTF-8, not JSON, NaN or Infinity (not JSON,
though Python's reader takes them), nested too deeply for the parser, or not an object. :class:`Fields` then reads
typed values out of the object, each error naming the key path (``inputs[0].dims``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import KilnError

#: The largest JSON file read: configs, manifests and shard indexes are kilobytes to a few megabytes.
MAX_JSON_BYTES = 64 * 1024**2


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def read_json_object(path: str | os.PathLike, *, error: type[KilnError], what: str = "") -> dict[str, Any]:
    """The JSON object in ``path``; ``error`` names the file (and ``what`` it is for) otherwise."""
    path = Path(path)
    label = f"{str(path)!r}" + (f" ({what})" if what else "")
    if path.is_dir():
        raise error(f"{label} is a folder, not a file")
    if path.exists() and not path.is_file():
        raise error(f"{label} is not a regular file")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_JSON_BYTES + 1)
    except FileNotFoundError:
        raise error(f"{label} is missing") from None
    except OSError as exc:
        raise error(f"{label} cannot be read: {exc.strerror or exc}") from None
    if len(raw) > MAX_JSON_BYTES:
        raise error(f"{label} is more than the {MAX_JSON_BYTES // 2**20} MiB a JSON file here may be: it is not the "
                    "file it should be")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{label} is not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start}): save it as "
                    "UTF-8 JSON") from None
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise error(f"{label} nests its JSON too deeply to be a real file of this kind") from None
    except ValueError as exc:  # json.JSONDecodeError, and NaN / Infinity refused above
        raise error(f"{label} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise error(f"{label} must hold a JSON object, got {_kind(data)}")
    return data


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


_MISSING = object()


class Fields:
    """Typed access to one JSON object; every error is ``error`` naming ``label`` and the key path."""

    def __init__(self, data: Any, *, label: str, error: type[KilnError], path: str = ""):
        if not isinstance(data, Mapping):
            where = f"key {path!r}" if path else "content"
            raise error(f"{label} {where} must be an object, got {_kind(data)}")
        self.data, self.label, self.error, self.path = data, label, error, path

    def _key(self, key: str | int) -> str:
        if isinstance(key, int):
            return f"{self.path}[{key}]"
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str | int, expected: str, value: Any) -> KilnError:
        return self.error(f"{self.label} key {self._key(key)!r} must be {expected}, got {_kind(value)}")

    def get(self, key: str, default: Any = _MISSING) -> Any:
        if key in self.data:
            return self.data[key]
        if default is _MISSING:
            raise self.error(f"{self.label} is missing the key {self._key(key)!r}")
        return default

    def string(self, key: str, default: Any = _MISSING) -> str:
        value = self.get(key, default)
        if not isinstance(value, str) and not (value is None and default is None):
            raise self.fail(key, "a string", value)
        return value

    def integer(self, key: str, default: Any = _MISSING, *, minimum: int | None = None) -> int:
        value = self.get(key, default)
        if value is None and default is None:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, "an integer", value)
        if minimum is not None and value < minimum:
            raise self.error(f"{self.label} key {self._key(key)!r} must be at least {minimum}, got {value}")
        return value

    def number(self, key: str, default: Any = _MISSING) -> float:
        value = self.get(key, default)
        if isinstance(value, str) and value in ("inf", "-inf", "nan"):  # how our reports spell non-finite numbers
            return float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, "a number", value)
        return float(value)

    def object(self, key: str, default: Any = _MISSING) -> Fields | None:
        value = self.get(key, default)
        if value is None and default is None:
            return None
        return Fields(value, label=self.label, error=self.error, path=self._key(key))

    def objects(self, key: str) -> list[Fields]:
        """A list of objects."""
        value = self.get(key)
        if not isinstance(value, list):
            raise self.fail(key, "a list of objects", value)
        return [Fields(item, label=self.label, error=self.error, path=f"{self._key(key)}[{i}]")
                for i, item in enumerate(value)]

    def strings(self, key: str, default: Any = _MISSING) -> dict[str, str]:
        """An object of string values."""
        value = self.get(key, default)
        if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
            raise self.fail(key, "an object of strings", value)
        return dict(value)


__all__ = ["Fields", "MAX_JSON_BYTES", "read_json_object"]
