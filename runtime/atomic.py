"""Atomic writes shared by export, parity reports and Triton repositories (torch-free).

A file is written to a temporary sibling and renamed over its target; a folder is staged beside its target and
renamed into place, an existing one moved aside first and removed after. A failure never leaves a half-written
target behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, readable by everyone."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; what we write is as public as the folder beside it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_folder(staged: Path, target: Path) -> None:
    """Rename the finished folder ``staged`` to ``target``; an existing ``target`` is moved aside, then removed."""
    if not target.exists():
        os.replace(staged, target)
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, trash / target.name)
    os.replace(staged, target)
    shutil.rmtree(trash, ignore_errors=True)
