"""Shared fixtures: one session-wide cache of tiny checkpoints and their exports, and the native kernels library.

An export of a tiny preset takes 5-15 s on two cores, and the export, parity, runtime, Triton and CLI tests use
the same few, so they are made once per test session, on first use. Tests must not modify what the cache hands out:
copy a folder before tampering with it.

The session runs with an empty tensorkiln cache of its own (``TENSORKILN_CACHE_DIR``) and no
``TENSORKILN_ORT_LIBRARY``, so native kernels the developer built with ``kiln build-kernels`` never change which
kernels a test runs; tests that want them ask for the ``native_kernels`` fixture.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the tests' helper modules (tiny_exports, oracles)


def pytest_configure(config):
    config.tensorkiln_cache = tempfile.mkdtemp(prefix="tensorkiln-test-cache-")
    os.environ["TENSORKILN_CACHE_DIR"] = config.tensorkiln_cache
    os.environ.pop("TENSORKILN_ORT_LIBRARY", None)


def pytest_unconfigure(config):
    shutil.rmtree(getattr(config, "tensorkiln_cache", ""), ignore_errors=True)


@pytest.fixture(scope="session")
def exports(tmp_path_factory):
    from tiny_exports import Exports

    return Exports(tmp_path_factory.mktemp("tiny-exports"))


@pytest.fixture(scope="session")
def native_library():
    """libtensorkiln_ort.so, built once per session (tests/native_library.py); skips where it cannot be built."""
    from native_library import build_once

    return build_once()


@pytest.fixture
def native_kernels(native_library, monkeypatch):
    """The runtime's load() finds the test build of libtensorkiln_ort.so (TENSORKILN_ORT_LIBRARY)."""
    from tensorkiln.runtime import native

    monkeypatch.setenv(native.ENV_LIBRARY, str(native_library))
    return native_library
