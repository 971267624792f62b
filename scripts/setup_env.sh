#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install tensorkiln with the given extra.
# Usage: scripts/setup_env.sh EXTRA   (EXTRA is "export" for the main job, "test" for the test suite)
set -euo pipefail
extra="${1:-test}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${TENSORKILN_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
fi
# torch is pinned to 2.13.0 in pyproject.toml: installing it first keeps pip from resolving a CUDA build.
"$venv/bin/python" -m pip install --quiet "torch==2.13.0"
"$venv/bin/python" -m pip install --quiet -e "$root[$extra]"
