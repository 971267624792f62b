"""A real Triton server serving tensorkiln: the tritonserver 2.51 of the ``nvidia-pytriton`` wheel, set up by
scripts/triton_local.py under build/cache/triton (downloaded from PyPI on first use), on 127.0.0.1 with free ports.

The Python-backend repositories of a tiny encoder (batched), a tiny batch-dependent encoder (Nystromformer, served
unbatched) and a tiny causal LM (decoupled, generating on the server) are loaded; answers through ``tritonclient``
(HTTP for the encoders, gRPC streaming for the decoder) must equal the local ``Session.run`` / ``generate``
exactly. Then a bounded load test (scripts/triton_load.py: 8 clients x 50 requests per model, a time cap, every
answer checked) must see no failure; its figures are printed. The server's whole process group is stopped in the
fixture's teardown, whatever happened; a server that fails to start is stopped too (checked below).
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import numpy as np
import pytest

from tensorkiln.runtime import load
from tensorkiln.runtime.triton import write_repository

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import triton_load  # noqa: E402
import triton_local  # noqa: E402

pytestmark = pytest.mark.slow
httpclient = pytest.importorskip("tritonclient.http")
LOAD_CLIENTS, LOAD_REQUESTS, LOAD_TIME_CAP_S, NEW_TOKENS = 8, 50, 120.0, 8
MODELS = {"encoder": ("mra", "ForSequenceClassification"), "unbatched": ("nystromformer", "ForMaskedLM"),
          "generator": ("gpt_neox", "ForCausalLM")}


@pytest.fixture(scope="module")
def install():
    if sys.platform != "linux" or platform.machine() != "x86_64":
        pytest.skip("the nvidia-pytriton wheel's tritonserver is built for x86_64 Linux")
    return triton_local.prepare()


@pytest.fixture(scope="module")
def served(exports, install, tmp_path_factory):
    """(server, {model name: local session}) with every model of MODELS loaded; stopped at the end, always."""
    repo = tmp_path_factory.mktemp("triton-repository")
    sessions = {}
    for name, (model_type, head) in MODELS.items():
        export = exports.get(model_type, head)[1]
        write_repository(export, repo, name=name, backend="python", python_path=list(install.python_path))
        sessions[name] = load(export)
    server = triton_local.Server(install, repo, repo.parent / "server.log", models=tuple(MODELS))
    try:
        server.start()
        yield server, sessions
    finally:
        server.stop()


def _infer(server, model: str, inputs: dict[str, np.ndarray]):
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        return client.infer(model, triton_load.http_inputs(httpclient, inputs))
    finally:
        client.close()


def test_encoders_over_http_equal_the_local_runtime(served):
    server, sessions = served
    rng = np.random.default_rng(1)
    cases = [("encoder", {"input_ids": rng.integers(1, 100, (2, 19))}),
             ("encoder", {"input_ids": rng.integers(1, 100, (1, 40)),
                          "attention_mask": np.r_[np.ones(30), np.zeros(10)][None].astype(np.int64)}),
             ("unbatched", {"input_ids": rng.integers(5, 100, (2, 11))})]  # shorter than the fixed graph length
    for model, inputs in cases:
        result = _infer(server, model, {k: v.astype(np.int64) for k, v in inputs.items()})
        want = sessions[model].run(**inputs)
        for name, value in want.items():
            got = result.as_numpy(name)
            assert got is not None and got.shape == value.shape, (model, name)
            np.testing.assert_array_equal(got, value, err_msg=f"{model}: {name}")


def test_bad_requests_get_errors_and_the_server_keeps_serving(served):
    server, sessions = served
    with pytest.raises(Exception, match="outside the vocabulary"):
        _infer(server, "encoder", {"input_ids": np.full((1, 8), 10**6, dtype=np.int64)})
    stream = triton_load.GenerationStream(server.grpc_url)
    try:
        with pytest.raises(RuntimeError, match="exceeds the model's maximum"):
            stream.generate("generator", np.ones((1, 4), np.int64), None, {"max_new_tokens": 10**4})
        assert len(stream.generate("generator", np.ones((1, 4), np.int64), None, {"max_new_tokens": 2})) == 2
    finally:
        stream.close()
    assert _infer(server, "encoder", {"input_ids": np.ones((1, 8), np.int64)}).as_numpy("logits").shape == (1, 2)


def test_decoder_streams_the_local_generation_step_by_step(served):
    server, sessions = served
    session = sessions["generator"]
    ids = np.array([[0, 0, 11, 12, 13], [21, 22, 23, 24, 25]], dtype=np.int64)
    mask = (np.arange(5) >= np.array([[2], [0]])).astype(np.int64)  # the first prompt padded on the left
    stream = triton_load.GenerationStream(server.grpc_url)
    try:
        for options in ({"ignore_eos": True}, {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "seed": 5},
                        {"do_sample": True, "top_k": 5, "seed": 6, "ignore_eos": True}):
            steps = stream.generate("generator", ids, mask, {"max_new_tokens": NEW_TOKENS, **options})
            want = session.generate(ids, NEW_TOKENS, attention_mask=mask, **options)[:, ids.shape[1]:]
            assert len(steps) == want.shape[1], options  # one response per generated step
            np.testing.assert_array_equal(np.stack(steps, axis=1), want, err_msg=str(options))
    finally:
        stream.close()


def test_load_has_no_failures(served, capsys):
    server, sessions = served
    encoder_cases = triton_load.encoder_cases(sessions["encoder"])
    generation_cases = triton_load.generation_cases(sessions["generator"], NEW_TOKENS)
    results = [
        triton_load.run_load("encoder", triton_load.LOCAL, LOAD_CLIENTS, LOAD_REQUESTS, LOAD_TIME_CAP_S,
                             triton_load.local_client(sessions["encoder"], encoder_cases)),
        triton_load.run_load("encoder", "triton http", LOAD_CLIENTS, LOAD_REQUESTS, LOAD_TIME_CAP_S,
                             triton_load.encoder_client(server.http_url, "encoder", encoder_cases)),
        triton_load.run_load("generator", triton_load.LOCAL, LOAD_CLIENTS, LOAD_REQUESTS, LOAD_TIME_CAP_S,
                             triton_load.local_client(sessions["generator"], generation_cases)),
        triton_load.run_load("generator", "triton grpc stream", LOAD_CLIENTS, LOAD_REQUESTS, LOAD_TIME_CAP_S,
                             triton_load.generation_client(server.grpc_url, "generator", generation_cases)),
    ]
    results[1].mean_batch = triton_load.mean_batch(server.http_url, "encoder")
    for result in results[2:]:
        result.tokens_per_request = NEW_TOKENS
    with capsys.disabled():
        print("\n\nTriton load test (tests/test_triton_server.py)\n" + triton_load.table(results) + "\n")
    for result in results:
        assert not result.failures, result.failures[:5]
        assert len(result.latencies_s) == LOAD_CLIENTS * LOAD_REQUESTS


def test_onnxruntime_flavour_parses_and_a_failed_start_leaves_nothing_running(exports, install, tmp_path):
    """The wheel's server has no ONNX Runtime backend: loading the ONNX Runtime flavour must get past parsing its
    config.pbtxt and stop only there. The server then exits, and no process of its group may be left."""
    export = exports.get("mra", "ForSequenceClassification")[1]
    write_repository(export, tmp_path / "repo", name="ort_encoder", kind="KIND_CPU", instances=2, threads=1)
    server = triton_local.Server(install, tmp_path / "repo", tmp_path / "server.log", models=("ort_encoder",))
    with pytest.raises(RuntimeError, match="did not become ready"):
        server.start(timeout_s=120)
    log = (tmp_path / "server.log").read_text()
    assert "unable to find backend library for backend 'onnxruntime'" in log, log[-3000:]
    with pytest.raises(ProcessLookupError):
        os.killpg(server.pid, 0)
