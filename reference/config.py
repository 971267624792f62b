"""Frozen config dataclasses parsed from a Hugging Face ``config.json``.

Every architecture declares ``@dataclass(frozen=True) class XConfig(HFConfig)`` whose field names are HF's own
``config.json`` keys, with HF's defaults (checked against ``transformers==4.57.6``'s ``configuration_*.py``).
``XConfig.from_hf_config(d)`` keeps the keys it knows, ignores the rest (``transformers_version``, ``torch_dtype``,
...), checks every value's type and raises :class:`ConfigError` naming the key when one is missing or invalid.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar

from tensorkiln.runtime.errors import KilnError


class ConfigError(KilnError, ValueError):
    """A config.json that cannot describe a model: unknown model_type, a missing key, or an invalid value."""


#: The largest integer any config key may hold: sizes past it are typos or hostile, and would overflow int32 indexing.
MAX_CONFIG_INT = 2**31 - 1
#: Keys whose value is a count of modules built one by one: past these, building the model would take hours.
COUNT_LIMITS = {"num_hidden_layers": 1024, "num_attention_heads": 4096, "num_labels": 1 << 20}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(key, value, option)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"config key '{key}' has invalid value {value!r}: expected {_type_name(tp)}")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            allowed = ", ".join(repr(a) for a in typing.get_args(tp))
            raise ConfigError(f"config key '{key}' has invalid value {value!r}: expected one of {allowed}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' has invalid value {value!r}: expected a list")
        (item_tp, *_rest) = typing.get_args(tp) or (Any,)
        return tuple(_coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value))
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{key}' has invalid value {value!r}: expected a mapping")
        return types.MappingProxyType(dict(value))
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' has invalid value {value!r}: expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' has invalid value {value!r}: expected an integer")
        if abs(value) > MAX_CONFIG_INT:
            raise ConfigError(f"config key '{key}' is {value}, past the limit of {MAX_CONFIG_INT} for any size: "
                              "check config.json")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' has invalid value {value!r}: expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' has invalid value {value!r}: expected a string")
        return value
    raise TypeError(f"unsupported config annotation {tp!r} for key '{key}'")


@dataclasses.dataclass(frozen=True)
class HFConfig:
    """Base of every architecture config: the keys all heads share.

    ``num_labels`` follows HF: it is ``len(id2label)`` when ``id2label`` is present, else the ``num_labels`` key,
    else 2.
    """

    model_type: ClassVar[str] = ""

    num_labels: int = 2
    architectures: tuple[str, ...] | None = None

    @classmethod
    def from_hf_config(cls, hf: Mapping[str, Any]) -> "HFConfig":
        if not isinstance(hf, Mapping):
            raise ConfigError(f"config must be a JSON object, got {type(hf).__name__}")
        found = hf.get("model_type")
        if found is not None and found != cls.model_type:
            raise ConfigError(
                f"config key 'model_type' is {found!r}, but {cls.__name__} reads {cls.model_type!r} configs"
            )
        hf = dict(hf)
        if "id2label" in hf and hf["id2label"] is not None:
            if not isinstance(hf["id2label"], Mapping):
                raise ConfigError(f"config key 'id2label' has invalid value {hf['id2label']!r}: expected a mapping")
            hf["num_labels"] = len(hf["id2label"])
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for field in dataclasses.fields(cls):
            if not field.init:
                continue
            if field.name in hf:
                kwargs[field.name] = _coerce(field.name, hf[field.name], hints[field.name])
            elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise ConfigError(f"config is missing the required key '{field.name}' for {cls.model_type}")
        config = cls(**kwargs)
        config.validate()
        return config

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the key when values are inconsistent. Subclasses extend this."""
        if self.num_labels < 1:
            raise ConfigError(f"config key 'num_labels' must be at least 1, got {self.num_labels}")
        for key, limit in COUNT_LIMITS.items():
            value = getattr(self, key, None)
            if isinstance(value, int) and value > limit:
                raise ConfigError(f"config key '{key}' is {value}, past the limit of {limit}: check config.json")

    def replace(self, **changes: Any) -> "HFConfig":
        config = dataclasses.replace(self, **changes)
        config.validate()
        return config

    def to_hf_dict(self) -> dict[str, Any]:
        """The config as ``config.json`` content that both this package and HF's ``from_pretrained`` read."""
        out: dict[str, Any] = {"model_type": self.model_type}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, Mapping):
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            if field.name == "architectures" and value is None:
                continue
            out[field.name] = value
        out["id2label"] = {str(i): f"LABEL_{i}" for i in range(self.num_labels)}
        out["label2id"] = {f"LABEL_{i}": i for i in range(self.num_labels)}
        del out["num_labels"]
        return out


def require(condition: bool, key: str, message: str) -> None:
    """Validation helper for ``validate()`` overrides: raise a ConfigError naming ``key``."""
    if not condition:
        raise ConfigError(f"config key '{key}' {message}")
