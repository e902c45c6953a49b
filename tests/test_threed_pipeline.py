"""`msdfast 3d` end to end on the tiny random SD (CPU): run folder, view-dependent prompts, every method, exact
resume, the DSD shared seed, the CLI."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from test_image_pipeline import StandInSDS, standin_factory  # the pipeline tests' stand-in estimator

from msdfast.pipelines.threed import ThreeDConfig, distill_3d
from msdfast.prompts import view_direction
from msdfast.testing.tiny_sd import tiny_sd_path

SMALL_GRID = {"n_levels": 4, "log2_hashmap_size": 12, "base_resolution": 4, "per_level_scale": 1.5}


def _cfg(out: Path, **kw: Any) -> ThreeDConfig:
    base = dict(model="unused", prompt="a red apple", method="sds", steps=4, seed=3, out=str(out), render_size=16,
                n_samples=8, hidden=16, grid=SMALL_GRID, ckpt_every=2, snapshot_every=2, progress=False)
    base.update(kw)
    return ThreeDConfig(**base)


def test_pipeline_runs_and_writes_run_folder(den, tmp_path: Path) -> None:  # noqa: ANN001
    m = distill_3d(_cfg(tmp_path, batch_size=2), denoiser=den, estimator_factory=standin_factory)
    assert m["finished"] and m["steps_done"] == 4
    assert all(r["nfe"] == 2 * 2 for r in m["history"])   # one CFG pair per view, both views in one call
    for f in ("config.json", "metrics.json", "final.png", "progress.png", "checkpoint.pt"):
        assert (tmp_path / f).exists(), f
    assert len(list((tmp_path / "snapshots").glob("step_*.png"))) == 3   # steps 1, 2, 4
    from PIL import Image
    assert Image.open(tmp_path / "final.png").size == (4 * 16, 2 * 16)   # 4 views; rgb row above opacity row
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["run"]["hash_grid"] == "msdfast" and cfg["elevation_range"] == [-10.0, 45.0]


class RecordingSDS(StandInSDS):
    """Stand-in SDS that records the text embeddings each call is conditioned on."""

    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _estimate(self, x, cond, uncond, generator):  # noqa: ANN001, ANN202
        RecordingSDS.seen.append((cond.clone(), uncond.clone()))
        return super()._estimate(x, cond, uncond, generator)


@pytest.mark.parametrize("view_dependent", [True, False])
def test_each_view_gets_its_view_dependent_prompt(den, tmp_path: Path, view_dependent: bool) -> None:  # noqa: ANN001
    RecordingSDS.seen = []
    m = distill_3d(_cfg(tmp_path, steps=6, view_dependent=view_dependent, elevation_range=(-10.0, 80.0),
                        ckpt_every=0, snapshot_every=0),
                   denoiser=den, estimator_factory=lambda method, d, **o: RecordingSDS(d, **o))
    pe = den.prompt_embeddings("a red apple", "", view_dependent=True)
    buckets = set()
    for rec, (cond, uncond) in zip(m["history"], RecordingSDS.seen):
        k = int(view_direction(torch.tensor([rec["elevation"]]), torch.tensor([rec["azimuth"]]))[0])
        buckets.add(k)
        torch.testing.assert_close(cond[0], pe.cond_views[k] if view_dependent else pe.cond[0])
        torch.testing.assert_close(uncond[0], pe.uncond[0])
    assert len(buckets) >= 2   # the test saw more than one view bucket
    if view_dependent:
        assert not torch.allclose(pe.cond_views[0], pe.cond_views[1])


def test_parameters_move_and_resume_is_bit_exact(den, tmp_path: Path) -> None:  # noqa: ANN001
    full = distill_3d(_cfg(tmp_path / "full"), denoiser=den, estimator_factory=standin_factory)
    torch.manual_seed(3)
    from msdfast.pipelines.threed import build_nerf
    init = build_nerf(_cfg(tmp_path))
    assert any(not torch.equal(a, b) for a, b in zip(init.state_dict().values(), full["field"].state_dict().values()))
    part = distill_3d(_cfg(tmp_path / "part"), denoiser=den, estimator_factory=standin_factory, stop_after=2)
    assert not part["finished"] and part["steps_done"] == 2
    done = distill_3d(_cfg(tmp_path / "part"), denoiser=den, estimator_factory=standin_factory, resume=True)
    assert done["finished"] and done["steps_done"] == 4
    for (k, a), b in zip(full["field"].state_dict().items(), done["field"].state_dict().values()):
        assert torch.equal(a, b), k
    assert [r["loss"] for r in full["history"]] == [r["loss"] for r in done["history"]]
    assert [r["azimuth"] for r in full["history"]] == [r["azimuth"] for r in done["history"]]  # same cameras


def test_resume_refuses_a_different_run(den, tmp_path: Path) -> None:  # noqa: ANN001
    distill_3d(_cfg(tmp_path, steps=2), denoiser=den, estimator_factory=standin_factory)
    with pytest.raises(ValueError, match="--render-size"):
        distill_3d(_cfg(tmp_path, steps=2, render_size=8), denoiser=den, estimator_factory=standin_factory,
                   resume=True)


@pytest.mark.parametrize("kw, name", [({"render_size": 0}, "render_size"), ({"batch_size": 0}, "batch_size"),
                                      ({"radius": -1.0}, "radius"), ({"fovy_range": (30.0, 20.0)}, "fovy_range"),
                                      ({"density_bias": "cube"}, "density_bias")])
def test_bad_config_names_the_argument(den, tmp_path: Path, kw: dict, name: str) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=name):
        distill_3d(_cfg(tmp_path, **kw), denoiser=den, estimator_factory=standin_factory)


REAL_OPTIONS: dict[str, dict[str, Any]] = {
    "sds": {},
    "msd": {"solver": "stable", "chains": 2, "steps": 2},
    "dsd": {"ddim_steps": 2},
}


@pytest.mark.parametrize("method", list(REAL_OPTIONS))
def test_real_methods_end_to_end_and_resume_exactly(den, tmp_path: Path, method: str) -> None:  # noqa: ANN001
    from msdfast.estimators import build

    kw = dict(method=method, steps=3, batch_size=2, ckpt_every=1, snapshot_every=3, options=REAL_OPTIONS[method])
    full = distill_3d(_cfg(tmp_path / "full", **kw), denoiser=den, estimator_factory=build)
    assert full["finished"] and full["history"][0]["nfe"] > 0
    distill_3d(_cfg(tmp_path / "part", **kw), denoiser=den, estimator_factory=build, stop_after=1)
    done = distill_3d(_cfg(tmp_path / "part", **kw), denoiser=den, estimator_factory=build, resume=True)
    for (k, a), b in zip(full["field"].state_dict().items(), done["field"].state_dict().values()):
        assert torch.equal(a, b), k
    assert [r["loss"] for r in full["history"]] == [r["loss"] for r in done["history"]]


def test_dsd_shares_one_seed_across_the_views_of_a_shape(den, tmp_path: Path) -> None:  # noqa: ANN001
    from msdfast.estimators import build

    made = []

    def factory(method: str, d: Any, **opts: Any) -> Any:
        made.append(build(method, d, **opts))
        return made[-1]

    distill_3d(_cfg(tmp_path, method="dsd", steps=1, batch_size=3, ckpt_every=0, snapshot_every=0,
                    options={"ddim_steps": 2}), denoiser=den, estimator_factory=factory)
    assert made[0].shared_seed
    assert made[0].seed is not None and made[0].seed.shape == (1, 4, 8, 8)   # one eps* for the 3 views
    assert made[0]._ensure_seed(torch.zeros(3, 4, 8, 8), None).stride(0) == 0


def test_cli_3d_command(tmp_path: Path, den, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("MSDFAST_CACHE", str(tmp_path / "cache"))
    from msdfast.cli import main

    model = tiny_sd_path(root=tmp_path.parent)
    out = tmp_path / "run"
    argv = ["3d", "--model", str(model), "--prompt", "a red apple", "--method", "msd", "--steps", "2",
            "--out", str(out), "--no-progress", "--ckpt-every", "1", "--snapshot-every", "1",
            "--render-size", "16", "--n-samples", "8", "--hidden", "16", "--grid", "n_levels=4",
            "--grid", "log2_hashmap_size=12", "--elevation-range", "0", "30", "--batch-size", "2",
            "--option", "chains=2", "--option", "steps=2"]
    assert main(argv) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["grid"] == {"n_levels": 4, "log2_hashmap_size": 12} and cfg["elevation_range"] == [0.0, 30.0]
    metrics = json.loads((out / "metrics.json").read_text())
    # MSD stable, 2 views x 2 chains, 2 solver steps: inversion T B + chains T 2 N B
    # (the default bandwidth decays linearly to 0: the 2nd step has lambda < lambda_min and the run stops there)
    assert metrics["steps_done"] == 1 and metrics["converged"]
    assert metrics["history"][0]["nfe"] == 2 * 2 + 2 * 2 * 2 * 2
    assert main(argv + ["--resume"]) == 0
