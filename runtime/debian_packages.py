"""Debian packages fetched at build time for the native builds (ONNX Runtime's headers, nlohmann-json), without
touching the system's apt configuration.

Torch-free, standard library only. :func:`fetch` runs ``apt-get download`` under a private sources list, state and
cache inside a scratch folder (the system's apt configuration is read for the archive's address and keyring, never
changed), then ``dpkg-deb -x`` into ``scratch/root``. :mod:`.ort_headers` uses it for ``libonnxruntime-dev`` and
:mod:`.runtime_build` for ``nlohmann-json3-dev`` (the C++ runtime's JSON library); neither is ever committed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from .errors import BackendUnavailableError

#: The Debian release whose packages the builds use (ORT 1.21 headers, nlohmann-json 3.11).
SUITE = "trixie"
_DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

Log = Callable[[str], None]


def _run(command: list[str], cwd: Path) -> None:
    subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True)


def debian_archive() -> tuple[str, str]:
    """(URI, keyring) of the Debian archive this machine's apt already uses; raises when it uses none."""
    lists = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in lists:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":  # deb822 stanzas
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([\w-]+):\s*(.+)$", stanza, re.M))
                for uri in fields.get("URIs", "").split():
                    if uri.rstrip("/").endswith("/debian") and "deb" in fields.get("Types", "").split():
                        return uri, fields.get("Signed-By", _DEFAULT_KEYRING).strip()
        else:
            for match in re.finditer(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)/?\s", text, re.M):
                return match.group(1), _DEFAULT_KEYRING
    raise BackendUnavailableError("this machine's apt uses no Debian archive")


def fetch(package: str, scratch: Path, log: Log, suite: str = SUITE) -> Path:
    """Download ``package`` of Debian ``suite`` and unpack it; returns the root it was unpacked into (its files
    under ``usr/...``). Raises BackendUnavailableError without apt-get/dpkg-deb or a Debian archive, and
    subprocess.CalledProcessError when apt-get fails."""
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        raise BackendUnavailableError("apt-get and dpkg-deb are not available")
    uri, keyring = debian_archive()
    apt = scratch / "apt"
    for folder in ("lists/partial", "cache/archives/partial", "sources.list.d"):
        (apt / folder).mkdir(parents=True, exist_ok=True)
    (apt / "sources.list").write_text(f"deb [signed-by={keyring}] {uri} {suite} main\n")
    (apt / "status").write_text("")
    options = [f"Dir::Etc::SourceList={apt / 'sources.list'}", f"Dir::Etc::SourceParts={apt / 'sources.list.d'}",
               f"Dir::State::Lists={apt / 'lists'}", f"Dir::Cache={apt / 'cache'}",
               f"Dir::State::status={apt / 'status'}", "Debug::NoLocking=1"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        options.append("APT::Sandbox::User=root")  # apt's _apt user could not write into this scratch folder
    flags = [item for option in options for item in ("-o", option)]
    log(f"fetching {package} ({suite}) with apt-get download, private apt state")
    _run(["apt-get", *flags, "-qq", "update"], scratch)
    _run(["apt-get", *flags, "-qq", "download", package], scratch)
    archive = next(scratch.glob(f"{package}_*.deb"))
    root = scratch / "root"
    _run(["dpkg-deb", "-x", str(archive), str(root)], scratch)
    return root


def failure_detail(exc: BaseException) -> str:
    """The line worth showing of a failed fetch (apt-get's last error line, or the exception's text)."""
    if isinstance(exc, subprocess.CalledProcessError) and exc.stderr:
        return exc.stderr.strip().splitlines()[-1]
    return str(exc)


__all__ = ["SUITE", "debian_archive", "failure_detail", "fetch"]
