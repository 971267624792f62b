"""The export manifest: what ``kiln export`` writes next to ``model.onnx`` so that a runtime can drive the model.

Torch-free (the runtime reads it). ``manifest.json`` records the architecture (``model_type``), the head (HF class
name), the inputs and outputs with their dtypes and dims (symbolic dims are names such as ``"batch_size"``), the
opset and precision, the length rules the runtime must apply before feeding the model, the custom nodes in the
graph, the cache layout of decoders (which output feeds which input on the next step), the errors measured against
the reference model at export time, and the sha256 of every file written beside it. An int8 export also records
how it was quantized (:class:`Quantization`) and what its check compared against.

Every file name in a manifest stays inside its folder (``runtime/paths.py``), and the model, its config and the
graph's external-data files must all be hashed; a field of the wrong JSON type is an error naming its key.

Format versions: 1 is the first; 2 adds ``text`` (the tokenizer and generation-config files the export carries) and
``verification.atol`` (an ``--atol`` the check was held to). A format-1 manifest reads as one without either (no
tokenizer, the policy's bounds). A reader refuses a manifest from a newer format with a clear error rather than
guess at fields it does not know.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .atomic import write_text
from .errors import ManifestError
from .hub import hub_hint
from .jsonfile import Fields, read_json_object
from .manifest_types import (  # noqa: F401  (the manifest's types are part of this module's interface)
    _LEGACY_STATUSES,
    BATCH,
    BPE_FILES,
    CHOICES,
    CONFIG_NAME,
    DTYPES,
    EXTERNAL_DATA_NAME,
    FORMAT_VERSION,
    GENERATION_CONFIG_NAME,
    MANIFEST_NAME,
    MODEL_NAME,
    PASSED,
    PAST,
    PRECISIONS,
    SEQUENCE,
    TOKENIZER_FILES,
    TOKENIZER_JSON,
    TOTAL,
    UNVERIFIED,
    WORDPIECE_FILES,
    CacheEntry,
    CacheLayout,
    CheckResult,
    CustomNode,
    Dim,
    LengthRules,
    Manifest,
    OutputError,
    Quantization,
    TensorInfo,
    TextFiles,
    Verification,
    resolve_dim,
)
from .onnx_external import external_locations
from .paths import check_name, normalize_name, resolve_inside, unexpected_files

# ----------------------------------------------------------------------------------------------- (de)serialising


def to_dict(manifest: Manifest) -> dict[str, Any]:
    out = dataclasses.asdict(manifest)
    out["files"] = dict(sorted(manifest.files.items()))
    return out


def _dims(fields: Fields, key: str) -> tuple[Dim, ...]:
    value = fields.get(key)
    if not isinstance(value, list) or not all(isinstance(d, str) or (isinstance(d, int) and not isinstance(d, bool)
                                                                     and d >= 0) for d in value):
        raise fields.fail(key, "a list of dims (sizes >= 0 or symbolic names)", value)
    return tuple(value)


def _optional_axis(fields: Fields, key: str) -> int | None:
    return fields.integer(key, None, minimum=0)


def _tensor(t: Fields) -> TensorInfo:
    info = TensorInfo(name=t.string("name"), dtype=t.string("dtype"), dims=_dims(t, "dims"),
                      token_axis=_optional_axis(t, "token_axis"))
    if info.dtype not in DTYPES:
        raise ManifestError(f"manifest tensor {info.name!r} has dtype {info.dtype!r}; expected one of {DTYPES}")
    return info


def _length_rules(r: Fields) -> LengthRules:
    return LengthRules(max_length=r.integer("max_length", minimum=1), fixed_length=r.integer("fixed_length", None,
                                                                                              minimum=1),
                       pad_token_id=r.integer("pad_token_id", None, minimum=0),
                       pad_multiple=r.integer("pad_multiple", None, minimum=1), note=r.string("note", ""))


def _cache(c: Fields | None) -> CacheLayout | None:
    if c is None:
        return None
    entries = tuple(CacheEntry(layer=e.integer("layer", minimum=0), kind=e.string("kind"), input=e.string("input"),
                               output=e.string("output"), dims=_dims(e, "dims"),
                               sequence_axis=_optional_axis(e, "sequence_axis"))
                    for e in c.objects("entries"))
    return CacheLayout(past_dim=c.string("past_dim"), entries=entries, position_ids=c.string("position_ids", None),
                       note=c.string("note", ""))


def _verification(v: Fields) -> Verification:
    checks = []
    for c in v.objects("checks"):
        shape = c.get("shape")
        if not isinstance(shape, Mapping) or not all(isinstance(n, int) and not isinstance(n, bool)
                                                     for n in shape.values()):
            raise c.fail("shape", "an object of sizes", shape)
        half = c.object("torch_half_max_abs", None)
        checks.append(CheckResult(
            shape=dict(shape),
            errors=tuple(OutputError(e.string("output"), e.number("max_abs"), e.number("nmse"), e.number("cosine"))
                         for e in c.objects("errors")),
            torch_half_max_abs=None if half is None else {k: half.number(k) for k in half.data}))
    status = v.string("status")
    agreement = v.object("agreement", {})
    return Verification(status=_LEGACY_STATUSES.get(status, status), rule=v.string("rule"),
                        provider=v.string("provider"), reason=v.string("reason", ""), checks=tuple(checks),
                        oracle=v.string("oracle", ""), atol=None if v.get("atol", None) is None else v.number("atol"),
                        agreement={k: {n: agreement.object(k).number(n) for n in agreement.object(k).data}
                                   for k in agreement.data})


def _quantization(q: Fields | None) -> Quantization | None:
    if q is None:
        return None
    counts = q.object("quantized")
    kept = q.get("kept_fp32")
    if not isinstance(kept, list) or not all(isinstance(k, str) for k in kept):
        raise q.fail("kept_fp32", "a list of strings", kept)
    return Quantization(method=q.string("method"), tool=q.string("tool"), tool_version=q.string("tool_version"),
                        weights=q.string("weights"), activations=q.string("activations"),
                        quantized={k: counts.integer(k, minimum=0) for k in counts.data}, kept_fp32=tuple(kept),
                        source_sha256=q.string("source_sha256"))


def from_dict(data: Mapping[str, Any], source: str = "manifest") -> Manifest:
    """Parse and check a manifest; a :class:`ManifestError` names ``source`` and the first missing or bad key."""
    d = Fields(data, label=source, error=ManifestError)
    version = data.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ManifestError(f"{source} key 'format_version' is missing or not an integer")
    if version > FORMAT_VERSION:
        raise ManifestError(f"{source} format_version {version} is newer than this reader's ({FORMAT_VERSION}); "
                            "upgrade tensorkiln to read it")
    manifest = Manifest(
        format_version=version, model_type=d.string("model_type"), task=d.string("task"), head=d.string("head"),
        hf_class=d.string("hf_class"), opset=d.integer("opset", minimum=1), precision=d.string("precision"),
        inputs=tuple(_tensor(t) for t in d.objects("inputs")),
        outputs=tuple(_tensor(t) for t in d.objects("outputs")),
        length_rules=_length_rules(d.object("length_rules")),
        custom_nodes=tuple(CustomNode(n.string("domain"), n.string("op_type"), n.integer("count", minimum=0))
                           for n in d.objects("custom_nodes")),
        cache=_cache(d.object("cache", None)),
        verification=_verification(d.object("verification")),
        files=d.strings("files"),
        model_file=d.string("model_file", MODEL_NAME),
        config_file=d.string("config_file", CONFIG_NAME),
        producer=d.strings("producer", {}),
        quantization=_quantization(d.object("quantization", None)),
        text=_text_files(d.object("text", None)),
    )
    if manifest.verification.status not in (PASSED, UNVERIFIED):
        raise ManifestError(f"{source} verification status {manifest.verification.status!r} is not one of "
                            f"{PASSED!r}, {UNVERIFIED!r}")
    if manifest.precision not in PRECISIONS:
        raise ManifestError(f"{source} key 'precision' is {manifest.precision!r}; expected one of {PRECISIONS}")
    _check_names(manifest, source)
    for name in (*manifest.text.files, manifest.text.generation_config):
        if name is not None and name not in manifest.files:
            raise ManifestError(f"{source} key 'text' names {name!r}, which 'files' does not list: re-export the model")
    if manifest.text.tokenizer is not None and manifest.text.tokenizer not in manifest.text.files:
        raise ManifestError(f"{source} key 'text.tokenizer' names {manifest.text.tokenizer!r}, which 'text.files' does "
                            "not list: re-export the model")
    if (manifest.precision == "int8") != (manifest.quantization is not None):
        raise ManifestError(f"{source} key 'quantization' must be present exactly for int8 exports; this one is "
                            f"{manifest.precision} with quantization {manifest.quantization!r}")
    return manifest


def _check_names(manifest: Manifest, source: str) -> None:
    """Every file name relative and inside the folder; the model and config files among the hashed ones."""
    for name in manifest.files:
        if check_name(name, source=source, key="'files' entry") != name:
            raise ManifestError(f"{source}: 'files' entry {name!r} is not in normal form ({normalize_name(name)!r}); "
                                "re-export the model")
    for key, name in (("model_file", manifest.model_file), ("config_file", manifest.config_file)):
        if check_name(name, source=source, key=f"key {key!r}") != name or name not in manifest.files:
            what = "model file" if key == "model_file" else "config file"
            raise ManifestError(f"{source} key 'files' does not list the {what} {name!r} (key {key!r}), so its "
                                "sha256 cannot be checked: re-export the model")
    for digest in manifest.files.values():
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ManifestError(f"{source} key 'files' holds {digest[:80]!r}, not a sha256 in hex: re-export the "
                                "model")


def _text_files(d: Fields | None) -> TextFiles:
    """The ``text`` entry; absent in format 1 (no tokenizer, no generation config)."""
    if d is None:
        return TextFiles()
    files = d.get("files", [])
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise d.fail("files", "a list of file names", files)
    return TextFiles(tokenizer=d.string("tokenizer", None), files=tuple(files),
                     generation_config=d.string("generation_config", None))


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_files(folder: str | os.PathLike) -> dict[str, str]:
    """sha256 of every file in ``folder`` (recursively, posix relative names) except the manifest itself."""
    root = Path(folder)
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME
    }


def write_manifest(manifest: Manifest, folder: str | os.PathLike) -> Path:
    """Write ``folder/manifest.json`` atomically (a temporary file renamed over it)."""
    path = Path(folder) / MANIFEST_NAME
    write_text(path, json.dumps(to_dict(manifest), indent=2) + "\n")
    return path


def parse_manifest(folder: str | os.PathLike) -> Manifest:
    """``folder/manifest.json`` parsed and checked on its own (no file of the folder is opened)."""
    path = Path(folder) / MANIFEST_NAME
    if not Path(folder).is_dir():
        what = "a file" if Path(folder).exists() else "missing"
        raise ManifestError(f"{str(folder)!r} is {what}, not a folder: pass the OUT_DIR that `kiln export` wrote."
                            + hub_hint(folder, export=True))
    if not path.exists():
        raise ManifestError(f"{str(path)!r} is missing: is {str(folder)!r} a folder written by `kiln export`?"
                            + hub_hint(folder, export=True))
    return from_dict(read_json_object(path, error=ManifestError), source=repr(str(path)))  # the label names the file


def read_manifest(folder: str | os.PathLike, *, check_files: bool = True) -> Manifest:
    """Read ``folder/manifest.json``; every listed file must stay inside ``folder``, and with ``check_files`` match
    its sha256."""
    manifest = parse_manifest(folder)
    source = Path(folder) / MANIFEST_NAME
    for name in manifest.files:
        resolve_inside(folder, name, source=source, key="'files' entry")
    if check_files:
        problems = verify_files(folder, manifest)
        if problems:
            raise ManifestError(f"{str(folder)!r} does not match its manifest: " + "; ".join(problems)
                                + ". Re-export the model (a file was changed, truncated or replaced)")
    return manifest


def file_path(folder: str | os.PathLike, manifest: Manifest, name: str) -> Path:
    """The path of the manifest's file ``name`` (one of its ``files``), checked to stay inside ``folder``."""
    if name not in manifest.files:
        raise ManifestError(f"{str(folder)!r}: {name!r} is not among the manifest's hashed files")
    return resolve_inside(folder, name, source=Path(folder) / MANIFEST_NAME, key="'files' entry")


def model_files(folder: str | os.PathLike, manifest: Manifest) -> dict[str, str]:
    """The model file and each external-data file its graph names: manifest name -> location relative to the
    model's folder. Every one must be among the hashed ``files`` and inside ``folder``."""
    model = file_path(folder, manifest, manifest.model_file)
    base = Path(manifest.model_file).parent.as_posix()
    found = {manifest.model_file: Path(manifest.model_file).name}
    for location in external_locations(model):
        clean = check_name(location, source=model, key="external-data location")
        name = normalize_name(f"{base}/{clean}") if base != "." else clean
        if name not in manifest.files:
            raise ManifestError(f"{str(model)!r} keeps weights in {location!r}, which the manifest's 'files' does "
                                "not list, so its sha256 cannot be checked: re-export the model")
        file_path(folder, manifest, name)
        found[name] = clean
    return found


def ownership_problem(folder: str | os.PathLike) -> str | None:
    """None when ``folder`` is an export kiln wrote (its manifest.json is ours and it holds nothing else), so that
    ``--overwrite`` may replace it; otherwise why not."""
    folder = Path(folder)
    if not (folder / MANIFEST_NAME).is_file():
        return f"it has no {MANIFEST_NAME}"
    try:
        manifest = parse_manifest(folder)
    except ManifestError as exc:
        return f"its {MANIFEST_NAME} is not a kiln export's ({exc})"
    if "tensorkiln" not in manifest.producer:
        return f"its {MANIFEST_NAME} was not written by kiln export"
    extra = unexpected_files(folder, set(manifest.files) | {MANIFEST_NAME})
    if extra:
        return f"it holds files kiln export did not write ({', '.join(extra[:5])}{', ...' if len(extra) > 5 else ''})"
    return None


def verify_files(folder: str | os.PathLike, manifest: Manifest) -> list[str]:
    """Every problem with the listed files: missing, or a sha256 that differs."""
    problems = []
    for name, expected in sorted(manifest.files.items()):
        path = file_path(folder, manifest, name)
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif (digest := sha256_file(path)) != expected:
            problems.append(f"{name} has sha256 {digest[:12]}..., the manifest says {expected[:12]}...")
    return problems
