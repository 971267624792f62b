"""``kiln generate`` and ``kiln run`` as a person uses them, ``kiln export``'s Optimum spellings and ``--atol``, the
Hub-id hint, and the modes of the files the project writes.

Oracles: the runtime's own text API for what ``kiln generate`` must print; HF's pipelines (fill-mask,
text-classification, token-classification, question-answering) on HF's model loaded from the same checkpoint for
what ``kiln run`` reports; the tolerance policy's constants for ``--atol``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from tensorkiln.export.cli import build_parser
from tensorkiln.export.cli import main as kiln
from tensorkiln.runtime import load
from tensorkiln.runtime import manifest as mf
from tensorkiln.runtime.tolerances import FP32_MAX_ABS

transformers = pytest.importorskip("transformers")

PROMPT = "The kiln by the river"


def _kiln(capsys, *args: str) -> tuple[int, str, str]:
    status = kiln([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# ----------------------------------------------------------------------------------------------- kiln generate


def test_kiln_generate_prints_the_text(exports, capsys):
    _, out = exports.get("gpt_neox", "ForCausalLM")
    want = load(out).generate(text=PROMPT, max_new_tokens=8)
    for extra in ([], ["--stream"]):
        status, printed, err = _kiln(capsys, "generate", out, PROMPT, "--max-new-tokens", "8", *extra)
        assert status == 0, err
        assert printed == want + "\n"
    status, printed, _ = _kiln(capsys, "generate", out, PROMPT, "--max-new-tokens", "8", "--no-prompt", "--stream")
    assert printed == want[len(PROMPT):] + "\n"
    beams = load(out).generate(text=PROMPT, max_new_tokens=6, num_beams=3, repetition_penalty=1.2)
    status, printed, err = _kiln(capsys, "generate", out, PROMPT, "--max-new-tokens", "6", "--num-beams", "3",
                                 "--repetition-penalty", "1.2", "--stream")
    assert status == 0 and printed == beams + "\n" and "kiln: warning: beam search" in err
    sampled = load(out).generate(text=PROMPT, max_new_tokens=6, do_sample=True, seed=0, top_k=0)
    status, printed, _ = _kiln(capsys, "generate", out, PROMPT, "--max-new-tokens", "6", "--do-sample", "--seed", "0",
                               "--top-k", "0")
    assert printed == sampled + "\n"


@pytest.mark.parametrize(("args", "message"), [
    (["--temperature", "0", "--do-sample"], "temperature must be"),
    (["--top-p", "1.5"], "top_p must be a number in"),
    (["--max-new-tokens", "100000"], "exceeds the model's maximum"),
])
def test_kiln_generate_errors_are_one_line(exports, capsys, args, message):
    _, out = exports.get("gpt_neox", "ForCausalLM")
    status, printed, err = _kiln(capsys, "generate", out, PROMPT, *args)
    assert status == 2 and printed == "" and message in err and err.count("\n") == 1, err


def test_kiln_generate_on_an_encoder_and_a_hub_id(exports, capsys):
    _, out = exports.get("megatron-bert", "ForMaskedLM")
    status, _, err = _kiln(capsys, "generate", out, PROMPT)
    assert status == 2 and "causal LM" in err
    status, _, err = _kiln(capsys, "generate", "EleutherAI/pythia-160m", PROMPT)
    assert status == 2 and "huggingface-cli download EleutherAI/pythia-160m --local-dir pythia-160m" in err


# ----------------------------------------------------------------------------------------------- kiln run


def _pipeline(task, ckpt, head):
    model = getattr(transformers, f"MegatronBert{head}").from_pretrained(ckpt).eval()
    return transformers.pipeline(task, model=model, tokenizer=transformers.AutoTokenizer.from_pretrained(ckpt),
                                 device="cpu")


def _rows(text: str) -> list[tuple[str, float]]:
    """(name, score) of each '  name  score' line."""
    return [(m.group(1).strip(), float(m.group(2))) for m in re.finditer(r"^  (.+?)\s+([-\d.]+)$", text, re.M)]


def test_kiln_run_fill_mask_equals_hf_pipeline(exports, capsys):
    ckpt, out = exports.get("megatron-bert", "ForMaskedLM")
    text = "The kiln is [MASK] tonight."
    want = _pipeline("fill-mask", ckpt, "ForMaskedLM")(text, top_k=4)
    status, printed, err = _kiln(capsys, "run", out, text, "--top", "4")
    assert status == 0, err
    assert printed.splitlines()[0].startswith("[MASK] at token")
    got = _rows(printed)
    assert [name for name, _ in got] == [w["token_str"] for w in want]
    assert [score for _, score in got] == pytest.approx([w["score"] for w in want], abs=1e-4)
    status, _, err = _kiln(capsys, "run", out, "No mask here.")
    assert status == 2 and "has no [MASK] token" in err


def test_kiln_run_classification_uses_id2label(exports, capsys, tmp_path):
    ckpt, out = exports.get("megatron-bert", "ForSequenceClassification")
    labels = {"0": "cold", "1": "hot"}
    for source, target in ((ckpt, tmp_path / "ckpt"), (out, tmp_path / "export")):
        shutil.copytree(source, target)
        config = json.loads((target / "config.json").read_text())
        config.update(id2label=labels, label2id={v: int(k) for k, v in labels.items()})
        (target / "config.json").write_text(json.dumps(config))
    manifest = mf.read_manifest(tmp_path / "export", check_files=False)
    import dataclasses

    mf.write_manifest(dataclasses.replace(manifest, files=mf.hash_files(tmp_path / "export")), tmp_path / "export")
    want = _pipeline("text-classification", tmp_path / "ckpt", "ForSequenceClassification")("The kiln is hot.",
                                                                                             top_k=None)
    status, printed, err = _kiln(capsys, "run", tmp_path / "export", "The kiln is hot.")
    assert status == 0, err
    got = _rows(printed)
    assert [name for name, _ in got] == [w["label"] for w in want] and {name for name, _ in got} == {"cold", "hot"}
    assert [score for _, score in got] == pytest.approx([w["score"] for w in want], abs=1e-4)


@pytest.mark.slow  # two exports of their own (~20 s on two cores); CI runs it
def test_kiln_run_token_classification_and_qa_equal_hf_pipelines(exports, capsys):
    ckpt, out = exports.get("megatron-bert", "ForTokenClassification")
    text = "The potters fire the kiln."
    want = _pipeline("token-classification", ckpt, "ForTokenClassification")(text, ignore_labels=[])
    status, printed, err = _kiln(capsys, "run", out, text)
    assert status == 0, err
    got = [line.split() for line in printed.splitlines()]
    assert [g[1] for g in got] == [w["entity"] for w in want]
    assert [float(g[2]) for g in got] == pytest.approx([w["score"] for w in want], abs=1e-4)

    ckpt, out = exports.get("megatron-bert", "ForQuestionAnswering")
    question, context = "Where is it?", "The kiln is by the old river."  # within the tiny model's 64 tokens
    want = _pipeline("question-answering", ckpt, "ForQuestionAnswering")(question=question, context=context)
    status, printed, err = _kiln(capsys, "run", out, question, "--pair", context)
    assert status == 0, err
    lines = printed.splitlines()
    assert lines[0] == f"answer: {want['answer']!r}"
    assert float(lines[1].split()[1]) == pytest.approx(want["score"], abs=1e-4)
    assert f"characters {want['start']}-{want['end']}" in lines[1]


def test_kiln_run_multiple_choice(exports, capsys):
    import numpy as np

    _, out = exports.get("nystromformer", "ForMultipleChoice")
    status, printed, err = _kiln(capsys, "run", out, "The kiln burns", "--choice", "wood", "--choice", "ice")
    assert status == 0, err
    logits = load(out).run(text="The kiln burns", text_pair=["wood", "ice"])["logits"][0]
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert dict(_rows(printed)) == pytest.approx({"wood": probs[0], "ice": probs[1]}, abs=1e-4)


# ----------------------------------------------------------------------------------------------- kiln export


def test_export_accepts_optimum_spellings():
    args = build_parser().parse_args(["export", "ckpt", "out", "--dtype", "fp16", "--batch_size", "3",
                                      "--sequence_length", "7", "--atol", "5e-5"])
    assert (args.precision, args.batch, args.seq, args.atol) == ("fp16", 3, 7, 5e-5)


def test_atol_can_only_tighten_the_policy(exports, capsys, tmp_path):
    ckpt = exports.checkpoint("gpt_neox", "Model")
    status, _, err = _kiln(capsys, "export", ckpt, tmp_path / "a", "--atol", str(FP32_MAX_ABS * 10))
    assert status == 2 and "--atol can only tighten" in err and not (tmp_path / "a").exists()
    status, _, err = _kiln(capsys, "export", ckpt, tmp_path / "b", "--atol", "1e-4", "--no-verify")
    assert status == 2 and "--no-verify" in err
    status, printed, err = _kiln(capsys, "export", ckpt, tmp_path / "c", "--task", "Model", "--atol",
                                 str(FP32_MAX_ABS / 2), "--no-progress")
    assert status == 0, err
    verification = mf.read_manifest(tmp_path / "c").verification
    assert verification.atol == FP32_MAX_ABS / 2 and "(--atol)" in verification.rule


@pytest.mark.slow
def test_atol_tighter_than_the_graph_fails_the_export(exports, capsys, tmp_path):
    ckpt = exports.checkpoint("gpt_neox", "Model")
    status, _, err = _kiln(capsys, "export", ckpt, tmp_path / "out", "--task", "Model", "--atol", "1e-12",
                           "--no-progress")
    assert status == 1 and "> --atol 1e-12" in err and not (tmp_path / "out").exists()


def test_hub_id_instead_of_a_folder(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, _, err = _kiln(capsys, "export", "EleutherAI/pythia-160m", "out")
    assert status == 2 and err.count("\n") == 1
    assert "download it first with `huggingface-cli download EleutherAI/pythia-160m --local-dir pythia-160m`" in err


# ----------------------------------------------------------------------------------------------- file modes


@pytest.mark.parametrize(("umask", "file_mode", "folder_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_written_files_follow_the_umask(tmp_path, umask, file_mode, folder_mode):
    """Exports, checkpoints and atomic writes get open()/mkdir()'s modes under the umask, not tempfile's 0600."""
    code = (
        "import os, stat, sys\n"
        f"os.umask({umask})\n"
        "from pathlib import Path\n"
        "from tensorkiln.runtime.atomic import make_staging_folder, write_text\n"
        "from tensorkiln.reference.presets import init_checkpoint\n"
        f"root = Path({str(tmp_path)!r})\n"
        "write_text(root / 'f.txt', 'x')\n"
        "folder = make_staging_folder(root, '.s-')\n"
        "ckpt = init_checkpoint('tiny-gpt-neox', root / 'ckpt')\n"
        "modes = [stat.S_IMODE(p.stat().st_mode) for p in (root / 'f.txt', folder, ckpt, ckpt / 'tokenizer.json')]\n"
        "print(' '.join(oct(m) for m in modes))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [oct(file_mode), oct(folder_mode), oct(folder_mode), oct(file_mode)]
