"""``kiln bench``: the run completes on tiny presets, its JSON and markdown agree with themselves, and its FLOP count
and sgemm peak are checked against independent figures.

The FLOP oracle is a count by hand from the config (every matmul of MegatronBERT's encoder and masked-LM head); the
sgemm check bounds the peak by what one core can physically do.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from tensorkiln.export import bench
from tensorkiln.export.bench.mra_dense import dense_mra
from tensorkiln.export.bench.timing import alternate
from tensorkiln.export.cli import build_parser
from tensorkiln.export.cli import main as kiln
from tensorkiln.reference import from_pretrained
from tensorkiln.reference.presets import get_preset, init_checkpoint


def test_bench_and_cli_import_no_torch():
    code = ("import sys; import tensorkiln.export.bench, tensorkiln.export.bench.worker, tensorkiln.export.cli; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_cli_options_reach_the_bench():
    args = build_parser().parse_args(["bench", "--batch", "1", "8", "--seq", "128", "--threads", "1", "--skip", "hf",
                                      "memory", "--quick"])
    assert args.func.__name__ == "cmd_bench"
    assert (args.batch, args.seq, args.threads, args.skip, args.quick) == ([1, 8], [128], 1, ["hf", "memory"], True)


def _megatron_mlm_flops(config: dict, batch: int, seq: int) -> int:
    """Matmul FLOPs of MegatronBertForMaskedLM by hand: 2 * m * n * k per (m x k) @ (k x n)."""
    hidden, inner, layers, vocab = (config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"],
                                    config["vocab_size"])
    tokens = batch * seq
    per_layer = (2 * tokens * hidden * hidden * 4  # q, k, v and the attention output projection
                 + 2 * tokens * hidden * inner * 2  # the MLP up and down
                 + 2 * batch * seq * seq * hidden * 2)  # q.k^T and attn.v, over all heads
    head = 2 * tokens * hidden * hidden + 2 * tokens * hidden * vocab  # the LM transform and the decoder
    return layers * per_layer + head


def test_matmul_flops_match_a_count_by_hand(tmp_path):
    init_checkpoint("tiny-megatron-bert", tmp_path / "ckpt", seed=0)
    model = from_pretrained(tmp_path / "ckpt").eval()
    config = get_preset("tiny-megatron-bert").config
    for batch, seq in ((1, 16), (3, 64)):
        assert bench.count_matmul_flops(model, batch, seq, config["vocab_size"]) == \
            _megatron_mlm_flops(config, batch, seq)


def test_mra_count_equals_dense_plus_its_low_resolution_part(tmp_path):
    # With a block budget covering every block, MRA's tiles are exactly dense attention; the block means add
    # their two (BH, nb, nb) x D matmuls. This ties the MRA formula to torch's own count of dense attention.
    init_checkpoint("tiny-mra", tmp_path / "ckpt", seed=0)
    model = from_pretrained(tmp_path / "ckpt").eval()
    config = model.config
    seq = 64
    blocks = seq // 32
    assert config.num_blocks >= blocks * blocks
    mra = bench.count_matmul_flops(model, 1, seq, config.vocab_size)
    with dense_mra():
        dense = bench.count_matmul_flops(model, 1, seq, config.vocab_size)
    head_dim = config.hidden_size // config.num_attention_heads
    low_resolution = 2 * 2 * config.num_attention_heads * blocks * blocks * head_dim
    assert mra - dense == config.num_hidden_layers * low_resolution


def test_sgemm_peak_is_positive_and_plausible():
    peak = bench.sgemm_peak(256, threads=1)
    assert peak["best_gflops"] == max(peak["gflops"].values())
    assert "numpy" in peak["gflops"]
    # One core: at most 2 FMA pipes x 16 fp32 lanes x 2 FLOPs x ~6 GHz = 384 GFLOP/s; even unblocked C beats 0.2.
    for lib, value in peak["gflops"].items():
        assert 0.2 < value < 400, (lib, value)


def test_alternate_rotates_the_order():
    order = []
    times = alternate({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=3)
    assert order == ["a", "b", "b", "a", "a", "b"]
    assert all(len(t) == 3 and min(t) >= 0 for t in times.values())


def _check_result(result: dict, stdout: str) -> None:
    assert result["sgemm_peak"]["best_gflops"] > 0
    assert result["machine"]["cpu"] and result["machine"]["threads"] >= 1
    assert result["latency"], "no latency rows"
    for row in result["latency"]:
        backends = row["backends"]
        assert {"reference", "onnxruntime"} <= set(backends)
        for stats in backends.values():
            assert stats["median_ms"] > 0 and min(stats["times_ms"]) == pytest.approx(stats["min_ms"])
            assert stats["tokens_per_s"] == pytest.approx(row["batch"] * row["seq"] / stats["median_ms"] * 1000)
            assert stats["gflops_per_s"] == pytest.approx(row["matmul_flops"] / stats["median_ms"] / 1e6)
            assert stats["fraction_of_peak"] == pytest.approx(stats["gflops_per_s"]
                                                              / result["sgemm_peak"]["best_gflops"])
            assert stats["fraction_of_peak_best_run"] == pytest.approx(
                stats["fraction_of_peak"] * stats["median_ms"] / stats["min_ms"])
        for other in set(backends) - {"onnxruntime"}:
            assert row["speedup"][f"onnxruntime_vs_{other}"] == pytest.approx(
                backends[other]["median_ms"] / backends["onnxruntime"]["median_ms"])
        assert row["matmul_flops"] > 0
        assert row["max_abs_vs_reference"]["onnxruntime"] <= 1e-4
        assert f"| {row['model']} | {row['batch']} | {row['seq']} |" in stdout
    assert "### Latency and throughput" in stdout and "### Efficiency" in stdout
    assert result["errors"] == []


def test_bench_one_tiny_model(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert kiln(["bench", "--quick", "--presets", "tiny-megatron-bert", "--work", str(tmp_path / "work"), "--json",
                 str(out), "--skip", "hf", "memory", "generation", "mra-dense", "native", "--no-progress"]) == 0
    result = json.loads(out.read_text())
    stdout = capsys.readouterr().out
    _check_result(result, stdout)
    assert [r["model"] for r in result["latency"]] == ["tiny-megatron-bert"]
    assert result["generation"] == [] and result["memory"] == [] and result["mra_vs_dense"] is None
    assert result["native"] is None
    _check_int8(result, stdout)


def _check_int8(result: dict, stdout: str) -> None:
    """Every model has a checked int8 export, timed in the latency rows; ratios and sizes as the JSON says."""
    models = result["int8"]["models"]
    assert set(models) == {r["model"] for r in result["latency"]}
    for row in result["latency"]:
        m, b = models[row["model"]], row["backends"]
        assert m["status"] == "passed" and m["int8_mb"] < m["fp32_mb"] and m["quantized"]["MatMul"] > 0
        ratio = b["onnxruntime"]["median_ms"] / b["onnxruntime_int8"]["median_ms"]
        ms = b["onnxruntime_int8"]["median_ms"]
        shown = f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"
        assert f"| {row['model']} | {row['batch']} | {row['seq']} | {shown} |" in stdout
        assert f"{ratio:.2f}x" in stdout and f"{m['size_ratio']:.2f}x" in stdout
    assert "### int8 (ONNX Runtime dynamic quantization) vs fp32" in stdout


@pytest.mark.slow
def test_bench_quick_end_to_end(tmp_path, capsys, native_kernels):
    out = tmp_path / "bench.json"
    assert kiln(["bench", "--quick", "--work", str(tmp_path / "work"), "--json", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    stdout = capsys.readouterr().out
    _check_result(result, stdout)
    assert {r["model_type"] for r in result["latency"]} == {"mra", "mega", "megatron-bert", "gpt_neox",
                                                            "nystromformer"}
    assert all("hf" in r["backends"] for r in result["latency"])
    _check_int8(result, stdout)

    generation = {g["model"]: g for g in result["generation"]}
    assert set(generation) == {"tiny-gpt-neox", "tiny-mega"}
    for g in generation.values():
        assert g["cache"] and g["same_tokens"]
        rates = {name: b["decode_tokens_per_s"] for name, b in g["backends"].items()}
        assert g["decode_speedup_onnxruntime_vs_reference"] == pytest.approx(rates["onnxruntime"]
                                                                             / rates["reference"])

    assert {(m["model"], m["backend"]) for m in result["memory"]} == {
        (r["model"], b) for r in result["latency"] for b in ("reference", "onnxruntime", "hf")}
    for m in result["memory"]:
        assert 0 < m["imports_mb"] <= m["loaded_mb"] <= m["load_peak_mb"]
        assert m["forward_peak_mb"] >= m["loaded_mb"] or not m["peak_reset"]

    mra = result["mra_vs_dense"]
    assert mra["model"] == "tiny-mra" and mra["seq"] == 256 and mra["export_errors"] == {}
    assert set(mra["backends"]) == {"reference", "onnxruntime"}
    for b in mra["backends"].values():
        assert b["mra_speedup"] == pytest.approx(b["dense_ms"] / b["mra_ms"])
    assert mra["max_abs_onnxruntime_vs_reference"]["mra"] <= 1e-4
    assert mra["max_abs_onnxruntime_vs_reference"]["dense"] <= 1e-4
    assert math.isfinite(mra["max_abs_mra_vs_dense"])
    for section in ("### Generation", "### Memory", "### MRA vs dense attention", "### Native kernels"):
        assert section in stdout
    _check_native(result["native"], result["sgemm_peak"]["best_gflops"])


def _check_native(section, peak):
    """The native section's figures follow from its times, its outputs match the torch ops, and its targets are
    evaluated (their values are the machine's business, not the test's)."""
    ops = {op["op"]: op for op in section["ops"]}
    assert set(ops) == {"MraAttention", "MegaEma"}
    for op in ops.values():
        assert op["max_abs_vs_torch"]["native"] <= 1e-5 and op["max_abs_vs_torch"]["function"] <= 1e-5
        for other, ms in op["ms"].items():
            if other != "native":
                assert op["speedup_native_vs"][other] == pytest.approx(ms / op["ms"]["native"])
    mra = ops["MraAttention"]
    assert mra["native_gflops_per_s"] == pytest.approx(mra["counted_flops"] / mra["ms"]["native"] / 1e6)
    assert mra["max_abs_native_vs_dense"] < 1.0  # a 16 of 64 block budget approximates dense attention
    ema = ops["MegaEma"]
    assert ema["native_gb_per_s"] == pytest.approx(ema["bytes_moved"] / ema["ms"]["native"] / 1e6)
    assert section["mega_vs_hf"]["max_abs_native_vs"]["function"] <= 1e-4
    assert section["mra_vs_dense"]["max_abs_native_vs"]["function"] <= 1e-4
    efficiency = section["mra_efficiency"]
    assert efficiency["fraction_of_peak"]["native"] == pytest.approx(
        efficiency["matmul_flops"] / efficiency["ms"]["native"] / 1e6 / peak)
    assert len(section["targets"]) == 5 and all(isinstance(t["met"], bool) for t in section["targets"])


def test_int8_targets_with_the_int8_section_skipped():
    """`kiln bench --skip int8` stores the section as None; its targets are then absent, not a crash."""
    from tensorkiln.export.bench.int8 import int8_targets

    assert int8_targets({"int8": None}) == []
