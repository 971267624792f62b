"""A Triton Inference Server model repository from a ``kiln export`` folder. Torch-free.

Two flavours (``ServingOptions.backend``), each written atomically (staged beside the target, renamed into place):

``onnxruntime``, for Triton's ONNX Runtime backend (NVIDIA's container)::

    REPO/NAME/config.pbtxt
    REPO/NAME/manifest.json, config.json      the export's, for clients
    REPO/NAME/1/model.onnx (+ its external data)

``python``, for Triton's Python backend running ``tensorkiln.runtime``::

    REPO/NAME/config.pbtxt
    REPO/NAME/1/model.py                      a copy of runtime/triton_python_model.py
    REPO/NAME/1/tensorkiln.json               where the backend's interpreter finds tensorkiln (see model.py)
    REPO/NAME/1/export/                       the export folder itself; its manifest is checked when it loads

The configurations are built in runtime/triton_config.py from Triton's protobuf schema. Triton serves more load with
more instances per server and more servers behind a load balancer (README, "Serving at scale").

A hostile export cannot make it read or write outside its folders: every file is copied by a name checked inside
the export and inside the new model folder (``runtime/paths.py``), the repository may not overlap the export, and
``overwrite`` replaces only a model folder this module wrote (its ``.kiln-folder.json`` marker).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import sys
import sysconfig
from pathlib import Path

from . import manifest as mf
from .atomic import MARKER_NAME, marker_problem, staged_folder, write_marker
from .jsonfile import read_json_object
from .paths import refuse_overlap, resolve_inside
from .triton_config import (
    EXPORT_FOLDER,
    TRITON_TYPES,
    ServingOptions,
    TritonError,
    batch_independent,
    onnxruntime_config,
    python_config,
    to_text,
)
from .version import package_version

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]+$")
CONFIG_NAME = "config.pbtxt"
#: Triton's version folder of the one model version written.
VERSION = "1"
#: The kind in the ``.kiln-folder.json`` marker of a model folder kiln triton wrote: what ``overwrite`` replaces.
MARKER_KIND = "triton-model"
#: The Python-backend model's files inside the version folder.
PYTHON_MODEL = "model.py"
PATH_NOTE = "tensorkiln.json"

__all__ = ["TRITON_TYPES", "ServingOptions", "TritonError", "batch_independent", "install_paths",
           "write_repository"]


def install_paths() -> list[str]:
    """The folders an interpreter needs on ``sys.path`` to import ``tensorkiln.runtime`` and its dependencies as
    this process does: the site folder holding tensorkiln (for an editable install, the one whose ``.pth`` file maps
    it), numpy's and onnxruntime's."""
    import numpy
    import onnxruntime

    runtime_dir = Path(__file__).resolve().parent
    installed = runtime_dir.parent.name == "tensorkiln"
    paths = [runtime_dir.parents[1] if installed else Path(sysconfig.get_paths()["purelib"])]
    paths += [Path(module.__file__).resolve().parents[1] for module in (numpy, onnxruntime)]
    return list(dict.fromkeys(str(p) for p in paths))


def copy_plan(export_dir: Path, manifest: mf.Manifest, backend: str) -> dict[str, Path]:
    """Where each file of the export goes in the model folder -> its source, every source checked inside the export.

    ONNX Runtime flavour: the model as ``1/model.onnx`` (Triton's default name) with its external data beside it
    under the names the graph uses, every other file beside the config. Python flavour: the export folder whole
    under ``1/export``, its manifest included.
    """
    model = mf.model_files(export_dir, manifest)
    reserved = (CONFIG_NAME, mf.MANIFEST_NAME, MARKER_NAME)
    plan: dict[str, Path] = {}
    for name in sorted(manifest.files):
        if backend == "python":
            dest = f"{VERSION}/{EXPORT_FOLDER}/{name}"
        elif name == manifest.model_file:
            dest = f"{VERSION}/{mf.MODEL_NAME}"
        elif name in model:
            dest = f"{VERSION}/{model[name]}"
        else:
            dest = name
        in_version = dest.split("/")[0] == VERSION
        if dest in plan or dest in reserved or (backend != "python" and in_version and name not in model):
            raise TritonError(f"{str(export_dir)!r}: the file {name!r} would land on the repository's own {dest!r}; "
                              "re-export the model")
        plan[dest] = mf.file_path(export_dir, manifest, name)
    manifest_dest = f"{VERSION}/{EXPORT_FOLDER}/{mf.MANIFEST_NAME}" if backend == "python" else mf.MANIFEST_NAME
    plan[manifest_dest] = export_dir / mf.MANIFEST_NAME
    return plan


def ownership_problem(folder: Path) -> str | None:
    """None when ``folder`` is a model folder kiln triton wrote (its marker and the files it lists, nothing else),
    so that ``overwrite`` may replace it; otherwise why not."""
    return marker_problem(folder, MARKER_KIND)


def _python_model(version: Path, python_path: list[str]) -> None:
    shutil.copyfile(Path(__file__).with_name("triton_python_model.py"), version / PYTHON_MODEL)
    note = {"python_path": python_path, "python": "{}.{}".format(*sys.version_info[:2]),
            "tensorkiln": package_version()}
    (version / PATH_NOTE).write_text(json.dumps(note, indent=2) + "\n")


def write_repository(export_dir: str | Path, repo_dir: str | Path, *, name: str | None = None,
                     overwrite: bool = False, python_path: list[str] | None = None,
                     options: ServingOptions | None = None, **fields) -> Path:
    """Write ``repo_dir/name`` for Triton and return its path.

    ``options`` (or its fields as keywords: ``backend``, ``max_batch_size``, ``instances``, ``kind``, ...) say how
    Triton serves it; see :class:`~tensorkiln.runtime.triton_config.ServingOptions`. ``python_path`` (Python
    backend): folders the server's interpreter puts first on ``sys.path`` to import tensorkiln, numpy and
    onnxruntime (default: :func:`install_paths`, where this process imports them from).
    """
    try:
        options = dataclasses.replace(options or ServingOptions(), **fields)
    except TypeError as exc:
        raise TritonError(f"unknown serving option: {exc}") from None
    options.check()
    export_dir = Path(export_dir)
    manifest = mf.read_manifest(export_dir)
    plan = copy_plan(export_dir, manifest, options.backend)
    config = read_json_object(mf.file_path(export_dir, manifest, manifest.config_file), error=mf.ManifestError,
                              what="the export's config")
    name = name or f"{manifest.model_type.replace('-', '_')}_{manifest.head.lower()}"
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or name.startswith("."):
        raise TritonError(f"model name {name!r} must use letters, digits, '_', '.' or '-' only, and not start with "
                          "'.'")
    if options.backend == "python":
        has_tokenizer = manifest.text.tokenizer is not None
        model_config = python_config(manifest, config, name, options, has_tokenizer=has_tokenizer)
    else:
        model_config = onnxruntime_config(manifest, config, name, options)
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
        if options.backend == "python":
            _python_model(tmp / VERSION, install_paths() if python_path is None else [str(p) for p in python_path])
        (tmp / CONFIG_NAME).write_text(to_text(model_config))
        write_marker(tmp, MARKER_KIND)
    return target
