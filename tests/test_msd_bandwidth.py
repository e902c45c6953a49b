"""MSD's bandwidth: the paper's monotonically decreasing default everywhere, its termination criterion
(Algorithm 2: stop once lambda < lambda_min, and say so) and the error for a bandwidth already below lambda_min."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from estimator_helpers import small_gmm
from msdfast.denoisers.gmm import GMMDenoiser
from msdfast.errors import UserInputError
from msdfast.estimators import build
from msdfast.estimators.bandwidth import BandwidthSchedule


def test_python_default_decreases_monotonically_to_termination() -> None:
    est = build("msd", GMMDenoiser(small_gmm()), solver="tweedie")
    lams = []
    for k in range(10):
        est.update_step(k, 10)
        lams.append(est.lam)
    assert est.bandwidth.kind == "linear" and lams[0] == pytest.approx(0.1 ** 0.5)
    assert all(b < a for a, b in zip(lams, lams[1:])), lams
    assert est.finished and not any(BandwidthSchedule()(k / 9) < 1e-3 for k in range(9))


def test_bandwidth_below_lambda_min_is_an_error_naming_both() -> None:
    for make in (lambda: BandwidthSchedule(0.01, lambda_min=0.05),
                 lambda: build("msd", GMMDenoiser(small_gmm()), bandwidth=0.01, lambda_min=0.05),
                 lambda: BandwidthSchedule.from_options({"bandwidth": 0.01, "lambda_min": 0.05, "chains": 4})):
        with pytest.raises(UserInputError, match=r"bandwidth.*0\.01.*lambda_min.*0\.05"):
            make()
    BandwidthSchedule(0.05, lambda_min=0.05)   # equal is allowed: the first step runs


def test_pipeline_rejects_it_before_loading_a_model(tmp_path: Path) -> None:
    from msdfast.pipelines.image import ImageConfig, distill_image

    cfg = ImageConfig(model=str(tmp_path / "no-such-model"), prompt="a red apple", method="msd", steps=4,
                      out=str(tmp_path / "run"), options={"bandwidth": 0.001, "lambda_min": 0.01}, progress=False)
    with pytest.raises(UserInputError, match=r"0\.001.*0\.01"):
        distill_image(cfg)
    assert not (tmp_path / "run" / "final.png").exists()


def test_cli_says_so_in_one_line_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from msdfast.cli import main

    rc = main(["image", "--model", str(tmp_path / "no-such-model"), "--prompt", "x", "--method", "msd",
               "--option", "bandwidth=0.001", "--option", "lambda_min=0.01", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "0.001" in err and "lambda_min = 0.01" in err, err
    assert not (tmp_path / "run").exists()


def test_image_run_on_tiny_sd_decreases_lambda_and_stops_below_lambda_min(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """`msdfast image` with MSD's defaults (no schedule option): lambda strictly decreases step by step and the run
    stops, saying so, at the first step whose lambda is below lambda_min (linear sqrt(0.1) -> 0 over 5 steps:
    0.316, 0.237, 0.158, 0.079 < 0.1)."""
    pytest.importorskip("diffusers")
    from msdfast.cli import main
    from msdfast.testing.tiny_sd import tiny_sd_path

    monkeypatch.setenv("MSDFAST_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    argv = ["image", "--model", str(tiny_sd_path(root=tmp_path)), "--prompt", "a red apple", "--method", "msd",
            "--steps", "5", "--out", str(out), "--no-progress", "--ckpt-every", "0", "--snapshot-every", "0",
            "--field", "latent", "--option", "chains=1", "--option", "steps=2", "--option", "lambda_min=0.1"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    lams = [r["lambda"] for r in metrics["history"]]
    assert len(lams) == 3 and all(b < a for a, b in zip(lams, lams[1:])), lams
    assert min(lams) >= 0.1 and metrics["converged"] and metrics["steps_done"] == 3
    said = capsys.readouterr()
    assert "lambda_min = 0.1" in said.out + said.err and "converged at step 3" in said.out + said.err
    assert (out / "final.png").exists()
