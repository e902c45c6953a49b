#!/usr/bin/env bash
# The main job on a fresh machine: set up the environment, build msdfast, show what it can use, and run the
# fused-sampling-step demo (compiled kernels vs the eager reference).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=setup_env.sh
. "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
msdfast info
msdfast demo
