"""A threestudio-compatible guidance: swap SDS for MSD / DSD / SDI / ASD / VSD by changing the guidance type.

The public contract (docs/math.md sec. 2.1):

    out = guidance(rgb, prompt_utils, elevation, azimuth, camera_distances,
                   rgb_as_latents=False, guidance_eval=False, **kwargs)
    out == {"loss_<name>": ..., "grad_norm": ..., "min_step": ..., "max_step": ...  (+ "eval")}
    guidance.update_step(epoch, global_step, on_load_weights=False)   # every training step

* rgb [B, H, W, C] in [0, 1] -> bilinear resize to the encode resolution (512 for SD 1.5 / 2.1-base),
  x * 2 - 1, VAE posterior sample * scaling factor (StableDiffusionDenoiser.encode_images). With
  rgb_as_latents the input is resized to the latent size (64) and used as latents.
* prompt_utils.get_text_embeddings(elevation, azimuth, camera_distances, view_dependent_prompting) returns
  cat([cond, uncond]) -- cond FIRST -- as threestudio's PromptProcessorOutput; msdfast's PromptEmbeddings has
  the same method, so the adapter works with or without threestudio.
* The loss is threestudio's trick, 0.5 * sum((x - (x - g).detach())^2) / B (estimators.base.loss_trick), after
  nan_to_num and the optional element-wise clip `grad_clip`, exactly as threestudio's SDS guidance.
* Config values may be threestudio schedules [start_step, start_value, end_value, end_step] (see `C`).

Guidance scale: `guidance_scale` is read in threestudio's form s (eps_c + s (eps_c - eps_u)), so existing
configs keep their meaning; msdfast's estimators take the diffusers w = s + 1 (docs/math.md sec. 1). Set
`guidance_scale_form: "diffusers"` to give w directly. The default s = 6.5 is the papers' CFG 7.5. threestudio's own
VSD guidance (ProlificDreamer's) is the exception: it writes eps_u + s (eps_c - eps_u), the diffusers form, so a
prolificdreamer config's guidance_scale 7.5 keeps its meaning with `guidance_scale_form: "diffusers"`.

The returned loss key is `loss_sds` by default (an existing system's `lambda_sds` applies unchanged); set
`loss_name: "method"` to get `loss_<method>` (then the system config needs `lambda_<method>`).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

from ..estimators.base import loss_trick

__all__ = ["MSDFastGuidance", "C", "DEFAULTS", "register_with_threestudio"]

DEFAULTS: dict[str, Any] = {
    "method": "msd",
    "pretrained_model_name_or_path": None,   # a LOCAL diffusers SD folder
    "guidance_scale": 6.5,                   # threestudio form s; w = s + 1 = 7.5
    "guidance_scale_form": "threestudio",    # or "diffusers"
    "min_step_percent": None,                # None: the method's own t range (threestudio SDS: 0.02)
    "max_step_percent": None,                # (threestudio SDS: 0.98)
    "grad_clip": None,
    "view_dependent_prompting": True,
    "half_precision_weights": True,
    "psr_k": None,
    "psr_s": None,
    "trainer_max_steps": 10000,
    "loss_name": "sds",                      # "sds" or "method"
    "seed": None,                            # None: draw from torch's global RNG, as threestudio does
    "estimator": {},                         # method-specific options for msdfast.estimators.build
}


def C(value: Any, epoch: int, global_step: int) -> float:
    """threestudio's scheduled value: a number, or [start_step, start, end, end_step] (or [start, end, end_step])
    interpolated linearly in global_step (int end_step) or epoch (float end_step), held outside the range."""
    if isinstance(value, (int, float)):
        return float(value)
    value = list(value)
    if len(value) == 3:
        value = [0] + value
    if len(value) != 4:
        raise ValueError(f"value: expected a number or [start_step, start, end, end_step], got {value!r}")
    s0, v0, v1, s1 = value
    # threestudio: an int end step schedules by global_step, a float one by epoch
    cur = global_step if isinstance(s1, int) else epoch
    frac = (cur - s0) / (s1 - s0) if s1 != s0 else 1.0
    frac = min(max(frac, 0.0), 1.0)
    return float(v0 + (v1 - v0) * frac)


class MSDFastGuidance(torch.nn.Module):
    """threestudio-style guidance around an msdfast estimator and a Stable Diffusion denoiser."""

    def __init__(self, cfg: Mapping[str, Any] | None = None, *, denoiser: Any = None,
                 estimator_factory: Any = None) -> None:
        super().__init__()
        unknown = set(cfg or {}) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"cfg: unknown keys {sorted(unknown)} (known: {sorted(DEFAULTS)})")
        self.cfg = {**DEFAULTS, **dict(cfg or {})}
        # The t range is handed to the estimator only when the config sets it: each method has its own
        # default (SDS/ASD 0.02..0.98 of T, SDI 250 -> 980 annealed, MSD's solver top T - 1).
        self._explicit_range = self.cfg["min_step_percent"] is not None or self.cfg["max_step_percent"] is not None
        if self._explicit_range:
            self.cfg["min_step_percent"] = 0.02 if self.cfg["min_step_percent"] is None else self.cfg["min_step_percent"]
            self.cfg["max_step_percent"] = 0.98 if self.cfg["max_step_percent"] is None else self.cfg["max_step_percent"]
        if self.cfg["guidance_scale_form"] not in ("threestudio", "diffusers"):
            raise ValueError("cfg: guidance_scale_form must be 'threestudio' or 'diffusers'")
        if self.cfg["loss_name"] not in ("sds", "method"):
            raise ValueError("cfg: loss_name must be 'sds' or 'method'")
        if denoiser is None:
            path = self.cfg["pretrained_model_name_or_path"]
            if path is None:
                raise ValueError("cfg: pretrained_model_name_or_path must name a local Stable Diffusion folder")
            from ..denoisers.sd import load_stable_diffusion
            cuda = torch.cuda.is_available()
            denoiser = load_stable_diffusion(path, device="cuda" if cuda else "cpu",
                                             dtype="float16" if cuda and self.cfg["half_precision_weights"]
                                             else "float32")
        if estimator_factory is None:
            from ..estimators import build as estimator_factory
        self.denoiser = denoiser
        T = denoiser.schedule.num_train_timesteps
        self.num_train_timesteps = T
        self.min_step, self.max_step = int(0.02 * T), int(0.98 * T)  # reported if the estimator has no range
        if self._explicit_range:
            self.set_min_max_steps(C(self.cfg["min_step_percent"], 0, 0), C(self.cfg["max_step_percent"], 0, 0))
        s = float(C(self.cfg["guidance_scale"], 0, 0))
        w = s + 1.0 if self.cfg["guidance_scale_form"] == "threestudio" else s
        opts: dict[str, Any] = {"guidance_scale": w}
        if self._explicit_range:
            opts["t_range"] = (self.min_step, self.max_step)
        opts.update(self.cfg["estimator"])
        for k in ("psr_k", "psr_s"):
            if self.cfg[k] is not None:
                opts[k] = self.cfg[k]
        self.method = str(self.cfg["method"]).lower()
        self.estimator = estimator_factory(self.method, denoiser, **opts)
        if not self._explicit_range and hasattr(self.estimator, "t_min"):  # report the method's own range
            self.min_step, self.max_step = int(self.estimator.t_min), int(self.estimator.t_max)
        self.grad_clip_val: float | None = None
        self.generator: torch.Generator | None = None
        if self.cfg["seed"] is not None:
            self.generator = torch.Generator(device=self._device).manual_seed(int(self.cfg["seed"]))

    @property
    def _device(self) -> torch.device:
        dev = getattr(self.denoiser, "device", None)
        return torch.device(dev) if dev is not None else torch.device("cpu")

    @property
    def loss_key(self) -> str:
        return "loss_sds" if self.cfg["loss_name"] == "sds" else f"loss_{self.method}"

    def set_min_max_steps(self, min_step_percent: float = 0.02, max_step_percent: float = 0.98) -> None:
        if not 0 <= min_step_percent <= max_step_percent <= 1:
            raise ValueError("min_step_percent/max_step_percent: expected 0 <= min <= max <= 1")
        self.min_step = int(self.num_train_timesteps * min_step_percent)
        self.max_step = int(self.num_train_timesteps * max_step_percent)

    # ------------------------------------------------------------------ threestudio hooks
    def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False) -> None:
        """Called by threestudio every step: schedules (t range, clip) and the estimator's own annealing."""
        if self.cfg["grad_clip"] is not None:
            self.grad_clip_val = C(self.cfg["grad_clip"], epoch, global_step)
        old = (self.min_step, self.max_step)
        if self._explicit_range:
            self.set_min_max_steps(C(self.cfg["min_step_percent"], epoch, global_step),
                                   C(self.cfg["max_step_percent"], epoch, global_step))
        if (self.min_step, self.max_step) != old:
            self.estimator.set_t_range((self.min_step, self.max_step))
        self.estimator.update_step(global_step, int(self.cfg["trainer_max_steps"]))

    def state_dict_extra(self) -> dict[str, Any]:
        """Estimator state (bandwidth schedule, DSD seed, VSD model) for the system's checkpoint."""
        return self.estimator.state_dict()

    # ------------------------------------------------------------------ the call
    def _latents(self, rgb: torch.Tensor, rgb_as_latents: bool) -> torch.Tensor:
        if rgb.ndim != 4:
            raise ValueError(f"rgb: expected [B, H, W, C], got {tuple(rgb.shape)}")
        rgb_bchw = rgb.permute(0, 3, 1, 2)
        if rgb_as_latents:
            n = self.denoiser.latent_size
            return F.interpolate(rgb_bchw, (n, n), mode="bilinear", align_corners=False)
        if rgb.shape[-1] != 3:
            raise ValueError(f"rgb: expected 3 channels last, got {rgb.shape[-1]}")
        return self.denoiser.encode_images(rgb_bchw, generator=self.generator)

    def forward(self, rgb: torch.Tensor, prompt_utils: Any, elevation: torch.Tensor, azimuth: torch.Tensor,
                camera_distances: torch.Tensor, rgb_as_latents: bool = False, guidance_eval: bool = False,
                **kwargs: Any) -> dict[str, Any]:
        B = rgb.shape[0]
        for name, v in (("elevation", elevation), ("azimuth", azimuth)):
            if v.shape != (B,):
                raise ValueError(f"{name}: expected shape [{B}], got {tuple(v.shape)}")
        latents = self._latents(rgb, rgb_as_latents)
        emb = prompt_utils.get_text_embeddings(elevation, azimuth, camera_distances,
                                               self.cfg["view_dependent_prompting"])
        if emb.shape[0] != 2 * B:
            raise ValueError(f"prompt_utils: get_text_embeddings returned batch {emb.shape[0]}, expected 2 * {B} "
                             "(cond then uncond)")
        cond, uncond = emb.to(latents.device).chunk(2)  # threestudio order: cond first
        if hasattr(self.estimator, "set_camera"):   # VSD's eps_phi is camera-conditioned (ProlificDreamer: c2w)
            self.estimator.set_camera(kwargs.get("c2w"))
        est = self.estimator(latents, cond, uncond, generator=self.generator)
        if est.info.get("finished", False) and not getattr(self, "_said_finished", False):
            # MSD's termination (Algorithm 2): lambda < lambda_min. threestudio's trainer owns the loop, so say
            # it once; the gradient is zero from here on.
            import warnings
            warnings.warn(f"msdfast {self.method}: converged: lambda = {est.info.get('lambda', 0.0):.3g} < "
                          f"lambda_min = {est.info.get('lambda_min', 0.0):.3g}; the guidance returns zero "
                          "gradients from now on (stop the trainer)", stacklevel=2)
            self._said_finished = True
        grad = torch.nan_to_num(est.grad)
        if self.grad_clip_val is not None:
            grad = grad.clamp(-self.grad_clip_val, self.grad_clip_val)
        out: dict[str, Any] = {self.loss_key: loss_trick(latents, grad), "grad_norm": grad.norm(),
                               "min_step": self.min_step, "max_step": self.max_step, "nfe": est.nfe}
        if guidance_eval:
            with torch.no_grad():
                target = self.denoiser.decode_latents((latents - grad).detach()).permute(0, 2, 3, 1)
            t = est.info.get("t")
            levels = (torch.as_tensor(t).float().reshape(-1) / self.num_train_timesteps).tolist() \
                if isinstance(t, (int, float, torch.Tensor)) else []
            out["eval"] = {"bs": B, "noise_levels": levels, "imgs_target": target, "info": est.info}
        return out


def register_with_threestudio(name: str = "msdfast-guidance") -> Any:
    """Register MSDFastGuidance under `name` when threestudio is importable (its BaseObject + Config).

    Not exercised by msdfast's CI (threestudio is not a dependency); the plain class above is.
    """
    from dataclasses import dataclass, field

    import threestudio  # type: ignore[import-not-found]
    from threestudio.utils.base import BaseObject  # type: ignore[import-not-found]

    @threestudio.register(name)
    class ThreestudioMSDFastGuidance(BaseObject):
        @dataclass
        class Config(BaseObject.Config):
            method: str = "msd"
            pretrained_model_name_or_path: str = ""
            guidance_scale: Any = 6.5
            guidance_scale_form: str = "threestudio"
            min_step_percent: Any = None
            max_step_percent: Any = None
            grad_clip: Any = None
            view_dependent_prompting: bool = True
            half_precision_weights: bool = True
            psr_k: Any = None
            psr_s: Any = None
            trainer_max_steps: int = 10000
            loss_name: str = "sds"
            seed: Any = None
            estimator: dict = field(default_factory=dict)

        def configure(self) -> None:
            from omegaconf import OmegaConf  # type: ignore[import-not-found]
            cfg = OmegaConf.to_container(OmegaConf.structured(self.cfg), resolve=True)
            self.impl = MSDFastGuidance({k: cfg[k] for k in DEFAULTS})

        def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            return self.impl(*args, **kwargs)

        def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False) -> None:
            self.impl.update_step(epoch, global_step, on_load_weights)

    return ThreestudioMSDFastGuidance
