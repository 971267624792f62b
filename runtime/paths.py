"""Names read from files, resolved inside their folder; and how two folders of a command overlap.

Torch-free. A manifest's ``files``, ``model_file`` and ``config_file``, an ONNX model's external-data locations, a
checkpoint's shard index and a Triton repository's copies all name files by strings the project did not choose. Each
such name goes through :func:`resolve_inside`: it must be a relative POSIX path (not absolute, no drive or
backslash, no ``..``, no empty or NUL name) and, once symlinks are resolved, still lie inside its folder. A hostile
file therefore cannot make tensorkiln read ``/etc/passwd``, another folder's model, or write outside a repository.

:func:`overlap` is the other half of keeping a user's data: a command refuses an output folder that is, is inside, or
contains one of its input folders (``kiln export CKPT CKPT --overwrite`` must not delete the checkpoint it reads).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from .errors import KilnError, ManifestError


def _problem(name: object) -> str | None:
    """Why ``name`` is not a relative path inside its folder, or None."""
    if not isinstance(name, str):
        return f"is a {type(name).__name__}, not a file name"
    if not name or name in (".", "./"):
        return "is empty"
    if "\x00" in name:
        return "holds a NUL character"
    if "\\" in name:
        return "holds a backslash (names are POSIX paths: use '/')"
    if name.startswith("/") or (len(name) > 1 and name[0].isalpha() and name[1] == ":"):
        return "is an absolute path"
    if ".." in PurePosixPath(name).parts:
        return "goes up out of its folder ('..')"
    return None


def normalize_name(name: str) -> str:
    """``name`` without ``.`` parts and doubled slashes (``./a//b`` -> ``a/b``); call after :func:`check_name`."""
    return PurePosixPath(name).as_posix()


def check_name(name: object, *, source: str | os.PathLike, key: str,
               error: type[KilnError] = ManifestError) -> str:
    """``name`` normalised, or ``error`` naming ``source`` (the file it came from: a path, or a label already
    quoted), ``key`` and what is wrong."""
    problem = _problem(name)
    if problem is not None:
        where = repr(str(source)) if isinstance(source, os.PathLike) else source
        raise error(f"{where}: {key} {name!r} {problem}; every name there must be a relative path inside "
                    "its folder. Fix or regenerate that file")
    return normalize_name(name)  # type: ignore[arg-type]


def resolve_inside(root: str | os.PathLike, name: object, *, source: str | os.PathLike, key: str,
                   error: type[KilnError] = ManifestError) -> Path:
    """The path ``root/name``, once ``name`` is known to stay inside ``root`` after resolving every symlink.

    ``source`` is the file the name was read from and ``key`` where in it (``"files entry"``, ``"weight_map"``);
    both appear in the error, which is an ``error`` (exit status 2).
    """
    clean = check_name(name, source=source, key=key, error=error)
    base = Path(root)
    path = base / clean
    real_root = base.resolve()
    real = path.resolve()
    if real != real_root and real_root not in real.parents:
        raise error(f"{str(source)!r}: {key} {name!r} resolves to {str(real)!r}, outside {str(real_root)!r} (through "
                    "a symbolic link); every file must be inside its folder. Replace the link by the file itself")
    return path


def overlap(a: str | os.PathLike, b: str | os.PathLike) -> str | None:
    """How folder ``a`` overlaps folder ``b`` once symlinks are resolved: "is", "is inside", "contains", or None."""
    real_a, real_b = Path(a).resolve(), Path(b).resolve()
    if real_a == real_b:
        return "is"
    if real_b in real_a.parents:
        return "is inside"
    if real_a in real_b.parents:
        return "contains"
    return None


def refuse_overlap(output: str | os.PathLike, output_what: str, source: str | os.PathLike, source_what: str,
                   error: type[KilnError]) -> None:
    """Raise ``error`` when the folder a command writes overlaps a folder it reads."""
    relation = overlap(output, source)
    if relation is not None:
        raise error(f"{output_what} {str(output)!r} {relation} {source_what} {str(source)!r}: writing there could "
                    f"destroy {source_what}; choose a folder apart from it")


def check_writable(folder: str | os.PathLike, what: str, error: type[KilnError]) -> None:
    """Refuse, before any work, a folder that cannot be written: one under a regular file, or whose nearest
    existing folder this process may not write to."""
    folder = Path(folder)
    for existing in (folder, *folder.parents):
        if existing.exists():
            if not existing.is_dir():
                raise error(f"cannot write {what} {str(folder)!r}: {str(existing)!r} is a file, not a folder")
            if not os.access(existing, os.W_OK | os.X_OK):
                raise error(f"cannot write {what} {str(folder)!r}: {str(existing)!r} is not writable; choose a "
                            "folder you can write to")
            return


def unexpected_files(folder: str | os.PathLike, allowed: set[str]) -> list[str]:
    """Files (and symlinks) under ``folder`` whose relative POSIX names are not in ``allowed``, sorted; symlinked
    folders are not followed."""
    root = Path(folder)
    extra = []
    for current, dirs, files in os.walk(root, followlinks=False):
        here = Path(current)
        links = [d for d in dirs if (here / d).is_symlink()]
        for name in files + links:
            rel = (here / name).relative_to(root).as_posix()
            if rel not in allowed:
                extra.append(rel)
    return sorted(extra)


__all__ = ["check_name", "check_writable", "normalize_name", "overlap", "refuse_overlap", "resolve_inside",
           "unexpected_files"]
