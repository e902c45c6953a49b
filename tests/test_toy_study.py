"""The 2D distillation study (`msdfast toy`): landscape integration, eq. 17 efficiency, tables, end to end."""
from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch

from msdfast.toy import efficiency as eff
from msdfast.toy import landscape as land
from msdfast.toy import report


# ----------------------------------------------------------------------------------------- landscape
def test_landscape_reconstructs_quadratic_up_to_constant() -> None:
    # g = grad Q for Q = a x^2 + b x y + c y^2 + d x + e y: trapezoid edges integrate a linear g exactly.
    a, b, c, d, e = 0.7, -0.4, 1.3, 0.25, -0.6
    Q = lambda p: a * p[:, 0] ** 2 + b * p[:, 0] * p[:, 1] + c * p[:, 1] ** 2 + d * p[:, 0] + e * p[:, 1]  # noqa: E731
    gradQ = lambda p: torch.stack([2 * a * p[:, 0] + b * p[:, 1] + d,  # noqa: E731
                                   b * p[:, 0] + 2 * c * p[:, 1] + e], 1)
    out = land.reconstruct_landscape(gradQ, n=17, repeats=1, dtype=torch.float64)
    _, pts = land.make_grid(17)
    q = Q(torch.as_tensor(pts)).numpy().reshape(17, 17)
    q = q - q.mean()
    np.testing.assert_allclose(out["loss"], q, atol=1e-7)
    np.testing.assert_allclose(out["objective"], -q, atol=1e-7)
    # the layout: loss[i, j] is at (x = xs[j], y = xs[i]); a sign or transpose error fails here
    assert out["loss"][0, -1] - out["loss"][0, 0] == pytest.approx(q[0, -1] - q[0, 0], abs=1e-7)


def test_landscape_objective_peaks_where_descent_leads() -> None:
    # descent gradient g = x - m pulls points to m: the plotted objective -L must peak there
    m = torch.tensor([0.45, -0.3], dtype=torch.float64)
    out = land.reconstruct_landscape(lambda p: p - m, n=21, dtype=torch.float64)
    i, j = np.unravel_index(np.argmax(out["objective"]), out["objective"].shape)
    assert out["xs"][j] == pytest.approx(0.45, abs=0.08) and out["xs"][i] == pytest.approx(-0.3, abs=0.08)


def test_landscape_mean_field_averages_repeats() -> None:
    calls = []

    def noisy(p: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return torch.full_like(p, float(len(calls)))   # 1, 2, 3, 4 -> mean 2.5
    g = land.mean_gradient_field(noisy, torch.zeros(5, 2), repeats=4)
    np.testing.assert_allclose(g, 2.5)


def test_landscape_bad_input() -> None:
    with pytest.raises(ValueError, match="grad"):
        land.integrate_gradient(np.zeros((4, 5, 2)), 0.1)
    with pytest.raises(ValueError, match="h"):
        land.integrate_gradient(np.zeros((4, 4, 2)), 0.0)
    with pytest.raises(ValueError, match="n"):
        land.make_grid(1)


# ----------------------------------------------------------------------------------------- efficiency
def _gaussian_estimator(mu: torch.Tensor, s: float, nfe_per_point: int):
    def est(x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, int]:
        return mu + s * torch.randn(x.shape, generator=gen, dtype=torch.float64), nfe_per_point * x.shape[0]
    return est


def test_efficiency_matches_formula_for_known_mean_and_variance() -> None:
    P, D, s, k = 64, 2, 0.3, 5
    mu = torch.randn(P, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    e = eff.measure_efficiency(_gaussian_estimator(mu, s, k), torch.zeros(P, D), repeats=400)
    expected = math.log(float(mu.pow(2).sum(1).mean()) / (D * s * s * k))
    assert e.cost == k
    # MSE is a mean of 64 x 399 chi^2 draws (rel. SE ~ 0.4 %); mean_sq is known to ~1 %.
    assert e.log_eff == pytest.approx(expected, abs=0.03)
    assert e.mse == pytest.approx(D * s * s, rel=0.03)
    # a factor-2 error in cost or variance would move log_eff by 0.69
    geo = float(torch.log(mu.pow(2).sum(1) / (D * s * s * k)).mean())
    assert e.log_eff_geo == pytest.approx(geo, abs=0.05)


def test_efficiency_bias_correction_for_noise_dominated_mean() -> None:
    # zero-mean estimator (SDS-like regime): |g_bar|^2 alone would be v / R; the corrected mean is ~0
    P, R = 256, 8
    e = eff.measure_efficiency(_gaussian_estimator(torch.zeros(P, 2, dtype=torch.float64), 1.0, 1),
                               torch.zeros(P, 2), repeats=R)
    naive = 2.0 / R
    assert abs(e.mean_sq) < 0.3 * naive


def test_efficiency_zero_variance_is_infinite() -> None:
    mu = torch.ones(10, 2, dtype=torch.float64)
    e = eff.measure_efficiency(lambda x, g: (mu.clone(), x.shape[0]), torch.zeros(10, 2), repeats=3)
    assert math.isinf(e.log_eff) and e.log_eff > 0
    assert e.as_dict()["log_eff"] is None and e.as_dict()["log_eff_str"] == "inf"
    # an estimator that always returns 0 has no defined efficiency
    z = eff.measure_efficiency(lambda x, g: (torch.zeros_like(x), x.shape[0]), torch.zeros(10, 2), repeats=3)
    assert math.isnan(z.log_eff)


def test_efficiency_bad_input() -> None:
    with pytest.raises(ValueError, match="repeats"):
        eff.measure_efficiency(lambda x, g: (x, 1), torch.zeros(4, 2), repeats=1)
    with pytest.raises(ValueError, match="estimate"):
        eff.measure_efficiency(lambda x, g: (x[:2], 1), torch.zeros(4, 2), repeats=2)
    with pytest.raises(ValueError, match="cost"):
        eff.efficiency_from_samples(torch.zeros(2, 3, 2), 0.0)


# ----------------------------------------------------------------------------------------- tables
def test_tables_layout() -> None:
    cells = {}
    for col in ("tree/ideal", "tree/learned+cfg", "spiral/ideal"):
        for i, m in enumerate(("ddim", "sds", "msd-paper")):
            cells[f"{col}|{m}"] = {"column": col, "method": m, "metrics": {
                "nll": float(i), "nll_of_mean": float(i) - 0.5, "precision": 0.5, "recall": 0.25, "mmd": 1e-4}}
    methods = ["ddim", "sds", "msd-paper"]
    t1 = report.table1(cells, methods)
    assert t1["nll"]["columns"] == ["ideal", "learned+cfg"]
    assert t1["nll"]["rows"]["sds"] == [1.0, 1.0] and t1["nll_of_mean"]["rows"]["sds"] == [0.5, 0.5]
    t2 = report.table2(cells, methods)
    assert list(t2) == ["spiral"] and t2["spiral"]["columns"] == ["ideal"]
    assert t2["spiral"]["rows"]["msd-paper"]["nll"] == [2.0]
    t3 = report.table3({"tree/ideal|sds": {"log_eff_str": "-7.00"}, "tree/learned|sds": {"log_eff_str": "-6.00"},
                        "spiral/ideal|msd-paper": {"log_eff_str": "inf"}}, ["sds", "msd-paper"])
    assert t3 == {"tree": {"sds": ["-7.00", "-6.00"]}, "spiral": {"msd-paper": ["inf", None]}}
    md = report.markdown({"methods": methods, "cells": cells, "efficiency": {}}, {"msd-paper": "MSD (paper)"})
    # both NLL definitions, labelled; the paper's values (its NLL is -log(mean p)) in parentheses beside ours
    assert "| NLL mean(-log p) ↓ | ideal | learned+cfg |" in md and "| MSD (paper) | 2.00 | 2.00 |" in md
    assert "| NLL -log(mean p) ↓ | ideal | learned+cfg |" in md and "| MSD (paper) | 1.50 (-1.32) | 1.50 (-1.15) |" in md
    assert "| Precision ↑ | ideal | learned+cfg |" in md and "| sds | 0.50 (0.08) | 0.50 (0.17) |" in md
    assert "| MMD ↓ (x1e-4) | ideal | learned+cfg |" in md and "| MSD (paper) | 1 (30.5) | 1 (133) |" in md
    assert "| MSD (paper) | 2.00 | 1.50 (-1.28) |" in md     # table 2, spiral ideal: NLL both ways
    assert "`inf`" in md and "zero variance" in md


# ----------------------------------------------------------------------------------------- end to end
def _args(tmp_path, *extra: str) -> argparse.Namespace:
    from msdfast.toy.study import add_toy_arguments
    p = argparse.ArgumentParser()
    add_toy_arguments(p)
    return p.parse_args(["--grid", "4", "--steps", "3", "--methods", "ddim", "sds", "msd-tweedie", "msd-tweedie-0.05",
                         "msd-paper",
                         "--ddim-steps", "4", "--n-data", "300", "--eff-grid", "3", "--eff-repeats", "2",
                         "--landscape-grid", "5", "--landscape-nfe", "1", "--no-progress", "--figure-resolution", "16",
                         "--out", str(tmp_path / "out"), *extra])


def test_cli_plan_and_errors(tmp_path) -> None:
    from msdfast.toy.study import DEFAULT_GRID, add_toy_arguments, plan_from_args
    p = argparse.ArgumentParser()
    add_toy_arguments(p)
    plan = plan_from_args(p.parse_args([]))
    assert [c.key for c in plan.columns] == ["tree/ideal"]
    assert plan.methods[0] == "ddim" and plan.cfg.grid == DEFAULT_GRID
    assert {"msd-paper", "msd-sd-inversion"} <= set(plan.methods)
    assert plan.cfg.steps == 150 and plan.cfg.lr == 0.08
    full = plan_from_args(p.parse_args(["--full"]))
    assert len(full.columns) == 8 and "tree/learned+autoguidance" in [c.key for c in full.columns]
    with pytest.raises(ValueError, match="guidance"):
        plan_from_args(p.parse_args(["--guidance", "cfg", "--denoiser", "ideal"]))
    with pytest.raises(ValueError, match="option"):
        plan_from_args(p.parse_args(["--option", "nosuch.steps=3"]))
    opt = plan_from_args(p.parse_args(["--msd", "steps=7", "--option", "sds.weighting=uniform"]))
    assert opt.cfg.msd_options == {"steps": 7} and opt.cfg.method_options == {"sds": {"weighting": "uniform"}}
    args = p.parse_args(["train", "--help"]) if False else p.parse_args(["train"])
    assert args.toy_action == "train"


def test_study_end_to_end_and_resume(tmp_path, monkeypatch) -> None:
    from msdfast.toy import study
    assert study.run_toy(_args(tmp_path)) == 0
    out = tmp_path / "out"
    for name in ("results.md", "results.json", "points.npz", "config.json", "fig_points_tree__ideal.png",
                 "fig_landscape_tree__ideal.png"):
        assert (out / name).is_file(), name
    res = json.loads((out / "results.json").read_text())
    t1 = res["table1"]
    assert t1["nll"]["columns"] == ["ideal"]
    assert list(t1["precision"]["rows"]) == ["ddim", "sds", "msd-tweedie", "msd-tweedie-0.05", "msd-paper"]
    for metric in ("nll", "nll_of_mean", "precision", "recall", "mmd"):
        for v in t1[metric]["rows"].values():
            assert v[0] is not None and math.isfinite(v[0])
    assert set(res["table3"]["tree"]) == {"sds", "msd-tweedie", "msd-paper"}
    assert res["metric_definitions"]["nll_of_mean"].startswith("-log(mean") and res["paper"]["rows"]["msd-paper"] == "Ours"
    for cell in res["cells"].values():   # -log(mean p) <= mean(-log p) (Jensen)
        assert cell["metrics"]["nll_of_mean"] <= cell["metrics"]["nll"] + 1e-9
    pts = np.load(out / "points.npz")
    assert set(pts.files) == {"tree__ideal--ddim", "tree__ideal--sds", "tree__ideal--msd-tweedie",
                              "tree__ideal--msd-tweedie-0.05", "tree__ideal--msd-paper"}
    for k in pts.files:
        assert pts[k].shape == (16, 2) and np.isfinite(pts[k]).all()
    # targets moved away from their initial grid (the optimiser ran)
    assert not np.allclose(pts["tree__ideal--sds"], study.grid_points(4).numpy())
    assert res["cells"]["tree/ideal|sds"]["nfe_per_point"] == pytest.approx(1.0)
    # Tweedie MSD: 1 NFE per step, and none on the last step (lambda decayed to 0 -> finished, g = 0)
    assert res["cells"]["tree/ideal|msd-tweedie"]["nfe_per_point"] == pytest.approx(2 / 3)

    # resume: nothing is recomputed, the tables are identical
    def boom(*a, **k):
        raise AssertionError("a completed cell was recomputed")
    monkeypatch.setattr(study, "optimise", boom)
    monkeypatch.setattr("msdfast.toy.efficiency.measure_efficiency", boom)
    monkeypatch.setattr("msdfast.toy.landscape.reconstruct_landscape", boom)
    assert study.run_toy(_args(tmp_path, "--resume")) == 0
    res2 = json.loads((out / "results.json").read_text())
    assert res2["table1"] == res["table1"] and res2["table3"] == res["table3"]
    # a different configuration is not mistaken for a completed cell
    with pytest.raises(AssertionError, match="recomputed"):
        study.run_toy(_args(tmp_path, "--resume", "--lr", "0.05"))


# ----------------------------------------------------------------------------------------- table 3 readings
def _tiny_world():
    from msdfast.toy.protocol import ColumnSpec, ProtocolConfig, build_world
    cfg = ProtocolConfig(grid=3, steps=3, n_data=300)
    return build_world(ColumnSpec("tree", "ideal"), cfg), cfg


def test_optimise_keeps_the_targets_of_the_probe_step() -> None:
    from msdfast.toy.protocol import METHOD_SPECS, ProtocolConfig, optimise
    world, cfg = _tiny_world()
    res = optimise(world, METHOD_SPECS["sds"], cfg, seed=0, probe_at=0.5)   # probe step round(0.5 * 2) = 1
    one = optimise(world, METHOD_SPECS["sds"], ProtocolConfig(grid=3, steps=1, n_data=300), seed=0)
    # the targets at the start of step 1 are those after one Adam step, and they moved on afterwards
    np.testing.assert_array_equal(res.probe_points, one.points)
    assert not np.allclose(res.probe_points, res.points)
    assert optimise(world, METHOD_SPECS["sds"], cfg, seed=0).probe_points is None


def test_estimate_fn_restores_the_probed_state_for_every_call() -> None:
    """VSD trains eps_phi whenever it estimates: eq. 17's repeats must all see eps_phi as it was at the probe."""
    from msdfast.toy.protocol import METHOD_SPECS, estimate_fn, optimise, probed_estimator
    world, cfg = _tiny_world()
    spec = METHOD_SPECS["vsd"]
    res = optimise(world, spec, cfg, seed=0, probe_at=0.5)
    fn = estimate_fn(world, spec, cfg, res.state, 0.5)
    pts = torch.as_tensor(res.probe_points, dtype=torch.float32)
    g1, n1 = fn(pts, torch.Generator().manual_seed(7))
    g2, n2 = fn(pts, torch.Generator().manual_seed(7))
    torch.testing.assert_close(g1, g2, rtol=0, atol=0)
    assert n1 == n2 == pts.shape[0]
    est = probed_estimator(world, spec, cfg, res.state, 0.5)
    ref = est(pts, world.cond(pts.shape[0]), None, generator=torch.Generator().manual_seed(7)).grad
    torch.testing.assert_close(g1, ref, rtol=0, atol=0)
    # the same estimator called again has trained eps_phi in between: its estimate differs (why the restore)
    again = est(pts, world.cond(pts.shape[0]), None, generator=torch.Generator().manual_seed(7)).grad
    assert not torch.equal(again, ref)


def test_eff_points_readings() -> None:
    from msdfast.toy.protocol import subsample
    from msdfast.toy.study import eff_points, grid_points
    probe = np.arange(40, dtype=np.float32).reshape(20, 2)
    p = eff_points("particles", 3, probe)
    assert p.shape == (9, 2) and p.dtype == torch.float32
    np.testing.assert_array_equal(p[0].numpy(), probe[0])     # evenly strided, both ends kept
    np.testing.assert_array_equal(p[-1].numpy(), probe[-1])
    assert len({tuple(r) for r in p.tolist()}) == 9 and all(tuple(r) in {tuple(q) for q in probe.tolist()}
                                                            for r in p.tolist())
    assert subsample(probe, 100).shape == (20, 2)
    torch.testing.assert_close(eff_points("grid", 4, None), grid_points(4))
    with pytest.raises(ValueError, match="probe"):
        eff_points("particles", 3, None)
    with pytest.raises(ValueError, match="reading"):
        eff_points("domain", 3, probe)
    with pytest.raises(ValueError, match="n"):
        subsample(probe, 0)


def test_table3_per_reading_and_deterministic_estimators_infinite(tmp_path, monkeypatch) -> None:
    """Table 3's machinery on a tiny run: one table per reading; the particles reading measures at the saved
    targets of the probe step; deterministic estimators (SDI at its annealed t, Tweedie MSD) are +inf and SDS
    is finite (the paper's ordering SDI, MSD >> SDS)."""
    from msdfast.toy import study
    from msdfast.toy.protocol import subsample
    seen: list[torch.Tensor] = []
    real = eff.measure_efficiency

    def spy(fn, points, *a, **k):
        seen.append(points.clone())
        return real(fn, points, *a, **k)
    monkeypatch.setattr("msdfast.toy.efficiency.measure_efficiency", spy)
    args = _args(tmp_path, "--no-landscape", "--eff-repeats", "3")
    args.methods = ["sds", "sdi", "msd-tweedie"]
    assert study.run_toy(args) == 0
    out = tmp_path / "out"
    res = json.loads((out / "results.json").read_text())
    assert res["efficiency_points"] == ["particles", "grid"]
    assert res["table3"] == res["table3_by_points"]["particles"]
    for reading in ("particles", "grid"):
        t3 = res["table3_by_points"][reading]["tree"]
        assert t3["sdi"] == ["inf", None] and t3["msd-tweedie"] == ["inf", None]
        assert t3["sds"][0] not in ("inf", "-inf", "n/a") and math.isfinite(float(t3["sds"][0]))
    # 3 methods x (particles, grid), in that order per method; particles = the saved probe targets, strided
    assert len(seen) == 6
    with np.load(out / "cells" / "cell--tree__ideal--sds.npz") as z:
        probe = z["probe_seed0"]
    torch.testing.assert_close(seen[0], subsample(probe, 9))
    torch.testing.assert_close(seen[1], study.grid_points(3))
    md = (out / "results.md").read_text()
    assert "x = each estimator's own targets at the probe step" in md and "x = a uniform grid" in md
