"""What the distillation pipelines share (`msdfast image`, `msdfast 3d`): config, run loop, checkpoints, CLI.

One mechanism for every pipeline (MSD paper sec. 4.4: render -> VAE encode -> estimator gradient on the latents
-> loss trick -> AdamW on the generator's parameters theta):

* `DistillConfig`: the options every pipeline has (model, prompt, method, steps, AdamW, seed, CFG/PSR,
  estimator options, checkpoint/snapshot cadence, device); pipelines subclass it with their own fields.
* `run_distillation`: the optimisation loop with checkpoint.pt (weights_only=True loadable: tensors, dicts,
  primitives), bit-exact `--resume` on the CPU (parameters, AdamW moments, estimator state, the run's
  torch.Generator and the global RNG are all restored), snapshots, final image, progress strip, metrics.json
  and a tqdm progress bar. The pipeline supplies `step_fn(step) -> GradientEstimate` (render + encode +
  estimator call) and `render_fn() -> [1, 3, H, W]` (what a snapshot shows).
* `add_common_arguments` / `common_config_kwargs`: the shared command-line options.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..atomic import atomic_path, write_atomic
from ..checkpoint import load_checkpoint, save_checkpoint
from ..errors import UserInputError
from ..estimators.base import estimator_state, load_estimator_state

__all__ = ["DistillConfig", "COMMON_RESUME_KEYS", "run_distillation", "load_denoiser", "default_device",
           "save_png", "progress_strip", "add_common_arguments",
           "common_config_kwargs", "parse_option"]

# Keys that must match for --resume to continue a run (the rest, e.g. progress, may change).
COMMON_RESUME_KEYS = ("model", "prompt", "negative_prompt", "method", "steps", "lr", "seed", "guidance_scale",
                      "psr_k", "psr_s", "options", "weight_decay")


@dataclass
class DistillConfig:
    model: str
    prompt: str
    method: str = "msd"
    negative_prompt: str = ""
    steps: int = 400
    lr: float = 1e-2
    weight_decay: float = 1e-2            # torch AdamW default
    seed: int = 0
    out: str = "runs/image"
    guidance_scale: float = 7.5          # diffusers form w (threestudio's s = w - 1)
    psr_k: float | None = None
    psr_s: float | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)   # method-specific estimator options
    ckpt_every: int = 100
    snapshot_every: int = 50
    device: str | None = None
    dtype: str | None = None
    compile: bool = False                # torch.compile the UNet (worth it for long runs on a GPU)
    unet_backend: str = "torch"          # torch | onnx (onnxruntime) | tensorrt (cached engine)
    progress: bool = True

    def validate(self) -> None:
        if not self.prompt:
            raise ValueError("prompt: must be a non-empty string")
        if self.steps < 1:
            raise ValueError(f"steps: must be >= 1, got {self.steps}")
        if not self.lr > 0:
            raise ValueError(f"lr: must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay: must be >= 0, got {self.weight_decay}")
        if self.ckpt_every < 0 or self.snapshot_every < 0:
            raise ValueError("ckpt_every/snapshot_every: must be >= 0 (0 = off)")
        if self.method == "msd":   # bandwidth vs lambda_min (UserInputError naming both) before any model loads
            from ..estimators.bandwidth import BandwidthSchedule
            BandwidthSchedule.from_options(self.options)
        from ..denoisers.unet_backend import UNET_BACKENDS
        if self.unet_backend not in UNET_BACKENDS:
            raise ValueError(f"unet_backend: expected one of {UNET_BACKENDS}, got {self.unet_backend!r}")

    def estimator_options(self) -> dict[str, Any]:
        opts = {"guidance_scale": self.guidance_scale, **self.options}
        if self.psr_k is not None:
            opts["psr_k"] = self.psr_k
        if self.psr_s is not None:
            opts["psr_s"] = self.psr_s
        return opts


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


def _write_json(obj: Any, path: Path) -> None:
    write_atomic(path, json.dumps(obj, indent=2, default=str).encode())


def save_png(img: torch.Tensor, path: Path) -> None:
    """[1, 3, H, W] or [3, H, W] in [0, 1] -> PNG (written atomically)."""
    from PIL import Image

    img = img.detach().float().cpu().reshape(-1, *img.shape[-3:])[0].clamp(0, 1)
    arr = (img.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype("uint8")
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")


def _open_png(path: Path) -> Any:
    """A snapshot PNG, fully decoded; UserInputError naming the file when it is damaged or truncated."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except Exception as e:  # noqa: BLE001 -- PIL raises OSError/SyntaxError/ValueError for damaged files
        raise UserInputError(f"{path}: the snapshot image is damaged or truncated ({type(e).__name__}); "
                             "delete it to continue") from e


def progress_strip(paths: list[Path], out: Path, height: int = 128) -> None:
    """The snapshots side by side (one row each when they are wider than tall), each resized to `height` px."""
    from PIL import Image

    if not paths:
        return
    ims = [_open_png(p) for p in paths]
    ims = [im.resize((max(1, im.width * height // im.height), height)) for im in ims]
    if ims[0].width > ims[0].height:   # multi-view snapshots (3D): stack the rows instead of one long strip
        strip = Image.new("RGB", (max(im.width for im in ims), height * len(ims)))
        for i, im in enumerate(ims):
            strip.paste(im, (0, i * height))
    else:
        strip = Image.new("RGB", (sum(im.width for im in ims), height))
        x = 0
        for im in ims:
            strip.paste(im, (x, 0))
            x += im.width
    strip.save(out)


def default_device(device: str | None) -> str:
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def load_denoiser(cfg: DistillConfig, device: str) -> Any:
    """The Stable Diffusion denoiser of cfg.model (a local diffusers folder; fp16 on CUDA unless cfg.dtype), its UNet
    run by cfg.unet_backend."""
    from ..denoisers.sd import load_stable_diffusion
    from ..denoisers.unet_backend import exported_unet

    dtype = cfg.dtype or ("float16" if device == "cuda" else "float32")
    host = load_stable_diffusion(cfg.model, device=device, dtype=dtype, compile=cfg.compile)
    return exported_unet(host, cfg.unet_backend)


# ---------------------------------------------------------------------- the run loop
def run_distillation(cfg: DistillConfig, *, field: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     estimator: Any, generator: torch.Generator,
                     step_fn: Callable[[int], Any], render_fn: Callable[[], torch.Tensor],
                     resume_keys: Sequence[str], run_info: dict[str, Any] | None = None,
                     resume: bool = False, stop_after: int | None = None) -> dict[str, Any]:
    """Run (or resume) the optimisation of `field`; returns the metrics dict written to metrics.json + "field".

    Each step: estimator.update_step(step, steps); res = step_fn(step) (a GradientEstimate whose loss is the
    loss trick on latents computed FROM field, so res.loss.backward() reaches theta); AdamW step. A step whose
    res.info["finished"] is true (MSD: bandwidth below lambda_min, paper sec. 4.4) ends the run before stepping.
    stop_after: stop (as if interrupted) once that many steps in total are done -- used by the resume tests.
    run_info: extra entries for config.json (resolved device, sizes, ...).
    """
    out = Path(cfg.out)
    (out / "snapshots").mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    device = next(iter(field.parameters())).device

    start, history, converged = 0, [], False
    if resume and ckpt_path.exists():
        ck = load_checkpoint(ckpt_path, map_location=device)  # checksum verified; tensors, dicts, primitives only
        for p in sorted((out / "snapshots").glob("step_*.png")):   # the final strip reads them all: check now
            _open_png(p)
        old, new = ck["config"], asdict(cfg)
        for k in resume_keys:
            if old.get(k) != new.get(k):
                raise ValueError(f"{k}: differs from the checkpointed run ({old.get(k)!r} vs "
                                 f"{new.get(k)!r}); use a new --out to start a different run")
        field.load_state_dict(ck["field"])
        optimizer.load_state_dict(ck["optimizer"])
        load_estimator_state(estimator, ck["estimator"])
        _set_rng_states(generator, ck["rng"])
        start, history, converged = int(ck["step"]), list(ck["history"]), bool(ck.get("converged", False))
    _write_json({**asdict(cfg), "device": str(device), **(run_info or {})}, out / "config.json")

    def snapshot(step: int) -> Path:
        with torch.no_grad():
            img = render_fn()
        p = out / "snapshots" / f"step_{step:06d}.png"
        save_png(img, p)
        return p

    def checkpoint(step: int) -> None:
        save_checkpoint({"config": asdict(cfg), "field": field.state_dict(), "optimizer": optimizer.state_dict(),
                      "estimator": estimator_state(estimator), "rng": _rng_states(generator), "step": step,
                      "history": history, "converged": converged}, ckpt_path)

    from tqdm.auto import tqdm

    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    if converged:
        end = start
    bar = tqdm(range(start, end), initial=start, total=cfg.steps, disable=not cfg.progress, desc=cfg.method)
    for step in bar:
        t0 = time.perf_counter()
        estimator.update_step(step, cfg.steps)
        res = step_fn(step)
        if res.info.get("finished", False):
            # MSD's convergence criterion (paper sec. 4.4): the bandwidth fell below lambda_min. Stop before
            # stepping, so AdamW's momentum does not keep moving theta on a zero gradient.
            converged = True
            tqdm.write(f"msdfast {cfg.method}: converged at step {step}: "
                       + (f"lambda = {res.info['lambda']:.3g} < lambda_min = {res.info['lambda_min']:.3g} "
                          if "lambda" in res.info and "lambda_min" in res.info else "")
                       + "(MSD's termination criterion, Algorithm 2); stopping")
            break
        optimizer.zero_grad(set_to_none=True)
        res.loss.backward()
        optimizer.step()
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
            save_png(render_fn(), out / "final.png")
        progress_strip(sorted((out / "snapshots").glob("step_*.png")), out / "progress.png")
        if cfg.ckpt_every:
            checkpoint(cfg.steps)
    metrics = {"method": cfg.method, "steps_done": len(history), "finished": finished, "converged": converged,
               "total_nfe": sum(r["nfe"] for r in history),
               "nfe_per_step": (sum(r["nfe"] for r in history) / len(history)) if history else 0,
               "seconds": sum(r["seconds"] for r in history), "history": history}
    _write_json(metrics, out / "metrics.json")
    metrics["field"] = field
    return metrics


# ---------------------------------------------------------------------- CLI
def parse_option(text: str) -> tuple[str, Any]:
    """--option KEY=VALUE with a JSON value (a bare string when it is not JSON)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--option: expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    try:
        return k, json.loads(v)
    except json.JSONDecodeError:
        return k, v


def add_common_arguments(p: argparse.ArgumentParser, *, steps: int, steps_help: str, out: str,
                         ckpt_every: int, snapshot_every: int) -> None:
    """The options of every distillation pipeline (model, prompt, method, AdamW, guidance, run folder...)."""
    from ..estimators import METHODS

    p.add_argument("--model", required=True, help="local Stable Diffusion folder (diffusers layout)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--method", default="msd", choices=list(METHODS))
    p.add_argument("--steps", type=int, default=steps, help=steps_help)
    p.add_argument("--lr", type=float, default=1e-2, help="AdamW learning rate (paper: 1e-2)")
    p.add_argument("--weight-decay", type=float, default=1e-2, help="AdamW weight decay (torch default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=out, help="run folder")
    p.add_argument("--guidance-scale", type=float, default=7.5, help="CFG in diffusers form (threestudio's + 1)")
    p.add_argument("--psr-k", type=float, default=None, help="PSR sharpness k (thesis eq. 1.6); 1 = off")
    p.add_argument("--psr-s", type=float, default=None)
    p.add_argument("--option", action="append", type=parse_option, default=[], metavar="KEY=VALUE",
                   help="method-specific estimator option (JSON value), e.g. --option solver=\"stable\"")
    p.add_argument("--ckpt-every", type=int, default=ckpt_every)
    p.add_argument("--snapshot-every", type=int, default=snapshot_every)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--overwrite", action="store_true", help="delete the run already in OUT and start a new one")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"])
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet")
    p.add_argument("--unet-backend", default="torch", choices=["torch", "onnx", "tensorrt"],
                   help="run the UNet eagerly, through onnxruntime or as a cached TensorRT engine")
    p.add_argument("--no-progress", action="store_true")


def common_config_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """DistillConfig's fields from the parsed `add_common_arguments` options."""
    return dict(model=args.model, prompt=args.prompt, negative_prompt=args.negative_prompt, method=args.method,
                steps=args.steps, lr=args.lr, weight_decay=args.weight_decay, seed=args.seed, out=args.out,
                guidance_scale=args.guidance_scale, psr_k=args.psr_k, psr_s=args.psr_s,
                options=dict(args.option), ckpt_every=args.ckpt_every, snapshot_every=args.snapshot_every,
                device=args.device, dtype=args.dtype, compile=args.compile, unet_backend=args.unet_backend,
                progress=not args.no_progress)
