"""The layering of docs/ARCHITECTURE.md holds: runtime <- reference <- export, and the runtime stays torch-free.

The checker (tests/import_rules.py) reads every import from the syntax tree; the second test shows it catching a
forbidden import planted in a copy of a layer, so the first test cannot pass by checking nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import import_rules

ROOT = Path(__file__).resolve().parents[1]


def test_every_import_points_down_the_stack():
    problems = import_rules.check_tree(ROOT)
    assert not problems, "imports against the layering rule:\n" + "\n".join(map(str, problems))


def test_the_checker_catches_forbidden_imports(tmp_path):
    for layer in import_rules.ALLOWED_LAYERS:
        shutil.copytree(ROOT / layer, tmp_path / layer, ignore=shutil.ignore_patterns("__pycache__"))
    assert import_rules.check_tree(tmp_path) == []
    (tmp_path / "runtime" / "lazy.py").write_text(
        "def f():\n    from ..export import exporter\n    import torch\n    return exporter, torch\n")
    (tmp_path / "reference" / "bad.py").write_text("from tensorkiln.export.specs import get_spec\n")
    (tmp_path / "runtime" / "fine.py").write_text("def g():\n    import tensorrt\n    return tensorrt\n")
    found = {(v.path, v.module) for v in import_rules.check_tree(tmp_path)}
    assert found == {("runtime/lazy.py", "tensorkiln.export"), ("runtime/lazy.py", "torch"),
                     ("reference/bad.py", "tensorkiln.export.specs")}


def test_runtime_may_not_import_an_optional_backend_at_module_level(tmp_path):
    (tmp_path / "runtime").mkdir()
    (tmp_path / "runtime" / "eager.py").write_text("import tensorrt\n")
    (tmp_path / "reference").mkdir()
    (tmp_path / "export").mkdir()
    assert [v.module for v in import_rules.check_tree(tmp_path)] == ["tensorrt"]


def test_every_package_folder_is_in_the_wheel():
    """pyproject.toml lists the packages by hand (the folders map onto tensorkiln.*): a new subpackage that is not
    listed would be missing from `pip install .` while an editable install still finds it."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    folders = {"tensorkiln." + ".".join(p.parent.relative_to(ROOT).parts)
               for layer in import_rules.ALLOWED_LAYERS for p in (ROOT / layer).rglob("__init__.py")}
    assert folders == listed


#: Most lines a module under reference/, export/ or runtime/ may have, and a function.
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def test_modules_and_functions_stay_small():
    """Small files with one job each: a module past MAX_MODULE_LINES or a function past MAX_FUNCTION_LINES wants
    splitting (or, for a function, a docstring line starting "Long:" that says why it is one piece)."""
    import ast

    problems = []
    for layer in import_rules.ALLOWED_LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            text = path.read_text()
            rel = path.relative_to(ROOT).as_posix()
            if text.count("\n") > MAX_MODULE_LINES:
                problems.append(f"{rel}: {text.count(chr(10))} lines")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = node.end_lineno - node.lineno + 1
                    reason = "Long:" in (ast.get_docstring(node) or "")
                    if length > MAX_FUNCTION_LINES and not reason:
                        problems.append(f"{rel}:{node.lineno} {node.name}: {length} lines")
    assert not problems, "\n".join(problems)


def test_lint_is_clean():
    """ruff (the rules in pyproject.toml: pyflakes, pycodestyle, isort, bugbear) over every Python file."""
    import shutil
    import subprocess
    import sys

    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is part of the test extra: pip install 'tensorkiln[test]'"
    result = subprocess.run([ruff, "check", "--output-format", "concise", "reference", "export", "runtime",
                             "scripts", "tests"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
