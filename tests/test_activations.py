"""Every activation we accept equals HF's ACT2FN entry of the same name."""

import pytest
import torch
from transformers.activations import ACT2FN

from tensorkiln.reference.activations import ACTIVATIONS, get_activation
from tensorkiln.reference.config import ConfigError


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_matches_hf(name):
    x = torch.linspace(-12, 12, 2001)
    torch.testing.assert_close(get_activation(name)(x), ACT2FN[name](x), rtol=0, atol=1e-6)


def test_unknown_activation_names_the_key():
    with pytest.raises(ConfigError, match="'hidden_act'.*'prelu'"):
        get_activation("prelu")
