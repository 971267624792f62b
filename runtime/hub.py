"""Recognising a Hugging Face Hub id (``EleutherAI/pythia-160m``) given where a local folder is expected.

tensorkiln never downloads: checkpoints and exports are local folders. A missing path that has the shape of a Hub
id (``owner/name``: one slash, the Hub's characters) gets a message that says how to fetch it, the way Optimum
users pass Hub ids to ``optimum-cli export onnx``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: The Hub's repo id shape: owner and name of letters, digits, '-', '_' and '.', neither starting with '.' or '-'.
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")


def looks_like_hub_id(path: str | os.PathLike) -> bool:
    """True for a path that does not exist here and reads as a Hub repo id."""
    text = os.fspath(path)
    return bool(HUB_ID.fullmatch(text)) and ".." not in text and not Path(text).exists()


def hub_hint(path: str | os.PathLike, *, export: bool = False) -> str:
    """A sentence for error messages: how to download ``path`` when it looks like a Hub id, else empty.
    ``export``: the caller wants an export folder, so the hint goes on to ``kiln export``."""
    if not looks_like_hub_id(path):
        return ""
    text = os.fspath(path)
    local = text.split("/")[1]
    then = f" and pass {local}"
    if export:
        then = f", export it with `kiln export {local} {local}-onnx` and pass {local}-onnx"
    return (f" {text!r} looks like a Hugging Face Hub id; tensorkiln reads local folders only: download it first "
            f"with `huggingface-cli download {text} --local-dir {local}`{then}")
