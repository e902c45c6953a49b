"""kill -9 at a random step, then `--resume`, reproduces the uninterrupted run bit for bit (issue 17 item 9):
`msdfast image` (SDS, VSD, DSD), `msdfast 3d` and `msdfast toy`, each as a real subprocess on the tiny SD.

Each case runs the command uninterrupted, runs it again and SIGKILLs it once metrics.jsonl (or the toy's cells/)
shows the chosen number of completed steps, resumes it with --resume, and compares: every step's loss and NFE,
the final image's bytes and the checkpoint's field weights (the toy: its tables and final points). The killed
run leaves a stale run.lock behind: the resume takes it over.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from msdfast.checkpoint import load_checkpoint
from msdfast.testing.tiny_sd import tiny_sd_path

pytestmark = pytest.mark.slow   # ~20-40 s per case: three subprocesses that import torch/diffusers each

REPO = Path(__file__).resolve().parent.parent


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               MSDFAST_CACHE=str(tmp_path / "cache"))
    env.pop("MSDFAST_VALUE_CHECKS", None)
    return env


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "msdfast", *args], env=_env(tmp_path), capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    return p


def _progress(out: Path, kind: str) -> int:
    if kind == "toy":
        return len(list((out / "cells").glob("cell--*.json"))) if (out / "cells").is_dir() else 0
    try:
        return sum(1 for _ in open(out / "metrics.jsonl"))
    except OSError:
        return 0


def _kill_after(args: list[str], out: Path, k: int, tmp_path: Path, kind: str) -> None:
    p = subprocess.Popen([sys.executable, "-m", "msdfast", *args], env=_env(tmp_path),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while _progress(out, kind) < k and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    if p.poll() is not None:
        pytest.fail(f"the run ended (rc {p.returncode}) before step {k}: {p.stderr.read()[-1000:]}")
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    p.stderr.close()
    assert p.returncode == -signal.SIGKILL


def _same_run(a: Path, b: Path) -> None:
    ma, mb = json.loads((a / "metrics.json").read_text()), json.loads((b / "metrics.json").read_text())
    assert [(r["step"], r["loss"], r["nfe"], r["grad_norm"]) for r in ma["history"]] == \
           [(r["step"], r["loss"], r["nfe"], r["grad_norm"]) for r in mb["history"]]
    assert ma["total_nfe"] == mb["total_nfe"]
    assert (a / "final.png").read_bytes() == (b / "final.png").read_bytes()
    ca, cb = load_checkpoint(a / "checkpoint.pt"), load_checkpoint(b / "checkpoint.pt")
    for (k, x), y in zip(ca["field"].items(), cb["field"].values()):
        assert torch.equal(x, y), k
    assert torch.equal(ca["rng"]["torch"], cb["rng"]["torch"])
    assert not (b / "run.lock").exists()


SMALL_3D = ["--render-size", "16", "--n-samples", "8", "--hidden", "16", "--grid", "n_levels=4",
            "--grid", "log2_hashmap_size=12", "--grid", "base_resolution=4", "--grid", "per_level_scale=1.5",
            "--snapshot-views", "2"]
CASES = {
    "image-sds": ["image", "--method", "sds", "--field", "grid"],
    "image-vsd": ["image", "--method", "vsd", "--field", "latent"],
    "image-dsd": ["image", "--method", "dsd", "--field", "latent", "--option", "ddim_steps=2"],
    "3d-sds": ["3d", "--method", "sds", *SMALL_3D],
}


@pytest.mark.parametrize("case,seed", [("image-sds", 0), ("image-sds", 1), ("image-vsd", 0), ("image-dsd", 0),
                                       ("3d-sds", 0)])
def test_kill_9_then_resume_is_bit_exact(root: Path, tmp_path: Path, case: str, seed: int) -> None:  # noqa: ANN001
    steps = 6
    # killed once step k's metrics line is written: step k-1's checkpoint exists (k >= 2), step k's may not
    k = random.Random(f"{case}{seed}").randint(2, steps - 1)
    base = [*CASES[case], "--model", str(tiny_sd_path(root=root)), "--prompt", "a red apple", "--steps", str(steps),
            "--seed", "3", "--ckpt-every", "1", "--snapshot-every", "2", "--no-progress"]
    full = _uninterrupted(case, base, tmp_path)
    part = tmp_path / "part"
    _kill_after([*base, "--out", str(part)], part, k, tmp_path, "run")
    _run([*base, "--out", str(part), "--resume"], tmp_path)
    _same_run(full, part)


_FULL: dict[str, Path] = {}


def _uninterrupted(case: str, base: list[str], tmp_path: Path) -> Path:
    """The uninterrupted run of a case, made once per session (the seeds differ only in where the kill lands)."""
    if case not in _FULL:
        _run([*base, "--out", str(tmp_path / "full")], tmp_path)
        _FULL[case] = tmp_path / "full"
    return _FULL[case]


def test_toy_kill_9_then_resume(tmp_path: Path) -> None:
    import numpy as np

    base = ["toy", "--grid", "5", "--steps", "40", "--methods", "sds", "msd-tweedie", "ddim", "asd",
            "--n-data", "300", "--no-efficiency", "--no-landscape", "--no-progress", "--figure-resolution", "8"]
    _run([*base, "--out", str(tmp_path / "full")], tmp_path)
    part = tmp_path / "part"
    _kill_after([*base, "--out", str(part)], part, 1, tmp_path, "toy")
    _run([*base, "--out", str(part), "--resume"], tmp_path)
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (tmp_path / "full", part))
    assert ra["table1"] == rb["table1"]
    with np.load(tmp_path / "full" / "points.npz") as a, np.load(part / "points.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for f in a.files:
            np.testing.assert_array_equal(a[f], b[f])
