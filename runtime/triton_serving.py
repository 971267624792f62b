"""The tensorkiln runtime as a Triton Python-backend model (found by runtime/triton_python_model.py). Torch-free.

:func:`create` loads ``MODEL/1/export`` with :func:`tensorkiln.runtime.load` (its default backend) and returns one of:

- :class:`Encoder`: ``execute`` gets the requests Triton's dynamic batcher gathered. Where the model's rows are
  independent (the config's ``max_batch_size`` > 0), requests whose inputs agree in names, dtypes and per-row shapes
  are concatenated along the batch axis, run as one ``Session.run`` and split back. A request that breaks the
  runtime's input rules gets its own error; the rest of its batch still runs.
- :class:`Generator` (decoupled): each request is a whole generation that ``Session.stream`` runs in a worker thread
  (at most ``tensorkiln.max_generations`` per instance at once), so the KV cache stays on the server. One response
  per step carries that step's tokens, shape (batch,), and, when the export has a tokenizer, the text they add;
  an empty response flagged final closes the stream. A cancelled request stops at its next step.

``pb_utils`` (Triton's ``triton_python_backend_utils``) is passed in rather than imported, so this module imports
outside a Triton stub. Checked against: tritonserver 2.51's Python backend (tests/test_triton_server.py, outputs
equal to local ``Session.run`` / ``generate``).
"""

from __future__ import annotations

import json
import os
import threading
import traceback
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BackendUnavailableError, KilnError, RuntimeInputError
from .session import Session, load
from .triton_config import EXPORT_FOLDER, GENERATION_PARAMETERS, TEXT_OUTPUT, TOKEN_OUTPUT

#: How a generation parameter's value is read from its one-element tensor.
PARAMETER_TYPES = {"max_new_tokens": int, "do_sample": bool, "temperature": float, "top_k": int, "top_p": float,
                   "seed": int, "ignore_eos": bool}
assert set(PARAMETER_TYPES) == {name for name, _, _ in GENERATION_PARAMETERS}


def check_tensor_exchange(pb_utils) -> None:
    """Refuse to serve when the stub cannot pass tensors through with this numpy: Triton 2.51's stub is built for
    numpy 1.x, and with numpy 2 its tensors come back wrong-sized or zeroed (seen with the nvidia-pytriton wheel)."""
    probe = np.arange(6, dtype=np.float32).reshape(2, 3)
    back = pb_utils.Tensor.from_dlpack("probe", pb_utils.Tensor("probe", probe).to_dlpack()).as_numpy()
    if back.shape != probe.shape or not np.array_equal(back, probe):
        raise BackendUnavailableError(
            f"this Triton Python backend stub cannot exchange tensors with numpy {np.__version__} (a probe tensor "
            f"came back as {back.tolist()}): it was built for numpy 1.x. Put numpy<2 first on the stub's path "
            "(kiln triton --python-path, or TENSORKILN_PYTHONPATH)")


def create(args: dict, pb_utils) -> Encoder | Generator:
    """The model for Triton's ``initialize(args)``: an :class:`Encoder`, or a :class:`Generator` if decoupled."""
    check_tensor_exchange(pb_utils)
    config = json.loads(args["model_config"])
    parameters = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
    threads = int(parameters["tensorkiln.threads"]) if parameters.get("tensorkiln.threads") else None
    session = load(Path(args["model_repository"]) / str(args["model_version"]) / EXPORT_FOLDER, threads=threads)
    _log(pb_utils, "info", f"tensorkiln serves {session!r} as {config.get('name')!r}")
    if config.get("model_transaction_policy", {}).get("decoupled", False):
        streams_text = any(output["name"] == TEXT_OUTPUT for output in config.get("output", []))
        workers = int(parameters.get("tensorkiln.max_generations", "4"))
        return Generator(session, pb_utils, workers=workers, streams_text=streams_text)
    return Encoder(session, pb_utils, batched=int(config.get("max_batch_size", 0)) > 0)


def _log(pb_utils, level: str, message: str) -> None:
    logger = getattr(pb_utils, "Logger", None)
    if logger is not None:
        getattr(logger, f"log_{level}")(message)


def _error_response(pb_utils, exc: BaseException):
    """A response carrying ``exc``: its own message for a :class:`KilnError`, a logged traceback otherwise."""
    if isinstance(exc, KilnError):
        return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(exc)))
    _log(pb_utils, "error", "tensorkiln: " + "".join(traceback.format_exception(exc)))
    return pb_utils.InferenceResponse(output_tensors=[],
                                      error=pb_utils.TritonError(f"internal error in tensorkiln: {exc!r}"))


class Encoder:
    """Runs each gathered request, merging those that can share one ``Session.run``."""

    def __init__(self, session: Session, pb_utils, *, batched: bool):
        self.session, self.pb, self.batched = session, pb_utils, batched

    def _inputs(self, request) -> dict[str, np.ndarray]:
        inputs = {}
        for name in self.session.input_names:
            tensor = self.pb.get_input_tensor_by_name(request, name)
            if tensor is not None:
                inputs[name] = tensor.as_numpy()
        return inputs

    def _response(self, outputs: dict[str, np.ndarray]):
        return self.pb.InferenceResponse(
            output_tensors=[self.pb.Tensor(name, np.ascontiguousarray(value)) for name, value in outputs.items()])

    def execute(self, requests: Sequence) -> list:
        responses: list = [None] * len(requests)
        groups: dict[Any, list[tuple[int, dict[str, np.ndarray]]]] = {}
        for index, request in enumerate(requests):
            inputs = self._inputs(request)
            key = tuple(sorted((n, a.dtype.str, a.shape[1:]) for n, a in inputs.items())) if self.batched else index
            groups.setdefault(key, []).append((index, inputs))
        for members in groups.values():
            self._run_group(members, responses)
        return responses

    def _run_group(self, members: list[tuple[int, dict[str, np.ndarray]]], responses: list) -> None:
        if len(members) > 1:
            try:
                merged = {name: np.concatenate([inputs[name] for _, inputs in members])
                          for name in members[0][1]}
                outputs = self.session.run(**merged)
            except Exception:
                outputs = None  # one request broke a rule: run each alone so only that one fails
            if outputs is not None:
                bounds = np.cumsum([len(next(iter(inputs.values()))) for _, inputs in members])[:-1]
                parts = {name: np.split(value, bounds) for name, value in outputs.items()}
                for row, (index, _) in enumerate(members):
                    responses[index] = self._response({name: part[row] for name, part in parts.items()})
                return
        for index, inputs in members:
            try:
                responses[index] = self._response(self.session.run(**inputs))
            except Exception as exc:
                responses[index] = _error_response(self.pb, exc)

    def finalize(self) -> None:
        pass


class TextDeltas:
    """Streamed text of each row: what decoding all its tokens so far adds to the text already sent. Text that ends
    in U+FFFD (a character split across tokens) waits for the next token; a row's text stops at its first EOS.
    Joined, the pieces are the decoded text wherever the tokenizer's decoding of a prefix is a prefix of the whole."""

    def __init__(self, tokenizer, rows: int, eos: Sequence[int]):
        self.tokenizer, self.eos = tokenizer, {int(e) for e in eos}
        self.ids: list[list[int]] = [[] for _ in range(rows)]
        self.sent = [""] * rows
        self.done = [False] * rows

    def step(self, tokens: np.ndarray) -> list[str]:
        for row, token in enumerate(tokens.tolist()):
            if not self.done[row]:
                self.done[row] = token in self.eos
                if not self.done[row]:
                    self.ids[row].append(token)
        return [self._delta(row, final=False) for row in range(len(self.ids))]

    def flush(self) -> list[str]:
        """What is still held back, once generation ends."""
        return [self._delta(row, final=True) for row in range(len(self.ids))]

    def _delta(self, row: int, *, final: bool) -> str:
        text = self.tokenizer.decode(self.ids[row])
        if text.endswith("\ufffd") and not final:
            return ""
        common = os.path.commonprefix([text, self.sent[row]])
        self.sent[row] = text
        return text[len(common):]


class Generator:
    """A decoupled model: each request generates in a worker thread and streams one response per step."""

    def __init__(self, session: Session, pb_utils, *, workers: int, streams_text: bool, tokenizer=None):
        self.session, self.pb = session, pb_utils
        if streams_text and tokenizer is None:
            tokenizer = session.tokenizer  # the export's (runtime/tokenizer.py); a clear error when unusable
        self.tokenizer = tokenizer if streams_text else None
        if streams_text and self.tokenizer is None:
            raise BackendUnavailableError("the configuration streams text, but this tensorkiln's session has no "
                                          "tokenizer: upgrade tensorkiln, or rewrite the repository")
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tensorkiln-generate")
        self.closing = threading.Event()

    def _array(self, request, name: str) -> np.ndarray | None:
        tensor = self.pb.get_input_tensor_by_name(request, name)
        return None if tensor is None else tensor.as_numpy()

    def parse(self, request) -> tuple[np.ndarray, int, dict[str, Any]]:
        """(prompt ids, max_new_tokens, the other ``stream`` options) of a request."""
        options: dict[str, Any] = {}
        for name, cast in PARAMETER_TYPES.items():
            value = self._array(request, name)
            if value is not None:
                if value.size != 1:
                    raise RuntimeInputError(f"{name} holds one value per request, got shape {value.shape}")
                options[name] = cast(value.reshape(-1)[0].item())
        if "max_new_tokens" not in options:
            raise RuntimeInputError("max_new_tokens is required: send it as an INT32 tensor of shape [1]")
        mask = self._array(request, "attention_mask")
        if mask is not None:
            options["attention_mask"] = mask
        eos = self._array(request, "eos_token_id")
        if eos is not None:
            options["eos_token_id"] = [int(e) for e in eos.reshape(-1)]
        return self._array(request, "input_ids"), options.pop("max_new_tokens"), options

    def execute(self, requests: Sequence) -> None:
        for request in requests:
            sender = request.get_response_sender()
            try:
                ids, max_new_tokens, options = self.parse(request)
            except Exception as exc:
                sender.send(_error_response(self.pb, exc), flags=self.pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                continue
            self.pool.submit(self._generate, request, sender, ids, max_new_tokens, options)
        return None

    def _eos(self, options: dict[str, Any]) -> list[int]:
        if options.get("ignore_eos"):
            return []
        eos = options.get("eos_token_id", self.session.config.get("eos_token_id"))
        return [] if eos is None else list(np.atleast_1d(eos).tolist())

    def _generate(self, request, sender, ids: np.ndarray, max_new_tokens: int, options: dict[str, Any]) -> None:
        final = self.pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        cancelled = getattr(request, "is_cancelled", lambda: False)
        try:
            text = TextDeltas(self.tokenizer, ids.shape[0], self._eos(options)) if self.tokenizer else None
            for tokens in self.session.stream(ids, max_new_tokens, **options):
                if cancelled() or self.closing.is_set():
                    break
                outputs = [self.pb.Tensor(TOKEN_OUTPUT, tokens.astype(np.int64))]
                if text is not None:
                    outputs.append(self.pb.Tensor(TEXT_OUTPUT, _strings(text.step(tokens))))
                sender.send(self.pb.InferenceResponse(output_tensors=outputs))
            rest = text.flush() if text is not None else []
            if any(rest):
                empty = self.pb.Tensor(TOKEN_OUTPUT, np.zeros(0, dtype=np.int64))
                sender.send(self.pb.InferenceResponse(output_tensors=[empty, self.pb.Tensor(TEXT_OUTPUT,
                                                                                            _strings(rest))]))
            sender.send(flags=final)
        except Exception as exc:
            try:
                sender.send(_error_response(self.pb, exc), flags=final)
            except Exception:  # the client is gone: nothing left to tell it
                _log(self.pb, "warn", f"tensorkiln: could not send an error to a client: {exc!r}")

    def finalize(self) -> None:
        self.closing.set()
        self.pool.shutdown(wait=True)


def _strings(texts: list[str]) -> np.ndarray:
    return np.array([t.encode("utf-8") for t in texts], dtype=np.object_)
