"""`msdfast toy` on a shared machine: the default thread count vs --threads 1, with one busy process beside it.

    python benchmarks/shared_machine.py --rounds 3 --out benchmarks/results/shared_machine.md [-- TOY ARGS]

Each round runs, in turn (interleaved, so drifting background load hits every variant alike):
  * default       `msdfast toy` at msdfast's defaults (threads = the CPUs this process may use,
                  OMP_WAIT_POLICY=PASSIVE set before torch loads: msdfast/_threads.py),
  * threads-1     the same with --threads 1,
  * spin-default  the same as `default` but with torch imported before msdfast, so the OpenMP runtime keeps
                  its spinning wait (the behaviour before issue 18),
each with one busy single-threaded Python loop started just before it and stopped right after (the "one
competing busy process"); `--idle` adds the same three without the competitor. Reported: the wall time of each
run (the toy's own timing.json), the median per variant and the ratio default / threads-1 of the medians, plus
the 1-minute load average before each run, since other users of the machine add contention we do not control.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUSY = "import time\nend = time.time() + {secs}\nwhile time.time() < end:\n    pass\n"
SPIN_LAUNCH = "import sys, torch\nfrom msdfast.cli import main\nraise SystemExit(main(sys.argv[1:]))\n"
VARIANTS = ("default", "threads-1", "spin-default")


def run_toy(variant: str, toy_args: list[str], busy: bool, out: Path) -> float:
    cmd = [sys.executable, "-c", SPIN_LAUNCH] if variant == "spin-default" else [sys.executable, "-m", "msdfast"]
    cmd += ["toy", *toy_args, "--out", str(out), "--no-progress"]
    if variant == "threads-1":
        cmd += ["--threads", "1"]
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("OMP_NUM_THREADS", None)
    competitor = subprocess.Popen([sys.executable, "-c", BUSY.format(secs=900)]) if busy else None
    try:
        time.sleep(0.2 if busy else 0.0)
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    return float(json.loads((out / "timing.json").read_text())["wall_seconds"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--idle", action="store_true", help="also run every variant without the busy competitor")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--out", default=None, help="markdown results file")
    p.add_argument("toy_args", nargs="*", help="arguments for `msdfast toy` (after --)")
    a = p.parse_args()
    rows: list[tuple[str, str, int, float, float]] = []
    tmp = Path(tempfile.mkdtemp(prefix="msdfast_shared_"))
    try:
        for r in range(a.rounds):
            for busy in ([True, False] if a.idle else [True]):
                for v in a.variants:
                    load = os.getloadavg()[0]
                    wall = run_toy(v, a.toy_args, busy, tmp / f"{v}_{r}_{busy}")
                    rows.append((v, "busy" if busy else "idle", r, wall, load))
                    print(f"round {r} {v:13s} {'busy' if busy else 'idle'}: {wall:7.1f} s  (load {load:.1f})",
                          flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {(v, b): statistics.median(w for v2, b2, _, w, _ in rows if (v2, b2) == (v, b))
           for v, b, *_ in rows}
    from msdfast.bench.harness import emit_report, machine_line

    lines = [f"# `msdfast toy` on a shared machine (issue 18 item 1)", "",
             f"{machine_line()}; toy args: `{' '.join(a.toy_args) or '(defaults)'}`;"
             f" {a.rounds} interleaved rounds.", "",
             f"Command: `python benchmarks/shared_machine.py --rounds {a.rounds}{' --idle' if a.idle else ''}"
             f"{' -- ' + ' '.join(a.toy_args) if a.toy_args else ''}`", "",
             "| variant | competitor | median wall s | runs (s) | load avg before each |", "|---|---|---:|---|---|"]
    for (v, b), m in med.items():
        runs = [(w, ld) for v2, b2, _, w, ld in rows if (v2, b2) == (v, b)]
        lines.append(f"| {v} | {b} | {m:.1f} | {', '.join(f'{w:.1f}' for w, _ in runs)} | "
                     f"{', '.join(f'{ld:.1f}' for _, ld in runs)} |")
    for b in ("busy", "idle"):
        if ("default", b) in med and ("threads-1", b) in med:
            lines += ["", f"**{b}: default / --threads 1 = {med[('default', b)] / med[('threads-1', b)]:.2f}x** "
                      f"(target <= 1.5x with one busy process)"]
        if ("spin-default", b) in med and ("threads-1", b) in med:
            lines.append(f"{b}: spinning default / --threads 1 = "
                         f"{med[('spin-default', b)] / med[('threads-1', b)]:.2f}x")
    emit_report("\n".join(lines) + "\n", a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
