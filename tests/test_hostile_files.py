"""Hostile and malformed files and folders: every file stays inside its folder, and no user data is ever lost.

Each table row is one class of case from issue 10, run as a user would (the ``kiln`` command, or ``load``), on copies
of the session's tiny exports. Every refusal must be one ``kiln: error:`` line with exit status 2, and a snapshot of
the whole work folder (tests/hostile.py) must be unchanged: nothing lost, nothing written, nowhere. The oracle for
the ONNX external-data walk is onnx's own reader (``onnx.external_data_helper``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from hostile import kiln_error, snapshot

from tensorkiln.runtime import KilnError, ManifestError, atomic, load
from tensorkiln.runtime import manifest as mf
from tensorkiln.runtime.errors import KilnWarning, UsageError
from tensorkiln.runtime.onnx_external import locations_in
from tensorkiln.runtime.paths import check_name, resolve_inside


@pytest.fixture
def work(exports, tmp_path) -> Path:
    """tmp_path with copies of a tiny checkpoint (``ckpt``) and its export (``exp``), and a regular file."""
    ckpt, out = exports.get("gpt_neox", "ForCausalLM")
    shutil.copytree(ckpt, tmp_path / "ckpt")
    shutil.copytree(out, tmp_path / "exp")
    (tmp_path / "afile").write_text("a regular file\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("must never be read or written\n")
    return tmp_path


def _edit_manifest(export: Path, change) -> None:
    data = json.loads((export / "manifest.json").read_text())
    change(data)
    (export / "manifest.json").write_text(json.dumps(data))


def _sha(path: Path) -> str:
    return mf.sha256_file(path)


# ----------------------------------------------------------------------------------------------- names


@pytest.mark.parametrize(("name", "problem"), [
    ("model.onnx", None), ("sub/model.onnx.data", None), ("./config.json", None),
    ("../model.onnx", "goes up out of its folder"), ("a/../../b", "goes up out of its folder"),
    ("/etc/passwd", "is an absolute path"), ("C:/model.onnx", "is an absolute path"),
    ("..\\model.onnx", "backslash"), ("", "is empty"), ("a\x00b", "NUL"), (5, "not a file name"),
])
def test_names_from_files(name, problem):
    if problem is None:
        assert check_name(name, source="test", key="name") == name.removeprefix("./")
    else:
        with pytest.raises(ManifestError, match=problem):
            check_name(name, source="test", key="name")


def test_a_symlink_inside_the_folder_is_fine_one_leaving_it_is_not(tmp_path):
    (tmp_path / "root" / "real").mkdir(parents=True)
    (tmp_path / "root" / "inner").symlink_to("real")
    (tmp_path / "root" / "outer").symlink_to(tmp_path)
    assert resolve_inside(tmp_path / "root", "inner/x", source="test", key="name") == tmp_path / "root" / "inner/x"
    with pytest.raises(ManifestError, match="through a symbolic link"):
        resolve_inside(tmp_path / "root", "outer/x", source="test", key="name")


# ----------------------------------------------------------------------------------------------- manifests


def _symlink_config(export: Path) -> None:
    """config.json replaced by a link to another folder's config (the one manifest entry stays as it was)."""
    (export / "config.json").unlink()
    (export / "config.json").symlink_to(export.parent / "ckpt" / "config.json")


def _symlinked_folder(export: Path) -> None:
    """A folder inside the export that is a link out of it, named by the manifest with its target's hash."""
    (export / "sub").symlink_to(export.parent / "outside")
    def change(d):
        d["files"]["sub/secret.txt"] = _sha(export.parent / "outside" / "secret.txt")
    _edit_manifest(export, change)


MANIFEST_CASES = {
    "model_file ../": (lambda e: _edit_manifest(e, lambda d: d.update(model_file="../ckpt/model.safetensors")),
                       "key 'model_file' '../ckpt/model.safetensors' goes up out of its folder"),
    "config_file absolute": (lambda e: _edit_manifest(e, lambda d: d.update(config_file=str(e.parent / "afile"))),
                             "key 'config_file' .* is an absolute path"),
    "files entry ../": (lambda e: _edit_manifest(e, lambda d: d["files"].update({"../afile": "0" * 64})),
                        "'files' entry '../afile' goes up"),
    "config_file not hashed": (
        lambda e: (shutil.copy(e / "config.json", e / "other.json"),
                   _edit_manifest(e, lambda d: d.update(config_file="other.json"))),
        "does not list the config file 'other.json'"),
    "symlinked file": (_symlink_config, "'config.json' resolves to .* outside .* symbolic link"),
    "symlinked folder": (_symlinked_folder, "'sub/secret.txt' resolves to .* outside .* symbolic link"),
    "backslash": (lambda e: _edit_manifest(e, lambda d: d["files"].update({"..\\afile": "0" * 64})), "backslash"),
    "not normal": (lambda e: _edit_manifest(e, lambda d: d["files"].update({"./x": "0" * 64})), "normal form"),
}


@pytest.mark.parametrize("case", MANIFEST_CASES)
def test_a_manifest_naming_files_outside_its_folder_is_refused(work, capsys, case):
    tamper, message = MANIFEST_CASES[case]
    tamper(work / "exp")
    before = snapshot(work)
    with pytest.raises(ManifestError, match=message):
        load(work / "exp")
    for argv in (["info", work / "exp"], ["triton", work / "exp", work / "repo"]):
        code, line = kiln_error(capsys, argv)
        assert code == 2 and "manifest.json" in line, line
    assert snapshot(work) == before


# ----------------------------------------------------------------------------------------------- external data


def _external(export: Path, location: str, data_at: Path | None = None, listed: bool = True) -> None:
    """Re-save the export's graph with its weights in one external file named ``location`` in the graph; the data
    is written to ``data_at`` (default: beside the model), and the manifest hashes what is there."""
    model = onnx.load(str(export / "model.onnx"))
    onnx.save_model(model, str(export / "model.onnx"), save_as_external_data=True, location="weights.bin",
                    size_threshold=1024)  # ORT reads shape constants from the graph itself
    proto = onnx.load(str(export / "model.onnx"), load_external_data=False)
    for tensor in onnx.external_data_helper._get_all_tensors(proto):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(proto, str(export / "model.onnx"))
    if data_at is not None:
        os.replace(export / "weights.bin", data_at)
    def change(d):
        d["files"]["model.onnx"] = _sha(export / "model.onnx")
        if listed and data_at is None:
            d["files"][location] = _sha(export / location)
    _edit_manifest(export, change)


def test_external_data_inside_the_export_loads_and_runs(work):
    want = load(work / "exp").run(input_ids=np.arange(3, 9)[None])["logits"]
    _external(work / "exp", "weights.bin")
    session = load(work / "exp")
    np.testing.assert_array_equal(session.run(input_ids=np.arange(3, 9)[None])["logits"], want)


EXTERNAL_CASES = {
    "../ location": (lambda w: ("../outside/weights.bin", w / "outside" / "weights.bin", True),
                     "external-data location '../outside/weights.bin' goes up"),
    "absolute location": (lambda w: (str(w / "outside" / "weights.bin"), w / "outside" / "weights.bin", True),
                          "is an absolute path"),
    "not hashed": (lambda w: ("weights.bin", None, False), "'weights.bin', which the manifest's 'files' does not list"),
}


@pytest.mark.parametrize("case", EXTERNAL_CASES)
def test_external_data_outside_the_export_or_unhashed_is_refused(work, capsys, case):
    make, message = EXTERNAL_CASES[case]
    location, data_at, listed = make(work)
    _external(work / "exp", location, data_at, listed)
    before = snapshot(work)
    with pytest.raises(ManifestError, match=message):
        load(work / "exp")
    code, line = kiln_error(capsys, ["triton", work / "exp", work / "repo"])
    assert code == 2 and "weights.bin" in line
    assert snapshot(work) == before


def test_external_data_through_a_symlink_is_refused(work):
    _external(work / "exp", "weights.bin")
    os.replace(work / "exp" / "weights.bin", work / "outside" / "weights.bin")
    (work / "exp" / "weights.bin").symlink_to(work / "outside" / "weights.bin")
    with pytest.raises(ManifestError, match="'weights.bin' resolves to .* outside .* symbolic link"):
        load(work / "exp")


def test_external_locations_match_onnx_in_subgraphs_functions_and_attributes(tmp_path):
    """Tensors in the graph, in an If's branches (initializers and Constant attributes) and in a local function."""
    from onnx import TensorProto, helper, numpy_helper

    def const(name, value):
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.full(4, value, np.float32)))

    branch = helper.make_graph([const("c", 1.0), helper.make_node("Add", ["c", "w2"], ["y"])], "branch", [],
                               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
                               initializer=[numpy_helper.from_array(np.ones(4, np.float32), "w2")])
    function = helper.make_function("local", "F", ["x"], ["z"], [const("k", 2.0), helper.make_node("Mul", ["x", "k"],
                                                                                                     ["z"])],
                                    [helper.make_opsetid("", 18)])
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch),
         helper.make_node("F", ["y"], ["out"], domain="local")], "main",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [4])],
        initializer=[numpy_helper.from_array(np.zeros(4, np.float32), "unused")])
    model = helper.make_model(graph, functions=[function],
                              opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("local", 1)])
    onnx.save_model(model, str(tmp_path / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=False,
                    size_threshold=0, convert_attribute=True)
    proto = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    helper_module = onnx.external_data_helper
    want = [helper_module.ExternalDataInfo(t).location for t in helper_module._get_all_tensors(proto)
            if helper_module.uses_external_data(t)]
    got = locations_in((tmp_path / "m.onnx").read_bytes())
    assert len(want) >= 5 and sorted(got) == sorted(want)


# ----------------------------------------------------------------------------------------------- shard indexes


def _sharded(ckpt: Path, shard: str, target: Path | None = None) -> None:
    """The checkpoint's weights moved to ``target`` (default: the shard name in the folder), named by an index."""
    weights = ckpt / "model.safetensors"
    os.replace(weights, target or ckpt / shard)
    from safetensors import safe_open

    with safe_open(str(target or ckpt / shard), "pt") as f:
        names = list(f.keys())
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {n: shard for n in names}}))


INDEX_CASES = {
    "../ shard": (lambda w: _sharded(w / "ckpt", "../outside/w.safetensors", w / "outside" / "w.safetensors"),
                  "weight_map shard '../outside/w.safetensors' goes up out of its folder"),
    "absolute shard": (lambda w: _sharded(w / "ckpt", str(w / "outside" / "w.safetensors"),
                                          w / "outside" / "w.safetensors"), "is an absolute path"),
    "symlinked shard": (lambda w: (_sharded(w / "ckpt", "w.safetensors", w / "outside" / "w.safetensors"),
                                   (w / "ckpt" / "w.safetensors").symlink_to(w / "outside" / "w.safetensors")),
                        "'w.safetensors' resolves to .* outside .* symbolic link"),
    "malformed JSON": (lambda w: (_sharded(w / "ckpt", "w.safetensors"),
                                  (w / "ckpt" / "model.safetensors.index.json").write_text('{"weight_map": ')),
                       "model.safetensors.index.json' \\(the shard index\\) is not valid JSON"),
    "weight_map a string": (lambda w: (_sharded(w / "ckpt", "w.safetensors"),
                                       (w / "ckpt" / "model.safetensors.index.json").write_text('{"weight_map": "x"}')),
                            "key 'weight_map' must be an object of strings"),
    "missing shard": (lambda w: (_sharded(w / "ckpt", "w.safetensors"), (w / "ckpt" / "w.safetensors").unlink()),
                      "names shards that are missing: w.safetensors"),
}


@pytest.mark.parametrize("case", INDEX_CASES)
def test_a_shard_index_naming_files_outside_the_checkpoint_is_refused(work, capsys, case):
    make, message = INDEX_CASES[case]
    make(work)
    before = snapshot(work)
    code, line = kiln_error(capsys, ["export", work / "ckpt", work / "out", "--no-progress"])
    assert code == 2 and re.search(message, line), line
    assert snapshot(work) == before


# ----------------------------------------------------------------------------------------------- outputs vs inputs


OVERLAP_CASES = {
    "export OUT == CKPT": (["export", "{w}/ckpt", "{w}/ckpt", "--overwrite"], "OUT_DIR .* is the checkpoint"),
    "export OUT contains CKPT": (["export", "{w}/ckpt", "{w}", "--overwrite"], "OUT_DIR .* contains the checkpoint"),
    "export OUT inside CKPT": (["export", "{w}/ckpt", "{w}/ckpt/onnx"], "OUT_DIR .* is inside the checkpoint"),
    "export OUT links to CKPT": (["export", "{w}/ckpt", "{w}/link-to-ckpt", "--overwrite"], "is the checkpoint"),
    "triton REPO == EXPORT": (["triton", "{w}/exp", "{w}/exp"], "the model repository .* is the export"),
    "triton REPO inside EXPORT": (["triton", "{w}/exp", "{w}/exp/repo"], "is inside the export"),
    "triton REPO contains EXPORT": (["triton", "{w}/exp", "{w}", "--name", "exp", "--overwrite"],
                                    "contains the export"),
    "triton --name ..": (["triton", "{w}/exp", "{w}/repo", "--name", ".."], "model name '..'"),
    "triton --name .hidden": (["triton", "{w}/exp", "{w}/repo", "--name", ".x"], "not start with '.'"),
    "parity report == export": (["parity", "{w}/ckpt", "{w}/exp", "--report", "{w}/exp"], "is the export"),
    "parity report inside checkpoint": (["parity", "{w}/ckpt", "{w}/exp", "--report", "{w}/ckpt/r"],
                                        "is inside the checkpoint"),
    "parity report contains both": (["parity", "{w}/ckpt", "{w}/exp", "--report", "{w}"], "contains the export"),
    "parity report is a file": (["parity", "{w}/ckpt", "{w}/exp", "--report", "{w}/afile"],
                                "'.*afile' is a file, not a folder"),
    "parity report over a user file": (["parity", "{w}/ckpt", "{w}/exp", "--report", "{w}/outside"],
                                       "parity.json' exists and is not a kiln parity report"),
}


@pytest.mark.parametrize("case", OVERLAP_CASES)
def test_an_output_overlapping_an_input_is_refused_and_nothing_changes(work, capsys, case):
    argv, message = OVERLAP_CASES[case]
    (work / "link-to-ckpt").symlink_to(work / "ckpt")
    (work / "outside" / "parity.json").write_text('{"mine": true}\n')
    before = snapshot(work)
    code, line = kiln_error(capsys, [a.format(w=work) for a in argv])
    assert code == 2 and re.search(message, line), line
    assert snapshot(work) == before


UNWRITABLE_CASES = {
    "export under a file": (["export", "{w}/ckpt", "{w}/afile/out", "--no-progress"], "'.*afile' is a file"),
    "triton under a file": (["triton", "{w}/exp", "{w}/afile/repo"], "'.*afile' is a file"),
    "init-checkpoint under a file": (["init-checkpoint", "tiny-gpt-neox", "{w}/afile/c"], "'.*afile' is a file"),
    "parity report under a file": (["parity", "{w}/ckpt", "{w}/exp", "--report", "{w}/afile/r"],
                                   "'.*afile' is a file"),
    "export over a file": (["export", "{w}/ckpt", "{w}/afile", "--overwrite"], "'.*afile' is a file, not a folder"),
    "export in an unwritable folder": (["export", "{w}/ckpt", "{w}/locked/out", "--no-progress"],
                                       "cannot write in '.*locked'.*Permission denied"),
    "triton in an unwritable folder": (["triton", "{w}/exp", "{w}/locked"], "cannot write in '.*locked'"),
}


@pytest.mark.parametrize("case", UNWRITABLE_CASES)
def test_an_output_that_cannot_be_written_is_one_clear_error(work, capsys, monkeypatch, case):
    argv, message = UNWRITABLE_CASES[case]
    (work / "locked").mkdir()
    real_mkdtemp = atomic.tempfile.mkdtemp

    def mkdtemp(prefix="", dir=None):  # root may write anywhere: refuse as a read-only folder would
        if Path(dir).name == "locked":
            raise PermissionError(13, "Permission denied")
        return real_mkdtemp(prefix=prefix, dir=dir)

    monkeypatch.setattr(atomic.tempfile, "mkdtemp", mkdtemp)
    before = snapshot(work)
    code, line = kiln_error(capsys, [a.format(w=work) for a in argv])
    assert code == 2 and re.search(message, line), line
    assert snapshot(work) == before


# ----------------------------------------------------------------------------------------------- --overwrite


def _user_folder(path: Path) -> None:
    path.mkdir()
    (path / "notes.txt").write_text("a user's work\n")


OVERWRITE_CASES = {
    "export over a user folder": (["export", "{w}/ckpt", "{w}/target", "--overwrite"], _user_folder,
                                  "not a folder tensorkiln wrote \\(it has no manifest.json\\)"),
    "export over an export with a user file": (
        ["export", "{w}/ckpt", "{w}/target", "--overwrite"],
        lambda p: (shutil.copytree(p.parent / "exp", p), (p / "notes.txt").write_text("mine\n")),
        "holds files kiln export did not write \\(notes.txt\\)"),
    "export over a link to an export": (["export", "{w}/ckpt", "{w}/target", "--overwrite"],
                                        lambda p: p.symlink_to(p.parent / "exp"), "is a symbolic link"),
    "init-checkpoint over a user folder": (["init-checkpoint", "tiny-gpt-neox", "{w}/target", "--overwrite"],
                                           _user_folder, "no .kiln-folder.json of a checkpoint"),
    "init-checkpoint over an HF checkpoint": (
        ["init-checkpoint", "tiny-gpt-neox", "{w}/target", "--overwrite"],
        lambda p: shutil.copytree(p.parent / "ckpt", p, ignore=shutil.ignore_patterns(".kiln-folder.json")),
        "no .kiln-folder.json of a checkpoint"),
    "triton over a user folder": (["triton", "{w}/exp", "{w}/triton", "--name", "target", "--overwrite"],
                                  lambda p: _user_folder(p.parent / "triton" / "target"),
                                  "no .kiln-folder.json of a triton-model"),
}


@pytest.mark.parametrize("case", OVERWRITE_CASES)
def test_overwrite_replaces_only_a_folder_the_project_wrote(work, capsys, case):
    argv, make, message = OVERWRITE_CASES[case]
    (work / "triton").mkdir()
    make(work / "target")
    before = snapshot(work)
    code, line = kiln_error(capsys, [a.format(w=work) for a in argv])
    assert code == 2 and re.search(message, line), line
    assert snapshot(work) == before


def test_overwrite_replaces_what_the_project_wrote(work, capsys):
    from tensorkiln.export.cli import main as kiln

    for argv in (["init-checkpoint", "tiny-gpt-neox", work / "c"], ["triton", work / "exp", work / "repo"]):
        assert kiln([str(a) for a in argv]) == 0
        assert kiln([str(a) for a in argv]) == 2 and "already exists" in capsys.readouterr().err
        assert kiln([str(a) for a in argv] + ["--overwrite"]) == 0
    assert mf.ownership_problem(work / "exp") is None  # an export may be replaced by a new one
    assert sorted(p.name for p in work.iterdir()) == ["afile", "c", "ckpt", "exp", "outside", "repo"]


# ----------------------------------------------------------------------------------------------- killed runs


KILLED_RUN = """
import os, signal, sys
from pathlib import Path
from tensorkiln.runtime import atomic

target, kill_after = Path(sys.argv[1]), int(sys.argv[2])
renames, real_rename = [], os.rename
def rename(a, b):
    real_rename(a, b)
    renames.append(b)
    if len(renames) == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)
os.rename = rename
with atomic.staged_folder(target, overwrite=True, owned=lambda p: atomic.marker_problem(p, "test")) as built:
    (built / "data.txt").write_text("new")
    atomic.write_marker(built, "test")
    if kill_after == 0:
        os.kill(os.getpid(), signal.SIGKILL)
"""


def _killed_run(target: Path, kill_after: int) -> None:
    """A run writing ``target`` killed while building (0) or after its first or second rename of the swap."""
    result = subprocess.run([sys.executable, "-c", KILLED_RUN, str(target), str(kill_after)], check=False)
    assert result.returncode == -signal.SIGKILL


def _write(target: Path, text: str) -> list[str]:
    """One run writing ``target``; returns the warnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", KilnWarning)
        with atomic.staged_folder(target, overwrite=True, owned=lambda p: atomic.marker_problem(p, "test")) as built:
            (built / "data.txt").write_text(text)
            atomic.write_marker(built, "test")
    return [str(w.message) for w in caught if issubclass(w.category, KilnWarning)]


def test_a_killed_run_leaves_staging_that_the_next_run_removes_and_only_that(tmp_path):
    target = tmp_path / "out"
    _killed_run(target, 0)
    (stale,) = tmp_path.glob(".out.kiln-staging-*")
    assert (stale / "out" / "data.txt").read_text() == "new"  # a half-written build, as a killed export leaves
    decoys = {".out.kiln-staging-mine": None, ".out.kiln-staging-live": os.getpid(),
              ".out.kiln-staging-elsewhere": 1}
    for name, pid in decoys.items():  # a user's folder, a live run's, another host's: never touched
        (tmp_path / name).mkdir()
        if pid is not None:
            host = "another-host" if name.endswith("elsewhere") else socket.gethostname()
            (tmp_path / name / atomic.STAGING_RECORD).write_text(json.dumps(
                {"tool": "tensorkiln", "target": "out", "pid": pid, "host": host}))
    assert _write(target, "next") == [f"removed 1 staging folder(s) of {str(target)!r} left by killed runs"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", *decoys])
    assert (target / "data.txt").read_text() == "next"


def test_overwrite_keeps_the_old_folder_recoverable_until_the_new_one_is_in_place(tmp_path):
    target = tmp_path / "out"
    _write(target, "old")
    _killed_run(target, 1)  # killed between moving the old folder aside and renaming the new one in
    assert not target.exists() and (tmp_path / "out.kiln-old" / "data.txt").read_text() == "old"
    assert _write(target, "newer") == [
        f"removed 1 staging folder(s) of {str(target)!r} left by killed runs",
        f"restored {str(target)!r} from {str(tmp_path / 'out.kiln-old')!r}, where a run killed while replacing it "
        "had left it"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (target / "data.txt").read_text() == "newer"

    _killed_run(target, 2)  # killed after the new folder was in place, before the old one was removed
    assert (target / "data.txt").read_text() == "new" and (tmp_path / "out.kiln-old").is_dir()
    assert any("removed" in w and "out.kiln-old" in w for w in _write(target, "newest"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_backup_name_held_by_something_else_is_never_removed(tmp_path):
    target = tmp_path / "out"
    _write(target, "old")
    _user_folder(tmp_path / "out.kiln-old")
    before = snapshot(tmp_path)
    with pytest.raises(UsageError, match="'.*out.kiln-old' exists beside .* may be the only copy"):
        _write(target, "new")
    assert snapshot(tmp_path) == before


def test_a_killed_export_is_cleaned_by_the_next_one(work, monkeypatch):
    """The real command, killed while it builds its export; the next export on that folder removes the staging."""
    process = subprocess.Popen([sys.executable, "-m", "tensorkiln.export.cli", "export", str(work / "ckpt"),
                                str(work / "out"), "--no-progress"], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(work.glob(".out.kiln-staging-*/out")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert list(work.glob(".out.kiln-staging-*")), "the export was not caught while staging"
    from tensorkiln.export import exporter

    def quick(tmp, *args):  # the staging and replacing are under test here, not the export itself
        shutil.copytree(work / "exp", tmp, dirs_exist_ok=True)
        return mf.read_manifest(tmp)

    monkeypatch.setattr(exporter, "_export_into", quick)
    with pytest.warns(KilnWarning, match="removed 1 staging folder"):
        exporter.export(work / "ckpt", work / "out", progress=False)
    assert sorted(p.name for p in work.iterdir()) == ["afile", "ckpt", "exp", "out", "outside"]


def test_errors_are_kiln_errors_with_exit_status_2():
    for error in (ManifestError, UsageError):
        assert issubclass(error, KilnError) and error.exit_code == 2
