"""`msdfast profile`: what one gradient of each estimator costs.

For each of a few gradients it reports the denoiser calls (tag, batch size, seconds) from the Denoiser's call
log, the NFE (the sum of call batch sizes; a CFG pair counts 2 per sample, docs/math.md sec. 2), the time spent
inside the denoiser vs everything else in the estimator, and the peak memory: torch.cuda.max_memory_allocated
on CUDA (reset per gradient), the process's RSS high-water mark (getrusage ru_maxrss) on the CPU.

Works with Stable Diffusion (`--model PATH`, latents of the model's latent size, text condition from
`--prompt`) and with the toy denoisers (`--toy tree|spiral|pinwheel`: the tree's exact GMM denoiser,
class A vs the A+B model as CFG's unconditional; the empirical ideal denoiser for the sample-defined sets).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import add_job_arguments, check_seed, check_utf8, config_from_args, config_to_dict, option
from .errors import UserInputError
from .estimators import METHODS
from .provenance import provenance

__all__ = ["ProfileConfig", "GradientProfile", "profile_gradients", "format_table", "add_profile_arguments", "run_profile",
           "peak_memory_bytes"]


@dataclass
class GradientProfile:
    index: int
    nfe: int                       # as reported by the estimator
    logged_nfe: int                # sum of the call log's batch sizes (must equal nfe)
    calls: list[dict[str, Any]] = field(default_factory=list)   # [{"tag", "batch", "seconds"}]
    denoiser_seconds: float = 0.0
    total_seconds: float = 0.0
    peak_memory_bytes: int = 0
    memory_kind: str = "rss_high_water"

    @property
    def other_seconds(self) -> float:
        return max(self.total_seconds - self.denoiser_seconds, 0.0)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["other_seconds"] = self.other_seconds
        d["n_calls"] = len(self.calls)
        return d


def peak_memory_bytes(device: torch.device) -> tuple[int, str]:
    """(bytes, kind): CUDA max allocated since the last reset, else the process RSS high-water mark."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated"
    import resource
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss * (1 if sys.platform == "darwin" else 1024)), "rss_high_water"


def profile_gradients(estimator: Any, x: torch.Tensor, cond: Any = None, uncond: Any = None, *,
                      n_grads: int = 3, generator: torch.Generator | None = None,
                      warmup: int = 0) -> list[GradientProfile]:
    """Run `n_grads` gradients (after `warmup` untimed ones) and profile each from the denoiser's call log."""
    if n_grads < 1:
        raise ValueError(f"n_grads: must be >= 1, got {n_grads}")
    den = estimator.denoiser
    stats = den.stats
    cuda = x.device.type == "cuda"
    old_record, old_sync = stats.record_calls, stats.synchronize
    stats.record_calls, stats.synchronize = True, cuda
    out = []
    try:
        for _ in range(warmup):
            estimator(x, cond, uncond, generator=generator)
        for i in range(n_grads):
            stats.reset()
            if cuda:
                torch.cuda.synchronize(x.device)
                torch.cuda.reset_peak_memory_stats(x.device)
            t0 = time.perf_counter()
            res = estimator(x, cond, uncond, generator=generator)
            if cuda:
                torch.cuda.synchronize(x.device)
            total = time.perf_counter() - t0
            mem, kind = peak_memory_bytes(x.device)
            calls = [{"tag": c.tag, "batch": c.batch, "seconds": c.seconds} for c in stats.calls]
            out.append(GradientProfile(i, int(res.nfe), sum(c["batch"] for c in calls), calls, stats.seconds,
                                       total, mem, kind))
    finally:
        stats.record_calls, stats.synchronize = old_record, old_sync
    return out


def _batch_summary(calls: list[dict[str, Any]]) -> str:
    """Run-length summary of the call log: '10x[1] 10x[8]' = ten calls of batch 1, then ten of batch 8."""
    parts: list[list[Any]] = []
    for c in calls:
        key = (c["tag"], c["batch"])
        if parts and parts[-1][0] == key:
            parts[-1][1] += 1
        else:
            parts.append([key, 1])
    return " ".join(f"{n}x{tag + ':' if tag else ''}[{b}]" for (tag, b), n in parts) or "-"


def format_table(method: str, profiles: list[GradientProfile]) -> str:
    head = f"{'grad':>4} {'NFE':>6} {'calls':>5} {'denoiser s':>10} {'other s':>9} {'total s':>9} {'peak MiB':>9}  " \
           "call log (count x [batch])"
    lines = [f"method: {method}", head, "-" * len(head)]
    for p in profiles:
        lines.append(f"{p.index:>4} {p.nfe:>6} {len(p.calls):>5} {p.denoiser_seconds:>10.4f} "
                     f"{p.other_seconds:>9.4f} {p.total_seconds:>9.4f} {p.peak_memory_bytes / 2**20:>9.1f}  "
                     f"{_batch_summary(p.calls)}")
    kind = profiles[0].memory_kind if profiles else ""
    lines.append(f"(peak memory: {kind})")
    return "\n".join(lines)


# ---------------------------------------------------------------------- setups
def _toy_setup(name: str, batch: int, device: str, seed: int) -> tuple[Any, torch.Tensor, Any, Any]:
    from .toy.models import ideal_denoiser

    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(batch, 2, generator=g) * 3.0 - 1.5).to(device)   # the paper's [-1.5, 1.5]^2 domain
    den = ideal_denoiser(name, seed=seed).to(device)   # tree: the exact GMM; spiral/pinwheel: eq. 16 over 1e4 points
    if name.startswith("tree"):
        cond = torch.zeros(batch, dtype=torch.long, device=device)          # class A
        uncond = torch.full((batch,), 2, dtype=torch.long, device=device)   # A+B: CFG's unconditional
        return den, x, cond, uncond
    return den, x, None, None


@dataclass
class ProfileConfig:
    """The settings of `msdfast profile` (flags, --config files and the --json record come from it)."""

    method: str = option(choices=METHODS, help="estimator to profile")
    model: str | None = option(None, help="local Stable Diffusion folder (this or --toy)")
    toy: str | None = option(None, choices=("tree", "spiral", "pinwheel"),
                             help="a toy data set's ideal denoiser (this or --model)")
    n_grads: int = option(3, help="profiled gradients")
    warmup: int = option(1, help="untimed gradients first (JIT, caches, autotune)")
    batch: int = option(1, help="B: images (SD) or points (toy) per gradient")
    guidance_scale: float | None = option(None, help="CFG weight, diffusers form w (default: 7.5 SD, 1 toy)")
    psr_k: float | None = option(None, help="PSR sharpness k (thesis eq. 1.6); 1 = off")
    psr_s: float | None = option(None, help="PSR scale s (thesis eq. 1.6)")
    options: dict[str, Any] = option(default_factory=dict, flag="--option", metavar="KEY=VALUE",
                                     help="estimator option (JSON value, repeatable), e.g. --option chains=4")
    prompt: str = option("a photograph of an astronaut riding a horse", help="text prompt (SD)")
    negative_prompt: str = option("", help="negative prompt (SD)")
    seed: int = option(0, help="seed of the inputs and the estimator's random stream")
    device: str | None = option(None, help="torch device (default: cuda if available, else cpu)")
    dtype: str | None = option(None, choices=("float32", "float16", "bfloat16"),
                               help="denoiser dtype (default: float16 on CUDA, float32 on the CPU)")
    compile: bool = option(False, help="torch.compile the UNet (use --warmup >= 1)")
    unet_backend: str | None = option(None, choices=("torch", "onnx", "tensorrt"),
                                      help="run the UNet eagerly, through onnxruntime, or as a cached TensorRT "
                                           "engine (default: torch; onnx when --unet-onnx is given)")
    unet_onnx: str | None = option(None, metavar="PATH",
                                   help="the UNet's ONNX export (exported there first if missing; default: the "
                                        "msdfast cache)")
    json: str | None = option(None, metavar="PATH", help="write the profile as JSON ('-' = stdout)")

    def validate(self) -> None:
        """Every setting and estimator option checked before any model loads."""
        from .estimators.options import check_options

        if (self.model is None) == (self.toy is None):
            raise UserInputError("--model/--toy: give exactly one")
        if self.model is not None:
            from .pipelines.common import check_model_arg
            check_model_arg(self.model)
        check_utf8(self.prompt, "--prompt")
        check_utf8(self.negative_prompt, "--negative-prompt")
        for k in ("n_grads", "batch"):
            if getattr(self, k) < 1:
                raise UserInputError(f"--{k.replace('_', '-')}: must be >= 1, got {getattr(self, k)}")
        if self.warmup < 0:
            raise UserInputError(f"--warmup: must be >= 0, got {self.warmup}")
        check_seed(self.seed, "--seed")
        self.options = check_options(self.method, self.options, "--option")

    def estimator_options(self) -> dict[str, Any]:
        w = self.guidance_scale if self.guidance_scale is not None else 7.5 if self.model else 1.0
        opts: dict[str, Any] = {"guidance_scale": w, **self.options}
        for k in ("psr_k", "psr_s"):
            if getattr(self, k) is not None:
                opts[k] = getattr(self, k)
        return opts


def _sd_setup(cfg: ProfileConfig, device: str) -> tuple[Any, torch.Tensor, Any, Any]:
    from .denoisers.sd import load_stable_diffusion

    dtype = cfg.dtype or ("float16" if device == "cuda" else "float32")
    den = load_stable_diffusion(cfg.model, device=device, dtype=dtype, compile=cfg.compile)
    backend = cfg.unet_backend or ("onnx" if cfg.unet_onnx else "torch")
    if backend != "torch":  # the same model through onnxruntime / a TensorRT engine
        from .denoisers.unet_backend import exported_unet
        den = exported_unet(den, backend, onnx_path=cfg.unet_onnx)
    pe = den.prompt_embeddings(cfg.prompt, cfg.negative_prompt)
    g = torch.Generator().manual_seed(cfg.seed)
    n = den.latent_size
    x = torch.randn(cfg.batch, den.latent_channels, n, n, generator=g).to(device)
    return den, x, pe.cond.expand(cfg.batch, -1, -1), pe.uncond.expand(cfg.batch, -1, -1)


def add_profile_arguments(p: argparse.ArgumentParser) -> None:
    add_job_arguments(p, ProfileConfig, required=("method",))


def run_profile(args: argparse.Namespace) -> int:
    from .estimators import build
    from .pipelines.common import resolved_model_path

    cfg = config_from_args(args, ProfileConfig, promoted=("guidance_scale", "psr_k", "psr_s"))
    cfg.validate()
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.model:
        den, x, cond, uncond = _sd_setup(cfg, device)
    else:
        den, x, cond, uncond = _toy_setup(cfg.toy, cfg.batch, device, cfg.seed)
    opts = cfg.estimator_options()
    est = build(cfg.method, den, **opts)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    profiles = profile_gradients(est, x, cond, uncond, n_grads=cfg.n_grads, generator=gen, warmup=cfg.warmup)
    print(format_table(cfg.method, profiles))
    if cfg.json:
        blob = {"method": cfg.method, "source": cfg.model or f"toy:{cfg.toy}", "device": device,
                "device_name": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                "batch": cfg.batch, "options": opts, "config": config_to_dict(cfg),
                "run": provenance("profile", device=device,
                                  model=resolved_model_path(cfg.model) if cfg.model else None),
                "gradients": [p.to_dict() for p in profiles]}
        text = json.dumps(blob, indent=2, default=str)
        if cfg.json == "-":
            print(text)
        else:
            with open(cfg.json, "w") as f:
                f.write(text)
    return 0
