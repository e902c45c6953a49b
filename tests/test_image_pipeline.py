"""`msdfast image` end to end on the tiny random SD (CPU): every method runs, images are finite, resume is exact."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from msdfast.estimators.base import Estimator
from msdfast.pipelines.image import ImageConfig, distill_image
from msdfast.testing.tiny_sd import tiny_sd_path


class StandInSDS(Estimator):
    """Minimal SDS (MATH.md sec. 2) used to test the pipeline independently of msdfast.estimators."""

    name = "sds"

    def __init__(self, denoiser: Any, guidance_scale: float = 7.5, **_: Any) -> None:  # ignores t_range etc.
        super().__init__(denoiser)
        self.w = guidance_scale
        self.calls = 0
        self.t_range = (20, 979)

    def set_t_range(self, t_range: tuple[int, int]) -> None:   # the adapter's hook (threestudio's step schedules)
        self.t_range = tuple(t_range)

    def _estimate(self, x, cond, uncond, generator):  # noqa: ANN001, ANN202
        sch = self.denoiser.schedule
        t = torch.randint(20, 980, (x.shape[0],), generator=generator, device=x.device)
        eps = torch.randn(x.shape, generator=generator, device=x.device)
        a, s = sch.alpha(t).view(-1, 1, 1, 1), sch.sigma(t).view(-1, 1, 1, 1)
        ec, eu = self.denoiser.eps_pair(a * x + s * eps, t, cond, uncond)
        self.calls += 1
        return (1 - a * a) * (eu + self.w * (ec - eu) - eps), {"t": int(t[0])}


def standin_factory(method: str, denoiser: Any, **opts: Any) -> Estimator:
    return StandInSDS(denoiser, **opts)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    from msdfast.denoisers.sd import load_stable_diffusion

    root = tmp_path_factory.getbasetemp()
    return load_stable_diffusion(tiny_sd_path(root=root), cache_dir=root / "cache")


def _cfg(out: Path, **kw: Any) -> ImageConfig:
    base = dict(model="unused", prompt="a red apple", method="sds", steps=4, seed=3, out=str(out),
                ckpt_every=2, snapshot_every=2, progress=False)
    base.update(kw)
    return ImageConfig(**base)


@pytest.mark.parametrize("field", ["grid", "pixel", "latent"])
def test_pipeline_runs_and_writes_run_folder(tiny, tmp_path: Path, field: str) -> None:  # noqa: ANN001
    m = distill_image(_cfg(tmp_path, field=field), denoiser=tiny, estimator_factory=standin_factory)
    assert m["finished"] and m["steps_done"] == 4
    assert all(r["nfe"] == 2 for r in m["history"])  # SDS: one CFG pair per step
    for f in ("config.json", "metrics.json", "final.png", "progress.png", "checkpoint.pt"):
        assert (tmp_path / f).exists(), f
    assert len(list((tmp_path / "snapshots").glob("step_*.png"))) == 3  # steps 1, 2, 4
    assert json.loads((tmp_path / "metrics.json").read_text())["total_nfe"] == 8
    img = m["field"].render()
    assert torch.isfinite(img).all()
    if field != "latent":
        assert img.shape == (1, 3, 64, 64) and img.min() >= 0 and img.max() <= 1


def test_parameters_move_along_the_gradient(tiny, tmp_path: Path) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    from msdfast.fields.image import build_field
    init = build_field("grid", resolution=64, latent_size=8, seed=3)
    m = distill_image(_cfg(tmp_path, steps=2, ckpt_every=0, snapshot_every=0, field="grid"), denoiser=tiny,
                      estimator_factory=standin_factory)
    moved = sum((a - b).abs().sum() for a, b in zip(init.state_dict().values(), m["field"].state_dict().values()))
    assert moved > 0


@pytest.mark.parametrize("field", ["grid", "latent"])
def test_resume_is_bit_exact(tiny, tmp_path: Path, field: str) -> None:  # noqa: ANN001
    full = distill_image(_cfg(tmp_path / "full", field=field), denoiser=tiny, estimator_factory=standin_factory)
    part = distill_image(_cfg(tmp_path / "part", field=field), denoiser=tiny, estimator_factory=standin_factory,
                         stop_after=2)
    assert not part["finished"] and part["steps_done"] == 2
    done = distill_image(_cfg(tmp_path / "part", field=field), denoiser=tiny, estimator_factory=standin_factory,
                         resume=True)
    assert done["finished"] and done["steps_done"] == 4
    for (k, a), b in zip(full["field"].state_dict().items(), done["field"].state_dict().values()):
        assert torch.equal(a, b), k
    assert [r["loss"] for r in full["history"]] == [r["loss"] for r in done["history"]]


def test_resume_refuses_a_different_run(tiny, tmp_path: Path) -> None:  # noqa: ANN001
    distill_image(_cfg(tmp_path, steps=2), denoiser=tiny, estimator_factory=standin_factory)
    with pytest.raises(ValueError, match="prompt"):
        distill_image(_cfg(tmp_path, steps=2, prompt="a boat"), denoiser=tiny, estimator_factory=standin_factory,
                      resume=True)


def test_bad_config_names_the_argument(tiny, tmp_path: Path) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match="steps"):
        distill_image(_cfg(tmp_path, steps=0), denoiser=tiny, estimator_factory=standin_factory)
    with pytest.raises(ValueError, match="field"):
        distill_image(_cfg(tmp_path, field="voxels"), denoiser=tiny, estimator_factory=standin_factory)
    with pytest.raises(ValueError, match="unet_backend"):
        distill_image(_cfg(tmp_path, unet_backend="openvino"), denoiser=tiny, estimator_factory=standin_factory)


# Small per-method settings so each step is a handful of tiny-UNet calls.
REAL_OPTIONS: dict[str, dict[str, Any]] = {
    "sds": {}, "asd": {},
    "msd": {"solver": "stable", "chains": 2, "steps": 2, "bandwidth_schedule": "linear"},
    "sdi": {"inversion_steps": 2}, "vsd": {}, "dsd": {"ddim_steps": 2},
}


@pytest.mark.parametrize("method", list(REAL_OPTIONS))
def test_every_method_end_to_end_and_resumes_exactly(tiny, tmp_path: Path, method: str) -> None:  # noqa: ANN001
    from msdfast.estimators import build as factory
    kw = dict(method=method, steps=3, ckpt_every=1, snapshot_every=3, options=REAL_OPTIONS[method])
    full = distill_image(_cfg(tmp_path / "full", **kw), denoiser=tiny, estimator_factory=factory)
    assert full["finished"] and torch.isfinite(full["field"].render()).all()
    assert full["history"][0]["nfe"] > 0 and (tmp_path / "full" / "final.png").exists()
    if method == "msd":  # linear bandwidth decay reaches lambda < lambda_min at the last step: converged, stopped
        assert full["converged"] and len(full["history"]) == 2
    distill_image(_cfg(tmp_path / "part", **kw), denoiser=tiny, estimator_factory=factory, stop_after=1)
    done = distill_image(_cfg(tmp_path / "part", **kw), denoiser=tiny, estimator_factory=factory, resume=True)
    for (k, a), b in zip(full["field"].state_dict().items(), done["field"].state_dict().values()):
        assert torch.equal(a, b), k
    assert [r["loss"] for r in full["history"]] == [r["loss"] for r in done["history"]]


def test_cli_image_command(tmp_path: Path, tiny, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("MSDFAST_CACHE", str(tmp_path / "cache"))  # keep the text-embedding cache out of ~
    from msdfast.cli import main

    model = tiny_sd_path(root=tmp_path.parent)  # same root as the `tiny` fixture: already built
    out = tmp_path / "run"
    argv = ["image", "--model", str(model), "--prompt", "a red apple", "--method", "msd", "--steps", "2",
            "--out", str(out), "--no-progress", "--ckpt-every", "1", "--snapshot-every", "1",
            "--option", "chains=2", "--option", "steps=2", "--psr-k", "0.95"]
    assert main(argv) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["options"] == {"chains": 2, "steps": 2} and cfg["psr_k"] == 0.95 and cfg["lr"] == 1e-2
    metrics = json.loads((out / "metrics.json").read_text())
    # the default bandwidth decays linearly to 0: the 2nd step has lambda < lambda_min and the run stops there
    assert metrics["steps_done"] == 1 and metrics["converged"]
    assert metrics["history"][0]["nfe"] == 2 * 1 + 2 * 2 * 2  # T B + T 2NB
    assert main(argv + ["--resume"]) == 0  # a finished run resumes to a no-op


def test_cli_image_with_the_onnx_unet_matches_torch(tmp_path: Path, tiny, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """--unet-backend onnx: the UNet is exported to the cache once and the run reproduces the torch run."""
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("MSDFAST_CACHE", str(tmp_path / "cache"))
    from msdfast.cli import main

    model = tiny_sd_path(root=tmp_path.parent)
    runs = {}
    for backend in ("torch", "onnx"):
        out = tmp_path / backend
        assert main(["image", "--model", str(model), "--prompt", "a red apple", "--method", "sds", "--steps", "2",
                     "--out", str(out), "--no-progress", "--field", "latent", "--unet-backend", backend]) == 0
        runs[backend] = json.loads((out / "metrics.json").read_text())["history"]
    assert len(list((tmp_path / "cache" / "onnx").glob("unet-*/unet.onnx"))) == 1
    for a, b in zip(runs["torch"], runs["onnx"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3) and a["nfe"] == b["nfe"] == 2
