"""The layering rule of docs/ARCHITECTURE.md, as a checker over source files (used by tests/test_layers.py).

Layers, bottom to top: ``runtime`` (numpy + onnxruntime, no torch), ``reference`` (torch; may use the runtime),
``export`` (torch, onnx, polygraphy; may use both). Every ``import`` and ``from ... import`` is read from the syntax
tree, at module level and inside functions alike, and relative imports are resolved against the file's package, so
a lazy import cannot hide a forbidden edge.
"""

from __future__ import annotations

import ast
import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "tensorkiln"
#: Which tensorkiln layers each layer may import (itself included).
ALLOWED_LAYERS = {
    "runtime": {"runtime"},
    "reference": {"reference", "runtime"},
    "export": {"export", "reference", "runtime"},
}
#: Third-party modules each layer may import anywhere (None: no limit). The runtime is the torch-free base.
ALLOWED_THIRD_PARTY: dict[str, set[str] | None] = {
    "runtime": {"numpy", "onnxruntime"},
    "reference": None,
    "export": None,
}
#: Optional backends the runtime may import inside a function, where their absence becomes a clear error.
RUNTIME_OPTIONAL = {"tensorrt", "polygraphy", "tokenizers", "tritonclient", "google", "triton_python_backend_utils",
                    "cmake", "ninja"}  # cmake/ninja: `kiln build-kernels` takes them from PyPI when PATH has none


@dataclasses.dataclass(frozen=True)
class Violation:
    path: str
    line: int
    module: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: imports {self.module}: {self.reason}"


def _package_of(root: Path, path: Path) -> list[str]:
    """The dotted package of a source file: ``runtime/x.py`` -> ["tensorkiln", "runtime"]."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return [PACKAGE, *parts[:-1]]  # a module's package is its folder, and so is an __init__'s


def imports(root: Path, path: Path) -> Iterator[tuple[int, str, bool]]:
    """(line, absolute module, inside a function) for every import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _package_of(root, path)
    functions: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            functions.update(id(child) for child in ast.walk(node) if child is not node)
    for node in ast.walk(tree):
        nested = id(node) in functions
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, nested
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module == PACKAGE or (node.level and not node.module):
                for alias in node.names:  # `from tensorkiln import runtime`, `from . import manifest`
                    yield node.lineno, f"{module}.{alias.name}", nested
            else:
                yield node.lineno, module, nested


def check_file(root: Path, path: Path, layer: str) -> list[Violation]:
    problems = []
    rel = path.relative_to(root).as_posix()
    third_party = ALLOWED_THIRD_PARTY[layer]
    for line, module, nested in imports(root, path):
        top = module.split(".")[0]
        if top == PACKAGE:
            parts = module.split(".")
            target = parts[1] if len(parts) > 1 else ""
            if target not in ALLOWED_LAYERS[layer]:
                problems.append(Violation(rel, line, module, f"{layer}/ may import only "
                                                            f"{sorted(ALLOWED_LAYERS[layer])} of tensorkiln"))
        elif top in sys.stdlib_module_names or top == "__future__" or third_party is None:
            continue
        elif top in third_party:
            continue
        elif layer == "runtime" and nested and top in RUNTIME_OPTIONAL:
            continue
        else:
            problems.append(Violation(rel, line, module, f"{layer}/ may import only the standard library and "
                                                        f"{sorted(third_party)}"
                                      + (" (optional backends inside functions)" if layer == "runtime" else "")))
    return problems


def check_tree(root: Path) -> list[Violation]:
    """Every violation of the layering rule in the layers under ``root``."""
    problems = []
    for layer in ALLOWED_LAYERS:
        folder = root / layer
        for path in sorted(folder.rglob("*.py")):
            problems += check_file(root, path, layer)
    return problems
