"""A Triton Inference Server model repository from a ``kiln export`` folder (ONNX Runtime backend).

Torch-free. Writes ``REPO/NAME/config.pbtxt`` and ``REPO/NAME/1/model.onnx`` (with its external data, if any),
plus the export's ``manifest.json`` and ``config.json`` beside the config for clients. Triton serves more load by
replicas behind a load balancer (docs/ARCHITECTURE.md, "Serving").

Batching: encoders whose outputs do not depend on the other rows of a batch get ``max_batch_size`` and dynamic
batching (Triton then merges requests of the same shape). Decoders with a cache keep ``max_batch_size: 0``
(the client owns the cache tensors), and so does Nystromformer's HF-compatible pseudo-inverse, whose
initialisation takes a max over the whole batch: merging requests would change their outputs.

Triton does not apply the runtime's input rules: clients of a fixed-length graph pad to it themselves (the
``tensorkiln.*`` parameters in the config say how), and masks default to nothing.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from . import manifest as mf
from .atomic import make_staging_folder, replace_folder
from .errors import UsageError

TRITON_TYPES = {"int64": "TYPE_INT64", "int32": "TYPE_INT32", "float32": "TYPE_FP32", "float16": "TYPE_FP16",
                "bool": "TYPE_BOOL"}
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]+$")


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


def write_repository(export_dir: str | Path, repo_dir: str | Path, *, name: str | None = None,
                     max_batch_size: int = 8, instances: int = 1, kind: str = "KIND_CPU",
                     overwrite: bool = False) -> Path:
    """Write ``repo_dir/name`` (atomically: a temporary folder renamed into place); return its path."""
    export_dir = Path(export_dir)
    manifest = mf.read_manifest(export_dir)
    config = json.loads((export_dir / manifest.config_file).read_text())
    name = name or f"{manifest.model_type.replace('-', '_')}_{manifest.head.lower()}"
    if not NAME_PATTERN.match(name):
        raise TritonError(f"model name {name!r} must use letters, digits, '_', '.' or '-' only")
    if max_batch_size < 0 or instances < 1:
        raise TritonError("max_batch_size must be >= 0 and instances >= 1")
    if kind not in ("KIND_CPU", "KIND_GPU"):
        raise TritonError(f"kind must be KIND_CPU or KIND_GPU, got {kind!r}")
    repo = Path(repo_dir)
    target = repo / name
    if target.exists() and not overwrite:
        raise TritonError(f"{str(target)!r} exists; pass overwrite=True (--overwrite) to replace it")
    repo.mkdir(parents=True, exist_ok=True)
    tmp = make_staging_folder(repo, f".{name}.")
    try:
        (tmp / "1").mkdir()
        for file in manifest.files:
            source = export_dir / file
            if file.startswith(mf.MODEL_NAME):  # model.onnx and its external data
                shutil.copyfile(source, tmp / "1" / file)
            else:
                shutil.copyfile(source, tmp / file)
        shutil.copyfile(export_dir / mf.MANIFEST_NAME, tmp / mf.MANIFEST_NAME)
        (tmp / "config.pbtxt").write_text(config_pbtxt(manifest, config, name, max_batch_size, instances, kind))
        replace_folder(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
