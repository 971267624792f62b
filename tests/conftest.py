"""Shared fixtures: one session-wide cache of tiny checkpoints and their exports.

An export of a tiny preset takes 5-15 s on two cores, and the export, parity, runtime, Triton and CLI tests use
the same few, so they are made once per test session, on first use. Tests must not modify what the cache hands out:
copy a folder before tampering with it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the tests' helper modules (tiny_exports, oracles)


@pytest.fixture(scope="session")
def exports(tmp_path_factory):
    from tiny_exports import Exports

    return Exports(tmp_path_factory.mktemp("tiny-exports"))
