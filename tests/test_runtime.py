"""``tensorkiln.runtime``: sessions over tiny exports, checked against the reference models called directly.

The oracle is the reference PyTorch model with HF keyword arguments; generation is checked against a greedy loop
over the reference with full recomputation at every step (no cache), so the exported cache, the runtime's
position ids and its padding rules are all under test.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_exports import Exports

from tensorkiln.reference import from_pretrained
from tensorkiln.reference.gpt_neox import position_ids_from_attention_mask
from tensorkiln.runtime import BackendUnavailableError, RuntimeInputError, load
from tensorkiln.runtime.tolerances import FP32_MAX_ABS

#: name -> (architecture, head) of the tiny exports these tests run.
CASES = {
    "neox": ("gpt_neox", "ForCausalLM"),
    "mega": ("mega", "ForCausalLM"),
    "nystromformer": ("nystromformer", "ForMultipleChoice"),
    "mra": ("mra", "ForTokenClassification"),
}


class Cases:
    """The session's tiny exports under this module's short names."""

    def __init__(self, exports: Exports):
        self.exports = exports

    def get(self, name: str) -> tuple[Path, Path]:
        return self.exports.get(*CASES[name])


@pytest.fixture
def cases(exports: Exports) -> Cases:
    return Cases(exports)


def _reference(ckpt: Path, **inputs: np.ndarray) -> dict[str, np.ndarray]:
    model = from_pretrained(ckpt)
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).to_dict()
    return {k: v.numpy() for k, v in out.items() if isinstance(v, torch.Tensor)}


def _ids(vocab: int, *shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(3, vocab, size=shape, dtype=np.int64)


def _close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    error = float(np.abs(got.astype(np.float64) - want).max())
    assert error <= FP32_MAX_ABS and error <= 1e-4 * float(np.abs(want).max()), error


# ----------------------------------------------------------------------------------------------- run


def test_run_fills_the_mask_and_matches_the_reference(cases):
    ckpt, out = cases.get("mra")
    session = load(out)
    vocab = session.config["vocab_size"]
    ids = _ids(vocab, 2, 45)
    got = session.run(input_ids=ids.astype(np.int32))  # any integer dtype; attention_mask defaults to ones
    want = _reference(ckpt, input_ids=ids, attention_mask=np.ones_like(ids))
    assert set(got) == {"logits"}
    _close(got["logits"], want["logits"])


def test_fixed_length_model_is_padded_and_trimmed(cases):
    """Nystromformer's landmark graph has one fixed length: shorter inputs come back at their own length, equal to
    the reference run at that length (which pads the same way inside)."""
    ckpt, out = cases.get("nystromformer")
    session = load(out)
    fixed = session.manifest.length_rules.fixed_length
    assert fixed is not None and session.manifest.input("input_ids").dims[-1] == fixed
    ids = _ids(session.config["vocab_size"], 2, 3, 11)
    mask = np.ones_like(ids)
    mask[0, :, 8:] = 0
    ids[0, :, 8:] = session.config["pad_token_id"]
    got = session.run(input_ids=ids, attention_mask=mask)
    want = _reference(ckpt, input_ids=ids, attention_mask=mask)
    _close(got["logits"], want["logits"])  # (B, num_choices)
    with pytest.raises(RuntimeInputError, match="too long.*maximum of"):
        session.run(input_ids=_ids(session.config["vocab_size"], 1, 2, fixed + 1))


def test_decoder_prefill_then_steps(cases):
    """run() on a decoder without a past is a prefill; feeding present.* back continues it."""
    ckpt, out = cases.get("neox")
    session = load(out)
    ids = _ids(session.config["vocab_size"], 2, 9)
    mask = np.ones_like(ids)
    mask[1, :3] = 0
    first = session.run(input_ids=ids[:, :6], attention_mask=mask[:, :6])
    past = {e.input: first[e.output] for e in session.manifest.cache.entries}
    second = session.run(input_ids=ids[:, 6:], attention_mask=mask, **past)
    positions = position_ids_from_attention_mask(torch.from_numpy(mask)).numpy()
    want = _reference(ckpt, input_ids=ids, attention_mask=mask, position_ids=positions)["logits"]
    got = np.concatenate([first["logits"], second["logits"]], axis=1)
    real = mask.astype(bool)
    _close(got[real], want[real])


@pytest.mark.parametrize(("inputs", "message"), [
    ({"input_ids": np.zeros((1, 4)), }, "must hold integers"),
    ({"input_ids": np.zeros((4,), dtype=np.int64)}, "rank 1"),
    ({"input_ids": np.zeros((1, 4), dtype=np.int64), "inputs_embeds": np.zeros(3)}, "unknown input 'inputs_embeds'"),
    ({"attention_mask": np.ones((1, 4), dtype=np.int64)}, "'input_ids' is required"),
    ({"input_ids": np.zeros((1, 4), dtype=np.int64), "attention_mask": np.ones((1, 5), dtype=np.int64)},
     "attention_mask"),
    ({"input_ids": np.full((1, 4), 10**6, dtype=np.int64)}, "outside the vocabulary"),
    ({"input_ids": np.zeros((1, 4), dtype=np.int64), "attention_mask": np.full((1, 4), 2)}, "0 \\(padding\\) or 1"),
    ({"input_ids": np.zeros((1, 0), dtype=np.int64)}, "at least one token"),
    ({"input_ids": np.zeros((1, 4), dtype=np.int64), "past_key_values.0.key": np.zeros((1, 4, 0, 16), np.float32)},
     "all of the cache inputs or none"),
])
def test_bad_inputs_get_clear_errors(cases, inputs, message):
    _, out = cases.get("neox")
    with pytest.raises(RuntimeInputError, match=message):
        load(out).run(**inputs)


def test_too_long_and_backend_errors(cases):
    _, out = cases.get("neox")
    session = load(out)
    limit = session.manifest.length_rules.max_length
    with pytest.raises(RuntimeInputError, match=f"too long: {limit + 1} tokens > the model's maximum of {limit}"):
        session.run(input_ids=np.zeros((1, limit + 1), dtype=np.int64))
    with pytest.raises(BackendUnavailableError, match="tensorrt"):
        load(out, backend="tensorrt")
    with pytest.raises(BackendUnavailableError, match="onnxruntime-gpu"):
        load(out, providers=["CUDAExecutionProvider"])
    with pytest.raises(ValueError, match="unknown backend"):
        load(out, backend="tvm")


def test_tampered_export_is_refused(cases, tmp_path):
    import shutil

    from tensorkiln.runtime.manifest import ManifestError

    _, out = cases.get("mra")
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with open(copy / "model.onnx", "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\x00" * 8)
    with pytest.raises(ManifestError, match="model.onnx has sha256"):
        load(copy)


def test_run_is_thread_safe(cases):
    _, out = cases.get("mra")
    session = load(out, threads=1)
    vocab = session.config["vocab_size"]
    batches = [_ids(vocab, 1 + i % 3, 20 + 7 * i, seed=i) for i in range(12)]
    serial = [session.run(input_ids=ids)["logits"] for ids in batches]
    with ThreadPoolExecutor(max_workers=6) as pool:
        parallel = list(pool.map(lambda ids: session.run(input_ids=ids)["logits"], batches))
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------------------------- generate


def _greedy_reference(ckpt: Path, ids: np.ndarray, mask: np.ndarray, steps: int) -> np.ndarray:
    """Greedy decoding by full recomputation with the reference model (no cache)."""
    model = from_pretrained(ckpt)
    ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
    neox = model.config.model_type == "gpt_neox"
    with torch.no_grad():
        for _ in range(steps):
            kwargs = {"position_ids": position_ids_from_attention_mask(mask_t)} if neox else {}
            logits = model(input_ids=ids_t, attention_mask=mask_t, use_cache=False, **kwargs).logits[:, -1]
            ids_t = torch.cat([ids_t, logits.argmax(-1, keepdim=True)], dim=1)
            mask_t = torch.cat([mask_t, torch.ones_like(mask_t[:, :1])], dim=1)
    return ids_t.numpy()


@pytest.mark.parametrize("name", ["neox", "mega"])
def test_greedy_generation_equals_reference_recomputation(cases, name):
    ckpt, out = cases.get(name)
    session = load(out)
    ids = _ids(session.config["vocab_size"], 2, 5, seed=4)
    mask = np.ones_like(ids)
    mask[0, :2] = 0  # left padding
    ids[0, :2] = session.config.get("pad_token_id") or 0
    streamed = []
    got = session.generate(ids, 6, attention_mask=mask, ignore_eos=True, streamer=streamed.append)
    want = _greedy_reference(ckpt, ids, mask, 6)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.stack(streamed, axis=1), got[:, 5:])
    np.testing.assert_array_equal(np.stack(list(session.stream(ids, 6, attention_mask=mask, ignore_eos=True)), 1),
                                  got[:, 5:])


def test_eos_stops_and_pads_finished_rows(cases):
    _, out = cases.get("neox")
    session = load(out)
    ids = _ids(session.config["vocab_size"], 2, 4, seed=7)
    free = session.generate(ids, 5, ignore_eos=True)
    eos = int(free[0, 5])  # row 0's second new token
    got = session.generate(ids, 5, eos_token_id=eos, pad_token_id=0)
    ends = [int(np.flatnonzero(row[4:] == eos)[0]) + 1 if np.any(row[4:] == eos) else 5 for row in free]
    assert got.shape[1] == 4 + max(ends)  # generation stops once every row has emitted EOS
    for row, end in zip(range(2), ends):
        np.testing.assert_array_equal(got[row, :4 + end], free[row, :4 + end])
        assert np.all(got[row, 4 + end:] == 0)  # then pads


def test_sampling(cases):
    _, out = cases.get("neox")
    session = load(out)
    ids = _ids(session.config["vocab_size"], 3, 4, seed=2)
    greedy = session.generate(ids, 4, ignore_eos=True)
    assert np.array_equal(session.generate(ids, 4, do_sample=True, top_k=1, seed=0, ignore_eos=True), greedy)
    a = session.generate(ids, 4, do_sample=True, temperature=1.5, seed=11, ignore_eos=True)
    b = session.generate(ids, 4, do_sample=True, temperature=1.5, seed=11, ignore_eos=True)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(RuntimeInputError, match="temperature"):
        session.generate(ids, 2, do_sample=True, temperature=0)


def test_sampler_distribution():
    """The nucleus and top-k filters keep what they should, and sampling follows the softmax."""
    from tensorkiln.runtime.generate import Sampler

    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    draws = [int(Sampler(True, top_p=0.7, seed=s)(logits)[0]) for s in range(400)]
    assert set(draws) == {0, 1}  # 0.5 + 0.3 reaches 0.7: the rest is cut
    assert abs(draws.count(0) / 400 - 0.5 / 0.8) < 0.08
    draws = [int(Sampler(True, top_k=3, seed=s)(logits)[0]) for s in range(400)]
    assert set(draws) == {0, 1, 2}
    freq = np.bincount([int(Sampler(True, seed=s)(logits)[0]) for s in range(2000)], minlength=4) / 2000
    assert np.abs(freq - [0.5, 0.3, 0.15, 0.05]).max() < 0.04


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_new_tokens": 0}, "positive integer"),
    ({"max_new_tokens": 10**6}, "exceeds the model's maximum"),
    ({"max_new_tokens": 2, "attention_mask": np.array([[1, 1, 0, 0]])}, "padded on the right"),
])
def test_generate_errors(cases, kwargs, message):
    _, out = cases.get("neox")
    with pytest.raises(RuntimeInputError, match=message):
        load(out).generate(np.ones((1, 4), dtype=np.int64), **kwargs)


def test_generate_needs_a_causal_lm(cases):
    _, out = cases.get("mra")
    with pytest.raises(RuntimeInputError, match="causal LM"):
        load(out).generate(np.ones((1, 4), dtype=np.int64), 2)


def test_runtime_imports_and_runs_without_torch(cases):
    _, out = cases.get("mra")
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "from tensorkiln.runtime import load\n"
        f"s = load({str(out)!r})\n"
        "print(s.run(input_ids=np.ones((1, 7), dtype=np.int64))['logits'].shape)\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "(1, 7," in result.stdout
