"""Text in, text out: the demo tokenizers, the text side of exports, the runtime's tokenizer, streaming text.

Oracles: ``transformers.AutoTokenizer`` on the same folder (HF's reading of the same files) for encodings and
decodings, the runtime's own ids path for what text generation must reproduce, and HF's decode of the whole
sequence for what a stream of pieces must add up to.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorkiln.reference.presets import get_preset, text_files
from tensorkiln.runtime import load
from tensorkiln.runtime import manifest as mf
from tensorkiln.runtime.errors import KilnWarning, RuntimeInputError, TokenizerUnavailableError
from tensorkiln.runtime.text_stream import IncrementalDecoder

transformers = pytest.importorskip("transformers")

SAMPLES = ["The kiln by the river.", "naïve café — déjà vu, 1,250 degrees", "日本語のテキスト 🙂 and ünïcödé",
           "  two  spaces\tand a tab\nnew line"]


def _write(folder, files):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


# ----------------------------------------------------------------------------------------------- demo tokenizers


@pytest.mark.parametrize("preset", ["tiny-gpt-neox", "tiny-mega", "tiny-mra", "tiny-megatron-bert",
                                    "tiny-nystromformer", "pythia-160m", "mega-base-wikitext"])
def test_demo_tokenizer_fits_the_model_and_hf_reads_it(preset, tmp_path):
    config = get_preset(preset).config
    causal = config["architectures"][0].endswith("ForCausalLM")
    files = text_files(config, causal)
    assert files == text_files(config, causal)  # the same files every time (training is deterministic)
    folder = _write(tmp_path / preset, {**files, "config.json": json.dumps(config)})
    hf = transformers.AutoTokenizer.from_pretrained(folder)
    assert len(hf) == config["vocab_size"]
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):  # config.json's special ids are special tokens
        if config.get(key) is not None:
            assert hf.convert_ids_to_tokens(config[key]) in hf.all_special_tokens, key
    if config.get("pad_token_id") is not None:
        assert hf.pad_token_id == config["pad_token_id"]
    if hf.eos_token is not None:
        assert hf.eos_token_id == config["eos_token_id"]
    from tensorkiln.runtime.tokenizer import Tokenizer

    ours = Tokenizer.load(folder, mf.TextFiles(tokenizer=mf.TOKENIZER_JSON), config, 10**6)
    for text in SAMPLES:
        ids = hf(text)["input_ids"]
        assert ours.encode(text).ids == ids
        assert max(ids) < config["vocab_size"]
        assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=True)
    pair = ours.encode("a question", "and its context")
    assert pair.ids == hf("a question", "and its context")["input_ids"]


def test_vocab_files_without_tokenizer_json_read_as_hf(tmp_path):
    """An older BERT checkpoint with vocab.txt only: the runtime builds HF's WordPiece from it."""
    config = get_preset("tiny-mra").config
    vocab = json.loads(text_files(config, False)["tokenizer.json"])["model"]["vocab"]
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "vocab.txt").write_text("".join(f"{t}\n" for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])))
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False, "pad_token": "[PAD]",
                                                              "unk_token": "[UNK]", "cls_token": "[CLS]",
                                                              "sep_token": "[SEP]", "mask_token": "[MASK]"}))
    from tensorkiln.runtime.tokenizer import Tokenizer

    ours = Tokenizer.load(folder, mf.TextFiles(tokenizer="vocab.txt"), config, 10**6)
    hf = transformers.BertTokenizer(str(folder / "vocab.txt"), do_lower_case=False)  # HF's Python WordPiece
    for text in SAMPLES[:2]:
        assert ours.encode(text).ids == hf(text)["input_ids"]


# ----------------------------------------------------------------------------------------------- exports


def test_export_carries_the_text_side(exports):
    ckpt, out = exports.get("gpt_neox", "ForCausalLM")
    manifest = mf.read_manifest(out)  # every sha256 checked, the tokenizer's included
    assert manifest.has_tokenizer and manifest.text.tokenizer == "tokenizer.json"
    assert set(manifest.text.files) == {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}
    assert manifest.text.generation_config == "generation_config.json"
    for name in (*manifest.text.files, "generation_config.json"):
        assert name in manifest.files
        assert (out / name).read_bytes() == (ckpt / name).read_bytes()


def test_format_1_manifest_still_reads(exports, tmp_path):
    """A manifest written before format 2 (no text entry, no atol) loads as an export without a tokenizer."""
    _, out = exports.get("mra", "ForSequenceClassification")
    copy = tmp_path / "v1"
    shutil.copytree(out, copy)
    data = json.loads((copy / "manifest.json").read_text())
    data["format_version"] = 1
    data.pop("text")
    data["verification"].pop("atol")
    (copy / "manifest.json").write_text(json.dumps(data))
    manifest = mf.read_manifest(copy)
    assert manifest.format_version == 1 and not manifest.has_tokenizer and manifest.verification.atol is None
    session = load(copy)
    assert session.run(input_ids=np.ones((1, 5), dtype=np.int64))["logits"].shape == (1, 2)
    with pytest.raises(TokenizerUnavailableError, match="has no tokenizer"):
        session.run(text="some text")


# ----------------------------------------------------------------------------------------------- streaming


def _pieces(tokenizer, ids, context=()):
    decoder = IncrementalDecoder(tokenizer, context)
    pieces = [decoder.push(i) for i in ids]
    return pieces + [decoder.flush()]


@pytest.mark.parametrize("case", [("gpt_neox", "ForCausalLM"), ("megatron-bert", "ForMaskedLM")])
def test_stream_pieces_add_up_across_multibyte_and_merged_tokens(exports, case):
    ckpt, out = exports.get(*case)
    tokenizer = load(out).tokenizer
    hf = transformers.AutoTokenizer.from_pretrained(ckpt)
    for text in SAMPLES:
        ids = hf(text, add_special_tokens=False)["input_ids"]
        pieces = _pieces(tokenizer, ids)
        assert "".join(pieces) == hf.decode(ids, skip_special_tokens=True)
        assert not any("\ufffd" in p for p in pieces), pieces  # no half character is ever emitted
    byte_level = case[0] == "gpt_neox"
    if byte_level:  # a character split over byte tokens: nothing until it is whole
        ids = hf("日", add_special_tokens=False)["input_ids"]
        assert len(ids) > 1 and _pieces(tokenizer, ids)[:-2] == [""] * (len(ids) - 1)


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_stream_pieces_equal_the_full_decode_for_any_text(neox_tokenizers, text):
    ours, hf = neox_tokenizers
    ids = hf(text, add_special_tokens=False)["input_ids"]
    context = hf("The river", add_special_tokens=False)["input_ids"]
    whole = hf.decode(context + ids)
    assert "".join(_pieces(ours, ids, context)) == whole[len(hf.decode(context)):]


@pytest.fixture(scope="module")
def neox_tokenizers(exports):
    ckpt, out = exports.get("gpt_neox", "ForCausalLM")
    return load(out).tokenizer, transformers.AutoTokenizer.from_pretrained(ckpt)


# ----------------------------------------------------------------------------------------------- generation


def test_text_generation_round_trip(exports, neox_tokenizers):
    """generate(text=...) equals the ids path on HF's encoding, decoded by HF; stream(text=...) adds up to it."""
    _, out = exports.get("gpt_neox", "ForCausalLM")
    session = load(out)
    _, hf = neox_tokenizers
    prompts = ["The kiln by the river", "Clay"]
    texts = session.generate(text=prompts, max_new_tokens=8, ignore_eos=True)
    for prompt, text in zip(prompts, texts):
        ids = np.array([hf(prompt)["input_ids"]])
        tokens = session.generate(ids, 8, ignore_eos=True)[0].tolist()
        continuation = hf.decode(tokens)[len(hf.decode(ids[0])):]
        assert text == prompt + continuation  # left padding in the batch changes nothing
        assert session.generate(text=prompt, max_new_tokens=8, ignore_eos=True, return_full_text=False) == continuation
        assert "".join(session.stream(text=prompt, max_new_tokens=8, ignore_eos=True)) == continuation
    steps = list(session.stream(text=prompts, max_new_tokens=8, ignore_eos=True))
    assert all(isinstance(step, list) and len(step) == 2 for step in steps)
    assert ["".join(s[i] for s in steps) for i in range(2)] == [t[len(p):] for t, p in zip(texts, prompts)]
    streamed = []
    assert session.generate(text=prompts[0], max_new_tokens=8, ignore_eos=True, streamer=streamed.append) == texts[0]
    assert "".join(streamed) == texts[0][len(prompts[0]):]


def test_text_generation_stops_at_eos_and_stop_strings(exports):
    _, out = exports.get("gpt_neox", "ForCausalLM")
    session = load(out)
    free = session.generate(text="The kiln", max_new_tokens=12, ignore_eos=True, return_full_text=False)
    stop = next(free[i:i + 2] for i in range(2, len(free) - 1) if free[i:i + 2].isascii() and free[i:i + 2].strip())
    stopped = session.generate(text="The kiln", max_new_tokens=12, ignore_eos=True, stop_strings=[stop],
                               return_full_text=False)
    assert stop in stopped and free.startswith(stopped) and len(stopped) < len(free)
    assert "".join(session.stream(text="The kiln", max_new_tokens=12, ignore_eos=True, stop_strings=stop)) == stopped


def test_encoder_text_inputs_equal_hf_tokenizer(exports):
    ckpt, out = exports.get("megatron-bert", "ForPreTraining")
    session = load(out)
    hf = transformers.AutoTokenizer.from_pretrained(ckpt)
    texts, pairs = ["The kiln is hot.", "Clay"], ["It burns wood all night.", "and water"]
    want = hf(texts, pairs, padding=True, return_tensors="np")
    got = session.run(text=texts, text_pair=pairs)
    expected = session.run(input_ids=want["input_ids"], attention_mask=want["attention_mask"],
                           token_type_ids=want["token_type_ids"])
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])
    long = "The river bends slowly past the kiln. " * 10
    with pytest.warns(KilnWarning, match="truncated to the model's maximum of 64"):
        truncated = session.run(text=long)
    assert truncated["prediction_logits"].shape[1] == 64
    want = hf(long, truncation=True, max_length=64, return_tensors="np")
    np.testing.assert_array_equal(truncated["prediction_logits"], session.run(
        input_ids=want["input_ids"], token_type_ids=want["token_type_ids"])["prediction_logits"])


def test_text_errors(exports, tmp_path):
    _, out = exports.get("gpt_neox", "ForCausalLM")
    session = load(out)
    with pytest.raises(RuntimeInputError, match="not both"):
        session.generate(np.ones((1, 3), dtype=np.int64), text="x")
    with pytest.raises(RuntimeInputError, match="text must be a string"):
        session.generate(text=[])
    with pytest.raises(RuntimeInputError, match="num_beams=1"):
        session.stream(text="x", num_beams=2)
    with pytest.raises(RuntimeInputError, match="unknown generation option 'top_kk'"):
        session.generate(text="x", top_kk=3)
    with pytest.raises(RuntimeInputError, match="input_ids must hold integer token ids.*text="):
        session.generate(np.array([["a", "b"]]), 3)
    # an export whose checkpoint had no tokenizer
    copy = tmp_path / "no-tokenizer"
    shutil.copytree(out, copy)
    manifest = mf.read_manifest(copy)
    for name in manifest.text.files:
        (copy / name).unlink()
    mf.write_manifest(dataclasses.replace(manifest, text=mf.TextFiles(generation_config="generation_config.json"),
                                          files=mf.hash_files(copy)), copy)
    with pytest.raises(TokenizerUnavailableError, match="no tokenizer.*export again, or pass token ids"):
        load(copy).generate(text="x")
    assert load(copy).generate(np.ones((1, 3), dtype=np.int64), 2).shape == (1, 5)  # ids still work


def test_text_without_the_tokenizers_library(exports):
    _, out = exports.get("gpt_neox", "ForCausalLM")
    code = ("import sys; sys.modules['tokenizers'] = None\n"
            "from tensorkiln.runtime import load\n"
            "from tensorkiln.runtime.errors import TokenizerUnavailableError\n"
            f"s = load({str(out)!r})\n"
            "print(s.generate([[5, 6]], 2).shape)\n"
            "try:\n    s.generate(text='x')\nexcept TokenizerUnavailableError as e:\n    print(e)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "(1, 4)" in result.stdout and "pip install 'tensorkiln[text]'" in result.stdout


def test_no_warning_for_texts_within_the_limit(exports):
    _, out = exports.get("megatron-bert", "ForPreTraining")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load(out).run(text="A short text.")
