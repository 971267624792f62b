"""``kiln`` on the runtime-only install (``pip install tensorkiln``: numpy + onnxruntime, no torch).

Runtime commands (``--version``, ``presets``, ``info``, ``triton``) work and import no torch; every torch command
prints the install hint as one line and exits 2, never a traceback, and so does ``triton`` without its extra
(``tensorkiln[triton]``: Triton's protobuf schema). With the ``[text]`` extra (HF ``tokenizers``) text goes in and
out (``kiln generate``, ``kiln run``, ``session.generate(text=...)``); without it, asking for text prints that
extra's install hint. The fast tests hide the export extra's modules
from a fresh interpreter (a ``None`` entry in ``sys.modules`` is how Python spells "not installed"); the slow test
installs the package into a new virtual environment without torch and runs the real ``kiln`` program.
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPORT_EXTRA = ("torch", "safetensors", "onnx", "onnxscript", "onnx_ir", "polygraphy", "tqdm", "transformers")
HINT = "pip install 'tensorkiln[export]'"
TRITON_HINT = "pip install 'tensorkiln[triton]'"
TEXT_HINT = "pip install 'tensorkiln[text]'"
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


def test_text_round_trip_without_torch(exports, tmp_path):
    """The runtime-only install with [text]: kiln generate, kiln run and the Python text API, no torch loaded."""
    _, causal = exports.get("gpt_neox", "ForCausalLM")
    _, encoder = exports.get("mra", "ForSequenceClassification")
    generated = _kiln_without_export_extra(["generate", str(causal), "The kiln", "--max-new-tokens", "6"], tmp_path)
    assert generated.returncode == 0 and generated.stdout.startswith("The kiln"), generated.stderr
    ran = _kiln_without_export_extra(["run", str(encoder), "The kiln is hot."], tmp_path)
    assert ran.returncode == 0 and "LABEL_0" in ran.stdout, ran.stderr
    code = (
        "import sys\n"
        f"for name in {EXPORT_EXTRA!r}:\n"
        "    sys.modules[name] = None\n"
        "from tensorkiln.runtime import load\n"
        f"s = load({str(causal)!r})\n"
        "text = s.generate(text='The kiln', max_new_tokens=6, ignore_eos=True)\n"
        "ids = s.tokenizer.encode('The kiln').ids\n"
        "tokens = s.generate([ids], 6, ignore_eos=True)[0].tolist()\n"
        "assert text == 'The kiln' + s.tokenizer.decode(tokens)[len(s.tokenizer.decode(ids)):], text\n"
        "assert ''.join(s.stream(text='The kiln', max_new_tokens=6, ignore_eos=True)) == text[len('The kiln'):]\n"
        "assert sys.modules.get('torch') is None\n"
        "print(repr(text))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("'The kiln"), result.stderr


def test_text_commands_without_the_text_extra(exports, tmp_path):
    _, causal = exports.get("gpt_neox", "ForCausalLM")
    result = _kiln_without_export_extra(["generate", str(causal), "The kiln"], tmp_path,
                                        hidden=(*EXPORT_EXTRA, "tokenizers"))
    assert result.returncode == 2 and TEXT_HINT in result.stderr and result.stderr.count("\n") == 1, result.stderr


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
    _, causal = exports.get("gpt_neox", "ForCausalLM")
    without = run("generate", str(causal), "The kiln")
    assert without.returncode == 2 and TEXT_HINT in without.stderr, without.stderr
    subprocess.run([*pip, f"{ROOT}[text]"], check=True, capture_output=True, timeout=900)  # the [text] extra
    generated = run("generate", str(causal), "The kiln", "--max-new-tokens", "5", "--stream")
    assert generated.returncode == 0 and generated.stdout.startswith("The kiln"), generated.stderr
    # The newest tokenizers (the test extra pins transformers, which pins an older one): an older checkpoint's
    # RoBERTa-style vocab.json + merges.txt wraps a text as <s> ... </s>, by HF's template.
    legacy = tmp_path / "legacy-tokenizer"
    legacy.mkdir()
    (legacy / "vocab.json").write_text(json.dumps({"<s>": 0, "</s>": 1, "a": 2, "b": 3, "ab": 4}))
    (legacy / "merges.txt").write_text("#version: 0.2\na b\n")
    (legacy / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "RobertaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "cls_token": "<s>",
         "sep_token": "</s>"}))
    encode = ("from pathlib import Path; from tensorkiln.runtime.tokenizer import Tokenizer; "
              "from tensorkiln.runtime.manifest_types import TextFiles; "
              f"t = Tokenizer.load(Path({str(legacy)!r}), TextFiles(tokenizer='vocab.json'), {{}}, 16); "
              "print(t.backend.encode('ab').ids)")
    encoded = subprocess.run([str(python), "-c", encode], capture_output=True, text=True, timeout=300)
    assert encoded.returncode == 0 and encoded.stdout.strip() == "[0, 4, 1]", encoded.stderr
