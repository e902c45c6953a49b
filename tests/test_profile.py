"""`msdfast profile`: NFE per gradient equals each method's documented formula; MSD batches its chains.

Formulas (batch B, N chains, T solver steps, CFG pairs count 2 -- the estimators' docstrings):
    SDS: 2B          ASD: 3B (cond + uncond at t and cond at t+ in one call)
    MSD stable:  T B (conditional DDIM inversion, shared by all chains) + T * 2NB (CFG, N chains, ONE call/step)
    MSD naive:   T * 2NB        MSD tweedie: 2B        MSD posterior: min(T, t_lambda + 1) * 2NB
    SDI: S * 2B (S inversion steps with CFG -6.5) + 2B      VSD: 2B (eps_phi is not the pretrained model)
    DSD (interp, path_eps "exact"): K * 2B once per seed/condition (the cached seed path) + 2B + 3B
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from msdfast.profile import add_profile_arguments, format_table, profile_gradients, run_profile
from msdfast.testing.tiny_sd import tiny_sd_path


def _build(method: str, den: Any, **opts: Any):  # noqa: ANN202
    from msdfast import estimators

    return estimators.build(method, den, **opts)


def _sd_inputs(den: Any, B: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = torch.randn(B, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    pe = den.prompt_embeddings("a lighthouse")
    return x, pe.cond.expand(B, -1, -1), pe.uncond.expand(B, -1, -1)


B, N, T = 2, 3, 3


@pytest.mark.parametrize("method,opts,nfe", [
    ("sds", {}, 2 * B),
    ("asd", {}, 3 * B),
    ("msd", {"solver": "stable", "chains": N, "steps": T}, T * B + T * 2 * N * B),
    ("msd", {"solver": "naive", "chains": N, "steps": T}, T * 2 * N * B),
    ("msd", {"solver": "tweedie", "chains": N, "steps": T}, 2 * B),
    ("sdi", {"inversion_steps": T}, T * 2 * B + 2 * B),
    ("vsd", {}, 2 * B),
])
def test_nfe_per_gradient_matches_formula(den, method: str, opts: dict, nfe: int) -> None:  # noqa: ANN001
    est = _build(method, den, guidance_scale=7.5, **opts)
    x, c, u = _sd_inputs(den, B)
    profs = profile_gradients(est, x, c, u, n_grads=2, generator=torch.Generator().manual_seed(1))
    assert len(profs) == 2
    for p in profs:
        assert p.nfe == nfe and p.logged_nfe == nfe
        assert 0 < p.denoiser_seconds <= p.total_seconds and p.peak_memory_bytes > 0


def test_dsd_seed_path_is_computed_once(den) -> None:  # noqa: ANN001
    K = 3
    est = _build("dsd", den, guidance_scale=7.5, ddim_steps=K)
    x, c, u = _sd_inputs(den, B)
    p0, p1 = profile_gradients(est, x, c, u, n_grads=2, generator=torch.Generator().manual_seed(1))
    assert p0.nfe == K * 2 * B + 2 * B + 3 * B  # seed path (cached) + path eps + guided pair and target
    assert p1.nfe == 2 * B + 3 * B               # the cache serves the second gradient
    assert [cl["batch"] for cl in p1.calls] == [2 * B, 3 * B]


def test_msd_posterior_nfe(den) -> None:  # noqa: ANN001
    est = _build("msd", den, guidance_scale=7.5, solver="posterior", chains=N, steps=T, bandwidth=0.5)
    t_lam = int(den.schedule.t_for_ve_sigma(0.5))
    x, c, u = _sd_inputs(den, B)
    (p,) = profile_gradients(est, x, c, u, n_grads=1, generator=torch.Generator().manual_seed(1))
    assert p.nfe == min(T, t_lam + 1) * 2 * N * B


def test_msd_issues_one_unet_call_per_solver_step(den) -> None:  # noqa: ANN001
    """N chains x CFG pair = ONE call of batch 2NB per solver step (not 2N calls), after T inversion calls."""
    est = _build("msd", den, guidance_scale=7.5, solver="stable", chains=N, steps=T)
    x, c, u = _sd_inputs(den, B)
    (p,) = profile_gradients(est, x, c, u, n_grads=1, generator=torch.Generator().manual_seed(1))
    assert [call["batch"] for call in p.calls] == [B] * T + [2 * N * B] * T
    assert "[12]" in format_table("msd", [p])  # 2 * N * B = 12 shows in the call-log column


class _Counting:
    """A fake estimator on a real denoiser: 2 calls of batch 3 plus some non-denoiser work."""

    def __init__(self, den: Any) -> None:
        self.denoiser = den

    def __call__(self, x, cond, uncond, generator=None):  # noqa: ANN001, ANN204
        from msdfast.estimators.base import GradientEstimate
        n0 = self.denoiser.stats.nfe
        for _ in range(2):
            self.denoiser.eps(x, 10, cond, tag="fake")
        torch.linalg.qr(torch.randn(200, 200))  # "everything else"
        return GradientEstimate(x, x.sum(), self.denoiser.stats.nfe - n0)


def test_profile_bookkeeping(den) -> None:  # noqa: ANN001
    x, c, _ = _sd_inputs(den, 3)
    den.stats.record_calls = False
    profs = profile_gradients(_Counting(den), x, c, n_grads=3, warmup=1)
    assert den.stats.record_calls is False  # restored
    assert [p.index for p in profs] == [0, 1, 2]
    for p in profs:
        assert p.nfe == p.logged_nfe == 6 and [cl["batch"] for cl in p.calls] == [3, 3]
        assert p.other_seconds == pytest.approx(p.total_seconds - p.denoiser_seconds)
        assert p.to_dict()["n_calls"] == 2
    with pytest.raises(ValueError, match="n_grads"):
        profile_gradients(_Counting(den), x, c, n_grads=0)


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_profile_arguments(p)
    return p.parse_args(argv)


def test_cli_with_tiny_sd(tmp_path: Path, capsys: pytest.CaptureFixture, den, root: Path,  # noqa: ANN001
                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSDFAST_CACHE", str(tmp_path / "cache"))
    _build("sds", den)
    out = tmp_path / "p.json"
    rc = run_profile(_args(["--method", "sds", "--model", str(tiny_sd_path(root=root)),
                            "--n-grads", "2", "--warmup", "0", "--batch", "2", "--json", str(out)]))
    assert rc == 0
    blob = json.loads(out.read_text())
    assert [g["nfe"] for g in blob["gradients"]] == [4, 4]
    assert "method: sds" in capsys.readouterr().out


def test_cli_with_toy_tree(tmp_path: Path, den) -> None:  # noqa: ANN001
    _build("msd", den)
    out = tmp_path / "p.json"
    rc = run_profile(_args(["--method", "msd", "--toy", "tree", "--n-grads", "1", "--warmup", "0", "--batch", "4",
                            "--guidance-scale", "2", "--option", "chains=5", "--option", "steps=4",
                            "--json", str(out)]))
    assert rc == 0
    (g,) = json.loads(out.read_text())["gradients"]
    # tree: class A vs the A+B model as uncond (one batched call): stable = T B + T 2 N B
    assert g["nfe"] == 4 * 4 + 4 * 2 * 5 * 4
    assert [c["batch"] for c in g["calls"]] == [4] * 4 + [40] * 4
