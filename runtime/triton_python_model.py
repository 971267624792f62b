"""The ``model.py`` of a Python-backend repository written by ``kiln triton --backend python`` (copied as is).

Triton's Python backend imports this file in a stub process whose interpreter is the one the stub was built against,
which need not be the environment tensorkiln was installed in. So before anything imports numpy, the folders listed
in ``tensorkiln.json`` beside this file (recorded by ``kiln triton``: where tensorkiln, numpy and onnxruntime were
imported from, or its ``--python-path``) go first on ``sys.path``, their ``.pth`` files processed so that editable
installs resolve too. ``TENSORKILN_PYTHONPATH`` in the server's environment (folders joined by ``os.pathsep``)
replaces the note. Where neither applies, tensorkiln must be installed in the server's own Python.

The model itself is :mod:`tensorkiln.runtime.triton_serving`; this file only finds it. Imported from the package
(rather than run by Triton) it changes nothing: there is no note beside it.
"""

from __future__ import annotations

import json
import os
import site
import sys
from pathlib import Path

NOTE = "tensorkiln.json"
ENVIRONMENT_VARIABLE = "TENSORKILN_PYTHONPATH"


def _note() -> dict:
    try:
        return json.loads(Path(__file__).with_name(NOTE).read_text())
    except (OSError, ValueError):
        return {}


def _python_path() -> list[str]:
    override = os.environ.get(ENVIRONMENT_VARIABLE)
    if override is not None:
        return [p for p in override.split(os.pathsep) if p]
    return [str(p) for p in _note().get("python_path", [])]


def _put_first(paths: list[str]) -> None:
    """Prepend ``paths`` (and what their ``.pth`` files add) to ``sys.path``, in order."""
    before = list(sys.path)
    for path in paths:
        if os.path.isdir(path):
            site.addsitedir(path)
    added = [p for p in sys.path if p not in before]
    sys.path[:] = added + before


_put_first(_python_path())


def _import_failure(exc: ImportError) -> RuntimeError:
    note = _note()
    here = "{}.{}".format(*sys.version_info[:2])
    recorded = note.get("python", "unknown")
    return RuntimeError(
        f"tensorkiln.runtime cannot be imported in Triton's Python backend ({exc}). This stub runs Python {here}; "
        f"it looked in {_python_path()} ({ENVIRONMENT_VARIABLE} or {NOTE}, written under Python {recorded}) and "
        f"in its own site-packages. Install tensorkiln with numpy<2 and onnxruntime into this Python, or rewrite "
        f"the repository with `kiln triton --backend python --python-path DIR` naming folders built for Python "
        f"{here}, or set {ENVIRONMENT_VARIABLE}")


class TritonPythonModel:
    """Triton's entry points; everything is delegated to :func:`tensorkiln.runtime.triton_serving.create`."""

    def initialize(self, args: dict) -> None:
        try:
            from tensorkiln.runtime import triton_serving
        except ImportError as exc:
            raise _import_failure(exc) from exc
        import triton_python_backend_utils as pb_utils

        self.model = triton_serving.create(args, pb_utils)

    def execute(self, requests: list) -> list | None:
        return self.model.execute(requests)

    def finalize(self) -> None:
        model = getattr(self, "model", None)
        if model is not None:
            model.finalize()
