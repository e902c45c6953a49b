"""`msdfast profile`: what one gradient of each estimator costs (DESIGN.md "Performance principles").

For each of a few gradients it reports the denoiser calls (tag, batch size, seconds) from the Denoiser's call
log, the NFE (the sum of call batch sizes; a CFG pair counts 2 per sample, MATH.md sec. 2), the time spent
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

__all__ = ["GradientProfile", "profile_gradients", "format_table", "add_profile_arguments", "run_profile",
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
    from .toy.datasets import load_dataset

    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(batch, 2, generator=g) * 3.0 - 1.5).to(device)   # the paper's [-1.5, 1.5]^2 domain
    if name.startswith("tree"):
        from .toy.models import tree_denoiser
        den = tree_denoiser().to(device)
        cond = torch.zeros(batch, dtype=torch.long, device=device)          # class A
        uncond = torch.full((batch,), 2, dtype=torch.long, device=device)   # A+B: CFG's unconditional
        return den, x, cond, uncond
    from .denoisers.empirical import EmpiricalDenoiser
    den = EmpiricalDenoiser(load_dataset(name, n_train=10_000, n_heldout=1, seed=seed).train.float()).to(device)
    return den, x, None, None


def _sd_setup(args: argparse.Namespace, device: str) -> tuple[Any, torch.Tensor, Any, Any]:
    from .denoisers.sd import load_stable_diffusion

    dtype = args.dtype or ("float16" if device == "cuda" else "float32")
    den = load_stable_diffusion(args.model, device=device, dtype=dtype, compile=args.compile)
    backend = args.unet_backend or ("onnx" if args.unet_onnx else "torch")
    if backend != "torch":  # the same model through onnxruntime / a TensorRT engine
        from .denoisers.unet_backend import exported_unet
        den = exported_unet(den, backend, onnx_path=args.unet_onnx)
    pe = den.prompt_embeddings(args.prompt, args.negative_prompt)
    g = torch.Generator().manual_seed(args.seed)
    n = den.latent_size
    x = torch.randn(args.batch, den.latent_channels, n, n, generator=g).to(device)
    return den, x, pe.cond.expand(args.batch, -1, -1), pe.uncond.expand(args.batch, -1, -1)


def add_profile_arguments(p: argparse.ArgumentParser) -> None:
    from .estimators import METHODS

    p.add_argument("--method", required=True, choices=list(METHODS))
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="local Stable Diffusion folder")
    src.add_argument("--toy", choices=["tree", "spiral", "pinwheel"], help="a toy data set's ideal denoiser")
    p.add_argument("--n-grads", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1, help="untimed gradients first (JIT, caches, autotune)")
    p.add_argument("--batch", type=int, default=1, help="B: images (SD) or points (toy) per gradient")
    p.add_argument("--guidance-scale", type=float, default=None, help="diffusers w (default 7.5 SD, 1 toy)")
    p.add_argument("--psr-k", type=float, default=None)
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="estimator option (JSON value), e.g. --option chains=4 --option steps=10")
    p.add_argument("--prompt", default="a photograph of an astronaut riding a horse")
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"])
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet (use --warmup >= 1)")
    p.add_argument("--unet-backend", default=None, choices=["torch", "onnx", "tensorrt"],
                   help="run the UNet eagerly (torch, --compile for torch.compile), through onnxruntime, or as a "
                        "cached TensorRT engine (default: torch; onnx when --unet-onnx is given)")
    p.add_argument("--unet-onnx", default=None, metavar="PATH",
                   help="the UNet's ONNX export (exported there first if missing; default: the msdfast cache)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the profile as JSON ('-' = stdout)")


def run_profile(args: argparse.Namespace) -> int:
    from .estimators import build
    from .pipelines.common import parse_option

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.batch < 1:
        raise ValueError(f"--batch: must be >= 1, got {args.batch}")
    if args.model:
        den, x, cond, uncond = _sd_setup(args, device)
        w = 7.5 if args.guidance_scale is None else args.guidance_scale
    else:
        den, x, cond, uncond = _toy_setup(args.toy, args.batch, device, args.seed)
        w = 1.0 if args.guidance_scale is None else args.guidance_scale
    opts: dict[str, Any] = {"guidance_scale": w, **dict(parse_option(o) for o in args.option)}
    if args.psr_k is not None:
        opts["psr_k"] = args.psr_k
    est = build(args.method, den, **opts)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    profiles = profile_gradients(est, x, cond, uncond, n_grads=args.n_grads, generator=gen, warmup=args.warmup)
    print(format_table(args.method, profiles))
    if args.json:
        blob = {"method": args.method, "source": args.model or f"toy:{args.toy}", "device": device,
                "device_name": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                "batch": args.batch, "options": opts, "torch": torch.__version__,
                "gradients": [p.to_dict() for p in profiles]}
        text = json.dumps(blob, indent=2, default=str)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text)
    return 0
