"""Helpers of the hostile-input tests: a snapshot of a folder tree, and running ``kiln`` for one clear error.

A refused command must change nothing: :func:`snapshot` records every entry under a folder (files by sha256, links
by target, folders by name), so comparing two snapshots shows anything lost, changed or written there, staging and
backup folders included.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tensorkiln.export.cli import main as kiln


def snapshot(root: Path) -> dict[str, str]:
    """Relative name -> what it is, for every entry under ``root`` (symlinks not followed)."""
    found = {}
    for current, dirs, files in os.walk(root, followlinks=False):
        here = Path(current)
        for name in dirs + files:
            path = here / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[rel] = "link -> " + os.readlink(path)
            elif path.is_dir():
                found[rel] = "folder"
            else:
                found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def kiln_error(capsys, argv: list[str]) -> tuple[int, str]:
    """Run ``kiln argv`` in this process; return its exit status and its one error line (asserting there is one,
    with no traceback: an exception other than a KilnError would propagate and fail the test)."""
    code = kiln([str(a) for a in argv])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("kiln: error: ")]
    assert len(errors) == 1, err
    assert "Traceback" not in err
    return code, errors[0]
