"""scripts/gpu_validate.sh --dry-run end to end on the CPU (issue 15 item 5): every stage runs its checks (tests
collected, bench CLI, the timing module on the tiny SD), GPU-only work is skipped with its reason, and the
summary (JSON + markdown) lands under --out."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash, timeout")
def test_dry_run_end_to_end(tmp_path: Path) -> None:
    res = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_validate.sh"), "--dry-run", "--out", str(tmp_path)],
                         capture_output=True, text=True, env={**__import__("os").environ, "PYTHON": sys.executable},
                         timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    status = {s["stage"]: s["status"] for s in summary["stages"]}
    assert status == {"env": "ok", "build": "skipped", "tests": "ok", "bench": "ok", "unet": "ok", "msd": "ok",
                      "trt": "skipped"}, summary["stages"]
    assert summary["dry_run"] and summary["ok"]
    unet = {r["mode"]: r for r in summary["timings"]["unet"]}
    assert unet["eager"]["status"] == "ok" and unet["eager"]["ms"] > 0
    assert unet["graphs"]["status"] == "skipped" and "CUDA" in unet["graphs"]["reason"]
    msd = {r["mode"]: r for r in summary["timings"]["msd"]}
    assert msd["eager"]["status"] == "ok" and msd["captured"]["status"] == "skipped"
    assert "| tests | ok |" in (tmp_path / "summary.md").read_text()


def test_unknown_argument_is_a_one_line_error(tmp_path: Path) -> None:
    res = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_validate.sh"), "--frobnicate"], capture_output=True,
                         text=True)
    assert res.returncode == 2 and "unknown argument --frobnicate" in res.stderr
