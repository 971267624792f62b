"""Atomic writes shared by export, parity reports and Triton repositories (torch-free).

A file is written to a temporary sibling and renamed over its target; a folder is staged beside its target and
renamed into place, an existing one moved aside first and removed after. A failure never leaves a half-written
target behind.

Permissions: ``tempfile`` makes its files 0600 and its folders 0700, which would leave every export private to
its writer. What we write gets the modes ``open`` and ``mkdir`` would have given it, 0666 / 0777 less the process
umask (0644 / 0755 under the common umask 022), so a user whose umask says "private" keeps that.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def current_umask() -> int:
    """The process umask, read without changing it where Linux says it (``/proc/self/status``); elsewhere set and
    restored at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new file gets from ``open``: 0666 less the umask."""
    return 0o666 & ~current_umask()


def folder_mode() -> int:
    """The mode a new folder gets from ``mkdir``: 0777 less the umask."""
    return 0o777 & ~current_umask()


def make_staging_folder(parent: Path, prefix: str) -> Path:
    """A new temporary folder in ``parent`` with the mode ``mkdir`` would give (``mkdtemp`` makes it private)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(tmp, folder_mode())
    return tmp


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, with the mode ``open`` would give."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, file_mode())  # mkstemp makes it private; the umask decides, as for any new file
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
