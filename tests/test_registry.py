"""The registry covers every architecture and every head HF 4.57.6 has, and every head has a parity test."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

from tensorkiln.reference import all_architectures, model_types

HF_MODULES = {
    "mra": "transformers.models.mra.modeling_mra",
    "mega": "transformers.models.deprecated.mega.modeling_mega",
    "megatron-bert": "transformers.models.megatron_bert.modeling_megatron_bert",
    "gpt_neox": "transformers.models.gpt_neox.modeling_gpt_neox",
    "nystromformer": "transformers.models.nystromformer.modeling_nystromformer",
}
TESTS = Path(__file__).parent


def test_the_five_architectures_are_registered():
    assert set(model_types()) == set(HF_MODULES)


@pytest.mark.parametrize("model_type", sorted(HF_MODULES))
def test_heads_match_hf(model_type):
    arch = all_architectures()[model_type]
    module = importlib.import_module(HF_MODULES[model_type])
    pattern = re.compile(rf"^{arch.class_prefix}(Model|For\w+)$")
    hf_heads = {pattern.match(name).group(1) for name in module.__all__ if pattern.match(name)}
    assert hf_heads, f"no HF heads found for {model_type}"
    assert set(arch.heads) == hf_heads


@pytest.mark.parametrize("model_type", sorted(HF_MODULES))
def test_every_head_has_a_parity_test(model_type):
    """Each parity file declares PARITY_HEADS, the heads its HF comparisons are parametrised over."""
    arch = all_architectures()[model_type]
    path = TESTS / f"test_parity_{model_type.replace('-', '_')}.py"
    assert path.is_file(), f"{model_type} has no parity test file {path.name}"
    tree = ast.parse(path.read_text())
    declared = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "PARITY_HEADS" for t in node.targets):
            declared = ast.literal_eval(node.value)
    assert declared is not None, f"{path.name} does not declare PARITY_HEADS"
    assert set(declared) == set(arch.heads), f"{path.name} misses {set(arch.heads) - set(declared)}"
    assert path.read_text().count("PARITY_HEADS") >= 2, f"{path.name} declares PARITY_HEADS but never uses it"
