"""Atomic writes shared by exports, checkpoints, parity reports and Triton repositories (torch-free).

A file is written to a temporary sibling and renamed over its target. A folder is built by :func:`staged_folder`
and renamed into place at the end, so a failure or a kill never leaves a half-written target, and nothing a user
made is ever removed:

- **Staging.** The folder is built as ``.NAME.kiln-staging-XXXXXXXX/NAME`` beside the target; the staging folder
  also holds ``kiln-staging.json`` (the run's process id, host and start time). A later run on the same target
  removes the staging folders of runs that are gone (same host, process no longer running). A folder without that
  record, or of another host or of a live process, is never touched.
- **Replacing** (``--overwrite``). Only an empty folder or one the project wrote (the caller's ``owned`` check: an
  export's manifest and its files, or the ``.kiln-folder.json`` marker of a checkpoint or Triton model folder and the
  files it lists, and nothing else) is replaced, never a symbolic link or a file. The old folder is first renamed
  to ``NAME.kiln-old`` beside the target, the new one renamed into place, then the old one removed. A run killed in
  between leaves the old folder recoverable under that name; the next run on the target puts it back when the
  target is missing, or removes it once the record shows the replacement completed, and says which with a
  :class:`KilnWarning`.

Permissions: ``tempfile`` makes its files 0600 and its folders 0700, which would leave every export private to
its writer. What we write gets the modes ``open`` and ``mkdir`` would have given it, 0666 / 0777 less the process
umask (0644 / 0755 under the common umask 022), so a user whose umask says "private" keeps that.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import KilnError, KilnWarning, UsageError

STAGING_INFIX = ".kiln-staging-"
STAGING_RECORD = "kiln-staging.json"
#: In a folder the project wrote (a checkpoint, a Triton model folder): who wrote it and which files.
MARKER_NAME = ".kiln-folder.json"
#: The documented name of a folder being replaced, beside it, until its replacement is in place.
BACKUP_SUFFIX = ".kiln-old"
#: ``owned(folder)``: None when the project wrote ``folder`` (so it may be replaced), else why not.
Owned = Callable[[Path], "str | None"]


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
    write_bytes(path, text.encode())


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, with the mode ``open`` would give."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, file_mode())  # mkstemp makes it private; the umask decides, as for any new file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_marker(folder: Path, kind: str) -> None:
    """Record in ``folder`` that tensorkiln wrote it, as ``kind``, with the files it holds now."""
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    write_text(folder / MARKER_NAME, json.dumps({"written_by": "tensorkiln", "kind": kind, "files": files}) + "\n")


def marker_problem(folder: Path, kind: str) -> str | None:
    """None when ``folder`` carries the marker of a ``kind`` folder and holds only the files it lists; else why not
    (an ``owned`` check for :func:`staged_folder`)."""
    from .paths import unexpected_files

    try:
        record = json.loads((folder / MARKER_NAME).read_text())
        files = record["files"] if record.get("written_by") == "tensorkiln" and record.get("kind") == kind else None
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        files = None
    if not isinstance(files, list):
        return f"it has no {MARKER_NAME} of a {kind}"
    extra = unexpected_files(folder, {MARKER_NAME, *map(str, files)})
    if extra:
        return f"it holds files tensorkiln did not write ({', '.join(extra[:5])}{', ...' if len(extra) > 5 else ''})"
    return None


def backup_path(target: Path) -> Path:
    return target.with_name(target.name + BACKUP_SUFFIX)


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _process_gone(pid: int) -> bool:
    if pid == os.getpid() or os.name != "posix":  # os.kill(pid, 0) would terminate a process on Windows
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists but is not ours (EPERM), or the check is not possible here
        return False
    return False


def stale_staging(target: Path) -> list[tuple[Path, bool]]:
    """The staging folders of ``target`` left by runs that are gone, each with whether the run had renamed its
    build into place (killed after that, so a ``NAME.kiln-old`` beside the target is the replaced folder)."""
    found = []
    for shell in target.parent.glob(f".{target.name}{STAGING_INFIX}*"):
        try:
            if shell.is_symlink() or not shell.is_dir():
                continue
            record = json.loads((shell / STAGING_RECORD).read_text())
            if (record.get("tool") != "tensorkiln" or record.get("target") != target.name
                    or record.get("host") != socket.gethostname() or not isinstance(record.get("pid"), int)):
                continue
        except (OSError, ValueError, AttributeError):
            continue  # no record we wrote: not ours to touch
        if _process_gone(record["pid"]):
            found.append((shell, record.get("phase") == "swapping" and not _exists(shell / target.name)))
    return found


def recover(target: Path, owned: Owned) -> None:
    """Clean what killed runs left for ``target``: their staging folders, and ``NAME.kiln-old`` (put back when the
    target is missing, removed when a record shows its replacement completed)."""
    stale = stale_staging(target)
    completed = any(moved for _, moved in stale)
    for shell, _ in stale:
        shutil.rmtree(shell, ignore_errors=True)
    if stale:
        warnings.warn(f"removed {len(stale)} staging folder(s) of {str(target)!r} left by killed runs", KilnWarning,
                      stacklevel=3)
    backup = backup_path(target)
    if backup.is_symlink() or not backup.is_dir() or owned(backup) is not None:
        return
    if not _exists(target):
        os.replace(backup, target)
        warnings.warn(f"restored {str(target)!r} from {str(backup)!r}, where a run killed while replacing it had left "
                      "it", KilnWarning, stacklevel=3)
    elif completed:
        shutil.rmtree(backup, ignore_errors=True)
        warnings.warn(f"removed {str(backup)!r}: the folder an earlier run replaced by {str(target)!r}, killed before "
                      "it could remove it", KilnWarning, stacklevel=3)


def check_target(target: Path, *, overwrite: bool, owned: Owned, error: type[KilnError], what: str,
                 replace_empty: bool = False) -> None:
    """Refuse a target that exists unless it may be replaced: ``overwrite`` and a folder the project wrote (or an
    empty one); ``replace_empty`` lets an empty folder be replaced without ``overwrite``."""
    if not _exists(target):
        return
    if target.is_symlink():
        raise error(f"{what} {str(target)!r} is a symbolic link; pass the folder it points to, or another name")
    if not target.is_dir():
        raise error(f"{what} {str(target)!r} is a file, not a folder; choose another name")
    empty = not any(target.iterdir())
    if empty and replace_empty:
        return
    if not overwrite:
        raise error(f"{what} {str(target)!r} already exists; choose another folder or pass --overwrite")
    reason = None if empty else owned(target)
    if reason is not None:
        raise error(f"{what} {str(target)!r} is not a folder tensorkiln wrote ({reason}); --overwrite only replaces "
                    "those. Move it away or remove it yourself, or choose another folder")
    backup = backup_path(target)
    if _exists(backup):
        raise error(f"{str(backup)!r} exists beside {what} {str(target)!r}: it may be the only copy of an earlier "
                    f"{target.name}. Look at it, then remove or rename it, and run again")


def _make_parents(folder: Path, error: type[KilnError]) -> list[Path]:
    """Create ``folder`` and its missing parents; return the ones created, innermost first."""
    created = [p for p in (folder, *folder.parents) if not _exists(p)]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((p for p in reversed((folder, *folder.parents)) if _exists(p) and not p.is_dir()), None)
        why = f"{str(blocker)!r} is a file, not a folder" if blocker is not None else exc.strerror or str(exc)
        raise error(f"cannot create the folder {str(folder)!r}: {why}; choose a folder you can write to") from None
    return created


def _new_shell(target: Path, error: type[KilnError]) -> Path:
    try:
        shell = Path(tempfile.mkdtemp(prefix=f".{target.name}{STAGING_INFIX}", dir=target.parent))
    except OSError as exc:
        raise error(f"cannot write in {str(target.parent)!r}: {exc.strerror or exc}; choose a folder you can write "
                    "to") from None
    _record(shell, target, "building")
    return shell


def _record(shell: Path, target: Path, phase: str) -> None:
    """What a later run needs to know about this one: who it is (to tell a dead run from a live one) and whether
    it has begun renaming its build into place."""
    record = {"tool": "tensorkiln", "target": target.name, "pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "phase": phase}
    write_text(shell / STAGING_RECORD, json.dumps(record) + "\n")


def _swap(built: Path, target: Path) -> None:
    """Rename ``built`` to ``target``; an existing target goes to ``NAME.kiln-old`` until then, and is removed after."""
    if not _exists(target):
        os.replace(built, target)
        return
    backup = backup_path(target)
    os.rename(target, backup)
    os.rename(built, target)
    shutil.rmtree(backup, ignore_errors=True)


@contextlib.contextmanager
def staged_folder(target: str | os.PathLike, *, overwrite: bool, owned: Owned, error: type[KilnError] = UsageError,
                  what: str = "the folder", replace_empty: bool = False) -> Iterator[Path]:
    """Build a folder for ``target`` in staging and rename it into place when the block ends without an error.

    Yields the (empty) folder to fill. Refuses, with ``error``, a target that exists unless it may be replaced (see
    :func:`check_target`), checked again before the rename. On any error, the staging folder and the parent folders
    this call created are removed, and the target is left as it was.
    """
    target = Path(target)
    if target.name in ("", ".."):  # "." or "a/..": the folder it names
        target = Path(os.path.abspath(target))
        if not target.name:
            raise error(f"{what} cannot be the root of the file system")
    recover(target, owned)
    check_target(target, overwrite=overwrite, owned=owned, error=error, what=what, replace_empty=replace_empty)
    created = _make_parents(target.parent, error)
    shell = None
    try:
        shell = _new_shell(target, error)
        built = shell / target.name
        built.mkdir()
        yield built
        check_target(target, overwrite=overwrite, owned=owned, error=error, what=what, replace_empty=replace_empty)
        _record(shell, target, "swapping")
        _swap(built, target)
    except BaseException:
        if shell is not None:
            shutil.rmtree(shell, ignore_errors=True)
            shell = None
        for folder in created:  # the parents this call made, innermost first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    finally:
        if shell is not None:
            shutil.rmtree(shell, ignore_errors=True)


def replace_folder(staged: Path, target: Path) -> None:
    """Rename the finished folder ``staged`` to ``target`` (an existing one is kept as ``NAME.kiln-old`` until the
    new one is in place). Prefer :func:`staged_folder`, which also decides whether ``target`` may be replaced."""
    _swap(staged, target)


__all__ = ["BACKUP_SUFFIX", "MARKER_NAME", "STAGING_INFIX", "STAGING_RECORD", "backup_path", "check_target",
           "file_mode", "folder_mode", "make_staging_folder", "marker_problem", "recover", "replace_folder",
           "staged_folder", "stale_staging", "write_bytes", "write_marker", "write_text"]
