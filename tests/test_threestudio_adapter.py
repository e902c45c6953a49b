"""The threestudio guidance adapter against a stand-in of threestudio's contract (tiny SD, CPU)."""
from __future__ import annotations

from typing import Any

import pytest
import torch

from msdfast.adapters.threestudio import C, MSDFastGuidance
from msdfast.errors import UserInputError
from msdfast.testing.tiny_sd import tiny_sd_path
from test_image_pipeline import StandInSDS, standin_factory  # the pipeline tests' stand-in estimator


class FakePromptUtils:
    """threestudio's PromptProcessorOutput contract: get_text_embeddings -> cat([cond, uncond])."""

    def __init__(self, den: Any) -> None:
        self.cond, self.uncond = den.encode_prompts(["a hamburger", "ugly"]).split(1)
        self.calls: list[tuple] = []

    def get_text_embeddings(self, elevation, azimuth, camera_distances, view_dependent_prompting=True):  # noqa: ANN001, ANN201
        self.calls.append((elevation, azimuth, camera_distances, view_dependent_prompting))
        b = elevation.shape[0]
        return torch.cat([self.cond.expand(b, -1, -1), self.uncond.expand(b, -1, -1)])


@pytest.fixture(scope="module")
def den(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    from msdfast.denoisers.sd import load_stable_diffusion

    root = tmp_path_factory.getbasetemp()
    return load_stable_diffusion(tiny_sd_path(root=root), cache_dir=root / "cache")


def _cams(b: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.zeros(b), torch.linspace(-150, 150, b), torch.full((b,), 1.5)


def test_call_matches_direct_estimator_with_cond_first(den) -> None:  # noqa: ANN001
    g = MSDFastGuidance({"method": "sds", "seed": 5, "guidance_scale": 6.5}, denoiser=den,
                        estimator_factory=standin_factory)
    pu = FakePromptUtils(den)
    lat_img = torch.randn(2, 8, 8, 4, generator=torch.Generator().manual_seed(1), requires_grad=True)
    out = g(lat_img, pu, *_cams(2), rgb_as_latents=True)
    assert set(out) >= {"loss_sds", "grad_norm", "min_step", "max_step"}
    assert (out["min_step"], out["max_step"]) == (20, 980) and out["nfe"] == 4  # one CFG pair, batch 2
    assert pu.calls and pu.calls[0][3] is True  # view_dependent_prompting passed through

    x = lat_img.detach().permute(0, 3, 1, 2)
    ref_est = StandInSDS(den, guidance_scale=7.5)  # threestudio s = 6.5  ->  diffusers w = 7.5
    assert g.estimator.w == 7.5
    ref = ref_est(x, pu.cond.expand(2, -1, -1), pu.uncond.expand(2, -1, -1),
                  generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(out["grad_norm"], ref.grad.norm())
    swapped = StandInSDS(den, guidance_scale=7.5)(x, pu.uncond.expand(2, -1, -1), pu.cond.expand(2, -1, -1),
                                                  generator=torch.Generator().manual_seed(5))
    assert not torch.allclose(swapped.grad.norm(), out["grad_norm"])  # the order matters and is cond-first
    # loss trick: value 0.5 |g|^2 / B, gradient g / B w.r.t. the latents
    torch.testing.assert_close(out["loss_sds"], 0.5 * ref.grad.pow(2).sum() / 2)
    out["loss_sds"].backward()
    torch.testing.assert_close(lat_img.grad.permute(0, 3, 1, 2), ref.grad / 2)


def test_rgb_path_backpropagates_through_the_vae(den) -> None:  # noqa: ANN001
    g = MSDFastGuidance({"method": "sds", "seed": 0, "loss_name": "method"}, denoiser=den,
                        estimator_factory=standin_factory)
    rgb = torch.rand(1, 32, 32, 3, requires_grad=True)
    out = g(rgb, FakePromptUtils(den), *_cams(1))
    assert "loss_sds" in out and torch.isfinite(out["loss_sds"])  # loss_name "method" with method sds
    out["loss_sds"].backward()
    assert rgb.grad is not None and rgb.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="rgb"):
        g(torch.rand(1, 3, 32, 32, 3), FakePromptUtils(den), *_cams(1))


def test_guidance_scale_forms_and_loss_name(den) -> None:  # noqa: ANN001
    g = MSDFastGuidance({"method": "msd", "guidance_scale": 100, "loss_name": "method"}, denoiser=den,
                        estimator_factory=standin_factory)
    assert g.estimator.w == 101.0 and g.loss_key == "loss_msd"
    g = MSDFastGuidance({"guidance_scale": 7.5, "guidance_scale_form": "diffusers"}, denoiser=den,
                        estimator_factory=standin_factory)
    assert g.estimator.w == 7.5 and g.loss_key == "loss_sds"
    with pytest.raises(UserInputError, match="guidance.guidance_scael"):
        MSDFastGuidance({"guidance_scael": 1.0}, denoiser=den, estimator_factory=standin_factory)


def test_update_step_schedules_and_clip(den) -> None:  # noqa: ANN001
    g = MSDFastGuidance({"method": "sds", "max_step_percent": [0, 0.98, 0.5, 100], "grad_clip": [0, 0.01, 1.0, 100],
                         "trainer_max_steps": 400, "seed": 1}, denoiser=den, estimator_factory=standin_factory)
    g.update_step(0, 50)
    assert g.max_step == int(1000 * 0.74) and g.grad_clip_val == pytest.approx(0.505)
    assert (g.estimator.step, g.estimator.total_steps) == (50, 400)
    g.update_step(3, 0)
    out = g(torch.randn(1, 8, 8, 4) * 3, FakePromptUtils(den), *_cams(1), rgb_as_latents=True,
            guidance_eval=True)
    assert g.grad_clip_val == pytest.approx(0.01)
    # clipped element-wise: |g| <= 0.01 everywhere, so grad_norm <= 0.01 * sqrt(numel)
    assert out["grad_norm"] <= 0.01 * (4 * 8 * 8) ** 0.5 + 1e-6
    ev = out["eval"]  # threestudio's guidance_eval keys and shapes
    assert ev["bs"] == 1 and len(ev["noise_levels"]) == 1 and len(ev["texts"]) == 1
    for k in ("imgs_noisy", "imgs_1step", "imgs_1orig", "imgs_final"):
        assert ev[k].shape == (1, 64, 64, 3) and 0 <= ev[k].min() and ev[k].max() <= 1


def test_threestudio_C_schedule() -> None:
    from msdfast.adapters.threestudio import _local_C
    assert _local_C([0, 1.0, 0.1, 10, 0.01, 20], 0, 15) == pytest.approx(0.055)  # piecewise: 2nd segment
    assert _local_C([0, 1.0, 0.01, 10], 0, 5, "exp") == pytest.approx(0.1)    # geometric interpolation
    assert C(0.5, 0, 10) == 0.5
    assert C([0, 1.0, 0.0, 100], 0, 25) == pytest.approx(0.75)
    assert C([1.0, 0.0, 100], 0, 200) == 0.0  # 3-element form, held after the end
    assert C([0, 1.0, 0.0, 10.0], 5, 999) == pytest.approx(0.5)  # float end step: by epoch


ADAPTER_OPTIONS: dict[str, dict[str, Any]] = {
    "sds": {}, "asd": {}, "vsd": {}, "sdi": {"inversion_steps": 2},
    "msd": {"chains": 2, "steps": 2, "bandwidth_schedule": "linear"}, "dsd": {"ddim_steps": 2},
}


@pytest.mark.parametrize("method", list(ADAPTER_OPTIONS))
def test_every_real_method_through_the_adapter(den, method: str) -> None:  # noqa: ANN001
    g = MSDFastGuidance({"method": method, "seed": 0, "loss_name": "method", "trainer_max_steps": 10,
                         "estimator": ADAPTER_OPTIONS[method]}, denoiser=den)
    pu = den.prompt_embeddings("a hamburger", view_dependent=True)  # msdfast's own prompt_utils
    rgb = torch.rand(2, 32, 32, 3, requires_grad=True)
    g.update_step(0, 0)
    out = g(rgb, pu, torch.tensor([0.0, 70.0]), torch.tensor([0.0, 180.0]), torch.ones(2))
    key = f"loss_{method}"
    assert torch.isfinite(out[key]) and out["nfe"] > 0
    out[key].backward()
    assert torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0
    assert (out["min_step"], out["max_step"]) == (g.estimator.t_min, g.estimator.t_max)


def test_explicit_t_range_reaches_the_estimator(den) -> None:  # noqa: ANN001
    g = MSDFastGuidance({"method": "sds", "max_step_percent": [0, 0.9, 0.5, 100]}, denoiser=den)
    assert (g.estimator.t_min, g.estimator.t_max) == (20, 900)
    g.update_step(0, 100)
    assert g.estimator.t_max == 500 and g.max_step == 500
    default = MSDFastGuidance({"method": "sds"}, denoiser=den)
    assert (default.min_step, default.max_step) == (default.estimator.t_min, default.estimator.t_max)
