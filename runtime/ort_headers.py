"""ONNX Runtime's C/C++ API headers for building ``libtensorkiln_ort.so``, fetched from a package registry at build
time and cached (the onnxruntime wheel ships none, and the repository never holds third-party headers).

:func:`ort_headers` returns a folder holding ``onnxruntime_cxx_api.h``, trying in order:

1. a folder the user names (``--ort-include`` / ``ONNXRUNTIME_INCLUDE_DIR``);
2. a copy fetched earlier into ``CACHE/onnxruntime-headers/``;
3. Debian trixie's ``libonnxruntime-dev`` (ORT 1.21, API 21, 85 KB), through :mod:`.debian_packages`
   (``apt-get download`` under a private apt state, then ``dpkg-deb -x``);
4. the npm package ``com.github.asus4.onnxruntime@0.4.9`` (ORT 1.29 headers under its iOS framework folder;
   150 MB): ``npm pack``, then the headers alone are extracted.

Headers of API version N build a library that runs on any onnxruntime >= 1.N, so the oldest that has every call the
library makes (``KernelContext::ParallelFor``: API 17) is the best; Debian's 21 comes first for that reason.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from . import debian_packages
from .atomic import replace_folder
from .errors import BackendUnavailableError

HEADER = "onnxruntime_cxx_api.h"
DEBIAN_SUITE = debian_packages.SUITE
DEBIAN_PACKAGE = "libonnxruntime-dev"
NPM_PACKAGE = "com.github.asus4.onnxruntime@0.4.9"
NPM_HEADERS = "package/Plugins/iOS~/onnxruntime.xcframework/ios-arm64/onnxruntime.framework/Headers/"

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
            detail = debian_packages.failure_detail(exc)
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
    """(URI, keyring) of the Debian archive this machine's apt already uses (:mod:`.debian_packages`)."""
    return debian_packages.debian_archive()


def _fetch_debian(scratch: Path, log: Log) -> Path:
    """Debian trixie's libonnxruntime-dev, downloaded and unpacked without touching the system's apt state."""
    root = debian_packages.fetch(DEBIAN_PACKAGE, scratch, log, DEBIAN_SUITE)
    headers = root / "usr" / "include" / "onnxruntime"
    if not (headers / HEADER).is_file():
        raise BackendUnavailableError(f"{DEBIAN_PACKAGE} holds no {HEADER}")
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
