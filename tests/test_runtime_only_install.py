"""``kiln`` on the runtime-only install (``pip install tensorkiln``: numpy + onnxruntime, no torch).

Runtime commands (``--version``, ``presets``, ``info``, ``triton``) work and import no torch; every torch command
prints the install hint as one line and exits 2, never a traceback, and so does ``triton`` without its extra
(``tensorkiln[triton]``: Triton's protobuf schema). The fast tests hide the export extra's modules
from a fresh interpreter (a ``None`` entry in ``sys.modules`` is how Python spells "not installed"); the slow test
installs the package into a new virtual environment without torch and runs the real ``kiln`` program.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPORT_EXTRA = ("torch", "safetensors", "onnx", "onnxscript", "onnx_ir", "polygraphy", "tqdm", "transformers")
HINT = "pip install 'tensorkiln[export]'"
TRITON_HINT = "pip install 'tensorkiln[triton]'"
TORCH_COMMANDS = [
    ["export", "ckpt", "out"],
    ["parity", "ckpt", "out"],
    ["bench", "--quick"],
    ["demo", "--size", "tiny"],
    ["init-checkpoint", "tiny-mra", "out"],
]


def _kiln_without_export_extra(args: list[str], cwd: Path, hidden: tuple[str, ...] = EXPORT_EXTRA
                               ) -> subprocess.CompletedProcess:
    code = (
        "import sys\n"
        f"for name in {hidden!r}:\n"
        "    sys.modules[name] = None\n"
        "from tensorkiln.export.cli import main\n"
        f"status = main({args!r})\n"
        "loaded = [m for m in ('torch', 'onnx', 'polygraphy') if sys.modules.get(m) is not None]\n"
        "assert not loaded, loaded\n"
        "sys.exit(status)\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.mark.parametrize("args", TORCH_COMMANDS, ids=lambda a: a[0])
def test_torch_commands_print_the_install_hint(args, tmp_path):
    result = _kiln_without_export_extra(args, tmp_path)
    assert result.returncode == 2, result.stderr
    assert HINT in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr  # one line


def test_runtime_commands_work_without_torch(exports, tmp_path):
    _, out = exports.get("mra", "ForSequenceClassification")
    version = _kiln_without_export_extra(["--version"], tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("kiln "), version.stderr
    presets = _kiln_without_export_extra(["presets"], tmp_path)
    assert presets.returncode == 0 and "| tiny-mra | mra |" in presets.stdout, presets.stderr
    info = _kiln_without_export_extra(["info", str(out)], tmp_path)
    assert info.returncode == 0 and "MraForSequenceClassification" in info.stdout, info.stderr
    triton = _kiln_without_export_extra(["triton", str(out), str(tmp_path / "repo")], tmp_path)
    assert triton.returncode == 0, triton.stderr
    assert (tmp_path / "repo" / "mra_forsequenceclassification" / "config.pbtxt").is_file()


def test_triton_without_its_extra_prints_the_install_hint(exports, tmp_path):
    """`kiln triton` builds config.pbtxt from tritonclient's protobuf schema (the extra tensorkiln[triton])."""
    _, out = exports.get("mra", "ForSequenceClassification")
    result = _kiln_without_export_extra(["triton", str(out), str(tmp_path / "repo")], tmp_path,
                                        EXPORT_EXTRA + ("tritonclient",))
    assert result.returncode == 2 and TRITON_HINT in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "repo").exists()  # nothing written


@pytest.mark.slow
def test_real_runtime_only_install(exports, tmp_path):
    """``pip install .`` into a fresh venv (PyPI's numpy and onnxruntime, no torch), then the real ``kiln``."""
    _, out = exports.get("mra", "ForSequenceClassification")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    pip = [str(env_dir / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, str(ROOT)], check=True, capture_output=True, timeout=900)
    python = env_dir / "bin" / "python"
    assert subprocess.run([str(python), "-c", "import torch"], capture_output=True).returncode != 0
    kiln = str(env_dir / "bin" / "kiln")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([kiln, *args], capture_output=True, text=True, cwd=tmp_path, timeout=300)

    assert run("--version").returncode == 0
    assert run("presets").returncode == 0
    info = run("info", str(out))
    assert info.returncode == 0 and "MraForSequenceClassification" in info.stdout, info.stderr
    triton = run("triton", str(out), str(tmp_path / "repo"))
    assert triton.returncode == 2 and TRITON_HINT in triton.stderr and "Traceback" not in triton.stderr
    for args in TORCH_COMMANDS:
        result = run(*args)
        assert result.returncode == 2 and HINT in result.stderr and "Traceback" not in result.stderr, result.stderr
    check = (f"import numpy as np; from tensorkiln.runtime import load; s = load({str(out)!r}); "
             "print(s.run(input_ids=np.ones((2, 9), dtype=np.int64))['logits'].shape)")
    ran = subprocess.run([str(python), "-c", check], capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0 and "(2, " in ran.stdout, ran.stderr
