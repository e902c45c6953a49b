#!/usr/bin/env bash
# One command for the first (short, ~10 min) run on a fresh GPU machine (H200, 16 cores): a full verdict on
# msdfast's GPU code within 8 minutes, written under $OUT (summary.json + summary.md + each stage's log/JSON).
#
#   scripts/gpu_validate.sh [--dry-run] [--out DIR] [--budget SECONDS] [--with-trt]
#
# Stages (each under its own time budget; a stage whose budget would overrun the total is SKIPPED, one that runs
# out of time is recorded as a timeout, never a failure of the script):
#   env     (20 s)  nvidia-smi, msdfast.info(), torch/CUDA/Triton/TensorRT versions         -> env.log
#   build  (150 s)  the extension for sm_90 only (TORCH_CUDA_ARCH_LIST=9.0, MAX_JOBS=cores)   -> build.log
#   tests   (90 s)  CUDA/Triton/TensorRT tests (pytest-xdist -n cores when installed)         -> tests.log, junit.xml
#   bench   (40 s)  msdfast bench kernels --quick (the GPU table)                              -> bench.md, bench.json
#   unet   (120 s)  SD-1.5-shaped UNet per call, batch 2 and 8, fp16: eager/compile/graphs     -> unet.json
#   msd     (60 s)  one MSD gradient (chains 4, steps 10) eager vs captured (CUDA graphs)      -> msd.json
#   trt (the rest)  the UNet as an fp16 TensorRT engine (--with-trt; the build takes minutes)  -> unet_trt.json
# (the budgets add up to the default --budget 480; time a stage leaves unused goes to the later ones)
# --dry-run (any machine, a CI test runs it): every stage runs its checks without a GPU: the build is not run,
# the tests are collected only, the bench suite is listed, the timings run the tiny SD on the CPU (1 iteration);
# GPU-only work is skipped with the reason.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DRY=0; OUT_DIR="${OUT:-$ROOT/gpu_validate_out}"; BUDGET=480; WITH_TRT=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) OUT_DIR="$2"; shift ;;
    --budget) BUDGET="$2"; shift ;;
    --with-trt) WITH_TRT=1 ;;
    -h|--help) sed -n 2,20p "$0"; exit 0 ;;
    *) echo "gpu_validate.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$OUT_DIR"
PY="${PYTHON:-python}"
CORES=$(nproc)
T0=$(date +%s)
RESULTS="$OUT_DIR/stages.tsv"; : > "$RESULTS"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
HAVE_GPU=0
if [ "$DRY" = 0 ] && "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  HAVE_GPU=1
fi

# stage NAME BUDGET COMMAND...: run COMMAND under `timeout BUDGET`, log to $OUT_DIR/NAME.log, record the result
stage() {
  local name="$1" budget="$2"; shift 2
  local left=$(( BUDGET - ($(date +%s) - T0) ))
  if [ "$left" -lt "$budget" ]; then
    printf '%s\tskipped\t0\t%s\n' "$name" "budget: ${left} s left of ${BUDGET}, stage needs ${budget}" >> "$RESULTS"
    echo "== $name: skipped (budget)"; return 0
  fi
  echo "== $name (budget ${budget} s)"
  local t=$(date +%s) rc
  timeout --signal=INT --kill-after=10 "$budget" "$@" > "$OUT_DIR/$name.log" 2>&1; rc=$?
  local dt=$(( $(date +%s) - t )) status=ok note=""
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then status=timeout; note="ran past its ${budget} s budget"
  elif [ "$rc" != 0 ]; then status=failed; note="exit $rc: $(tail -n 1 "$OUT_DIR/$name.log" | tr '\t' ' ' | cut -c1-200)"; fi
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$dt" "$note" >> "$RESULTS"
  echo "   $status in ${dt} s ${note}"
}
skip() { printf '%s\tskipped\t0\t%s\n' "$1" "$2" >> "$RESULTS"; echo "== $1: skipped ($2)"; }

TEST_FILES="tests/test_ops_ddim_step.py tests/test_ops_distill_grad.py tests/test_ops_chain_mean_shift.py
  tests/test_ops_noise_to_levels.py tests/test_ops_empirical_denoiser.py tests/test_ops_gmm_score.py
  tests/test_ops_hash_grid.py tests/test_triton_audit.py tests/test_sd_tensorrt.py tests/test_host_syncs.py
  tests/test_capturable_step.py"
XDIST=""
if "$PY" -c "import xdist" 2>/dev/null; then XDIST="-n $CORES"; fi

ENV_BUDGET=20; [ "$HAVE_GPU" = 1 ] || ENV_BUDGET=120   # a busy 2-core CI box imports slowly
stage env "$ENV_BUDGET" bash -c "nvidia-smi || true; $PY -c 'import msdfast; msdfast.info()'; \
  $PY -c 'import torch; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.is_available())'; \
  $PY -c 'import triton; print(\"triton\", triton.__version__)' || true; \
  $PY -c 'import tensorrt; print(\"tensorrt\", tensorrt.__version__)' || echo 'tensorrt: not installed'"

if [ "$HAVE_GPU" = 1 ]; then
  stage build 150 env TORCH_CUDA_ARCH_LIST="9.0" MAX_JOBS="$CORES" "$PY" setup.py build_ext --inplace
  # shellcheck disable=SC2086
  stage tests 90 "$PY" -m pytest -q $XDIST -p no:cacheprovider --junitxml="$OUT_DIR/junit.xml" $TEST_FILES
  stage bench 40 "$PY" -m msdfast bench kernels --quick --json "$OUT_DIR/bench.json" --table "$OUT_DIR/bench.md"
  stage unet 120 "$PY" -m msdfast.testing.gpu_timing unet --json "$OUT_DIR/unet.json" --batches 2 8 \
    --modes eager compile graphs
  stage msd 60 "$PY" -m msdfast.testing.gpu_timing msd --json "$OUT_DIR/msd.json" --chains 4 --steps 10 --iters 5
  if [ "$WITH_TRT" = 1 ]; then
    stage trt $(( BUDGET - ($(date +%s) - T0) - 5 )) "$PY" -m msdfast.testing.gpu_timing unet \
      --json "$OUT_DIR/unet_trt.json" --batches 2 8 --modes trt
  else
    skip trt "not asked for (--with-trt; the fp16 engine build takes minutes)"
  fi
else
  why="no CUDA GPU"; [ "$DRY" = 1 ] && why="dry run"
  skip build "$why: would run TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=$CORES $PY setup.py build_ext --inplace"
  # shellcheck disable=SC2086
  stage tests 120 "$PY" -m pytest -q --collect-only -p no:cacheprovider $TEST_FILES
  stage bench 60 "$PY" -m msdfast bench --help
  stage unet 120 "$PY" -m msdfast.testing.gpu_timing unet --tiny --device cpu --json "$OUT_DIR/unet.json" \
    --batches 2 --modes eager graphs --iters 1 --warmup 1
  stage msd 120 "$PY" -m msdfast.testing.gpu_timing msd --tiny --device cpu --json "$OUT_DIR/msd.json" \
    --chains 2 --steps 2 --iters 1 --warmup 0
  skip trt "$why"
fi

"$PY" - "$OUT_DIR" "$DRY" "$(( $(date +%s) - T0 ))" "$BUDGET" <<'PYEOF'
import json, subprocess, sys
from pathlib import Path
out, dry, total, budget = Path(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3]), int(sys.argv[4])
stages = []
for line in (out / "stages.tsv").read_text().splitlines():
    name, status, secs, note = (line.split("\t") + [""])[:4]
    stages.append({"stage": name, "status": status, "seconds": int(secs), "note": note})
timings = {}
for name in ("unet", "msd", "unet_trt"):
    f = out / f"{name}.json"
    if f.is_file():
        timings[name] = json.loads(f.read_text())
try:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
except OSError:
    commit = "?"
summary = {"dry_run": dry, "commit": commit, "total_seconds": total, "budget_seconds": budget,
           "stages": stages, "timings": timings,
           "ok": all(s["status"] in ("ok", "skipped", "timeout") for s in stages)}   # only "failed" fails
(out / "summary.json").write_text(json.dumps(summary, indent=1))
md = [f"# gpu_validate {'(dry run) ' if dry else ''}at {commit}: {total} s of {budget} s", "",
      "| stage | status | s | note |", "|---|---|---|---|"]
md += [f"| {s['stage']} | {s['status']} | {s['seconds']} | {s['note']} |" for s in stages]
for name, rows in timings.items():
    md += ["", f"## {name}", "", "| what | batch/chains | mode | ms | peak MiB | status |", "|---|---|---|---|---|---|"]
    md += [f"| {r['what']} | {r.get('batch', r.get('chains'))} | {r['mode']} | {r.get('ms', '-')} | "
           f"{r.get('peak_mib') or '-'} | {r['status']} {r.get('reason', '')} |" for r in rows]
(out / "summary.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
sys.exit(0 if summary["ok"] else 1)
PYEOF
