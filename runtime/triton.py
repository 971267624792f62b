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
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

from . import manifest as mf
from .atomic import replace_folder
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
#: The Python-backend model's files inside the version folder.
PYTHON_MODEL = "model.py"
PATH_NOTE = "tensorkiln.json"
#: Files whose presence in an export means it carries a tokenizer (and so its server streams text too).
TOKENIZER_FILES = ("tokenizer.json",)

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


def _copy_export(manifest: mf.Manifest, export_dir: Path, staged: Path, backend: str) -> None:
    """Place the export's files: the ONNX Runtime flavour puts the graph in the version folder and the rest beside
    the config; the Python flavour keeps the export folder whole under ``1/export``."""
    version = staged / "1"
    for file in manifest.files:
        if backend == "python":
            target = version / EXPORT_FOLDER / file
        else:
            target = version / file if file.startswith(mf.MODEL_NAME) else staged / file
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(export_dir / file, target)
    manifest_target = version / EXPORT_FOLDER if backend == "python" else staged
    shutil.copyfile(export_dir / mf.MANIFEST_NAME, manifest_target / mf.MANIFEST_NAME)


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
    config = json.loads((export_dir / manifest.config_file).read_text())
    name = name or f"{manifest.model_type.replace('-', '_')}_{manifest.head.lower()}"
    if not NAME_PATTERN.match(name):
        raise TritonError(f"model name {name!r} must use letters, digits, '_', '.' or '-' only")
    if options.backend == "python":
        has_tokenizer = any(Path(f).name in TOKENIZER_FILES for f in manifest.files)
        model_config = python_config(manifest, config, name, options, has_tokenizer=has_tokenizer)
    else:
        model_config = onnxruntime_config(manifest, config, name, options)
    repo = Path(repo_dir)
    target = repo / name
    if target.exists() and not overwrite:
        raise TritonError(f"{str(target)!r} exists; pass overwrite=True (--overwrite) to replace it")
    repo.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=repo))
    try:
        os.chmod(tmp, 0o755)
        (tmp / "1").mkdir()
        _copy_export(manifest, export_dir, tmp, options.backend)
        if options.backend == "python":
            _python_model(tmp / "1", install_paths() if python_path is None else [str(p) for p in python_path])
        (tmp / "config.pbtxt").write_text(to_text(model_config))
        replace_folder(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
