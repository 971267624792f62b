"""Load test of tensorkiln models behind a real Triton server on 127.0.0.1: concurrent clients, a fixed number of
requests each, a time cap; every answer is checked against the local runtime; prints a markdown table.

    python scripts/triton_load.py EXPORT_DIR [EXPORT_DIR ...] [--clients 8] [--requests 50] [--time-cap 120]
                                  [--max-new-tokens 8] [--instances 1] [--json FILE]

For each export it writes a Python-backend repository (``kiln triton --backend python``) in a temporary folder,
serves it with the tritonserver of scripts/triton_local.py, and drives it: encoders over HTTP (``tritonclient.http``)
with a fixed set of inputs of a few shapes, causal LMs over gRPC streaming (``tritonclient.grpc``, greedy,
``ignore_eos``, ``--max-new-tokens`` per request). Each response must equal the local ``Session.run`` / ``generate``
exactly. The baseline, measured in the same run: the same calls and checks on the local runtime in this process, one
thread per client and no server. The table gives, per model and path, throughput (completed requests per second of
wall time) and its ratio to the baseline's, p50/p99 latency, and how many requests Triton ran per model execution
(its dynamic batching), with the machine's load average. tests/test_triton_server.py runs the same code.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import triton_local  # noqa: E402

from tensorkiln.runtime import Session, load  # noqa: E402
from tensorkiln.runtime.triton import write_repository  # noqa: E402
from tensorkiln.runtime.triton_config import GENERATION_PARAMETERS, TOKEN_OUTPUT  # noqa: E402

LOCAL = "local runtime"
NUMPY_TO_TRITON = {"int64": "INT64", "int32": "INT32", "float64": "FP64", "float32": "FP32", "bool": "BOOL"}
PARAMETER_DTYPES = {name: {"TYPE_INT32": np.int32, "TYPE_INT64": np.int64, "TYPE_FP64": np.float64,
                           "TYPE_BOOL": np.bool_}[kind] for name, kind, _ in GENERATION_PARAMETERS}


@dataclasses.dataclass
class LoadResult:
    model: str
    protocol: str
    clients: int
    requests: int
    latencies_s: list[float]
    failures: list[str]
    wall_s: float
    tokens_per_request: int = 0
    mean_batch: float | None = None

    def summary(self) -> dict:
        done = len(self.latencies_s)
        latencies = np.array(self.latencies_s or [np.nan]) * 1e3
        return {"model": self.model, "path": self.protocol, "clients": self.clients,
                "requests": self.clients * self.requests, "completed": done, "failed": len(self.failures),
                "wall_s": round(self.wall_s, 2), "throughput_rps": round(done / self.wall_s, 1),
                "tokens_per_s": round(done * self.tokens_per_request / self.wall_s, 1),
                "p50_ms": round(float(np.percentile(latencies, 50)), 2),
                "p99_ms": round(float(np.percentile(latencies, 99)), 2),
                "mean_batch": None if self.mean_batch is None else round(self.mean_batch, 2)}


def run_load(model: str, protocol: str, clients: int, requests: int, time_cap_s: float,
             make_client: Callable[[int], tuple[Callable[[int], None], Callable[[], None]]]) -> LoadResult:
    """``clients`` threads, each with its own connection from ``make_client(index)`` -> (call, close), call
    ``call(i)`` for i < ``requests`` one after another; ``call`` sends one request and raises unless the answer is
    right. A request not sent before the time cap counts as failed. Returns latencies and failures."""
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + time_cap_s

    def client(index: int) -> None:
        try:
            call, close = make_client(index)
        except Exception as exc:
            with lock:
                failures.append(f"client {index}: could not connect: {exc!r}")
            return
        try:
            for i in range(requests):
                if time.monotonic() > deadline:
                    with lock:
                        failures.append(f"client {index}: {requests - i} requests not sent within {time_cap_s} s")
                    return
                start = time.perf_counter()
                try:
                    call(i)
                except Exception as exc:
                    with lock:
                        failures.append(f"client {index} request {i}: {exc!r}"[:500])
                    continue
                with lock:
                    latencies.append(time.perf_counter() - start)
        finally:
            close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()) + 30)
    wall = time.perf_counter() - start
    if any(t.is_alive() for t in threads):
        failures.append("clients still running after the time cap")
    return LoadResult(model, protocol, clients, requests, latencies, failures, wall)


# ----------------------------------------------------------------------------------------------- cases


def encoder_cases(session: Session, count: int = 8, seed: int = 0) -> list[tuple[dict, dict]]:
    """(inputs, expected outputs) of a few shapes, some with padding; expected from the local ``Session.run``."""
    rng = np.random.default_rng(seed)
    vocab = int(session.config["vocab_size"])
    cases = []
    for i in range(count):
        batch, length = 1 + i % 2, (8, 16, 24, 40)[i % 4]
        ids = rng.integers(1, vocab, size=(batch, length), dtype=np.int64)
        mask = np.ones_like(ids)
        mask[-1, length - i:] = 0  # the last row padded on the right by i tokens
        inputs = {"input_ids": ids, "attention_mask": mask}
        cases.append((inputs, session.run(**inputs)))
    return cases


def generation_cases(session: Session, max_new_tokens: int, count: int = 4, seed: int = 0) -> list[tuple]:
    """(ids, mask, options, expected new tokens (batch, steps)) of greedy runs, some left-padded."""
    rng = np.random.default_rng(seed)
    vocab = int(session.config["vocab_size"])
    cases = []
    for i in range(count):
        batch, length = 1 + i % 2, 4 + 2 * i
        ids = rng.integers(1, vocab, size=(batch, length), dtype=np.int64)
        mask = np.ones_like(ids)
        mask[0, : i % 3] = 0  # the first row padded on the left
        options = {"ignore_eos": True}
        expected = session.generate(ids, max_new_tokens, attention_mask=mask, **options)[:, length:]
        cases.append((ids, mask, {"max_new_tokens": max_new_tokens, **options}, expected))
    return cases


# ----------------------------------------------------------------------------------------------- clients


def http_inputs(httpclient, inputs: dict[str, np.ndarray]) -> list:
    entries = []
    for name, value in inputs.items():
        entry = httpclient.InferInput(name, list(value.shape), NUMPY_TO_TRITON[value.dtype.name])
        entry.set_data_from_numpy(value)
        entries.append(entry)
    return entries


def generation_inputs(grpcclient, ids: np.ndarray, mask: np.ndarray | None, options: dict) -> list:
    """gRPC inputs of one generation request: the prompt, its mask, and one-value parameter tensors."""
    values = {"input_ids": ids.astype(np.int64)}
    if mask is not None:
        values["attention_mask"] = mask.astype(np.int64)
    for name, value in options.items():
        values[name] = np.array([value], dtype=PARAMETER_DTYPES[name])
    entries = []
    for name, value in values.items():
        entry = grpcclient.InferInput(name, list(value.shape), NUMPY_TO_TRITON[value.dtype.name])
        entry.set_data_from_numpy(value)
        entries.append(entry)
    return entries


class GenerationStream:
    """One gRPC stream to a decoupled model; :meth:`generate` sends a request and collects its step responses."""

    def __init__(self, url: str):
        import tritonclient.grpc as grpcclient

        self.grpc = grpcclient
        self.client = grpcclient.InferenceServerClient(url)
        self.responses: queue.Queue = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self.responses.put((result, error)))
        self.count = 0

    def generate(self, model: str, ids: np.ndarray, mask: np.ndarray | None, options: dict,
                 timeout_s: float = 120) -> list[np.ndarray]:
        """Each step's tokens, (batch,), in order; raises the server's error if it sent one."""
        self.count += 1
        self.client.async_stream_infer(model, generation_inputs(self.grpc, ids, mask, options),
                                       request_id=str(self.count), enable_empty_final_response=True)
        steps = []
        while True:
            result, error = self.responses.get(timeout=timeout_s)
            if error is not None:
                raise RuntimeError(f"server error: {error.message()}")
            response = result.get_response()
            if response.id != str(self.count):
                raise RuntimeError(f"a response of request {response.id} arrived during request {self.count}")
            tokens = result.as_numpy(TOKEN_OUTPUT)
            if tokens is not None and tokens.size:
                steps.append(tokens)
            if response.parameters["triton_final_response"].bool_param:
                return steps

    def close(self) -> None:
        self.client.stop_stream()
        self.client.close()


def encoder_client(url: str, model: str, cases: list[tuple[dict, dict]]):
    def make(index: int):
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(url)

        def call(i: int) -> None:
            inputs, expected = cases[(index + i) % len(cases)]
            result = client.infer(model, http_inputs(httpclient, inputs))
            for name, want in expected.items():
                got = result.as_numpy(name)
                if got is None or got.shape != want.shape or not np.array_equal(got, want):
                    raise AssertionError(f"{name} differs from the local run")
        return call, client.close
    return make


def generation_client(url: str, model: str, cases: list[tuple]):
    def make(index: int):
        stream = GenerationStream(url)

        def call(i: int) -> None:
            ids, mask, options, expected = cases[(index + i) % len(cases)]
            steps = stream.generate(model, ids, mask, options)
            if len(steps) != expected.shape[1] or not np.array_equal(np.stack(steps, axis=1), expected):
                raise AssertionError("generated tokens differ from the local generate")
        return call, stream.close
    return make


def local_client(session: Session, cases: list[tuple]):
    """The baseline: the same calls and checks on the local runtime, one thread per client, no server."""
    def make(index: int):
        def call(i: int) -> None:
            case = cases[(index + i) % len(cases)]
            if session.is_causal_lm:
                ids, mask, options, expected = case
                options = {k: v for k, v in options.items() if k != "max_new_tokens"}
                got = {"tokens": session.generate(ids, expected.shape[1], attention_mask=mask,
                                                  **options)[:, ids.shape[1]:]}
                expected = {"tokens": expected}
            else:
                inputs, expected = case
                got = session.run(**inputs)
            if any(not np.array_equal(got[name], want) for name, want in expected.items()):
                raise AssertionError("the local run differs from the expected answer")
        return call, lambda: None
    return make


def mean_batch(url: str, model: str) -> float | None:
    """Requests per model execution, from Triton's statistics: above 1 where the dynamic batcher merged requests."""
    import tritonclient.http as httpclient

    with_stats = httpclient.InferenceServerClient(url)
    try:
        stats = with_stats.get_inference_statistics(model_name=model)["model_stats"][0]
    finally:
        with_stats.close()
    executions = int(stats.get("execution_count", 0))
    return int(stats.get("inference_count", 0)) / executions if executions else None


def table(results: list[LoadResult], instances: int = 1) -> str:
    """Markdown: one row per model and path, each server row with its throughput against the local baseline's."""
    rows = ["| model | path | clients x requests | completed | failed | wall s | req/s | vs local | tokens/s | "
            "p50 ms | p99 ms | requests per execution |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    local = {r.model: r.summary()["throughput_rps"] for r in results if r.protocol == LOCAL}
    for result in results:
        s = result.summary()
        ratio = s["throughput_rps"] / local[s["model"]] if local.get(s["model"]) else float("nan")
        rows.append(f"| {s['model']} | {s['path']} | {s['clients']} x {s['requests'] // s['clients']} | "
                    f"{s['completed']} | {s['failed']} | {s['wall_s']} | {s['throughput_rps']} | {ratio:.2f}x | "
                    f"{s['tokens_per_s'] or '-'} | {s['p50_ms']} | {s['p99_ms']} | {s['mean_batch'] or '-'} |")
    load1, load5, _ = os.getloadavg()
    rows.append(f"\n{os.cpu_count()} CPUs, load average {load1:.2f} / {load5:.2f} (1 / 5 min) after the run; "
                f"tritonserver 2.51 (nvidia-pytriton 0.7.0), Python backend, {instances} model instance(s), "
                "127.0.0.1")
    return "\n".join(rows)


def measure(export_dir: Path, workdir: Path, args: argparse.Namespace) -> list[LoadResult]:
    """The local baseline, then the same load through a served repository (see the module docstring)."""
    install = triton_local.prepare()
    session = load(export_dir)
    name = export_dir.name.replace("-", "_")
    write_repository(export_dir, workdir / "repo", name=name, backend="python", instances=args.instances,
                     python_path=list(install.python_path))
    if session.is_causal_lm:
        cases = generation_cases(session, args.max_new_tokens)
        protocol, make = "triton grpc stream", lambda server: generation_client(server.grpc_url, name, cases)
    else:
        cases = encoder_cases(session)
        protocol, make = "triton http", lambda server: encoder_client(server.http_url, name, cases)
    results = [run_load(name, LOCAL, args.clients, args.requests, args.time_cap, local_client(session, cases))]
    with triton_local.Server(install, workdir / "repo", workdir / "server.log") as server:
        results.append(run_load(name, protocol, args.clients, args.requests, args.time_cap, make(server)))
        results[-1].mean_batch = mean_batch(server.http_url, name)
    for result in results:
        result.tokens_per_request = args.max_new_tokens if session.is_causal_lm else 0
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("exports", nargs="+", type=Path, help="folders written by `kiln export`")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=50, help="requests per client")
    parser.add_argument("--time-cap", type=float, default=120.0, help="seconds per model")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--instances", type=int, default=1, help="model instances in the server")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    results = []
    for export_dir in args.exports:
        with tempfile.TemporaryDirectory(prefix="triton-load-") as workdir:
            results += measure(export_dir, Path(workdir), args)
    print(table(results, args.instances))
    for result in results:
        for failure in result.failures[:10]:
            print(f"{result.model}: {failure}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps([r.summary() for r in results], indent=2) + "\n")
    return 1 if any(r.failures for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
