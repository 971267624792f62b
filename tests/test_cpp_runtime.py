"""The C++ runtime (runtime/cpp) against the Python runtime, through ``kiln-run`` on the tiny exports.

The Python runtime is the oracle of the contract (its outputs, tokens and messages), which it checks itself against
HF transformers elsewhere (tests/test_runtime.py, tests/test_generation_hf.py). The library, kiln-run and the ctest
unit tests are built once per test session with ``kiln build-runtime``'s own function into ``build/test-cpp-runtime/``
of the checkout (the build tree and fetched headers persist: later sessions only recompile what changed).

Default run: outputs equal (max abs <= 1e-6) on one export of each architecture, with the custom nodes' function
bodies and, where libtensorkiln_ort.so builds, the native kernels; greedy and seeded sampled generation give the
Python runtime's tokens; every bad input and tampered export gets the Python runtime's message and exit status 2;
8 threads x 100 runs equal the sequential runs. ``-m slow``: a service's CMake project builds against the installed
package (find_package(tensorkiln)) and runs; the TensorRT backend compiles with -Werror against every TensorRT header
set named in TK_TRT_HEADER_ROOTS and against the kernel-lens wheel's headers (NvInfer only).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import trt_headers

from tensorkiln.runtime import load
from tensorkiln.runtime.errors import BackendUnavailableError, KilnError
from tensorkiln.runtime.tolerances import SAME_KERNELS_MAX_ABS

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "build" / "test-cpp-runtime"
#: One export of each architecture; the heads cover several outputs, 3-D inputs and a fixed-length graph.
CASES = {"gpt_neox": "ForCausalLM", "mega": "ForCausalLM", "mra": "ForMaskedLM",
         "megatron-bert": "ForPreTraining", "nystromformer": "ForMultipleChoice"}

_prefix: Path | None = None


def _cannot_build_here(error: BackendUnavailableError) -> str | None:
    text = str(error)
    if "needs a C++17 compiler" in text or "needs cmake" in text or "needs ninja" in text \
            or "cannot get ONNX Runtime" in text or "cannot get nlohmann-json" in text:
        return text.splitlines()[0]
    return None


@pytest.fixture(scope="session")
def runtime_prefix() -> Path:
    """The installed C++ runtime, built (and ctest-ed) once per session; skips only where it cannot build here."""
    global _prefix
    if _prefix is None:
        from tensorkiln.runtime.runtime_build import build_runtime

        try:
            _prefix = build_runtime(cache=CACHE, prefix=CACHE / "install", jobs=2, log=lambda message: None)
        except BackendUnavailableError as error:
            reason = _cannot_build_here(error)
            if reason is None or os.environ.get("CI"):
                raise
            pytest.skip(f"the C++ runtime cannot be built here: {reason}")
    return _prefix


def kiln_run(prefix: Path, *args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(prefix / "bin" / "kiln-run"), *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def _save(folder: Path, **arrays: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", array)
    return folder


def _inputs(session, seed: int = 0) -> dict[str, np.ndarray]:
    """Ids and a left-padded mask shaped as the export's input_ids (3-D for multiple choice)."""
    dims = session.manifest.inputs[0].dims
    length = session.manifest.length_rules.fixed_length or 9
    shape = (2, 3, length) if len(dims) == 3 else (2, length)
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, session.config["vocab_size"], size=shape, dtype=np.int64)
    mask = np.ones_like(ids)
    mask[0, ..., :2] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _max_abs(got: np.ndarray, want: np.ndarray) -> float:
    assert got.dtype == want.dtype and got.shape == want.shape
    return float(np.abs(got.astype(np.float64) - want).max(initial=0.0))


def _expect_same_error(prefix: Path, python_call, *args: object) -> None:
    with pytest.raises(KilnError) as caught:
        python_call()
    result = kiln_run(prefix, *args)
    assert (result.returncode, result.stderr.strip()) == (2, f"kiln-run: error: {caught.value}")


# ---- outputs ----


@pytest.mark.parametrize("model_type", CASES)
def test_outputs_equal_the_python_runtime(runtime_prefix, exports, tmp_path, model_type):
    _, export = exports.get(model_type, CASES[model_type])
    session = load(export, kernels="function")
    inputs = _inputs(session)
    want = session.run(**inputs)
    result = kiln_run(runtime_prefix, "run", export, "--kernels", "function", "--inputs-dir",
                      _save(tmp_path / "in", **inputs), "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert sorted(p.stem for p in (tmp_path / "out").glob("*.npy")) == sorted(want)
    for name, value in want.items():
        got = np.load(tmp_path / "out" / f"{name}.npy")
        assert got.dtype == value.dtype and got.shape == value.shape, name
        assert _max_abs(got, value) <= SAME_KERNELS_MAX_ABS, name


@pytest.mark.parametrize("model_type", ["mra", "mega"])
def test_native_kernels_outputs_equal_the_python_runtime(runtime_prefix, native_kernels, exports, tmp_path,
                                                         model_type):
    _, export = exports.get(model_type, CASES[model_type])
    session = load(export, kernels="native")
    inputs = _inputs(session, seed=1)
    want = session.run(**inputs)
    info = json.loads(kiln_run(runtime_prefix, "info", export, "--kernels", "native").stdout)
    assert info["custom_node_implementations"] == session.custom_node_implementations
    result = kiln_run(runtime_prefix, "run", export, "--kernels", "native", "--inputs-dir",
                      _save(tmp_path / "in", **inputs), "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    for name, value in want.items():
        assert _max_abs(np.load(tmp_path / "out" / f"{name}.npy"), value) <= SAME_KERNELS_MAX_ABS, name


def test_inputs_from_json_are_read_as_numpy_reads_them(runtime_prefix, exports, tmp_path):
    _, export = exports.get("gpt_neox", "ForCausalLM")
    ids = [[5, 6, 7, 8]]
    (tmp_path / "in.json").write_text(json.dumps({"input_ids": ids}))
    result = kiln_run(runtime_prefix, "run", export, "--inputs-json", tmp_path / "in.json", "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    want = load(export).run(input_ids=np.asarray(ids))["logits"]
    assert _max_abs(np.load(tmp_path / "out" / "logits.npy"), want) <= SAME_KERNELS_MAX_ABS


# ---- generation ----


@pytest.mark.parametrize("model_type", ["gpt_neox", "mega"])
@pytest.mark.parametrize("options", [{}, {"do_sample": True, "seed": 7, "top_k": 20, "top_p": 0.9,
                                          "temperature": 0.8}], ids=["greedy", "sampled"])
def test_generation_gives_the_python_runtimes_tokens(runtime_prefix, exports, tmp_path, model_type, options):
    _, export = exports.get(model_type, "ForCausalLM")
    prompt = np.random.default_rng(2).integers(3, 200, size=(1, 6), dtype=np.int64)
    want = load(export).generate(prompt, max_new_tokens=10, ignore_eos=True, **options)[0, 6:]
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in options.items() if key != "do_sample"]
    flags += ["--do-sample"] if options.get("do_sample") else []
    result = kiln_run(runtime_prefix, "generate", export, "--ids", ",".join(map(str, prompt[0])),
                      "--max-new-tokens", 10, "--options", '{"ignore_eos": true}', *flags, "--out", tmp_path / "s.npy")
    assert result.returncode == 0, result.stderr
    assert [int(line) for line in result.stdout.split()] == want.tolist()  # streamed, one step a line
    assert np.load(tmp_path / "s.npy")[0].tolist() == [*prompt[0].tolist(), *want.tolist()]


# ---- the same refusals, word for word ----


def _bad_inputs(session) -> dict[str, dict[str, np.ndarray]]:
    vocab, longest = session.config["vocab_size"], session.manifest.length_rules.max_length
    ids = np.arange(3, 9, dtype=np.int64)[None]
    return {
        "unknown name": {"input_ids": ids, "input_idz": ids},
        "float ids": {"input_ids": ids.astype(np.float32)},
        "wrong rank": {"input_ids": ids[0]},
        "id out of vocab": {"input_ids": ids + vocab},
        "mask not 0/1": {"input_ids": ids, "attention_mask": np.full_like(ids, 2)},
        "too long": {"input_ids": np.full((1, longest + 1), 5, dtype=np.int64)},
        "partial cache": {"input_ids": ids, "past_key_values.0.key": np.zeros((1, 2, 3, 8), np.float32)},
    }


def test_bad_inputs_get_the_python_runtimes_messages(runtime_prefix, exports, tmp_path):
    _, export = exports.get("gpt_neox", "ForCausalLM")
    session = load(export)
    for case, inputs in _bad_inputs(session).items():
        folder = _save(tmp_path / case.replace(" ", "_").replace("/", "_"), **inputs)
        _expect_same_error(runtime_prefix, lambda inputs=inputs: session.run(**inputs), "run", export,
                           "--inputs-dir", folder, "--out", tmp_path / "out")


def test_bad_generation_requests_get_the_python_runtimes_messages(runtime_prefix, exports):
    _, export = exports.get("gpt_neox", "ForCausalLM")
    session = load(export)
    ids = np.array([[5, 6, 7]])
    for options in ({"max_new_tokens": 1000}, {"temperature": 0, "do_sample": True}, {"top_p": 1.5},
                    {"top_k": "5"}, {"seed": -1, "do_sample": True}):
        _expect_same_error(runtime_prefix, lambda options=options: session.generate(ids, **options), "generate", export,
                           "--ids", "5,6,7", "--options", json.dumps(options))


def _tampered(export: Path, tmp_path: Path, how: str) -> Path:
    copy = tmp_path / how
    shutil.copytree(export, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    if how == "changed_file":
        with open(copy / "config.json", "a") as file:
            file.write(" ")
    elif how == "dotdot_name":
        manifest["files"]["../config.json"] = manifest["files"].pop("config.json")
    elif how == "symlink_out":
        outside = tmp_path / "outside.json"
        shutil.copy(copy / "config.json", outside)
        (copy / "config.json").unlink()
        (copy / "config.json").symlink_to(outside)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


@pytest.mark.parametrize("how", ["changed_file", "dotdot_name", "symlink_out"])
def test_tampered_exports_get_the_python_runtimes_messages(runtime_prefix, exports, tmp_path, how):
    _, export = exports.get("gpt_neox", "ForCausalLM")
    copy = _tampered(export, tmp_path, how)
    _expect_same_error(runtime_prefix, lambda: load(copy), "info", copy)


def test_a_missing_folder_gets_the_python_runtimes_message(runtime_prefix, tmp_path):
    _expect_same_error(runtime_prefix, lambda: load(tmp_path / "absent"), "info", tmp_path / "absent")


def test_beam_search_is_refused_in_cpp_with_a_reason(runtime_prefix, exports):
    """The one generation mode the C++ runtime leaves out (the Python runtime has it): refused, never ignored."""
    _, export = exports.get("gpt_neox", "ForCausalLM")
    result = kiln_run(runtime_prefix, "generate", export, "--ids", "5,6,7", "--options", '{"num_beams": 2}')
    assert result.returncode == 2 and "num_beams" in result.stderr and result.stdout == ""


def test_an_option_of_another_command_is_refused_not_ignored(runtime_prefix, exports, tmp_path):
    _, export = exports.get("mra", "ForMaskedLM")
    result = kiln_run(runtime_prefix, "run", export, "--ids", "5,6", "--out", tmp_path)
    assert (result.returncode, result.stderr.strip()) == (2, "kiln-run: error: unrecognized arguments: --ids")


# ---- threads ----


def test_eight_threads_of_a_hundred_runs_equal_sequential_runs(runtime_prefix, exports, tmp_path):
    _, export = exports.get("mega", "ForCausalLM")
    session = load(export)
    sets = [_save(tmp_path / f"set{seed}", **_inputs(session, seed)) for seed in range(3)]
    result = kiln_run(runtime_prefix, "stress", export, *[a for s in sets for a in ("--inputs-dir", s)],
                      "--workers", 8, "--runs", 100, "--threads", 1)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == {"workers": 8, "runs": 100, "sets": 3, "differing": 0, "failed": 0}


# ---- slow: a service's build, and the TensorRT backend against TensorRT's headers ----


@pytest.mark.slow
def test_a_service_builds_against_the_installed_package(runtime_prefix, exports, tmp_path):
    """runtime/cpp/examples: find_package(tensorkiln), link tensorkiln::runtime, run; the same logits and tokens."""
    _, export = exports.get("gpt_neox", "ForCausalLM")
    build = tmp_path / "example"
    for command in (["cmake", "-G", "Ninja", "-S", ROOT / "runtime" / "cpp" / "examples", "-B", build,
                     f"-DCMAKE_PREFIX_PATH={runtime_prefix}"], ["cmake", "--build", build]):
        result = subprocess.run(list(map(str, command)), capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    result = subprocess.run([str(build / "classify"), str(export), "5", "6", "7"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    session = load(export)
    tokens = session.generate(np.array([[5, 6, 7]]), max_new_tokens=5)[0, 3:].tolist()
    assert [int(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("token ")] == tokens
    first = float(session.run(input_ids=np.array([[5, 6, 7]]))["logits"].flat[0])
    assert f"logits float32 [3-d] first value {first:.6g}" in result.stdout


@pytest.mark.slow
def test_tensorrt_backend_compiles_against_every_tensorrt_header_set(runtime_prefix, tmp_path):
    """-Werror against each set: trtEngine.cpp (NvInfer) always, trtBuild.cpp (NvOnnxParser) where the set has the
    parser's header (kernel-lens has not: its build path is not checked there). Nothing links or runs: no TensorRT
    libraries or GPU here."""
    roots = trt_headers.header_roots()
    json_dir = CACHE / "nlohmann-json" / "usr" / "share" / "cmake" / "nlohmann_json"
    for label, root in roots.items():
        build = tmp_path / label
        configure = ["cmake", "-G", "Ninja", "-S", str(ROOT / "runtime" / "cpp"), "-B", str(build),
                     f"-DTensorRT_ROOT={root}", "-DTK_BUILD_TESTS=OFF",
                     f"-DONNXRUNTIME_INCLUDE_DIR={next((CACHE / 'onnxruntime-headers').glob('*/'))}"]
        configure += [f"-Dnlohmann_json_DIR={json_dir}"] if json_dir.is_dir() else []
        result = subprocess.run(configure, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        if "no CUDA toolkit" in result.stdout:
            pytest.skip("TensorRT's headers include CUDA's runtime API headers, and there is no CUDA toolkit")
        result = subprocess.run(["cmake", "--build", str(build), "--target", "tensorkiln_trt_objects", "-j2"],
                                capture_output=True, text=True)
        assert result.returncode == 0, f"{label}:\n{result.stdout[-6000:]}"
        objects = {p.name for p in build.rglob("*.cpp.o") if "tensorkiln_trt_objects" in str(p)}
        with_parser = (root / "NvOnnxParser.h").is_file()
        assert objects == {"trtEngine.cpp.o"} | ({"trtBuild.cpp.o"} if with_parser else set()), (label, objects)
