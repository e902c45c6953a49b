"""threestudio guidance on msdfast estimators: swap SDS for MSD / DSD / SDI / ASD / VSD in a stock threestudio YAML.

The extension (integrations/threestudio/, copied or linked into threestudio's `custom/`) registers
`msdfast-guidance`; a stock config switches by changing only `system.guidance_type`. This module holds the
logic and imports threestudio nowhere (it runs, and is tested, without it).

The call (threestudio's guidance contract, docs/math.md sec. 2.1):

    out = guidance(rgb, prompt_utils, elevation, azimuth, camera_distances,
                   rgb_as_latents=False, guidance_eval=False, test_info=False, **batch)
    out == {"loss_<family>": ..., "grad_norm": ..., "min_step": ..., "max_step": ..., "nfe": ...  (+ "eval")}
    guidance.update_step(epoch, global_step, on_load_weights=False)     # every training step

* rgb [B, H, W, C] in [0, 1] -> bilinear resize to the encode resolution, x * 2 - 1, VAE posterior sample *
  scaling factor (StableDiffusionDenoiser.encode_images). With rgb_as_latents the input is resized to the
  latent size and used as latents (threestudio's stable-diffusion-guidance).
* prompt_utils.get_text_embeddings(elevation, azimuth, camera_distances, view_dependent_prompting) returns
  cat([cond, uncond]) -- cond FIRST -- as threestudio's PromptProcessorOutput (msdfast's PromptEmbeddings too).
* The loss is threestudio's trick 0.5 * sum((x - (x - g).detach())^2) / B (estimators.base.loss_trick), after
  nan_to_num and the optional element-wise clip `grad_clip`, exactly as threestudio's SDS guidance.

Stock guidance blocks (threestudio's stable-diffusion-guidance, -sdi-guidance and -vsd-guidance configs) load
unchanged: `translate_config` maps every key to an msdfast option or raises msdfast.errors.UserInputError
naming the key msdfast cannot honour. The block's family (which stock guidance it was written for) fixes
* (from its keys: SDI- or VSD-only keys, else SD)
* the method when `method` is not given: SD -> "sds", SDI -> "sdi" ("sds" with enable_sdi: false),
  ProlificDreamer (VSD) -> "vsd";
* the loss key the system's `lambda_*` expects: loss_sds, loss_sdi, loss_vsd (override: `loss_name`);
* the guidance-scale form: SD/SDI write eps_c + s (eps_c - eps_u) (msdfast w = s + 1), VSD writes
  eps_u + s (eps_c - eps_u) (w = s) (docs/math.md sec. 1; `guidance_scale_form` overrides);
* the t schedule: min/max_step_percent (numbers or threestudio schedules, read with threestudio's own `C` when
  threestudio is imported, else the same rules here), HiFA's sqrt_anneal and SDI's t_anneal.

Checkpoints: `on_save_checkpoint(checkpoint)` / `on_load_checkpoint(checkpoint)` put the estimator's state
(bandwidth schedule, DSD seed, VSD eps_phi and its optimiser), the guidance's RNG and the t range into
checkpoint["msdfast_guidance"]; the extension makes threestudio's systems call them (threestudio's own
systems have no such hook). The object is NOT an nn.Module: Stable Diffusion stays out of the system's
state_dict and out of DDP.
"""
from __future__ import annotations

import math
import sys
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F

from ..errors import UserInputError
from ..estimators.base import loss_trick

__all__ = ["MSDFastGuidance", "C", "translate_config", "CONFIG_KEYS", "MSDFAST_KEYS", "STOCK_KEYS", "register_with_threestudio",
           "CHECKPOINT_KEY", "install_checkpoint_hooks"]

CHECKPOINT_KEY = "msdfast_guidance"

# msdfast's own keys (None = not given).
MSDFAST_KEYS: dict[str, Any] = {
    "method": None,                  # sds | sdi | asd | vsd | msd | dsd; None: the stock family's method
    "guidance_scale_form": None,     # "threestudio" (w = s + 1) | "diffusers" (w = s); None: the family's
    "psr_k": None, "psr_s": None,
    "loss_name": None,               # None: the family's key; "method": loss_<method>; else "xxx" / "loss_xxx"
    "seed": None,                    # None: threestudio's global RNG; an int: the guidance's own generator
    "estimator": None,               # method-specific options for msdfast.estimators.build
    "variant": None,                 # diffusers weight variant ("fp16")
    "cache_dir": None,               # msdfast's text-embedding cache (None: default)
    "encode_resolution": None,       # VAE input size (None: the model's; threestudio hard-codes 512)
}

# Stock keys of threestudio's stable-diffusion-, -sdi- and -vsd-guidance configs (commit 28d9d80), by family,
# with the stock defaults. Keys shared by all three are listed once under "sd" and repeated below.
_SD_COMMON: dict[str, Any] = {
    "pretrained_model_name_or_path": "runwayml/stable-diffusion-v1-5",
    "enable_memory_efficient_attention": False, "enable_sequential_cpu_offload": False,
    "enable_attention_slicing": False, "enable_channels_last_format": False,
    "guidance_scale": 100.0, "grad_clip": None, "half_precision_weights": True,
    "min_step_percent": 0.02, "max_step_percent": 0.98, "trainer_max_steps": 25000, "use_img_loss": False,
    "view_dependent_prompting": True,
}
STOCK_KEYS: dict[str, dict[str, Any]] = {
    "sd": {**_SD_COMMON, "sqrt_anneal": False, "use_sjc": False, "var_red": True, "weighting_strategy": "sds",
           "token_merging": False, "token_merging_params": {}, "max_items_eval": 4},
    "sdi": {**_SD_COMMON, "pretrained_model_name_or_path": "stabilityai/stable-diffusion-2-1-base",
            "trainer_max_steps": 10000, "var_red": True, "weighting_strategy": "sds", "token_merging": False,
            "token_merging_params": {}, "max_items_eval": 4, "n_ddim_steps": 50, "enable_sdi": True,
            "inversion_guidance_scale": -7.5, "inversion_n_steps": 10, "inversion_eta": 0.3, "t_anneal": True},
    "vsd": {**_SD_COMMON, "pretrained_model_name_or_path": "stabilityai/stable-diffusion-2-1-base",
            "pretrained_model_name_or_path_lora": "stabilityai/stable-diffusion-2-1", "guidance_scale": 7.5,
            "guidance_scale_lora": 1.0, "lora_cfg_training": True, "lora_n_timestamp_samples": 1,
            "sqrt_anneal": False, "camera_condition_type": "extrinsics", "weights": None},
}
_FAMILY_ONLY = {
    "vsd": {"pretrained_model_name_or_path_lora", "guidance_scale_lora", "lora_cfg_training",
            "lora_n_timestamp_samples", "camera_condition_type"},
    "sdi": {"n_ddim_steps", "enable_sdi", "inversion_guidance_scale", "inversion_n_steps", "inversion_eta",
            "t_anneal"},
}
_FAMILY_METHOD = {"sd": "sds", "sdi": "sdi", "vsd": "vsd"}
_FAMILY_LOSS = {"sd": "loss_sds", "sdi": "loss_sdi", "vsd": "loss_vsd"}
# Every key the registered Config declares (all default None = "not given").
CONFIG_KEYS: list[str] = list(dict.fromkeys([*MSDFAST_KEYS, *STOCK_KEYS["sd"], *STOCK_KEYS["sdi"],
                                             *STOCK_KEYS["vsd"], "weighting_strategy"]))
_WEIGHTINGS = {"sds": "sds", "dreamfusion": "sds", "uniform": "uniform", "fantasia3d": "fantasia3d"}


def _local_C(value: Any, epoch: int, global_step: int, interpolation: str = "linear") -> float:
    """threestudio's scheduled value (utils/misc.py C): a number; [start_step, start, end, end_step] or
    [start, end, end_step]; or a piecewise list [s0, v0, v1, s1, v2, s2, ...] (len >= 6: the segment whose start
    step global_step has passed). Linear (or "exp": geometric) interpolation in global_step (int end step) or
    epoch (float end step), held outside the range."""
    if isinstance(value, (int, float)):
        return value
    value = list(value)
    if len(value) == 3:
        value = [0] + value
    if len(value) >= 6:
        sel = 3
        for i in range(3, len(value) - 2, 2):
            if global_step >= value[i]:
                sel = i + 2
        start_step, start_value = (value[:2] if sel == 3 else (value[sel - 2], value[sel - 3]))
        value = [start_step, start_value, value[sel - 1], value[sel]]
    if len(value) != 4:
        raise UserInputError(f"schedule: expected a number or [start_step, start, end, end_step], got {value!r}")
    s0, v0, v1, s1 = value
    cur = global_step if isinstance(s1, int) else epoch
    frac = max(min(1.0, (cur - s0) / (s1 - s0)), 0.0) if s1 != s0 else 1.0
    if interpolation == "linear":
        return v0 + (v1 - v0) * frac
    if interpolation == "exp":
        return math.exp(math.log(v0) * (1 - frac) + math.log(v1) * frac)
    raise UserInputError(f"interpolation: expected 'linear' or 'exp', got {interpolation!r}")


def C(value: Any, epoch: int, global_step: int, interpolation: str = "linear") -> float:
    """threestudio's own C() when threestudio is imported (the process runs threestudio), else `_local_C`."""
    misc = sys.modules.get("threestudio.utils.misc")
    fn: Callable[..., Any] = getattr(misc, "C", None) or _local_C
    if misc is not None and not isinstance(value, (int, float)):
        value = list(value)  # threestudio's C expects an OmegaConf container or a list
        try:
            from omegaconf import OmegaConf
            value = OmegaConf.create(value)
        except ImportError:  # pragma: no cover -- threestudio imports omegaconf itself
            pass
    return float(fn(value, epoch, global_step, interpolation))


def _family(given: Mapping[str, Any]) -> str:
    """Which stock guidance the block was written for, from its keys (SD unless SDI- or VSD-only keys)."""
    fams = [f for f, keys in _FAMILY_ONLY.items() if keys & set(given)]
    if len(fams) > 1:
        raise UserInputError(f"guidance: keys of both the SDI and the VSD guidance given "
                             f"({sorted((_FAMILY_ONLY['sdi'] | _FAMILY_ONLY['vsd']) & set(given))})")
    return fams[0] if fams else "sd"


def _err(key: str, why: str) -> UserInputError:
    return UserInputError(f"guidance.{key}: {why}")


def translate_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A stock (or msdfast) guidance block -> the resolved settings MSDFastGuidance runs with.

    Returns a dict with: family, method, loss_key, model, variant, half, channels_last, w (diffusers CFG
    weight), estimator (options for msdfast.estimators.build), schedule (min/max_step_percent, sqrt_anneal,
    t_anneal, trainer_max_steps, explicit_range), grad_clip, view_dependent_prompting, max_items_eval,
    eval_steps, seed, cache_dir. Raises UserInputError naming the first key msdfast cannot honour.
    """
    given = {k: v for k, v in dict(cfg).items() if v is not None}
    unknown = sorted(set(given) - set(CONFIG_KEYS))
    if unknown:
        raise UserInputError(f"guidance.{unknown[0]}: not a key of threestudio's SD/SDI/VSD guidance nor of "
                             f"msdfast-guidance (known: {', '.join(CONFIG_KEYS)})")
    fam = _family(given)
    stock = STOCK_KEYS[fam]
    foreign = sorted(k for k in given if k not in stock and k not in MSDFAST_KEYS)
    if foreign:
        raise _err(foreign[0], f"not a key of threestudio's {fam.upper()} guidance block (this block's other "
                               "keys make it one)")
    v = {**stock, **given}
    method = str(given.get("method") or _FAMILY_METHOD[fam]).lower()
    from ..estimators import METHODS
    if method not in METHODS:
        raise _err("method", f"expected one of {', '.join(METHODS)}, got {method!r}")
    est: dict[str, Any] = {}

    # ---- what msdfast cannot honour (non-stock values of efficiency or HiFA/SJC keys)
    for key, why in (("enable_sequential_cpu_offload", "sequential CPU offload is not supported; remove it"),
                     ("enable_attention_slicing", "attention slicing is not supported (SDPA attention is used)"),
                     ("token_merging", "token merging (tomesd) is not supported; remove it"),
                     ("use_img_loss", "HiFA's image-space loss is not implemented in msdfast-guidance; remove it"),
                     ("sqrt_anneal", None), ("use_sjc", None)):
        if why is not None and v.get(key):
            raise _err(key, why)
    if v.get("weights"):
        raise _err("weights", "loading guidance weights from a checkpoint is not supported (resume restores "
                              "msdfast's estimator state)")
    if v.get("use_sjc"):
        # SJC (Wang et al. 2023) with var_red: grad = -(D(z) - y) / sigma_ve, the UNet sees z / sqrt(1 + s^2) =
        # alpha y + sigma eps: exactly SDS with uniform weighting. Without var_red there is no msdfast estimator.
        if not v.get("var_red", True):
            raise _err("var_red", "SJC without variance reduction (var_red: false) has no msdfast estimator")
        if method != "sds":
            raise _err("use_sjc", f"SJC is SDS with uniform weighting; it cannot be combined with method {method!r}")
        v["weighting_strategy"] = "uniform"
    ws = v.get("weighting_strategy", "sds")
    if ws not in _WEIGHTINGS:
        raise _err("weighting_strategy", f"expected one of {sorted(_WEIGHTINGS)}, got {ws!r}")
    est["weighting"] = _WEIGHTINGS[ws]

    # ---- family-specific keys
    if fam == "sdi":
        if not v["t_anneal"]:
            raise _err("t_anneal", "msdfast's SDI anneals t (t_anneal: true); random t is SDS (enable_sdi: false)")
        if not v["enable_sdi"]:
            if "method" in given and method == "sdi":
                raise _err("enable_sdi", "false samples random noise (SDS); it contradicts method: sdi")
            if "method" not in given:
                method = "sds"
        if method == "sdi":
            est.update(inversion_steps=int(v["inversion_n_steps"]), eta=float(v["inversion_eta"]),
                       inversion_guidance_scale=float(v["inversion_guidance_scale"]) + 1.0)  # threestudio form
    if fam == "vsd":
        if method == "vsd":
            if float(v["guidance_scale_lora"]) != 1.0:
                raise _err("guidance_scale_lora", "msdfast's eps_phi is evaluated without CFG (1.0 only)")
            if v["camera_condition_type"] != "extrinsics":
                raise _err("camera_condition_type", "msdfast's eps_phi takes the camera-to-world matrix "
                                                    "(extrinsics) only")
            lora = given.get("pretrained_model_name_or_path_lora")
            if lora is not None and str(lora) != str(v["pretrained_model_name_or_path"]):
                raise _err("pretrained_model_name_or_path_lora",
                           "msdfast's VSD trains its LoRA eps_phi on the guidance model's UNet; set it equal "
                           "to pretrained_model_name_or_path (or remove it)")
            est["phi_batch"] = int(v["lora_n_timestamp_samples"])
        else:
            extra = sorted(_FAMILY_ONLY["vsd"] & set(given))
            if extra:
                raise _err(extra[0], f"a VSD (LoRA) key; it has no meaning for method {method!r}")
    if v.get("max_items_eval") is not None and int(v["max_items_eval"]) == 0:
        raise _err("max_items_eval", "must be positive or -1 (all)")

    form = given.get("guidance_scale_form") or ("diffusers" if fam == "vsd" else "threestudio")
    if form not in ("threestudio", "diffusers"):
        raise _err("guidance_scale_form", f"expected 'threestudio' or 'diffusers', got {form!r}")
    s = float(v["guidance_scale"])
    w = s + 1.0 if form == "threestudio" else s
    for k in ("psr_k", "psr_s"):
        if k in given:
            est[k] = float(given[k])
    extra_opts = given.get("estimator") or {}
    if not isinstance(extra_opts, Mapping):
        raise _err("estimator", "expected a mapping of method options")
    est.update(dict(extra_opts))
    from ..estimators.options import check_options
    est = check_options(method, est, "guidance.estimator")   # names and types, before any model loads

    loss = given.get("loss_name")
    if loss is None:
        loss_key = _FAMILY_LOSS[fam]
    elif loss == "method":
        loss_key = f"loss_{method}"
    else:
        loss_key = loss if str(loss).startswith("loss_") else f"loss_{loss}"
    stock_method = method == _FAMILY_METHOD[fam]
    explicit = stock_method or bool({"min_step_percent", "max_step_percent"} & set(given))
    return {
        "family": fam, "method": method, "loss_key": loss_key, "model": v["pretrained_model_name_or_path"],
        "variant": given.get("variant"), "half": bool(v["half_precision_weights"]),
        "channels_last": bool(v["enable_channels_last_format"]), "w": w, "estimator": est,
        "schedule": {"min_step_percent": v["min_step_percent"], "max_step_percent": v["max_step_percent"],
                     "sqrt_anneal": bool(v.get("sqrt_anneal", False)),
                     "t_anneal": fam == "sdi" and method == "sdi",
                     "trainer_max_steps": int(v["trainer_max_steps"]), "explicit_range": explicit},
        "grad_clip": v.get("grad_clip"), "view_dependent_prompting": bool(v["view_dependent_prompting"]),
        "max_items_eval": int(v.get("max_items_eval", 4)), "eval_steps": int(v.get("n_ddim_steps", 50)),
        "seed": given.get("seed"), "cache_dir": given.get("cache_dir"),
        "encode_resolution": given.get("encode_resolution"),
    }


class MSDFastGuidance:
    """threestudio-style guidance around an msdfast estimator and a Stable Diffusion denoiser (not a Module)."""

    def __init__(self, cfg: Mapping[str, Any] | None = None, *, denoiser: Any = None,
                 estimator_factory: Any = None) -> None:
        self.settings = translate_config(cfg or {})
        st = self.settings
        if denoiser is None:
            from ..denoisers.sd import load_stable_diffusion
            cuda = torch.cuda.is_available()
            denoiser = load_stable_diffusion(st["model"], device="cuda" if cuda else "cpu",
                                             dtype="float16" if cuda and st["half"] else "float32",
                                             variant=st["variant"], channels_last=st["channels_last"],
                                             cache_dir=st["cache_dir"], encode_resolution=st["encode_resolution"])
        if estimator_factory is None:
            from ..estimators import build as estimator_factory
        self.denoiser = denoiser
        self.method = st["method"]
        self.loss_key = st["loss_key"]
        self.num_train_timesteps = T = denoiser.schedule.num_train_timesteps
        self.min_step, self.max_step = int(0.02 * T), int(0.98 * T)
        opts: dict[str, Any] = {"guidance_scale": st["w"], **st["estimator"]}
        sch = st["schedule"]
        if sch["explicit_range"]:
            self._schedule_range(0, 0)
            opts.setdefault("t_range", (self.min_step, self.max_step))
        self.estimator = estimator_factory(self.method, denoiser, **opts)
        if hasattr(self.estimator, "t_min"):  # report the range the estimator uses
            self.min_step, self.max_step = int(self.estimator.t_min), int(self.estimator.t_max)
        self.grad_clip_val: float | None = None
        self.generator: torch.Generator | None = None
        if st["seed"] is not None:
            self.generator = torch.Generator(device=self._device).manual_seed(int(st["seed"]))

    @property
    def cfg(self) -> dict[str, Any]:
        return self.settings

    @property
    def _device(self) -> torch.device:
        dev = getattr(self.denoiser, "device", None)
        return torch.device(dev) if dev is not None else torch.device("cpu")

    # ------------------------------------------------------------------ threestudio's t range
    def set_min_max_steps(self, min_step_percent: float = 0.02, max_step_percent: float = 0.98) -> None:
        """threestudio's: min_step = int(T min_step_percent), max_step likewise; reaches the estimator."""
        if not 0 <= min_step_percent <= max_step_percent <= 1:
            raise UserInputError("min_step_percent/max_step_percent: expected 0 <= min <= max <= 1, got "
                                 f"{min_step_percent}, {max_step_percent}")
        self.min_step = int(self.num_train_timesteps * min_step_percent)
        self.max_step = int(self.num_train_timesteps * max_step_percent)
        est = getattr(self, "estimator", None)
        if est is not None and hasattr(est, "set_t_range"):
            est.set_t_range((self.min_step, self.max_step))

    def _schedule_range(self, epoch: int, global_step: int) -> None:
        """threestudio's update_step t logic: C() schedules, HiFA's sqrt_anneal, SDI's t_anneal (both put
        min = max = max_p - (max_p - min_p) * p, p = (step / trainer_max_steps) ** (1/2 or 1))."""
        sch = self.settings["schedule"]
        lo = C(sch["min_step_percent"], epoch, global_step)
        if sch["sqrt_anneal"] or sch["t_anneal"]:
            mx = sch["max_step_percent"]
            hi0 = mx if isinstance(mx, (int, float)) else list(mx)[1]
            p = float(global_step) / sch["trainer_max_steps"]
            p = p ** 0.5 if sch["sqrt_anneal"] else p
            cur = (hi0 - lo) * (1 - p) + lo
            self.set_min_max_steps(cur, cur)
        else:
            self.set_min_max_steps(lo, C(sch["max_step_percent"], epoch, global_step))

    def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False) -> None:
        """Called by threestudio every step: schedules (t range, clip) and the estimator's own progress."""
        if self.settings["grad_clip"] is not None:
            self.grad_clip_val = C(self.settings["grad_clip"], epoch, global_step)
        if self.settings["schedule"]["explicit_range"]:
            self._schedule_range(epoch, global_step)
        self.estimator.update_step(global_step, self.settings["schedule"]["trainer_max_steps"])

    # ------------------------------------------------------------------ checkpoints
    def state_dict_extra(self) -> dict[str, Any]:
        """Estimator state (bandwidth schedule, DSD seed, VSD model + optimiser), RNG and t range."""
        return {"method": self.method, "estimator": self.estimator.state_dict(),
                "generator": None if self.generator is None else self.generator.get_state(),
                "steps": (self.min_step, self.max_step), "grad_clip_val": self.grad_clip_val}

    def load_state_extra(self, state: Mapping[str, Any]) -> None:
        if state.get("method") != self.method:
            raise UserInputError(f"checkpoint: msdfast-guidance state of method {state.get('method')!r}, this run "
                                 f"uses {self.method!r}")
        self.estimator.load_state_dict(state["estimator"])
        if state.get("generator") is not None:
            if self.generator is None:
                raise UserInputError("checkpoint: saved with guidance.seed set; set the same seed to resume")
            self.generator.set_state(state["generator"])
        self.set_min_max_steps(state["steps"][0] / self.num_train_timesteps,
                               state["steps"][1] / self.num_train_timesteps)
        self.min_step, self.max_step = (int(s) for s in state["steps"])
        self.grad_clip_val = state.get("grad_clip_val")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Lightning-style hook: add this guidance's state to the checkpoint dict."""
        checkpoint[CHECKPOINT_KEY] = self.state_dict_extra()

    def on_load_checkpoint(self, checkpoint: Mapping[str, Any]) -> None:
        """Lightning-style hook: restore from a checkpoint dict written by on_save_checkpoint."""
        if CHECKPOINT_KEY in checkpoint:
            self.load_state_extra(checkpoint[CHECKPOINT_KEY])

    # ------------------------------------------------------------------ VAE
    def encode_images(self, imgs: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> latents (threestudio's encode_images)."""
        return self.denoiser.encode_images(imgs, generator=self.generator)

    def decode_latents(self, latents: torch.Tensor, latent_height: int | None = None,
                       latent_width: int | None = None) -> torch.Tensor:
        """threestudio's decode_latents: bilinear resize to (latent_height, latent_width) (default: the model's
        latent size), VAE decode -> [B, 3, H, W] in [0, 1], in the input's dtype."""
        n = self.denoiser.latent_size
        size = (latent_height or n, latent_width or n)
        if tuple(latents.shape[-2:]) != size:
            latents = F.interpolate(latents, size, mode="bilinear", align_corners=False)
        return self.denoiser.decode_latents(latents).to(latents.dtype)

    # ------------------------------------------------------------------ the call
    def _latents(self, rgb: torch.Tensor, rgb_as_latents: bool) -> torch.Tensor:
        if rgb.ndim != 4:
            raise UserInputError(f"rgb: expected [B, H, W, C], got {tuple(rgb.shape)}")
        rgb_bchw = rgb.permute(0, 3, 1, 2)
        if rgb_as_latents:
            n = self.denoiser.latent_size
            return F.interpolate(rgb_bchw, (n, n), mode="bilinear", align_corners=False)
        if rgb.shape[-1] != 3:
            raise UserInputError(f"rgb: expected 3 channels last, got {rgb.shape[-1]}")
        return self.encode_images(rgb_bchw)

    def _embeddings(self, prompt_utils: Any, elevation: torch.Tensor, azimuth: torch.Tensor,
                    camera_distances: torch.Tensor, B: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if getattr(prompt_utils, "use_perp_neg", False):
            raise UserInputError("prompt_processor.use_perp_neg: Perp-Neg is not implemented in msdfast-guidance; "
                                 "set system.prompt_processor.use_perp_neg=false")
        emb = prompt_utils.get_text_embeddings(elevation, azimuth, camera_distances,
                                               self.settings["view_dependent_prompting"])
        if emb.shape[0] != 2 * B:
            raise UserInputError(f"prompt_utils: get_text_embeddings returned batch {emb.shape[0]}, expected "
                                 f"2 * {B} (cond then uncond)")
        cond, uncond = emb.to(device).chunk(2)  # threestudio order: cond first
        return cond, uncond

    def __call__(self, rgb: torch.Tensor, prompt_utils: Any, elevation: torch.Tensor, azimuth: torch.Tensor,
                 camera_distances: torch.Tensor, rgb_as_latents: bool = False, guidance_eval: bool = False,
                 test_info: bool = False, **kwargs: Any) -> dict[str, Any]:
        B = rgb.shape[0]
        for name, val in (("elevation", elevation), ("azimuth", azimuth)):
            if val.shape != (B,):
                raise UserInputError(f"{name}: expected shape [{B}], got {tuple(val.shape)}")
        latents = self._latents(rgb, rgb_as_latents)
        cond, uncond = self._embeddings(prompt_utils, elevation, azimuth, camera_distances, B, latents.device)
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
        if test_info or guidance_eval:
            ev = self.guidance_eval(latents.detach(), cond, uncond, est.info.get("t"), elevation, azimuth,
                                    camera_distances, grad=grad)
            if test_info:  # threestudio's SDI system (validation_step)
                target = (latents - grad).detach()
                with torch.no_grad():
                    out.update(target=self.decode_latents(target)[0].permute(1, 2, 0), target_latent=target,
                               noisy_img=ev["imgs_noisy"][0], noise_img=self.decode_latents(ev["noise"])[0]
                               .permute(1, 2, 0), noise_pred=ev["noise_pred"])
                return out
            out["eval"] = {k: ev[k] for k in ("bs", "noise_levels", "imgs_noisy", "imgs_1step", "imgs_1orig",
                                              "imgs_final", "texts")}
        return out

    forward = __call__

    @torch.no_grad()
    def guidance_eval(self, latents: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor, t: Any,
                      elevation: torch.Tensor, azimuth: torch.Tensor, camera_distances: torch.Tensor,
                      grad: torch.Tensor | None = None) -> dict[str, Any]:
        """threestudio's guidance_eval on the first max_items_eval items: t snapped to the n_ddim_steps grid
        (the largest grid step <= t), z_t = alpha x + sigma n (fresh noise), the guided eps, one DDPM step
        (eta 1, imgs_1step), the x0 prediction (imgs_1orig) and DDPM sampling to the end (imgs_final); images
        [bs, H, W, 3]. `t` is the estimator's info["t"] ([B] or a number; None: max_step)."""
        from ..samplers.guidance import Guidance, guided_step
        sch = self.denoiser.schedule
        T, n_grid = self.num_train_timesteps, self.settings["eval_steps"]
        B = latents.shape[0]
        mi = self.settings["max_items_eval"]
        bs = min(mi, B) if mi > 0 else B
        if t is None:
            t = self.max_step
        tb = torch.as_tensor(t).reshape(-1).long().cpu()
        tb = (tb.expand(B) if tb.numel() == 1 else tb)[:bs]
        grid = sch.timesteps(n_grid).tolist()  # the scheduler config's spacing, as threestudio's scheduler
        x = latents[:bs].float()
        g = Guidance(self.denoiser, cond[:bs], uncond[:bs], float(self.settings["w"]))
        noisy, one, orig, final, noise, eps_all, levels = [], [], [], [], [], [], []
        for b in range(bs):
            below = [s for s in grid if s <= int(tb[b])] or [grid[-1]]
            ts = below[0]
            rest = grid[grid.index(ts) + 1:]
            gb = Guidance(self.denoiser, g.cond[b:b + 1], g.uncond[b:b + 1], g.scale)
            n = torch.randn(x[b:b + 1].shape, generator=self.generator, device=x.device, dtype=x.dtype)
            a, s = sch.alpha(ts, device=x.device), sch.sigma(ts, device=x.device)
            z = a * x[b:b + 1] + s * n
            eps = gb.eps(z, ts)
            x0 = (z - s * eps) / a
            t_next = rest[0] if rest else -1
            zn = guided_step(gb, z, ts, t_next, eta=1.0, tag="eval",
                             noise=torch.randn(z.shape, generator=self.generator, device=z.device, dtype=z.dtype))
            z1 = zn
            for tc, tn in zip(rest, rest[1:] + [-1]):
                zn = guided_step(gb, zn, tc, tn, eta=1.0, tag="eval",
                                 noise=torch.randn(z.shape, generator=self.generator, device=z.device,
                                                   dtype=z.dtype))
            noisy.append(z), one.append(z1), orig.append(x0), final.append(zn), noise.append(n), eps_all.append(eps)
            levels.append(ts / T)
        img = lambda zs: self.decode_latents(torch.cat(zs)).permute(0, 2, 3, 1)  # noqa: E731
        texts = [f"n{n_:.02f}\ne{e.item():.01f}\na{a_.item():.01f}\nc{c.item():.02f}"
                 for n_, e, a_, c in zip(levels, elevation, azimuth, camera_distances)]
        return {"bs": bs, "noise_levels": levels, "imgs_noisy": img(noisy), "imgs_1step": img(one),
                "imgs_1orig": img(orig), "imgs_final": img(final), "texts": texts, "noise": torch.cat(noise),
                "noise_pred": torch.cat(eps_all)}


def install_checkpoint_hooks(system_cls: type) -> None:
    """Make a threestudio system class (BaseSystem) carry its msdfast guidance's state in Lightning checkpoints.

    Lightning calls the system's on_save_checkpoint(checkpoint) when saving and on_load_checkpoint(checkpoint)
    BEFORE on_fit_start (where threestudio systems build their guidance), then on_train_start. The wrapped hooks
    save `self.guidance`'s state, or keep the loaded state until on_train_start hands it to the guidance.
    Idempotent: installing twice wraps once.
    """
    if getattr(system_cls, "_msdfast_hooks", False):
        return
    save0, load0, start0 = system_cls.on_save_checkpoint, system_cls.on_load_checkpoint, system_cls.on_train_start

    def _guidance(self: Any) -> Any:
        g = self.__dict__.get("guidance")
        return g if g is not None and hasattr(g, "on_save_checkpoint") else None

    def on_save_checkpoint(self: Any, checkpoint: dict) -> None:
        save0(self, checkpoint)
        g = _guidance(self)
        if g is not None:
            g.on_save_checkpoint(checkpoint)

    def on_load_checkpoint(self: Any, checkpoint: dict) -> None:
        load0(self, checkpoint)
        if CHECKPOINT_KEY in checkpoint:
            g = _guidance(self)
            if g is not None:
                g.on_load_checkpoint(checkpoint)
            else:
                self.__dict__["_msdfast_pending_checkpoint"] = {CHECKPOINT_KEY: checkpoint[CHECKPOINT_KEY]}

    def on_train_start(self: Any) -> None:
        start0(self)
        pending = self.__dict__.pop("_msdfast_pending_checkpoint", None)
        if pending is not None:
            g = _guidance(self)
            if g is None:
                raise UserInputError("checkpoint: it holds msdfast-guidance state but the system's guidance is "
                                     "not msdfast-guidance")
            g.on_load_checkpoint(pending)

    system_cls.on_save_checkpoint, system_cls.on_load_checkpoint = on_save_checkpoint, on_load_checkpoint
    system_cls.on_train_start = on_train_start
    system_cls._msdfast_hooks = True


def register_with_threestudio(name: str = "msdfast-guidance") -> type:
    """Register msdfast-guidance in threestudio's registry (idempotent) and install the checkpoint hooks.

    Needs threestudio importable (its `threestudio.register`, BaseObject and BaseSystem). The registered class is
    a threestudio BaseObject (not an nn.Module) whose Config declares every stock SD/SDI/VSD guidance key and
    msdfast's keys, all defaulting to None ("not given"); `translate_config` resolves them.
    """
    import dataclasses

    import threestudio  # type: ignore[import-not-found]
    from threestudio.utils.base import BaseObject  # type: ignore[import-not-found]

    existing = threestudio.__modules__.get(name)
    if existing is not None:
        if getattr(existing, "_msdfast_guidance", False):
            _install_system_hooks()
            return existing
        raise UserInputError(f"threestudio: {name!r} is already registered by {existing.__module__}")

    config_cls = dataclasses.make_dataclass(
        "Config", [(k, Any, dataclasses.field(default=None)) for k in CONFIG_KEYS], bases=(BaseObject.Config,))

    class ThreestudioMSDFastGuidance(BaseObject):
        """msdfast-guidance: threestudio's guidance API, forwarded to MSDFastGuidance (`self.impl`)."""

        Config = config_cls
        _msdfast_guidance = True

        def configure(self) -> None:
            from omegaconf import OmegaConf  # type: ignore[import-not-found]
            cfg = OmegaConf.to_container(OmegaConf.structured(self.cfg), resolve=True)
            self.impl = MSDFastGuidance({k: cfg.get(k) for k in CONFIG_KEYS})

        def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            return self.impl(*args, **kwargs)

        def __getattr__(self, item: str) -> Any:  # decode_latents, min_step, set_min_max_steps, hooks, ...
            if item == "impl" or item.startswith("__"):
                raise AttributeError(item)
            return getattr(self.impl, item)

        def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False) -> None:
            self.impl.update_step(epoch, global_step, on_load_weights)

    ThreestudioMSDFastGuidance.__qualname__ = ThreestudioMSDFastGuidance.__name__
    threestudio.register(name)(ThreestudioMSDFastGuidance)
    _install_system_hooks()
    return ThreestudioMSDFastGuidance


def _install_system_hooks() -> None:
    try:
        from threestudio.systems.base import BaseSystem  # type: ignore[import-not-found]
    except ImportError:  # systems not importable (no Lightning): guidance works, hooks are installed later
        return
    install_checkpoint_hooks(BaseSystem)
