#!/usr/bin/env bash
# The main job on its built-in default: build the five demo checkpoints (published configs, random weights)
# and run the reference models on them, printing one table. Extra arguments go to `kiln demo`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup_env.sh" export
cd "$root"
exec "${TENSORKILN_VENV:-$root/.venv}/bin/kiln" demo "$@"
