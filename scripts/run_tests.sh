#!/usr/bin/env bash
# The test suite on a fresh machine: set up the environment, then run pytest (slow and GPU tests are
# deselected by default; pass -m slow or -m gpu to run them). Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup_env.sh" test
cd "$root"
exec "${TENSORKILN_VENV:-$root/.venv}/bin/python" -m pytest "$@"
