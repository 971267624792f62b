"""The main job (`kiln demo`) runs the whole pipeline on every demo architecture, at the tiny presets."""

import json

from tensorkiln.export.cli import main as kiln
from tensorkiln.reference import all_architectures


def test_demo_runs_the_pipeline_for_every_architecture(tmp_path, capsys):
    assert kiln(["demo", "--size", "tiny", "--out", str(tmp_path), "--seq", "600", "--threads", "2"]) == 0
    table = capsys.readouterr().out
    rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| tiny-")]
    classes = {cells[1].strip() for cells in rows}
    for model_type, arch in all_architectures().items():
        assert any(name.startswith(arch.class_prefix) for name in classes), model_type
    assert all(cells[6].strip() == "passed" for cells in rows), table
    for preset in (cells[0].strip() for cells in rows):
        report = json.loads((tmp_path / "exports" / f"{preset}-parity" / "parity.json").read_text())
        assert report["status"] == "passed" and len(report["checks"]) >= 2
        assert (tmp_path / "exports" / preset / "manifest.json").is_file()
    neox = next(cells for cells in rows if cells[0].strip() == "tiny-gpt-neox")
    assert float(neox[12]) > 0  # generation tokens/s through the exported cache
