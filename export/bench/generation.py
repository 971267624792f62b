"""The generation section: greedy decoding speed of the causal LMs, with the cache, at batch 1.

ORT decodes through :meth:`~tensorkiln.runtime.session.Session.stream` over the exported cache; the reference runs the
same greedy loop over its own ``past_key_values``. Prefill is the prompt's pass (up to the first token); decode
tokens/s counts the tokens after the first. The row records whether both produced the same tokens.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from tensorkiln.runtime.session import load

from .backends import Reference, token_ids
from .options import BenchOptions, Target, log


def reference_stream(model: Any, prompt: np.ndarray, new_tokens: int) -> Iterator[np.ndarray]:
    """Greedy decoding with the reference's own cache, one step's tokens (batch,) at a time."""
    import torch

    ids = torch.from_numpy(prompt)
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, use_cache=True)
        for step in range(new_tokens):
            tokens = out.logits[:, -1].argmax(dim=-1)  # (B,)
            yield tokens.numpy()
            if step + 1 == new_tokens:
                return
            mask = torch.cat([mask, torch.ones_like(tokens)[:, None]], dim=1)
            out = model(input_ids=tokens[:, None], attention_mask=mask, past_key_values=out.past_key_values,
                        use_cache=True)


def _time_stream(stream: Iterator[np.ndarray]) -> tuple[np.ndarray, float, float]:
    """(tokens (batch, new), prefill seconds, seconds of the steps after the first token)."""
    start = time.perf_counter()
    first = next(stream)
    prefill = time.perf_counter() - start
    rest = list(stream)
    decode = time.perf_counter() - start - prefill
    return np.stack([first, *rest], axis=1), prefill, decode


def bench_generation(target: Target, options: BenchOptions) -> dict[str, Any] | None:
    """Greedy generation tokens/s: ORT with the exported cache vs the reference with its own."""
    if target.manifest.head != "ForCausalLM":
        return None
    log(options, f"{target.name}: generation, {options.new_tokens} tokens")
    session = load(target.export, threads=options.threads, check_files=False, kernels=options.kernels)
    reference = Reference(target.checkpoint, options.threads)
    prompt_length = min(options.prompt, target.manifest.length_rules.max_length - options.new_tokens)
    prompt = token_ids(reference.vocab_size, 1, prompt_length)
    runs = {
        "onnxruntime": lambda: session.stream(prompt, options.new_tokens, ignore_eos=True),
        "reference": lambda: reference_stream(reference.model, prompt, options.new_tokens),
    }
    results: dict[str, list] = {name: [] for name in runs}
    tokens: dict[str, np.ndarray] = {}
    for name, run in runs.items():  # warm-up
        tokens[name], _, _ = _time_stream(run())
    for round_ in range(max(1, min(options.repeats, 3))):
        for name in (list(runs) if round_ % 2 == 0 else list(runs)[::-1]):
            _, prefill, decode = _time_stream(runs[name]())
            results[name].append((prefill, decode))
    backends = {}
    for name, pairs in results.items():
        prefill = statistics.median(p for p, _ in pairs)
        decode = statistics.median(d for _, d in pairs)
        backends[name] = {"prefill_ms": 1000 * prefill,
                          "decode_tokens_per_s": (options.new_tokens - 1) / decode if decode > 0 else None,
                          "total_tokens_per_s": options.new_tokens / (prefill + decode)}
    ort_rate, ref_rate = backends["onnxruntime"]["decode_tokens_per_s"], backends["reference"]["decode_tokens_per_s"]
    return {"model": target.name, "hf_class": target.manifest.hf_class, "batch": 1, "prompt": prompt_length,
            "new_tokens": options.new_tokens, "cache": target.manifest.cache is not None, "backends": backends,
            "decode_speedup_onnxruntime_vs_reference": ort_rate / ref_rate if ort_rate and ref_rate else None,
            "same_tokens": bool(np.array_equal(tokens["onnxruntime"], tokens["reference"]))}
