"""A Triton Inference Server model repository from a ``kiln export`` folder (ONNX Runtime backend).

Torch-free. Writes ``REPO/NAME/config.pbtxt`` and ``REPO/NAME/1/model.onnx`` (with its external data, if any),
plus the export's ``manifest.json`` and ``config.json`` beside the config for clients. Triton serves more load by
replicas behind a load balancer (docs/ARCHITECTURE.md, "Serving").

Batching: encoders whose outputs do not depend on the other rows of a batch get ``max_batch_size`` and dynamic
batching (Triton then merges requests of the same shape). Decoders with a cache keep ``max_batch_size: 0``
(the client owns the cache tensors), and so does Nystromformer's HF-compatible pseudo-inverse, whose
initialisation takes a max over the whole batch: merging requests would change their outputs.

A hostile export cannot make it read or write outside its folders: every file is copied by a name checked inside
the export and inside the new model folder (``runtime/paths.py``), the repository may not overlap the export, and
``overwrite`` replaces only a model folder this module wrote (its ``.kiln-folder.json`` marker).

Triton does not apply the runtime's input rules: clients of a fixed-length graph pad to it themselves (the
``tensorkiln.*`` parameters in the config say how), and masks default to nothing.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from . import manifest as mf
from .atomic import MARKER_NAME, marker_problem, staged_folder, write_marker
from .errors import UsageError
from .jsonfile import read_json_object
from .paths import refuse_overlap, resolve_inside

TRITON_TYPES = {"int64": "TYPE_INT64", "int32": "TYPE_INT32", "float32": "TYPE_FP32", "float16": "TYPE_FP16",
                "bool": "TYPE_BOOL"}
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]+$")
CONFIG_NAME = "config.pbtxt"
#: Triton's version folder of the one model version written.
VERSION = "1"
#: Names in the model folder that the repository itself uses.
RESERVED = (CONFIG_NAME, mf.MANIFEST_NAME, MARKER_NAME)
#: The kind in the ``.kiln-folder.json`` marker of a model folder kiln triton wrote: what ``overwrite`` replaces.
MARKER_KIND = "triton-model"


class TritonError(UsageError):
    """A repository that cannot be written as asked."""


def batch_independent(manifest: mf.Manifest, config: dict) -> bool:
    """Whether a row's outputs are independent of the other rows in its batch (so requests may be merged)."""
    if manifest.cache is not None:
        return False
    if manifest.model_type == "nystromformer" and manifest.length_rules.fixed_length is not None:
        return bool(config.get("pinv_init_per_sample", False))
    return True


def _dims(dims: tuple[mf.Dim, ...]) -> str:
    return "[ " + ", ".join(str(d) if isinstance(d, int) else "-1" for d in dims) + " ]"


def _tensor_block(tensors: tuple[mf.TensorInfo, ...], batched: bool) -> str:
    """Entries of an input or output list; with Triton batching the leading batch dim is implicit."""
    entries = []
    for t in tensors:
        dims = t.dims[1:] if batched else t.dims
        entries.append(f'  {{\n    name: "{t.name}"\n    data_type: {TRITON_TYPES[t.dtype]}\n'
                       f'    dims: {_dims(dims)}\n  }}')
    return ",\n".join(entries)


def config_pbtxt(manifest: mf.Manifest, config: dict, name: str, max_batch_size: int, instances: int,
                 kind: str) -> str:
    """The text of ``config.pbtxt`` (Triton's ModelConfig in protobuf text format)."""
    batched = batch_independent(manifest, config) and max_batch_size > 0
    rules = manifest.length_rules
    parameters = {"tensorkiln.model_type": manifest.model_type, "tensorkiln.head": manifest.head,
                  "tensorkiln.precision": manifest.precision, "tensorkiln.max_length": str(rules.max_length)}
    if rules.fixed_length is not None:
        parameters["tensorkiln.fixed_length"] = str(rules.fixed_length)
        parameters["tensorkiln.pad_token_id"] = str(rules.pad_token_id)
    lines = [
        f'name: "{name}"',
        'backend: "onnxruntime"',
        f"max_batch_size: {max_batch_size if batched else 0}",
        "input [",
        _tensor_block(manifest.inputs, batched),
        "]",
        "output [",
        _tensor_block(manifest.outputs, batched),
        "]",
        f"instance_group [\n  {{\n    count: {instances}\n    kind: {kind}\n  }}\n]",
    ]
    if batched:
        lines.append("dynamic_batching { }")
    for key, value in parameters.items():
        lines.append(f'parameters {{\n  key: "{key}"\n  value: {{ string_value: "{value}" }}\n}}')
    return "\n".join(lines) + "\n"


def copy_plan(export_dir: Path, manifest: mf.Manifest) -> dict[str, Path]:
    """Where each file of the export goes in the model folder -> its source: the model as ``1/model.onnx`` (Triton's
    default name) with its external data beside it under the names the graph uses, every other file under its own
    name. Every source is checked inside the export, every destination inside the model folder."""
    model = mf.model_files(export_dir, manifest)
    plan: dict[str, Path] = {}
    for name in sorted(manifest.files):
        if name == manifest.model_file:
            dest = f"{VERSION}/{mf.MODEL_NAME}"
        elif name in model:
            dest = f"{VERSION}/{model[name]}"
        else:
            dest = name
        top = dest.split("/")[0]
        if dest in plan or dest in RESERVED or (top == VERSION and name not in model):
            raise TritonError(f"{str(export_dir)!r}: the file {name!r} would land on the repository's own {dest!r}; "
                              "re-export the model")
        plan[dest] = mf.file_path(export_dir, manifest, name)
    return plan


def ownership_problem(folder: Path) -> str | None:
    """None when ``folder`` is a model folder kiln triton wrote (its marker and the files it lists, nothing else),
    so that ``overwrite`` may replace it; otherwise why not."""
    return marker_problem(folder, MARKER_KIND)


def _check_request(name: str, max_batch_size: int, instances: int, kind: str) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or name.startswith("."):
        raise TritonError(f"model name {name!r} must use letters, digits, '_', '.' or '-' only, and not start with "
                          "'.'")
    for key, value, least in (("max_batch_size", max_batch_size, 0), ("instances", instances, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise TritonError(f"{key} must be an integer >= {least}, got {value!r}")
    if kind not in ("KIND_CPU", "KIND_GPU"):
        raise TritonError(f"kind must be KIND_CPU or KIND_GPU, got {kind!r}")


def write_repository(export_dir: str | Path, repo_dir: str | Path, *, name: str | None = None,
                     max_batch_size: int = 8, instances: int = 1, kind: str = "KIND_CPU",
                     overwrite: bool = False) -> Path:
    """Write ``repo_dir/name`` (atomically: staged and renamed into place); return its path. The repository may not
    overlap the export, and ``overwrite`` replaces only a model folder kiln triton wrote (runtime/atomic.py)."""
    export_dir = Path(export_dir)
    manifest = mf.read_manifest(export_dir)
    plan = copy_plan(export_dir, manifest)
    config = read_json_object(mf.file_path(export_dir, manifest, manifest.config_file), error=mf.ManifestError,
                              what="the export's config")
    name = name or f"{manifest.model_type.replace('-', '_')}_{manifest.head.lower()}"
    _check_request(name, max_batch_size, instances, kind)
    repo = Path(repo_dir)
    refuse_overlap(repo, "the model repository", export_dir, "the export", TritonError)
    target = repo / name
    with staged_folder(target, overwrite=overwrite, owned=ownership_problem, error=TritonError,
                       what="the Triton model folder") as tmp:
        for dest, source in plan.items():
            path = resolve_inside(tmp, dest, source=export_dir / mf.MANIFEST_NAME, key="file", error=TritonError)
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, path)
        (tmp / VERSION).mkdir(exist_ok=True)
        shutil.copyfile(export_dir / mf.MANIFEST_NAME, tmp / mf.MANIFEST_NAME)
        (tmp / CONFIG_NAME).write_text(config_pbtxt(manifest, config, name, max_batch_size, instances, kind))
        write_marker(tmp, MARKER_KIND)
    return target
