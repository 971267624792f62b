"""ONNX Runtime's C/C++ API headers for building ``libtensorkiln_ort.so``, fetched from a package registry at build
time and cached (the onnxruntime wheel ships none, and the repository never holds third-party headers).

:func:`ort_headers` returns a folder holding ``onnxruntime_cxx_api.h``, trying in order:

1. a folder the user names (``--ort-include`` / ``ONNXRUNTIME_INCLUDE_DIR``);
2. a copy fetched earlier into ``CACHE/onnxruntime-headers/``;
3. Debian trixie's ``libonnxruntime-dev`` (ORT 1.21, API 21, 85 KB): ``apt-get download`` under a private
   sources list, state and cache in a scratch folder (the system's apt configuration is read for the archive's
   address and keyring, never changed), then ``dpkg-deb -x``;
4. the npm package ``com.github.asus4.onnxruntime@0.4.9`` (ORT 1.29 headers under its iOS framework folder;
   150 MB): ``npm pack``, then the headers alone are extracted.

Headers of API version N build a library that runs on any onnxruntime >= 1.N, so the oldest that has every call the
library makes (``KernelContext::ParallelFor``: API 17) is the best; Debian's 21 comes first for that reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from .atomic import replace_folder
from .errors import BackendUnavailableError

HEADER = "onnxruntime_cxx_api.h"
DEBIAN_SUITE = "trixie"
DEBIAN_PACKAGE = "libonnxruntime-dev"
NPM_PACKAGE = "com.github.asus4.onnxruntime@0.4.9"
NPM_HEADERS = "package/Plugins/iOS~/onnxruntime.xcframework/ios-arm64/onnxruntime.framework/Headers/"
_DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

Log = Callable[[str], None]


def api_version(include_dir: Path) -> int:
    """ORT_API_VERSION of the headers in ``include_dir``."""
    text = (include_dir / "onnxruntime_c_api.h").read_text(errors="replace")
    match = re.search(r"^#define ORT_API_VERSION\s+(\d+)", text, re.M)
    if match is None:
        raise BackendUnavailableError(f"{include_dir}/onnxruntime_c_api.h defines no ORT_API_VERSION")
    return int(match.group(1))


def ort_headers(cache: Path, given: Path | None = None, log: Log = print) -> Path:
    """A folder with ONNX Runtime's C/C++ API headers: ``given``, the cached copy, Debian's, or npm's."""
    if given is not None:
        found = next((d for d in (given, given / "onnxruntime", given / "include" / "onnxruntime")
                      if (d / HEADER).is_file()), None)
        if found is None:
            raise BackendUnavailableError(f"no {HEADER} in {given} (nor its onnxruntime/ or include/onnxruntime/)")
        return found
    for source in ("debian", "npm"):
        if (cache / source / HEADER).is_file():
            return cache / source
    failures = []
    for source, fetch in (("debian", _fetch_debian), ("npm", _fetch_npm)):
        try:
            return _fetch_into(cache, source, fetch, log)
        except (OSError, subprocess.CalledProcessError, BackendUnavailableError) as exc:
            detail = exc.stderr.strip().splitlines()[-1] if isinstance(exc, subprocess.CalledProcessError) and \
                exc.stderr else str(exc)
            failures.append(f"{source}: {detail}")
            log(f"could not fetch the headers from {source} ({detail})")
    raise BackendUnavailableError("cannot get ONNX Runtime's C/C++ API headers (" + "; ".join(failures) + "). "
                                  "Pass a folder holding onnxruntime_cxx_api.h with --ort-include (or "
                                  "ONNXRUNTIME_INCLUDE_DIR)")


def _fetch_into(cache: Path, source: str, fetch: Callable[[Path, Log], Path], log: Log) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{source}-", dir=cache) as scratch:
        headers = fetch(Path(scratch), log)
        staged = Path(scratch) / "staged"
        shutil.copytree(headers, staged)
        replace_folder(staged, cache / source)
    log(f"ONNX Runtime API {api_version(cache / source)} headers from {source} cached in {cache / source}")
    return cache / source


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


def _fetch_debian(scratch: Path, log: Log) -> Path:
    """Debian trixie's libonnxruntime-dev, downloaded and unpacked without touching the system's apt state."""
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        raise BackendUnavailableError("apt-get and dpkg-deb are not available")
    uri, keyring = debian_archive()
    apt = scratch / "apt"
    for folder in ("lists/partial", "cache/archives/partial", "sources.list.d"):
        (apt / folder).mkdir(parents=True, exist_ok=True)
    (apt / "sources.list").write_text(f"deb [signed-by={keyring}] {uri} {DEBIAN_SUITE} main\n")
    (apt / "status").write_text("")
    options = [f"Dir::Etc::SourceList={apt / 'sources.list'}", f"Dir::Etc::SourceParts={apt / 'sources.list.d'}",
               f"Dir::State::Lists={apt / 'lists'}", f"Dir::Cache={apt / 'cache'}",
               f"Dir::State::status={apt / 'status'}", "Debug::NoLocking=1"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        options.append("APT::Sandbox::User=root")  # apt's _apt user could not write into this scratch folder
    flags = [item for option in options for item in ("-o", option)]
    log(f"fetching {DEBIAN_PACKAGE} ({DEBIAN_SUITE}) with apt-get download, private apt state")
    _run(["apt-get", *flags, "-qq", "update"], scratch)
    _run(["apt-get", *flags, "-qq", "download", DEBIAN_PACKAGE], scratch)
    package = next(scratch.glob(f"{DEBIAN_PACKAGE}_*.deb"))
    _run(["dpkg-deb", "-x", str(package), str(scratch / "root")], scratch)
    headers = scratch / "root" / "usr" / "include" / "onnxruntime"
    if not (headers / HEADER).is_file():
        raise BackendUnavailableError(f"{package.name} holds no {HEADER}")
    return headers


def _fetch_npm(scratch: Path, log: Log) -> Path:
    """The headers of the npm package's iOS framework (the package also holds binaries: only headers are kept)."""
    npm = shutil.which("npm")
    if npm is None:
        raise BackendUnavailableError("npm is not available")
    log(f"fetching {NPM_PACKAGE} with npm pack (150 MB; only its headers are kept)")
    _run([npm, "pack", "--silent", NPM_PACKAGE, "--pack-destination", str(scratch)], scratch)
    archive = next(scratch.glob("*.tgz"))
    headers = scratch / "headers"
    headers.mkdir()
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            name = member.name
            if member.isfile() and name.startswith(NPM_HEADERS) and name.endswith(".h") and "/" not in \
                    name[len(NPM_HEADERS):]:
                source = tar.extractfile(member)
                if source is not None:
                    (headers / Path(name).name).write_bytes(source.read())
    archive.unlink()
    if not (headers / HEADER).is_file():
        raise BackendUnavailableError(f"{NPM_PACKAGE} holds no {HEADER} under {NPM_HEADERS}")
    return headers


__all__ = ["DEBIAN_PACKAGE", "HEADER", "NPM_PACKAGE", "api_version", "debian_archive", "ort_headers"]
