"""Text-to-2D: distil Stable Diffusion into an image field (MSD paper sec. 4.4, table 4).

Each step renders the field f(p; theta) (a hash-grid coordinate MLP by default), encodes it with the VAE
(threestudio's path: 512 bilinear resize, x * 2 - 1, posterior sample * scaling factor), asks the estimator
for a descent gradient g on the latents, and back-propagates the loss trick (dloss/dx = g / B) through the VAE
encoder into theta; AdamW steps theta. The paper's settings: AdamW lr 1e-2, 400 steps, CFG 7.5 and, for MSD,
a monotonically decreasing bandwidth.

Run folder (`--out`): config.json, metrics.json (per step: loss, |g|, NFE, seconds), snapshots/step_*.png,
final.png, progress.png (the snapshots side by side) and checkpoint.pt (field, optimiser, estimator state,
RNG states, step). `--resume` continues from checkpoint.pt and reproduces the uninterrupted run exactly
(bit-exact on the CPU; CUDA only as deterministic as its kernels).
"""
from __future__ import annotations

import argparse
import json
import os
import time
import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = ["ImageConfig", "add_image_arguments", "run_image", "distill_image", "estimator_state",
           "load_estimator_state"]

# Keys that must match for --resume to continue a run (the rest, e.g. progress, may change).
_RESUME_KEYS = ("model", "prompt", "negative_prompt", "method", "steps", "lr", "seed", "field", "resolution",
                "guidance_scale", "psr_k", "psr_s", "options", "weight_decay")


@dataclass
class ImageConfig:
    model: str
    prompt: str
    method: str = "msd"
    negative_prompt: str = ""
    steps: int = 400
    lr: float = 1e-2
    weight_decay: float = 1e-2            # torch AdamW default
    seed: int = 0
    out: str = "runs/image"
    field: str = "grid"
    resolution: int | None = None       # render size; default: the model's encode resolution (512 for SD 1.5)
    guidance_scale: float = 7.5          # diffusers form w (threestudio's s = w - 1)
    psr_k: float | None = None
    psr_s: float | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)   # method-specific estimator options
    ckpt_every: int = 100
    snapshot_every: int = 50
    device: str | None = None
    dtype: str | None = None
    compile: bool = False                # torch.compile the UNet (worth it for long runs on a GPU)
    progress: bool = True

    def validate(self) -> None:
        if not self.prompt:
            raise ValueError("prompt: must be a non-empty string")
        if self.steps < 1:
            raise ValueError(f"steps: must be >= 1, got {self.steps}")
        if not self.lr > 0:
            raise ValueError(f"lr: must be positive, got {self.lr}")
        if self.ckpt_every < 0 or self.snapshot_every < 0:
            raise ValueError("ckpt_every/snapshot_every: must be >= 0 (0 = off)")

    def estimator_options(self) -> dict[str, Any]:
        opts = {"guidance_scale": self.guidance_scale, **self.options}
        if self.psr_k is not None:
            opts["psr_k"] = self.psr_k
        if self.psr_s is not None:
            opts["psr_s"] = self.psr_s
        return opts


# ---------------------------------------------------------------------- estimator state (checkpointing)
def estimator_state(est: Any) -> dict[str, Any]:
    """The estimator's resumable state: its state_dict() (msdfast estimators), else its attributes."""
    if hasattr(est, "state_dict"):
        return {"kind": "state_dict", "state": est.state_dict()}
    from ..denoisers.base import Denoiser
    return {"kind": "vars", "state": {k: v for k, v in vars(est).items() if not isinstance(v, Denoiser)}}


def load_estimator_state(est: Any, blob: dict[str, Any]) -> None:
    if blob["kind"] == "state_dict":
        est.load_state_dict(blob["state"])
    else:
        vars(est).update(blob["state"])


def _rng_states(gen: torch.Generator) -> dict[str, Any]:
    st = {"generator": gen.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_states(gen: torch.Generator, st: dict[str, Any]) -> None:
    gen.set_state(st["generator"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_json(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


def save_png(img: torch.Tensor, path: Path) -> None:
    """[1, 3, H, W] or [3, H, W] in [0, 1] -> PNG."""
    from PIL import Image

    img = img.detach().float().cpu().reshape(-1, *img.shape[-3:])[0].clamp(0, 1)
    arr = (img.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype("uint8")
    Image.fromarray(arr).save(path)


def progress_strip(paths: list[Path], out: Path, height: int = 128) -> None:
    """The snapshots side by side, each resized to `height` px."""
    from PIL import Image

    if not paths:
        return
    ims = [Image.open(p).convert("RGB") for p in paths]
    ims = [im.resize((max(1, im.width * height // im.height), height)) for im in ims]
    strip = Image.new("RGB", (sum(im.width for im in ims), height))
    x = 0
    for im in ims:
        strip.paste(im, (x, 0))
        x += im.width
    strip.save(out)


# ---------------------------------------------------------------------- the run
def _default_device(device: str | None) -> str:
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def distill_image(cfg: ImageConfig, *, resume: bool = False, denoiser: Any = None,
                  estimator_factory: Callable[..., Any] | None = None,
                  stop_after: int | None = None) -> dict[str, Any]:
    """Run (or resume) text-to-2D distillation; returns the metrics dict written to metrics.json, plus
    "field" (the trained field module).

    denoiser: a loaded StableDiffusionDenoiser (default: load cfg.model). estimator_factory(method, denoiser,
    **options) builds the estimator (default msdfast.estimators.build). stop_after: stop (as if interrupted)
    once that many steps in total are done -- used by the resume tests.
    """
    cfg.validate()
    from ..fields.image import build_field

    device = _default_device(cfg.device)
    if denoiser is None:
        from ..denoisers.sd import load_stable_diffusion
        dtype = cfg.dtype or ("float16" if device == "cuda" else "float32")
        denoiser = load_stable_diffusion(cfg.model, device=device, dtype=dtype, compile=cfg.compile)
    if estimator_factory is None:
        from ..estimators import build as estimator_factory
    out = Path(cfg.out)
    (out / "snapshots").mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    resolution = cfg.resolution or denoiser.encode_resolution

    torch.manual_seed(cfg.seed)  # the field's MLP init draws from the global stream
    fld = build_field(cfg.field, resolution=resolution, latent_size=denoiser.latent_size,
                      latent_channels=denoiser.latent_channels, seed=cfg.seed).to(device)
    opt = torch.optim.AdamW(fld.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    est = estimator_factory(cfg.method, denoiser, **cfg.estimator_options())
    prompts = denoiser.prompt_embeddings(cfg.prompt, cfg.negative_prompt)
    cond, uncond = prompts.cond.to(device), prompts.uncond.to(device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)

    start, history, converged = 0, [], False
    if resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location=device, weights_only=True)  # tensors, dicts, primitives only
        old = ck["config"]
        for k in _RESUME_KEYS:
            if old.get(k) != asdict(cfg).get(k):
                raise ValueError(f"{k}: differs from the checkpointed run ({old.get(k)!r} vs "
                                 f"{asdict(cfg).get(k)!r}); use a new --out to start a different run")
        fld.load_state_dict(ck["field"])
        opt.load_state_dict(ck["optimizer"])
        load_estimator_state(est, ck["estimator"])
        _set_rng_states(gen, ck["rng"])
        start, history, converged = int(ck["step"]), list(ck["history"]), bool(ck.get("converged", False))
    _write_json({**asdict(cfg), "device": device, "resolution": resolution,
                 "denoiser_dtype": str(denoiser.dtype)}, out / "config.json")

    def snapshot(step: int) -> Path:
        with torch.no_grad():
            img = fld.render()
            if fld.is_latent:
                img = denoiser.decode_latents(img)
        p = out / "snapshots" / f"step_{step:06d}.png"
        save_png(img, p)
        return p

    def checkpoint(step: int) -> None:
        _atomic_save({"config": asdict(cfg), "field": fld.state_dict(), "optimizer": opt.state_dict(),
                      "estimator": estimator_state(est), "rng": _rng_states(gen), "step": step,
                      "history": history, "converged": converged}, ckpt_path)

    from tqdm.auto import tqdm

    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    if converged:
        end = start
    bar = tqdm(range(start, end), initial=start, total=cfg.steps, disable=not cfg.progress, desc=cfg.method)
    for step in bar:
        t0 = time.perf_counter()
        est.update_step(step, cfg.steps)
        img = fld.render()
        latents = img if fld.is_latent else denoiser.encode_images(img, generator=gen)
        res = est(latents, cond, uncond, generator=gen)
        if res.info.get("finished", False):
            # MSD's convergence criterion (paper sec. 4.4): the bandwidth fell below lambda_min. Stop before
            # stepping, so AdamW's momentum does not keep moving theta on a zero gradient.
            converged = True
            break
        opt.zero_grad(set_to_none=True)
        res.loss.backward()
        opt.step()
        gnorm = float(res.grad.float().norm())
        rec = {"step": step, "loss": float(res.loss.detach()), "grad_norm": gnorm, "nfe": int(res.nfe),
               "seconds": time.perf_counter() - t0}
        rec.update({k: v for k, v in res.info.items() if isinstance(v, (int, float)) and k not in rec})
        history.append(rec)
        if not all(map(lambda v: v == v and abs(v) != float("inf"), (rec["loss"], gnorm))):
            raise FloatingPointError(f"step {step}: non-finite loss or gradient ({rec['loss']}, {gnorm})")
        bar.set_postfix(loss=f"{rec['loss']:.4g}", nfe=rec["nfe"])
        done = step + 1
        if cfg.snapshot_every and (done % cfg.snapshot_every == 0 or done == 1):
            snapshot(done)
        if cfg.ckpt_every and done % cfg.ckpt_every == 0:
            checkpoint(done)
    bar.close()

    finished = converged or (history[-1]["step"] + 1 if history else start) >= cfg.steps
    if finished:
        with torch.no_grad():
            img = fld.render()
            if fld.is_latent:
                img = denoiser.decode_latents(img)
        save_png(img, out / "final.png")
        progress_strip(sorted((out / "snapshots").glob("step_*.png")), out / "progress.png")
        if cfg.ckpt_every:
            checkpoint(cfg.steps)
    metrics = {"method": cfg.method, "steps_done": len(history), "finished": finished, "converged": converged,
               "total_nfe": sum(r["nfe"] for r in history),
               "nfe_per_step": (sum(r["nfe"] for r in history) / len(history)) if history else 0,
               "seconds": sum(r["seconds"] for r in history), "history": history}
    _write_json(metrics, out / "metrics.json")
    metrics["field"] = fld
    return metrics


# ---------------------------------------------------------------------- CLI
def _parse_option(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--option: expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    try:
        return k, json.loads(v)
    except json.JSONDecodeError:
        return k, v


def add_image_arguments(p: argparse.ArgumentParser) -> None:
    from ..estimators import METHODS

    p.add_argument("--model", required=True, help="local Stable Diffusion folder (diffusers layout)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--method", default="msd", choices=list(METHODS))
    p.add_argument("--steps", type=int, default=400, help="optimisation steps (paper: 400)")
    p.add_argument("--lr", type=float, default=1e-2, help="AdamW learning rate (paper: 1e-2)")
    p.add_argument("--weight-decay", type=float, default=1e-2, help="AdamW weight decay (torch default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/image", help="run folder")
    p.add_argument("--field", default="grid", choices=["grid", "pixel", "latent"])
    p.add_argument("--resolution", type=int, default=None, help="render size (default: model's, 512 for SD 1.5)")
    p.add_argument("--guidance-scale", type=float, default=7.5, help="CFG in diffusers form (threestudio's + 1)")
    p.add_argument("--psr-k", type=float, default=None, help="PSR sharpness k (thesis eq. 1.6); 1 = off")
    p.add_argument("--psr-s", type=float, default=None)
    p.add_argument("--option", action="append", type=_parse_option, default=[], metavar="KEY=VALUE",
                   help="method-specific estimator option (JSON value), e.g. --option solver=\"stable\"")
    p.add_argument("--ckpt-every", type=int, default=100)
    p.add_argument("--snapshot-every", type=int, default=50)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"])
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet")
    p.add_argument("--no-progress", action="store_true")


def run_image(args: argparse.Namespace) -> int:
    cfg = ImageConfig(model=args.model, prompt=args.prompt, negative_prompt=args.negative_prompt,
                      method=args.method, steps=args.steps, lr=args.lr, weight_decay=args.weight_decay,
                      seed=args.seed, out=args.out, field=args.field, resolution=args.resolution,
                      guidance_scale=args.guidance_scale, psr_k=args.psr_k, psr_s=args.psr_s,
                      options=dict(args.option), ckpt_every=args.ckpt_every, snapshot_every=args.snapshot_every,
                      device=args.device, dtype=args.dtype, compile=args.compile, progress=not args.no_progress)
    m = distill_image(cfg, resume=args.resume)
    print(f"{cfg.method}: {m['steps_done']} steps, {m['total_nfe']} NFE ({m['nfe_per_step']:.1f}/step), "
          f"{m['seconds']:.1f} s -> {Path(cfg.out) / 'final.png'}")
    return 0
