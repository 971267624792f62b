"""The installed tensorkiln version, read from the package metadata (``pyproject.toml`` is its only source)."""

from __future__ import annotations

from importlib import metadata


def package_version() -> str:
    """The version of the installed ``tensorkiln`` distribution; ``0+unknown`` for a source tree not installed."""
    try:
        return metadata.version("tensorkiln")
    except metadata.PackageNotFoundError:
        return "0+unknown"
