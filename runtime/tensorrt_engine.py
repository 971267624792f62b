"""What the TensorRT backend decides without TensorRT: the optimisation profile, the plugin decision, the engine
cache key and the engine cache itself. Pure logic over the manifest (standard library + numpy), unit-tested on any
machine; :mod:`.tensorrt_session` is the thin part that calls TensorRT.

The formats are shared with the C++ runtime's TensorRT backend (``runtime/cpp/src/trt/enginePlan.h``), so both
runtimes build the same engine for an export and find it under the same name:

* **profile**, one for every input: ``batch_size`` 1..8 (opt 1); ``sequence_length`` and any other per-token dim
  1..max_length (opt min(128, max_length)); the cache's ``past_sequence_length`` 0..max_length-1 (opt half the opt
  sequence); a "past + new" dim the sum of its parts, not capped (a cap would make the profile's corners
  inconsistent shapes, which TensorRT's builder rejects; the input rules keep real calls within max_length);
  ``num_choices`` 1..4 (opt 1); fixed dims (Nystromformer's fixed length, hidden sizes) as they are;
* **key**: sha256 (hex) of the key text, one ``name=value`` line each, in this order::

      tensorkiln-trt-engine-key/1
      model_sha256=<the manifest's sha256 of the model file>
      tensorrt=<major.minor.patch>
      device=<GPU name>
      compute_capability=<major.minor>
      precision=<the export's precision>
      plugins=<sha256 of the plugin library loaded, or none>
      plugin_override=<on|off>
      profile=<input>:<min>/<opt>/<max>;...   (shapes as dims joined by "x", inputs in the manifest's order)

* **cache**: ``<cache>/<key>.engine`` with ``<key>.json`` beside it (the key's fields, and the engine's size and
  sha256, which are checked before an engine is deserialised: a damaged file is rebuilt with a warning).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from . import manifest as mf
from .atomic import write_bytes, write_text
from .errors import BackendUnavailableError, KilnWarning, RuntimeInputError, UsageError
from .native import PLUGINS_DIR, cache_dir
from .paths import resolve_inside

KEY_FORMAT = "tensorkiln-trt-engine-key/1"
PLUGINS_LIBRARY = "libtensorkiln_plugins.so"
ENV_PLUGINS = "TENSORKILN_TRT_PLUGINS"
ENGINE_SUFFIX = ".engine"
#: Where the plugins' CMake build (plugins/README.md) puts the library in a source checkout.
CHECKOUT_BUILD = PLUGINS_DIR.parent / "build" / "plugins" / PLUGINS_LIBRARY
INSTALL_HINT = ("pip install tensorrt-cu12 polygraphy (tensorrt-cu13 on CUDA 13; the TensorRT wheel matching your "
                "driver's CUDA), on a machine with an NVIDIA GPU and driver")

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class ProfileSettings:
    """The shapes TensorRT is asked to serve: batch and choice counts up to these, sequences up to max_length."""

    max_batch: int = 8
    opt_batch: int = 1
    opt_sequence: int = 128  # clipped to max_length
    max_choices: int = 4  # multiple-choice heads' num_choices


@dataclasses.dataclass(frozen=True)
class InputProfile:
    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


def _symbol_range(symbol: str, max_length: int, settings: ProfileSettings) -> tuple[int, int, int]:
    opt_sequence = min(settings.opt_sequence, max_length)
    if symbol == mf.BATCH:
        return 1, min(settings.opt_batch, settings.max_batch), settings.max_batch
    if symbol == mf.CHOICES:
        return 1, 1, settings.max_choices
    if symbol == mf.PAST:
        return 0, opt_sequence // 2, max_length - 1
    return 1, opt_sequence, max_length  # sequence_length and any other per-token dim


def _dim_range(dim: mf.Dim, max_length: int, settings: ProfileSettings) -> tuple[int, int, int]:
    if isinstance(dim, int):
        return dim, dim, dim
    if "+" not in dim:
        return _symbol_range(dim, max_length, settings)
    parts = [_symbol_range(part.strip(), max_length, settings) for part in dim.split("+")]
    low, opt, high = (sum(values) for values in zip(*parts))
    return low, opt, high  # not capped: each corner of the profile is a consistent shape (past + new = mask)


def profiles_from_manifest(manifest: mf.Manifest, settings: ProfileSettings = ProfileSettings()) -> list[InputProfile]:
    """One optimisation profile covering every input of the export, in the manifest's order."""
    max_length = manifest.length_rules.max_length
    profiles = []
    for info in manifest.inputs:
        ranges = [_dim_range(dim, max_length, settings) for dim in info.dims]
        profiles.append(InputProfile(info.name, *(tuple(r[i] for r in ranges) for i in range(3))))
    return profiles


def profile_text(profiles: Sequence[InputProfile]) -> str:
    """``input_ids:1x1/1x128/8x128;...``, the key's profile line."""
    def shape(dims: tuple[int, ...]) -> str:
        return "x".join(str(d) for d in dims)

    return ";".join(f"{p.name}:{shape(p.min)}/{shape(p.opt)}/{shape(p.max)}" for p in profiles)


@dataclasses.dataclass(frozen=True)
class PluginDecision:
    set_override_flag: bool
    custom_nodes_run_on: str  # "plugin (libtensorkiln_plugins.so)" or "function body (why)"; "" without custom nodes


def plugin_decision(has_custom_nodes: bool, plugins_loaded: bool, parser_has_override_flag: bool,
                    tensorrt_version: str) -> PluginDecision:
    """What the parser does with the custom nodes: the plugins take them only when the export has some, the plugin
    library is loaded and the parser has kENABLE_PLUGIN_OVERRIDE (TensorRT >= 10.15); otherwise TensorRT inlines
    their model-local function bodies."""
    if not has_custom_nodes:
        return PluginDecision(False, "")
    if not plugins_loaded:
        return PluginDecision(False, f"function body (no plugin library: set {ENV_PLUGINS} to {PLUGINS_LIBRARY})")
    if not parser_has_override_flag:
        return PluginDecision(False, f"function body (TensorRT {tensorrt_version}'s ONNX parser has no "
                                     "kENABLE_PLUGIN_OVERRIDE: TensorRT 10.15 or newer lets the plugins take the "
                                     "custom nodes)")
    return PluginDecision(True, f"plugin ({PLUGINS_LIBRARY})")


@dataclasses.dataclass(frozen=True)
class EngineKeyFields:
    model_sha256: str
    tensorrt_version: str
    device_name: str
    compute_capability: str
    precision: str
    plugins_sha256: str  # "none" (or "") without plugins
    plugin_override: bool
    profile: str


def engine_key_text(fields: EngineKeyFields) -> str:
    """The key text, in the format of the module docstring (every line ends with a newline)."""
    lines = [KEY_FORMAT, f"model_sha256={fields.model_sha256}", f"tensorrt={fields.tensorrt_version}",
             f"device={fields.device_name}", f"compute_capability={fields.compute_capability}",
             f"precision={fields.precision}", f"plugins={fields.plugins_sha256 or 'none'}",
             f"plugin_override={'on' if fields.plugin_override else 'off'}", f"profile={fields.profile}"]
    return "".join(line + "\n" for line in lines)


def engine_key(fields: EngineKeyFields) -> str:
    """The cache key: sha256 (hex) of :func:`engine_key_text`."""
    return hashlib.sha256(engine_key_text(fields).encode()).hexdigest()


def tensorrt_version_text(version: str) -> str:
    """``major.minor.patch`` of a TensorRT version string such as ``10.14.1.48``."""
    return ".".join(version.split(".")[:3])


def check_feeds(profiles: Sequence[InputProfile], feeds: Mapping[str, Any]) -> None:
    """Refuse inputs outside the engine's profile (a batch past its maximum, say) with what to do; the input rules
    of :mod:`.inputs` have already checked everything else."""
    for profile in profiles:
        if profile.name not in feeds:
            continue
        shape = tuple(feeds[profile.name].shape)
        for axis, (size, low, high) in enumerate(zip(shape, profile.min, profile.max)):
            if not low <= size <= high:
                raise RuntimeInputError(f"input {profile.name!r} axis {axis} is {size}; this TensorRT engine takes "
                                        f"{low}..{high} there (its optimisation profile): split the batch, or use "
                                        "backend='onnxruntime'")


def find_plugin_library(explicit: str | os.PathLike | None) -> Path | None:
    """libtensorkiln_plugins.so: ``explicit``, else ``$TENSORKILN_TRT_PLUGINS`` (either must be a file), else the
    source checkout's CMake build (build/plugins/), else None (the custom nodes' function bodies are inlined)."""
    for chosen, what in ((explicit, "tensorrt_plugins"), (os.environ.get(ENV_PLUGINS), ENV_PLUGINS)):
        if chosen:
            path = Path(chosen).expanduser()
            if not path.is_file():
                raise BackendUnavailableError(f"{what}={str(path)!r} is not a file: point it at a built "
                                              f"{PLUGINS_LIBRARY} (plugins/README.md), or unset it")
            return path
    return CHECKOUT_BUILD if CHECKOUT_BUILD.is_file() else None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_engine_cache() -> Path:
    """The tensorkiln cache folder's ``engines/`` (see :func:`tensorkiln.runtime.native.cache_dir`)."""
    return cache_dir() / "engines"


@dataclasses.dataclass(frozen=True)
class CachedEngine:
    """A deserialised engine, the file it is cached in (None when it could not be written) and whether it was
    built by this call."""

    engine: Any
    path: Path | None
    built: bool


class EngineCache:
    """``<folder>/<key>.engine`` + ``<key>.json``, written atomically; the names resolve inside ``folder``."""

    def __init__(self, folder: str | os.PathLike | None = None):
        self.folder = Path(folder).expanduser() if folder else default_engine_cache()

    def paths(self, key: str) -> tuple[Path, Path]:
        source = f"the engine cache {str(self.folder)!r}"
        return tuple(resolve_inside(self.folder, key + suffix, source=source, key="engine", error=UsageError)
                     for suffix in (ENGINE_SUFFIX, ".json"))  # type: ignore[return-value]

    def load_or_build(self, fields: EngineKeyFields, build: Callable[[], bytes],
                      deserialize: Callable[[bytes], T | None]) -> CachedEngine:
        """The cached engine of ``fields``' key when it is intact and deserialises, else one ``build`` makes (then
        cached); a damaged cached engine is rebuilt with a :class:`KilnWarning`, never used."""
        key = engine_key(fields)
        engine_path, record_path = self.paths(key)
        if engine_path.exists() or record_path.exists():
            problem, data = self._read_cached(key, engine_path, record_path)
            engine = deserialize(data) if problem is None else None
            if engine is not None:
                return CachedEngine(engine, engine_path, built=False)
            warnings.warn(f"the cached TensorRT engine {str(engine_path)!r} is unusable "
                          f"({problem or 'TensorRT cannot deserialise it'}); rebuilding it", KilnWarning, stacklevel=3)
        data = build()
        engine = deserialize(data)
        if engine is None:
            raise BackendUnavailableError("TensorRT cannot deserialise the engine it has just built; check TensorRT's "
                                          "log above, and that the plugin library matches this TensorRT")
        return CachedEngine(engine, self._store(key, fields, data, engine_path, record_path), built=True)

    @staticmethod
    def _read_cached(key: str, engine_path: Path, record_path: Path) -> tuple[str | None, bytes]:
        """(why the cached engine cannot be used or None, its bytes)."""
        try:
            record = json.loads(record_path.read_text())
            data = engine_path.read_bytes()
        except (OSError, ValueError) as exc:
            return f"cannot read it or its record: {exc}", b""
        if not isinstance(record, dict) or record.get("key") != key:
            return f"its record {record_path.name} is not this key's", b""
        if record.get("engine_bytes") != len(data) or record.get("engine_sha256") != hashlib.sha256(data).hexdigest():
            return "its size or sha256 differs from its record: the file is damaged or was replaced", b""
        return None, data

    def _store(self, key: str, fields: EngineKeyFields, data: bytes, engine_path: Path,
               record_path: Path) -> Path | None:
        """Write the engine, then its record; a cache that cannot be written costs a rebuild next time, nothing
        more, and says so."""
        record = {"format": KEY_FORMAT, "key": key, **dataclasses.asdict(fields),
                  "engine_bytes": len(data), "engine_sha256": hashlib.sha256(data).hexdigest()}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_bytes(engine_path, data)
            write_text(record_path, json.dumps(record, indent=2) + "\n")
        except OSError as exc:
            warnings.warn(f"could not cache the TensorRT engine in {str(self.folder)!r} ({exc}); it is used from "
                          "memory and rebuilt next time", KilnWarning, stacklevel=4)
            return None
        return engine_path


__all__ = ["CHECKOUT_BUILD", "CachedEngine", "ENV_PLUGINS", "EngineCache", "EngineKeyFields", "INSTALL_HINT",
           "InputProfile", "KEY_FORMAT", "PLUGINS_LIBRARY", "PluginDecision", "ProfileSettings", "check_feeds",
           "default_engine_cache", "engine_key", "engine_key_text", "file_sha256", "find_plugin_library",
           "plugin_decision", "profile_text", "profiles_from_manifest", "tensorrt_version_text"]
