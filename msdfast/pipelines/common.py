"""What the distillation pipelines share (`msdfast image`, `msdfast 3d`): config, run loop, checkpoints, CLI.

One mechanism for every pipeline (MSD paper sec. 4.4: render -> VAE encode -> estimator gradient on the latents
-> loss trick -> AdamW on the generator's parameters theta):

* `DistillConfig`: the options every pipeline has (model, prompt, method, steps, AdamW, seed, CFG/PSR,
  estimator options, checkpoint/snapshot cadence, device); pipelines subclass it with their own fields. It is
  the one source of the command line, --config files and config.json (msdfast.config).
* `run_distillation`: the optimisation loop with checkpoint.pt (weights_only=True loadable: tensors, dicts,
  primitives), bit-exact `--resume` on the CPU (parameters, AdamW moments, estimator state, the run's
  torch.Generator and the global RNG are all restored), snapshots, final image, labelled progress strip,
  metrics.jsonl (per step, as it runs), metrics.json, config.json, and a tqdm bar or periodic log lines. The pipeline supplies `step_fn(step) -> GradientEstimate` (render + encode +
  estimator call) and `render_fn() -> [1, 3, H, W]` (what a snapshot shows).
* `add_distill_arguments` / `distill_config_from_args`: the command line generated from the job's config
  dataclass, with --config FILE, --resume and --list-options; everything validated before a model loads.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..atomic import atomic_path, write_atomic
from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import RUN_INFO_KEY, add_job_arguments, check_seed, check_utf8, coerce_fields, config_from_args, config_to_dict, option
from ..errors import UserInputError
from ..estimators import METHODS

__all__ = ["DistillConfig", "NON_RESULT_KEYS", "run_identity", "run_distillation", "load_denoiser", "default_device",
           "run_pipeline", "run_job", "save_png", "progress_strip", "add_distill_arguments", "distill_config_from_args", "list_options",
           "PROMOTED_OPTIONS"]

# DistillConfig fields that do not change a run's results: --resume may change them. Every other field must match
# the checkpointed run, and so must the run identity (`run_identity`: the model's resolved path and content hash,
# the denoiser's dtype, the device type), which replaces the literal --model/--dtype/--device strings.
NON_RESULT_KEYS = ("model", "out", "progress", "ckpt_every", "snapshot_every", "device", "dtype")


log = logging.getLogger("msdfast.run")

# Estimator options that are fields of the job config of their own (the precedence rule: msdfast.config).
PROMOTED_OPTIONS = ("guidance_scale", "psr_k", "psr_s")


@dataclass
class DistillConfig:
    """The settings every distillation job has; the CLI flags, --config files and config.json come from it."""

    model: str = option(help="Stable Diffusion: a local diffusers folder, or a hub id in the local Hugging Face cache")
    prompt: str = option(help="text prompt")
    method: str = option("msd", choices=METHODS, help="score-distillation estimator")
    negative_prompt: str = option("", help="negative prompt (the CFG unconditional text)")
    steps: int = option(400, help="optimisation steps")
    lr: float = option(1e-2, help="AdamW learning rate (paper: 1e-2)")
    weight_decay: float = option(1e-2, help="AdamW weight decay (torch default)")
    seed: int = option(0, help="seed of the field's init and the run's random stream")
    out: str = option("runs/image", help="run folder")
    guidance_scale: float = option(7.5, help="CFG weight in diffusers form w (threestudio's s = w - 1)")
    psr_k: float | None = option(None, help="PSR sharpness k (thesis eq. 1.6); 1 = off")
    psr_s: float | None = option(None, help="PSR scale s (thesis eq. 1.6)")
    options: dict[str, Any] = option(default_factory=dict, flag="--option", metavar="KEY=VALUE",
                                     help="estimator option (JSON value, repeatable), e.g. --option chains=4; "
                                          "--list-options METHOD lists them")
    ckpt_every: int = option(100, help="checkpoint every N steps (0 = off)")
    snapshot_every: int = option(50, help="snapshot image every N steps (0 = off)")
    device: str | None = option(None, help="torch device (default: cuda if available, else cpu)")
    dtype: str | None = option(None, choices=("float32", "float16", "bfloat16"),
                               help="denoiser dtype (default: float16 on CUDA, float32 on the CPU)")
    compile: bool = option(False, help="torch.compile the UNet (worth it for long runs on a GPU)")
    variant: str | None = option(None, help="diffusers weight variant of the model folder, e.g. fp16")
    unet_backend: str = option("torch", choices=("torch", "onnx", "tensorrt"),
                               help="run the UNet eagerly, through onnxruntime or as a cached TensorRT engine")
    progress: bool = option(True, help="progress bar on a terminal (periodic log lines otherwise)")

    def validate(self) -> None:
        """Every setting checked before anything loads: a UserInputError naming the setting otherwise."""
        typed = coerce_fields(type(self), {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, "")
        for k, v in typed.items():   # the Python API gets the same type checks as files and flags
            setattr(self, k, v)
        if not self.model:
            raise UserInputError("model: must name a local Stable Diffusion folder")
        if not self.prompt:
            raise UserInputError("prompt: must be a non-empty string")
        for k in ("prompt", "negative_prompt"):
            check_utf8(getattr(self, k), k)
        if self.steps < 1:
            raise UserInputError(f"steps: must be >= 1, got {self.steps}")
        if not self.lr > 0:
            raise UserInputError(f"lr: must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise UserInputError(f"weight_decay: must be >= 0, got {self.weight_decay}")
        check_seed(self.seed, "seed")
        for k in ("psr_k", "psr_s"):
            if getattr(self, k) is not None and not getattr(self, k) > 0:
                raise UserInputError(f"{k}: must be positive, got {getattr(self, k)}")
        if self.ckpt_every < 0 or self.snapshot_every < 0:
            raise UserInputError("ckpt_every/snapshot_every: must be >= 0 (0 = off)")
        for k in PROMOTED_OPTIONS:
            if k in self.options:
                raise UserInputError(f"options: {k} is a setting of its own; set {k} instead of options.{k}")
        from ..estimators.options import check_options
        self.options = check_options(self.method, self.options, "options")
        if self.method == "msd":   # bandwidth vs lambda_min (UserInputError naming both) before any model loads
            from ..estimators.bandwidth import BandwidthSchedule
            BandwidthSchedule.from_options(self.options)

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


class _ProgressLog:
    """Log lines for runs without a progress bar (stdout not a terminal): every ~10% of the run, at least once a
    minute, and at the last step -- step, loss, |g|, NFE, lambda when the estimator has one, speed and ETA."""

    def __init__(self, name: str, total: int, start: int, every_s: float = 60.0) -> None:
        self.name, self.total, self.every_s = name, total, every_s
        self.stride = max(1, total // 10)
        self.t0 = self.last = time.perf_counter()
        self.start = start

    def __call__(self, rec: dict[str, Any]) -> None:
        done, now = rec["step"] + 1, time.perf_counter()
        if not (done % self.stride == 0 or done == self.total or done == self.start + 1
                or now - self.last >= self.every_s):
            return
        self.last = now
        rate = (now - self.t0) / max(done - self.start, 1)
        extra = f" lambda {rec['lambda']:.4g}" if "lambda" in rec else ""
        log.info("%s: step %d/%d loss %.4g |g| %.4g nfe %d%s (%.2f s/step, %.0f s left)", self.name, done,
                 self.total, rec["loss"], rec["grad_norm"], rec["nfe"], extra, rate, rate * (self.total - done))


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


def _step_of(path: Path) -> int | None:
    stem = Path(path).stem
    return int(stem.rsplit("_", 1)[1]) if stem.startswith("step_") and stem.rsplit("_", 1)[1].isdigit() else None


def progress_strip(paths: list[Path], out: Path, height: int = 128,
                   column_labels: Sequence[str] | None = None) -> None:
    """The snapshots side by side (one row each when they are wider than tall), each resized to `height` px and
    labelled with its step number (from the step_NNNNNN.png name); column_labels: captions of the equal-width
    columns of each snapshot (3D: the view azimuths), drawn once above the rows."""
    from PIL import Image, ImageDraw

    if not paths:
        return
    ims = [_open_png(p) for p in paths]
    ims = [im.resize((max(1, im.width * height // im.height), height)) for im in ims]
    label_h = 12
    labels = [f"step {_step_of(p)}" if _step_of(p) is not None else Path(p).stem for p in paths]
    if ims[0].width > ims[0].height:   # multi-view snapshots (3D): stack the rows instead of one long strip
        top = label_h if column_labels else 0
        strip = Image.new("RGB", (max(im.width for im in ims), top + (height + label_h) * len(ims)), "white")
        draw = ImageDraw.Draw(strip)
        if column_labels:
            w = ims[0].width / len(column_labels)
            for k, c in enumerate(column_labels):
                draw.text((int(k * w) + 2, 0), c, fill="black")
        for i, (im, lab) in enumerate(zip(ims, labels)):
            y = top + i * (height + label_h)
            draw.text((2, y), lab, fill="black")
            strip.paste(im, (0, y + label_h))
    else:
        strip = Image.new("RGB", (sum(im.width for im in ims), height + label_h), "white")
        draw = ImageDraw.Draw(strip)
        x = 0
        for im, lab in zip(ims, labels):
            draw.text((x + 2, 0), lab, fill="black")
            strip.paste(im, (x, label_h))
            x += im.width
    strip.save(out)


def default_device(device: str | None) -> str:
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def load_denoiser(cfg: DistillConfig, device: str) -> Any:
    """The Stable Diffusion denoiser of cfg.model (a local diffusers folder; fp16 on CUDA unless cfg.dtype), its UNet
    run by cfg.unet_backend."""
    from ..denoisers.sd import load_stable_diffusion
    from ..denoisers.unet_backend import exported_unet

    dtype = cfg.dtype or ("float16" if torch.device(device).type == "cuda" else "float32")
    try:
        host = load_stable_diffusion(cfg.model, device=device, dtype=dtype, compile=cfg.compile, variant=cfg.variant,
                                     verbose=logging.getLogger("msdfast").isEnabledFor(logging.DEBUG))
    except FileNotFoundError as e:   # a missing or incomplete model folder: the loader's message names it
        raise UserInputError(str(e)) from e
    except UserInputError:
        raise
    except Exception as e:  # noqa: BLE001 -- damaged model files (e.g. an empty vocab.json: tokenizers raises
        # a bare Exception); the cause stays chained for --debug
        raise UserInputError(f"--model {cfg.model}: cannot load the model ({type(e).__name__}: {e})") from e
    return exported_unet(host, cfg.unet_backend)


def make_optimizer(params: Any, cfg: DistillConfig) -> torch.optim.Optimizer:
    """AdamW (Loshchilov & Hutter 2019, alg. 2) with cfg.lr and cfg.weight_decay, as ONE fused kernel per step
    where torch has it (CPU and CUDA float parameters: `fused=True`), else the multi-tensor `foreach` form. Same
    update as the per-parameter loop; on the 3D hash table (12.6M entries) fused is ~5x faster (issue 18)."""
    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    except (RuntimeError, ValueError):   # a device or dtype the fused kernel does not support
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)


# ---------------------------------------------------------------------- the run loop
def run_pipeline(cfg: DistillConfig, body: Callable[..., dict[str, Any]], *, resume: bool, overwrite: bool,
                 denoiser: Any, estimator_factory: Callable[..., Any] | None,
                 stop_after: int | None) -> dict[str, Any]:
    """What every distillation pipeline does before its own setup, then `body`.

    Validates cfg, holds the run folder (one writer; the new/resume/overwrite rules of msdfast.runlock), resolves
    the device, loads the denoiser unless one is given and defaults the estimator factory to
    msdfast.estimators.build; then returns body(cfg, device=, denoiser=, estimator_factory=, resume=, stop_after=).
    """
    from ..runlock import open_run_folder

    cfg.validate()
    with open_run_folder(cfg.out, resume=resume, overwrite=overwrite):
        device = default_device(cfg.device)
        if denoiser is None:
            denoiser = load_denoiser(cfg, device)
        if estimator_factory is None:
            from ..estimators import build as estimator_factory
        return body(cfg, device=device, denoiser=denoiser, estimator_factory=estimator_factory, resume=resume,
                    stop_after=stop_after)


def run_identity(denoiser: Any, device: torch.device | str) -> dict[str, Any]:
    """What a resumed run must share with the checkpointed one beyond the config: the model (resolved path and
    content hash, msdfast.content_hash, as load_stable_diffusion records them), the denoiser's dtype and the
    device type."""
    return {"model_path": getattr(denoiser, "model_path", None), "model_hash": getattr(denoiser, "model_hash", None),
            "dtype": str(denoiser.dtype), "device_type": torch.device(device).type}


_IDENTITY_OPTION = {"model_path": "--model", "model_hash": "--model", "dtype": "--dtype", "device_type": "--device"}


def _check_same_run(ck: dict[str, Any], cfg: DistillConfig, identity: dict[str, Any], path: Path) -> None:
    """UserInputError naming the option whose value differs from the checkpointed run's."""
    old, new = ck["config"], asdict(cfg)
    for k in sorted(set(old) | set(new)):
        if k not in NON_RESULT_KEYS and old.get(k) != new.get(k):
            opt = "--option" if k == "options" else "--" + k.replace("_", "-")
            raise UserInputError(f"{opt}: {new.get(k)!r} differs from the checkpointed run's {old.get(k)!r} "
                                 f"({path}); use a new --out to start a different run")
    was = ck.get("identity", {})
    for k, v in identity.items():
        if was.get(k) != v:
            what = {"model_hash": "content"}.get(k, k.replace("_", " "))
            raise UserInputError(f"{_IDENTITY_OPTION[k]}: the model/run's {what} {v!r} differs from the checkpointed "
                                 f"run's {was.get(k)!r} ({path}); use a new --out to start a different run")


def run_distillation(cfg: DistillConfig, *, field: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     estimator: Any, generator: torch.Generator,
                     step_fn: Callable[[int], Any], render_fn: Callable[[], torch.Tensor],
                     denoiser: Any, run_info: dict[str, Any] | None = None,
                     resume: bool = False, stop_after: int | None = None, job: str = "image",
                     strip_columns: Sequence[str] | None = None) -> dict[str, Any]:
    """Run (or resume) the optimisation of `field`; returns the metrics dict written to metrics.json + "field".

    Each step: estimator.update_step(step, steps); res = step_fn(step) (a GradientEstimate whose loss is the
    loss trick on latents computed FROM field, so res.loss.backward() reaches theta); AdamW step. A step whose
    res.info["finished"] is true (MSD: bandwidth below lambda_min, paper sec. 4.4) ends the run before stepping.
    stop_after: stop (as if interrupted) once that many steps in total are done -- used by the resume tests.
    denoiser: the run's denoiser (its `run_identity` is checkpointed and must match on --resume, as must every
    config field but NON_RESULT_KEYS).
    run_info: extra entries for config.json's "run" provenance (resolved sizes, ...); job: its name there.
    strip_columns: captions of each snapshot's columns in progress.png (3D: the view azimuths).

    The run folder: config.json (the settings, replayable with --config, and the "run" provenance:
    msdfast.provenance), metrics.jsonl (one JSON line per step, appended and flushed as the run goes: tail it),
    metrics.json (the summary at the end), snapshots/, final.png, progress.png, checkpoint.pt. On a terminal a
    progress bar shows the run (cfg.progress); otherwise the `msdfast.run` logger writes a line every ~10% of
    the run and at least once a minute.
    """
    out = Path(cfg.out)
    (out / "snapshots").mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    device = next(iter(field.parameters())).device
    identity = run_identity(denoiser, device)

    start, history, converged = 0, [], False
    if resume and ckpt_path.exists():
        ck = load_checkpoint(ckpt_path, map_location=device)  # checksum verified; tensors, dicts, primitives only
        for p in sorted((out / "snapshots").glob("step_*.png")):   # the final strip reads them all: check now
            _open_png(p)
        _check_same_run(ck, cfg, identity, ckpt_path)
        field.load_state_dict(ck["field"])
        optimizer.load_state_dict(ck["optimizer"])
        estimator.load_state_dict(ck["estimator"])
        _set_rng_states(generator, ck["rng"])
        start, history, converged = int(ck["step"]), list(ck["history"]), bool(ck.get("converged", False))
    from ..estimators.options import resolved_options
    from ..provenance import provenance

    _write_json({**config_to_dict(cfg),
                 RUN_INFO_KEY: provenance(job, device=device, model=resolved_model_path(cfg.model),
                                          estimator_options=resolved_options(cfg.method, cfg.estimator_options()),
                                          **(run_info or {}))}, out / "config.json")
    jsonl = out / "metrics.jsonl"   # the steps so far (a resumed run continues the file; a new run starts it)
    write_atomic(jsonl, "".join(json.dumps(r) + "\n" for r in history).encode())

    def snapshot(step: int) -> Path:
        with torch.no_grad():
            img = render_fn()
        p = out / "snapshots" / f"step_{step:06d}.png"
        save_png(img, p)
        return p

    def checkpoint(step: int) -> None:
        save_checkpoint({"config": asdict(cfg), "field": field.state_dict(), "optimizer": optimizer.state_dict(),
                      "estimator": estimator.state_dict(), "rng": _rng_states(generator), "step": step,
                         "identity": identity,
                      "history": history, "converged": converged}, ckpt_path)

    from tqdm.auto import tqdm

    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    if converged:
        end = start
    interactive = cfg.progress and sys.stdout.isatty()
    bar = tqdm(range(start, end), initial=start, total=cfg.steps, disable=not interactive, desc=cfg.method)
    progress_log = _ProgressLog(f"{job} {cfg.method}", cfg.steps, start) if not interactive else None
    metrics_file = open(jsonl, "a", encoding="utf-8")
    ran = False   # whether this call ran any step (a resumed finished run runs none)
    from ..ops import checks_once

    with checks_once():   # each op's arguments validated on its first step, not on every step
        for step in bar:
            ran = True
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
            metrics_file.write(json.dumps(rec) + "\n")
            metrics_file.flush()
            bar.set_postfix(loss=f"{rec['loss']:.4g}", nfe=rec["nfe"])
            if progress_log is not None:
                progress_log(rec)
            done = step + 1
            if cfg.snapshot_every and (done % cfg.snapshot_every == 0 or done == 1):
                snapshot(done)
            if cfg.ckpt_every and done % cfg.ckpt_every == 0:
                checkpoint(done)
    bar.close()
    metrics_file.close()
    if converged:
        log.info("%s: stopped after %d of %d steps: the bandwidth fell below lambda_min (converged)", cfg.method,
                 len(history), cfg.steps)

    finished = converged or (history[-1]["step"] + 1 if history else start) >= cfg.steps
    if finished:
        with torch.no_grad():
            save_png(render_fn(), out / "final.png")
        progress_strip(sorted((out / "snapshots").glob("step_*.png")), out / "progress.png",
                       column_labels=strip_columns)
        if cfg.ckpt_every and ran:   # resuming a finished run changes nothing: keep its checkpoint as it is
            checkpoint(cfg.steps)
    metrics = {"method": cfg.method, "steps_done": len(history), "finished": finished, "converged": converged,
               "total_nfe": sum(r["nfe"] for r in history),
               "nfe_per_step": (sum(r["nfe"] for r in history) / len(history)) if history else 0,
               "seconds": sum(r["seconds"] for r in history), "history": history}
    _write_json(metrics, out / "metrics.json")
    metrics["field"] = field
    return metrics


# ---------------------------------------------------------------------- CLI
def add_distill_arguments(p: argparse.ArgumentParser, cls: type[DistillConfig]) -> None:
    """The command line of a distillation job: --config FILE, one flag per field of `cls`, --resume and
    --list-options (msdfast.config: defaults < --config < flags < --option; a conflict is an error)."""
    add_job_arguments(p, cls, required=("model", "prompt"))
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--overwrite", action="store_true", help="delete the run already in OUT and start a new one")
    p.add_argument("--list-options", metavar="METHOD", choices=list(METHODS), default=None,
                   help="print METHOD's estimator options (type, default, doc) and exit")


def distill_config_from_args(args: argparse.Namespace, cls: type[DistillConfig]) -> DistillConfig:
    """The validated job config of the parsed command line; every setting and estimator option is checked here,
    before any model loads (UserInputError naming the flag or file otherwise)."""
    from ..estimators.options import check_options

    cfg = config_from_args(args, cls, promoted=PROMOTED_OPTIONS)
    flag_opts = {k: v for k, v in getattr(args, "options", {}).items() if k not in PROMOTED_OPTIONS}
    check_options(cfg.method, flag_opts, "--option")   # name the flag for options typed on the command line
    cfg.validate()
    check_model_arg(cfg.model)
    _check_option_values(cfg)
    return cfg


def _check_option_values(cfg: DistillConfig) -> None:
    """The estimator's value checks before the model loads, on the model's own noise schedule (its
    scheduler/scheduler_config.json; skipped when that is not readable: the loader reports the folder)."""
    from ..estimators.options import check_option_values

    try:
        sched = json.loads((Path(resolved_model_path(cfg.model)) / "scheduler" / "scheduler_config.json").read_text())
    except (OSError, ValueError):
        return
    if isinstance(sched, dict):
        check_option_values(cfg.method, cfg.estimator_options(), sched)


def resolved_model_path(model: str) -> Path | str:
    """The folder a model argument loads from (a built-in name or a cached hub id resolved), for provenance."""
    try:
        from ..denoisers.sd import resolve_model
        return resolve_model(model)
    except Exception:  # noqa: BLE001 -- provenance only: an unresolvable name is recorded as given
        return model


def check_model_arg(model: str, flag: str = "--model") -> None:
    """A model argument msdfast can load (a folder, a built-in name, a hub id), checked before loading."""
    from ..denoisers.sd import BUILTIN_MODELS, is_hub_id
    if not Path(model).is_dir() and not is_hub_id(model) and model not in BUILTIN_MODELS:
        raise UserInputError(f"{flag} {model}: not a folder (msdfast loads Stable Diffusion from a local "
                             "diffusers folder or a hub id in the local Hugging Face cache)")


def run_job(args: argparse.Namespace, cls: type[DistillConfig], distill: Callable[..., dict[str, Any]]) -> int:
    """A distillation command (`msdfast image`, `msdfast 3d`): --list-options METHOD, or resolve the job's config
    from the parsed arguments, run `distill(cfg, resume=, overwrite=)` and print a one-line summary."""
    if args.list_options:
        print(list_options(args.list_options, cls))
        return 0
    cfg = distill_config_from_args(args, cls)
    m = distill(cfg, resume=args.resume, overwrite=args.overwrite)
    print(f"{cfg.method}: {m['steps_done']} steps, {m['total_nfe']} NFE ({m['nfe_per_step']:.1f}/step), "
          f"{m['seconds']:.1f} s -> {Path(cfg.out) / 'final.png'}")
    return 0


def list_options(method: str, cls: type[DistillConfig]) -> str:
    """--list-options METHOD: the estimator's options, with the job's own defaults for the promoted ones."""
    from ..estimators.options import format_options

    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.name in PROMOTED_OPTIONS}
    return format_options(method, defaults=defaults,
                          note="guidance_scale, psr_k, psr_s: also --guidance-scale, --psr-k, --psr-s "
                               "(give each once)")
