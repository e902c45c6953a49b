#!/usr/bin/env bash
# The main job on a fresh machine: set up the environment, build msdfast, show what it can use, and run the
# 2D toy study (MSD paper tables 1-3) with its default settings; extra arguments go to `msdfast toy`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=setup_env.sh
. "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
msdfast info
msdfast toy "$@"
