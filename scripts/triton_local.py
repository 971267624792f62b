"""A local Triton server from PyPI, for tests and measurements on a machine without NVIDIA's container: the
tritonserver 2.51 binary and its Python backend out of the ``nvidia-pytriton`` wheel (no ONNX Runtime backend).

    python scripts/triton_local.py setup                  # download and unpack into build/cache/triton (once)
    python scripts/triton_local.py python-path            # the folders to pass to kiln triton --python-path
    python scripts/triton_local.py serve REPO [--http-port 8000] [--grpc-port 8001]   # on 127.0.0.1, until Ctrl-C

What ``prepare`` sets up, and why (each seen on Debian 12, glibc 2.36, Python 3.11):

- the wheel (55 MB, manylinux_2_35 x86_64) comes from PyPI through pip and is unpacked under build/cache/triton;
- the Python backend runs each model in a stub process that embeds libpython. The wheel ships one stub per Python
  (3.8 to 3.13); the one for this interpreter goes into ``backends/python``, this interpreter's shared libpython on
  ``LD_LIBRARY_PATH`` and its prefix as ``PYTHONHOME``, so the stub runs this very Python;
- the stubs exchange tensors through code built for numpy 1.x (pytriton itself pins numpy<2): with numpy 2, under
  3.11 and 3.12 alike, a response comes back "output tensor shape does not match size" and a DLPack round trip
  reads zeros. So the models import from a separate site folder with numpy<2 and this environment's onnxruntime
  version, plus a link to this checkout's ``runtime/`` as ``tensorkiln.runtime``: :attr:`Installation.python_path`,
  handed to ``kiln triton --backend python --python-path``.

``Server`` starts tritonserver in its own process group, bound to 127.0.0.1 on free ports, waits until it is ready,
and stops the whole group (the stubs included) on exit, whatever happened.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
import zipfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "build" / "cache" / "triton"
PYTRITON = "nvidia-pytriton==0.7.0"
LOOPBACK = "127.0.0.1"


@dataclasses.dataclass(frozen=True)
class Installation:
    server: Path
    backends: Path
    environment: dict[str, str]
    python_path: tuple[str, ...]


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}{result.stderr[-4000:]}")


def _staged(target: Path, build) -> Path:
    """Build ``target`` once: ``build(folder)`` fills a temporary sibling that is renamed into place."""
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(staging)
        try:
            os.replace(staging, target)
        except OSError:
            if not target.is_dir():  # another process finishing first is fine
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _download_wheel(folder: Path) -> None:
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", PYTRITON,
          "-d", str(folder)])


def _unpack(wheels: Path):
    def build(folder: Path) -> None:
        (wheel,) = wheels.glob("nvidia_pytriton-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            for info in archive.infolist():
                if info.filename.startswith(("pytriton/tritonserver/", "nvidia_pytriton.libs/")):
                    path = Path(archive.extract(info, folder))
                    mode = info.external_attr >> 16
                    if mode:
                        path.chmod(mode & 0o777)
    return build


def _site_requirements() -> list[str]:
    """What the served runtime imports: numpy 1.x (see above), and this environment's onnxruntime and tokenizers
    (text in and out, when an export carries a tokenizer)."""
    pins = ["numpy<2", f"onnxruntime=={metadata.version('onnxruntime')}"]
    with contextlib.suppress(metadata.PackageNotFoundError):
        pins.append(f"tokenizers=={metadata.version('tokenizers')}")
    return pins


def _site(folder: Path) -> None:
    _run([sys.executable, "-m", "pip", "install", "--quiet", "--only-binary=:all:", "--target", str(folder),
          *_site_requirements()])


def _libpython() -> Path:
    name = sysconfig.get_config_var("INSTSONAME") or ""
    folder = Path(sysconfig.get_config_var("LIBDIR") or "")
    if not sysconfig.get_config_var("Py_ENABLE_SHARED") or not (folder / name).is_file():
        raise RuntimeError(f"{sys.executable} has no shared libpython ({folder / name} not found), which Triton's "
                           "Python-backend stub links against: use a Python built with --enable-shared (Debian's "
                           "python3, pyenv with PYTHON_CONFIGURE_OPTS=--enable-shared)")
    return folder


def prepare(cache: Path = CACHE) -> Installation:
    """Everything a local tritonserver needs, built once under ``cache`` (see the module docstring)."""
    version = "{}.{}".format(*sys.version_info[:2])
    libpython = _libpython()
    wheels = _staged(cache / "wheels", _download_wheel)
    unpacked = _staged(cache / "pytriton-0.7.0", _unpack(wheels))
    tritonserver = unpacked / "pytriton" / "tritonserver"
    stub = tritonserver / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise RuntimeError(f"{PYTRITON} has no Python-backend stub for Python {version} (it has 3.8 to 3.13)")
    backends = tritonserver / "backends"
    shutil.copyfile(stub, backends / "python" / "triton_python_backend_stub")
    for executable in (backends / "python" / "triton_python_backend_stub", tritonserver / "bin" / "tritonserver"):
        executable.chmod(0o755)
    pins = "-".join(p.split("==")[-1] for p in _site_requirements()[1:])
    tag = f"cp{version.replace('.', '')}-numpy1-{pins}"
    site = _staged(cache / f"site-{tag}", _site)
    link = cache / "tensorkiln-checkout" / "tensorkiln"
    link.mkdir(parents=True, exist_ok=True)
    runtime = link / "runtime"  # this checkout's runtime/ as tensorkiln.runtime, always the current code
    if runtime.is_symlink() and os.readlink(runtime) != str(ROOT / "runtime"):
        runtime.unlink()  # the checkout moved
    if not runtime.is_symlink():
        runtime.symlink_to(ROOT / "runtime", target_is_directory=True)
    environment = {"LD_LIBRARY_PATH": os.pathsep.join(filter(None, [str(libpython),
                                                                     os.environ.get("LD_LIBRARY_PATH")])),
                   "PYTHONHOME": sys.base_prefix}
    return Installation(tritonserver / "bin" / "tritonserver", backends, environment, (str(site), str(link.parent)))


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the process that started the server dies, however it dies (Linux's
    PR_SET_PDEATHSIG), so a killed test run leaves no server behind."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


class Server:
    """tritonserver on 127.0.0.1 serving ``repository``; ``models``: load only these (explicit model control)."""

    def __init__(self, install: Installation, repository: Path, log: Path, *, models: tuple[str, ...] = (),
                 http_port: int | None = None, grpc_port: int | None = None):
        self.install, self.repository, self.log_path, self.models = install, repository, log, models
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.process: subprocess.Popen | None = None
        self.pid: int | None = None  # also the process group's id, kept after stop()

    @property
    def http_url(self) -> str:
        return f"{LOOPBACK}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    def command(self) -> list[str]:
        command = [str(self.install.server), f"--model-repository={self.repository}",
                   f"--backend-directory={self.install.backends}", f"--http-address={LOOPBACK}",
                   f"--http-port={self.http_port}", f"--grpc-address={LOOPBACK}", f"--grpc-port={self.grpc_port}",
                   "--allow-metrics=false", "--pinned-memory-pool-byte-size=0", "--exit-timeout-secs=10"]
        if self.models:
            command += ["--model-control-mode=explicit", *(f"--load-model={m}" for m in self.models)]
        return command

    def start(self, timeout_s: float = 180) -> Server:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, **self.install.environment}, start_new_session=True,
                                            preexec_fn=_die_with_parent)
        self.pid = self.process.pid
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as response:
                    if response.status == 200:
                        return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"tritonserver did not become ready in {timeout_s:.0f} s; its log ends:\n"
                           + self.log_tail())

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the server's whole process group (the Python-backend stubs too): TERM, then KILL after 30 s."""
        if self.process is None:
            return
        for sig, wait_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=wait_s)
                break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # stubs that outlived the server
        self.process = None

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("setup", help="download and unpack the server, build the numpy<2 site folder")
    sub.add_parser("python-path", help="print the --python-path folders for kiln triton --backend python")
    serve = sub.add_parser("serve", help="serve a model repository on 127.0.0.1 until Ctrl-C")
    serve.add_argument("repository", type=Path)
    serve.add_argument("--http-port", type=int, default=8000)
    serve.add_argument("--grpc-port", type=int, default=8001)
    args = parser.parse_args(argv)
    install = prepare()
    if args.command == "setup":
        print(f"tritonserver: {install.server}\nenvironment: {install.environment}")
    if args.command in ("setup", "python-path"):
        print(" ".join(f"--python-path {p}" for p in install.python_path))
    if args.command == "serve":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the server on TERM too, not only on Ctrl-C
        log = Path(tempfile.mkdtemp(prefix="tritonserver-")) / "server.log"
        with Server(install, args.repository.resolve(), log, http_port=args.http_port, grpc_port=args.grpc_port):
            print(f"serving {args.repository} on http://{LOOPBACK}:{args.http_port} and grpc {LOOPBACK}:"
                  f"{args.grpc_port} (log: {log}); Ctrl-C stops it")
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
