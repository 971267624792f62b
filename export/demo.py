"""The main job (``kiln demo``): the whole pipeline on the five demo checkpoints, in one summary table.

For each demo preset: write its random-weight checkpoint (there are no model hubs here; a folder already present is
reused), export it (``kiln export``), prove the export matches the reference (``kiln parity``: Polygraphy's
comparator over several shapes with padding, the report written beside the export), then load it with the
torch-free runtime and time one forward pass; causal LMs also generate with the exported KV cache, and continue a
text prompt through the tokenizer the checkpoint carries (printed under the table: text in, text out; the weights
are random, so the text is too). A failure of one model is a row marked FAIL with its reason; the others still run.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from tensorkiln.reference.checkpoint import CONFIG_NAME
from tensorkiln.reference.presets import get_preset, init_checkpoint

from .specs import get_spec

GENERATED_TOKENS = 16
#: The demo's text prompt for the causal LMs.
DEMO_PROMPT = "The kiln by the river"


@dataclasses.dataclass(frozen=True)
class DemoRow:
    preset: str
    model_type: str
    hf_class: str = ""
    parameters_m: float = 0.0
    export_s: float = 0.0
    model_mb: float = 0.0
    custom_nodes: str = ""
    parity: str = ""  # a parity report status ("passed", "failed", "not run"), or "error"
    parity_shapes: int = 0
    worst_max_abs: float = float("nan")
    worst_nmse: float = float("nan")
    min_cosine: float = float("nan")
    latency_ms: float = float("nan")
    sequence: int = 0
    tokens_per_s: float | None = None
    sample: str = ""  # the causal LM's continuation of DEMO_PROMPT
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and self.parity == "passed"


def tiny_presets() -> tuple[str, ...]:
    from tensorkiln.reference.presets import DEMO_PRESETS

    return tuple("tiny-" + get_preset(name).model_type.replace("_", "-") for name in DEMO_PRESETS)


def max_length(config) -> int:
    """The longest input the model takes, from its export spec's length rules (Nystromformer's landmark branch
    stops at ``segment_means_seq_len``, MRA and the BERT-style models at ``max_position_embeddings``, ...)."""
    return get_spec(config.model_type).length_rules(config).max_length


def _progress(items, desc: str):
    from tqdm import tqdm

    return tqdm(items, desc=desc, file=sys.stderr, leave=False)


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up: ORT allocates its arenas and picks kernels on the first run
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def run_one(name: str, out_dir: Path, batch: int, seq: int, threads: int | None, repeats: int) -> DemoRow:
    from tensorkiln.reference.checkpoint import from_pretrained
    from tensorkiln.runtime import load

    from .exporter import export
    from .parity import default_report_dir, run_parity, write_report

    model_type = get_preset(name).model_type
    checkpoint = out_dir / "checkpoints" / name
    if not (checkpoint / CONFIG_NAME).is_file():
        init_checkpoint(name, checkpoint, seed=0)
    elif not (checkpoint / "tokenizer.json").is_file():
        _add_tokenizer(checkpoint)  # a folder from before the demo checkpoints had tokenizers
    exported = out_dir / "exports" / name
    start = time.perf_counter()
    manifest = export(checkpoint, exported, overwrite=True, progress=False)
    export_s = time.perf_counter() - start
    model = from_pretrained(checkpoint)
    parameters = sum(p.numel() for p in model.parameters()) / 1e6
    length = min(seq, max_length(model.config))
    del model

    report = run_parity(checkpoint, exported)
    write_report(report, default_report_dir(exported))
    rows = [row for check in report.checks for row in check.outputs]

    session = load(exported, threads=threads)
    rng = np.random.default_rng(0)
    ids = rng.integers(3, session.config["vocab_size"], size=(batch, length), dtype=np.int64)
    latency = _median_ms(lambda: session.run(input_ids=ids), repeats)
    tokens_per_s, sample = None, ""
    if session.manifest.cache is not None:
        prompt = ids[:, : max(1, min(length, session.manifest.length_rules.max_length - GENERATED_TOKENS))]
        start = time.perf_counter()
        out = session.generate(prompt, GENERATED_TOKENS, ignore_eos=True)
        tokens_per_s = batch * (out.shape[1] - prompt.shape[1]) / (time.perf_counter() - start)
        sample = session.generate(text=DEMO_PROMPT, max_new_tokens=GENERATED_TOKENS, return_full_text=False)

    model_bytes = sum((exported / f).stat().st_size for f in manifest.files if f.startswith("model.onnx"))
    return DemoRow(
        preset=name, model_type=model_type, hf_class=manifest.hf_class, parameters_m=parameters, export_s=export_s,
        model_mb=model_bytes / 2**20,
        custom_nodes=", ".join(f"{n.op_type} x{n.count}" for n in manifest.custom_nodes if n.domain == "tensorkiln"),
        parity=report.status, parity_shapes=len(report.checks),
        worst_max_abs=max((r.max_abs for r in rows), default=float("nan")),
        worst_nmse=max((r.nmse for r in rows), default=float("nan")),
        min_cosine=min((r.cosine for r in rows), default=float("nan")),
        latency_ms=latency, sequence=length, tokens_per_s=tokens_per_s, sample=sample,
        error="" if report.status != "failed" else "; ".join(report.failures()[:2]) or report.reason,
    )


def run_demo(out_dir: Path, presets: tuple[str, ...], batch: int = 1, seq: int = 128, threads: int | None = None,
             repeats: int = 3) -> list[DemoRow]:
    rows = []
    for name in _progress(presets, "kiln demo"):
        try:
            rows.append(run_one(name, out_dir, batch, seq, threads, repeats))
        except Exception as exc:  # one model's failure is its row; the table still shows the others
            traceback.print_exc(file=sys.stderr)
            rows.append(DemoRow(preset=name, model_type=get_preset(name).model_type, parity="error",
                                error=f"{type(exc).__name__}: {exc}".splitlines()[0]))
    return rows


def format_table(rows: list[DemoRow], batch: int) -> str:
    lines = [
        "| preset | head | params | export (s) | model.onnx | custom nodes | parity | shapes | worst max abs "
        "| worst NMSE | min cosine | ORT ms (batch, seq) | generate tok/s |",
        "|---|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.parity == "error":
            lines.append(f"| {r.preset} | {r.model_type} | | | | | **ERROR** | | | | | | |")
            continue
        status = r.parity if r.parity != "failed" else "**FAIL**"
        tokens = f"{r.tokens_per_s:.1f}" if r.tokens_per_s is not None else "-"
        lines.append(
            f"| {r.preset} | {r.hf_class} | {r.parameters_m:.1f}M | {r.export_s:.1f} | {r.model_mb:.0f} MB "
            f"| {r.custom_nodes or '-'} | {status} | {r.parity_shapes} | {r.worst_max_abs:.2g} | {r.worst_nmse:.2g} "
            f"| {r.min_cosine:.6f} | {r.latency_ms:.1f} ({batch}, {r.sequence}) | {tokens} |"
        )
    samples = [f"- {r.preset}: {DEMO_PROMPT!r} -> {r.sample!r}" for r in rows if r.sample]
    problems = [f"- {r.preset}: {r.error}" for r in rows if r.error]
    note = ("(random weights, so random text; the demo tokenizers are trained on a few KB of prose, so most ids of a "
            "full-size vocabulary are reserved entries such as <|reserved_12|>)")
    return "\n".join(lines + (["", f"text in, text out (greedy, {GENERATED_TOKENS} new tokens):", *samples, note]
                               if samples else []) + ([""] + problems if problems else []))


def _add_tokenizer(checkpoint: Path) -> None:
    """Write a demo tokenizer (and generation config) into an existing demo checkpoint folder."""
    import json

    from tensorkiln.reference.presets import text_files
    from tensorkiln.runtime.atomic import write_text

    config = json.loads((checkpoint / CONFIG_NAME).read_text())
    causal = any(name.endswith("ForCausalLM") for name in config.get("architectures") or [])
    for name, text in text_files(config, causal).items():
        write_text(checkpoint / name, text)
