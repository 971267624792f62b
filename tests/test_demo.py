"""The main job (`kiln demo`) runs every demo architecture end to end on the tiny presets."""

from tensorkiln.reference import model_types
from tensorkiln.runtime.cli import main as kiln


def test_demo_runs_every_architecture(tmp_path, capsys):
    assert kiln(["demo", "--size", "tiny", "--out", str(tmp_path), "--seq", "600"]) == 0
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| tiny-")]
    assert {row.split("|")[2].strip() for row in rows} == set(model_types())
    assert all(row.rstrip().endswith("| yes |") for row in rows)
