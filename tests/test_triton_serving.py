"""The Python-backend model (runtime/triton_serving.py) without a server: Triton's ``pb_utils`` replaced by a
stand-in that holds tensors and records responses, so batching, streaming and errors run in the default suite.

Oracles: the local ``Session.run`` / ``generate`` of the same export, request by request, and Python's own UTF-8
decoder for the streamed text (a byte-level stand-in tokenizer). The real server runs the same code in
tests/test_triton_server.py (slow).
"""

from __future__ import annotations

import time
import types

import numpy as np
import pytest

from tensorkiln.runtime import load
from tensorkiln.runtime.errors import BackendUnavailableError
from tensorkiln.runtime.triton_serving import Encoder, Generator, TextDeltas, check_tensor_exchange

FINAL = 1


class Tensor:
    def __init__(self, name, value):
        self.tensor_name, self.value = name, np.asarray(value)

    def as_numpy(self):
        return self.value

    def to_dlpack(self):
        return self.value

    @classmethod
    def from_dlpack(cls, name, capsule):
        return cls(name, capsule)


class Response:
    def __init__(self, output_tensors=(), error=None):
        self.outputs = {t.tensor_name: t.value for t in output_tensors}
        self.error = error


class Sender:
    def __init__(self):
        self.sent = []

    def send(self, response=None, flags=0):
        self.sent.append((response, flags))


def _wait_for_final(*senders: Sender, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(s.sent and s.sent[-1][1] == FINAL for s in senders):
        assert time.monotonic() < deadline, "no final response"
        time.sleep(0.01)


class Request(dict):
    def __init__(self, **inputs):
        super().__init__({name: Tensor(name, value) for name, value in inputs.items()})
        self.sender = Sender()

    def get_response_sender(self):
        return self.sender


PB_UTILS = types.SimpleNamespace(
    Tensor=Tensor, InferenceResponse=Response, TritonError=lambda message: message,
    get_input_tensor_by_name=lambda request, name: request.get(name), TRITONSERVER_RESPONSE_COMPLETE_FINAL=FINAL)


class ByteTokenizer:
    """Token i is the byte i % 256: a character may take several tokens, as with byte-level BPE."""

    def decode(self, ids):
        return bytes(i % 256 for i in ids).decode("utf-8", errors="replace")


def test_encoder_merges_compatible_requests_and_isolates_bad_ones(exports):
    session = load(exports.get("mra", "ForSequenceClassification")[1])
    rng = np.random.default_rng(0)
    requests = [Request(input_ids=rng.integers(1, 100, (2, 9))), Request(input_ids=rng.integers(1, 100, (1, 9))),
                Request(input_ids=rng.integers(1, 100, (1, 12)), attention_mask=np.ones((1, 12), np.int64)),
                Request(input_ids=np.full((1, 9), 10**6))]
    responses = Encoder(session, PB_UTILS, batched=True).execute(requests)
    assert "vocabulary" in responses[3].error and not responses[3].outputs  # only the bad request fails
    for request, response in zip(requests[:3], responses):
        want = session.run(**{name: tensor.value for name, tensor in request.items()})
        assert response.error is None and response.outputs.keys() == want.keys()
        for name, value in want.items():
            np.testing.assert_array_equal(response.outputs[name], value)
    merged = Encoder(session, PB_UTILS, batched=True).execute(requests[:2])  # one run of 3 rows, split back
    for request, response in zip(requests[:2], merged):
        np.testing.assert_array_equal(response.outputs["logits"],
                                      session.run(input_ids=request["input_ids"].value)["logits"])


def test_generator_streams_each_step_then_a_final_flag(exports):
    session = load(exports.get("gpt_neox", "ForCausalLM")[1])
    ids, mask = np.array([[0, 7, 8, 9], [3, 4, 5, 6]]), np.array([[0, 1, 1, 1], [1, 1, 1, 1]])
    request = Request(input_ids=ids, attention_mask=mask, max_new_tokens=np.array([5], np.int32),
                      do_sample=np.array([True]), seed=np.array([4]), top_k=np.array([20], np.int32),
                      ignore_eos=np.array([True]))
    no_length = Request(input_ids=ids)
    generator = Generator(session, PB_UTILS, workers=2, streams_text=False)
    assert generator.execute([request, no_length]) is None  # decoupled: responses go through the senders
    _wait_for_final(request.sender, no_length.sender)
    generator.finalize()
    steps, final = request.sender.sent[:-1], request.sender.sent[-1]
    assert final == (None, FINAL) and all(flags == 0 and r.error is None for r, flags in steps)
    want = session.generate(ids, 5, attention_mask=mask, do_sample=True, seed=4, top_k=20, ignore_eos=True)
    np.testing.assert_array_equal(np.stack([r.outputs["token_ids"] for r, _ in steps], axis=1), want[:, 4:])
    ((error, flags),) = no_length.sender.sent
    assert flags == FINAL and "max_new_tokens is required" in error.error


def test_generator_streams_text_that_joins_to_the_decoded_tokens(exports):
    session = load(exports.get("gpt_neox", "ForCausalLM")[1])
    ids = np.array([[5, 200, 226, 130], [1, 2, 3, 4]])
    greedy = session.generate(ids, 12, ignore_eos=True)[:, 4:]
    eos = int(greedy[0, 6])  # row 0 stops there; its text must end before that token
    request = Request(input_ids=ids, max_new_tokens=np.array([12], np.int32), eos_token_id=np.array([eos]))
    generator = Generator(session, PB_UTILS, workers=1, streams_text=True, tokenizer=ByteTokenizer())
    generator.execute([request])
    _wait_for_final(request.sender)
    generator.finalize()
    texts = [r.outputs["text"] for r, _ in request.sender.sent if r is not None]
    joined = ["".join(t[row].decode() for t in texts) for row in range(2)]
    for row in range(2):
        tokens = greedy[row].tolist()
        until_eos = tokens[: tokens.index(eos)] if eos in tokens else tokens
        assert joined[row] == ByteTokenizer().decode(until_eos)


def test_text_deltas_hold_back_split_characters():
    deltas = TextDeltas(ByteTokenizer(), rows=1, eos=[])
    euro = "€".encode()  # three bytes, three tokens
    pieces = [deltas.step(np.array([b]))[0] for b in [ord("a"), *euro, ord("b")]]
    assert pieces == ["a", "", "", "€", "b"]  # nothing half-decoded is ever sent


def test_a_stub_that_cannot_exchange_tensors_is_refused():
    check_tensor_exchange(PB_UTILS)  # a faithful exchange passes

    class Zeroing(Tensor):
        @classmethod
        def from_dlpack(cls, name, capsule):
            return cls(name, np.zeros_like(capsule))  # what Triton 2.51's stub does with numpy 2

    with pytest.raises(BackendUnavailableError, match="numpy<2"):
        check_tensor_exchange(types.SimpleNamespace(Tensor=Zeroing))
