# Sourced by scripts/run_main.sh and .ci/run: create (or reuse) a virtual environment, install torch, the
# requirements and msdfast (building the compiled extension msdfast._C), then leave the venv activated.
#   MSDFAST_VENV   venv directory (default: build/venv inside the checkout)
#   MSDFAST_REQS   requirements file (default: requirements.txt; the CI uses requirements-dev.txt)
#   TORCH_SPEC     torch to install first (default torch==2.13.0, the CPU build; on a CUDA machine pre-install
#                  your CUDA torch and set TORCH_SPEC=skip, plus TORCH_CUDA_ARCH_LIST, e.g. "8.0;9.0")
#   MAX_JOBS       parallel compile jobs (default 2)
# torch goes in first and the package is built without build isolation: an isolated build would download the
# newest (CUDA) torch, gigabytes, and build against it (REFERENCE.md sec. 2).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MSDFAST_VENV:-$ROOT/build/venv}"
REQS="${MSDFAST_REQS:-$ROOT/requirements.txt}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating venv $VENV"
    python3 -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
if [ "$TORCH_SPEC" != "skip" ]; then
    echo "== pip install $TORCH_SPEC"
    python -m pip install -q "$TORCH_SPEC"
fi
echo "== pip install -r $(basename "$REQS")"
if [ "$TORCH_SPEC" = "skip" ]; then
    # Keep the pre-installed (CUDA) torch: install the requirements without their torch pin.
    mkdir -p "$ROOT/build"
    grep -hv -e '^torch' -e '^-r' "$ROOT/requirements.txt" "$REQS" | sort -u > "$ROOT/build/requirements-notorch.txt"
    python -m pip install -q -r "$ROOT/build/requirements-notorch.txt"
else
    python -m pip install -q -r "$REQS"
fi
echo "== building msdfast (MAX_JOBS=${MAX_JOBS:-2})"
_t0=$(date +%s)
MAX_JOBS="${MAX_JOBS:-2}" python -m pip install -q --no-build-isolation --no-deps -e "$ROOT"
echo "== build took $(( $(date +%s) - _t0 )) s"
