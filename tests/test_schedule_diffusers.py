"""VPSchedule.from_config against diffusers' own scheduler, key by key of the scheduler config."""
from __future__ import annotations

import pytest
import torch

from msdfast.errors import UserInputError
from msdfast.schedule import VPSchedule

diffusers = pytest.importorskip("diffusers")

SD = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "clip_sample": False,
      "set_alpha_to_one": False, "steps_offset": 1}
CASES = {
    "sd15": SD,
    "linear": {**SD, "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02},
    "cosine": {**SD, "beta_schedule": "squaredcos_cap_v2"},
    "alpha_to_one": {**SD, "set_alpha_to_one": True},
    "offset0": {**SD, "steps_offset": 0},
    "trailing": {**SD, "timestep_spacing": "trailing"},
    "linspace": {**SD, "timestep_spacing": "linspace"},
    "zero_snr": {**SD, "rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "prediction_type": "v_prediction"},
    "v": {**SD, "prediction_type": "v_prediction"},
    "t500": {**SD, "num_train_timesteps": 500},
}


@pytest.mark.parametrize("name", list(CASES))
def test_alphas_cumprod_timesteps_and_prediction_match_diffusers(name: str) -> None:
    cfg = CASES[name]
    ref = diffusers.DDIMScheduler(**cfg)
    ours = VPSchedule.from_config(dict(ref.config))     # the config as diffusers writes/reads it
    torch.testing.assert_close(ours.alphas_cumprod.float(), ref.alphas_cumprod.float(), rtol=2e-6, atol=1e-7)
    assert ours.final_alpha_cumprod == pytest.approx(float(ref.final_alpha_cumprod), rel=1e-6)
    assert ours.prediction_type == ref.config.prediction_type
    for n in (1, 7, 50, 250):
        ref.set_timesteps(n)
        assert ours.timesteps(n).tolist() == ref.timesteps.tolist(), (name, n)


def test_ddpm_and_pndm_configs_load_with_the_same_table() -> None:
    for cls in (diffusers.DDPMScheduler, diffusers.PNDMScheduler, diffusers.EulerDiscreteScheduler):
        ref = cls(**{k: v for k, v in SD.items() if k in cls().config})
        ours = VPSchedule.from_config(dict(ref.config))
        torch.testing.assert_close(ours.alphas_cumprod.float(), ref.alphas_cumprod.float(), rtol=2e-6, atol=1e-7)


def test_unsupported_keys_are_one_line_errors() -> None:
    for bad, key in (({**SD, "clip_sample": True}, "clip_sample"), ({**SD, "thresholding": True}, "thresholding"),
                     ({**SD, "use_karras_sigmas": True}, "use_karras_sigmas"), ({**SD, "frobnicate": 1}, "frobnicate"),
                     ({**SD, "timestep_spacing": "nope"}, "timestep_spacing")):
        with pytest.raises(UserInputError, match=key) as e:
            VPSchedule.from_config(bad)
        assert "\n" not in str(e.value)
