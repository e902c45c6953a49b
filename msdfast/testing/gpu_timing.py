"""Per-step timings with Stable Diffusion 1.5's shapes, for scripts/gpu_validate.sh (the first GPU run).

    python -m msdfast.testing.gpu_timing unet --json OUT.json [--batches 2 8] [--modes eager compile graphs trt]
    python -m msdfast.testing.gpu_timing msd  --json OUT.json [--chains 4 --steps 10]
    ... --tiny --device cpu   (the dry run: the tiny SD of msdfast.testing.tiny_sd on the CPU, 1 timed iteration)

unet: one UNet call (latents [B, 4, 64, 64], fp16, random text states [B, 77, 768]) per mode: `eager`,
`compile` (torch.compile, inductor), `graphs` (torch.compile mode="reduce-overhead": CUDA graphs) and `trt`
(a strongly typed fp16 TensorRT engine of the same UNet; minutes to build, so only when asked and installed).
msd: one whole MSD gradient (chains x steps UNet calls with CFG) eager vs captured (the UNet compiled with
mode="reduce-overhead", the solver loop's static input buffers as they are). Each entry: median ms over the
timed iterations (after warm-up), iterations, peak memory. Modes that cannot run here are recorded as skipped
with the reason. Random weights: only speed and memory are representative.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], Any], device: torch.device, iters: int, warmup: int) -> float:
    """Median wall time of fn in ms over `iters` calls after `warmup` (synchronised on CUDA)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _host(tiny: bool, device: torch.device) -> Any:
    """A StableDiffusionDenoiser: SD-1.5's UNet and VAE (random fp16) on device, or the tiny SD (dry run)."""
    from ..denoisers.sd import StableDiffusionDenoiser, load_stable_diffusion
    from ..schedule import VPSchedule

    if tiny:
        from .tiny_sd import tiny_sd_path
        return load_stable_diffusion(tiny_sd_path(), device=device, cache_dir=False)
    from .sd15 import sd15_unet, sd15_vae
    return StableDiffusionDenoiser(sd15_unet(device=device), sd15_vae(device=device), torch.nn.Identity(), None,
                                   VPSchedule.stable_diffusion(), model_id="sd15-random", cache_dir=False)


def _text(host: Any, batch: int) -> torch.Tensor:
    dim = int(host.unet.config.cross_attention_dim)
    return torch.randn(batch, 77, dim, device=host.device, dtype=host.dtype)


def unet_timings(host: Any, batches: list[int], modes: list[str], iters: int, warmup: int) -> list[dict[str, Any]]:
    dev, unet = host.device, host.unet
    rows = []
    for b in batches:
        n = host.latent_size
        z = torch.randn(b, host.latent_channels, n, n, device=dev, dtype=host.dtype)
        t = torch.full((b,), 500, device=dev, dtype=torch.long)
        text = _text(host, b)
        for mode in modes:
            row: dict[str, Any] = {"what": "unet", "batch": b, "mode": mode, "dtype": str(host.dtype)}
            try:
                if mode in ("graphs", "trt") and dev.type != "cuda":
                    raise RuntimeError("needs a CUDA GPU")
                if mode == "eager":
                    fn = unet
                elif mode in ("compile", "graphs"):
                    fn = torch.compile(unet, mode="reduce-overhead" if mode == "graphs" else None)
                else:
                    fn = _trt_unet(host, b)
                with torch.no_grad():
                    if dev.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(dev)
                    ms = time_ms(lambda: fn(z, t, encoder_hidden_states=text), dev, iters, warmup)
                row.update(ms=round(ms, 3), iters=iters, peak_mib=_peak_mib(dev), status="ok")
            except Exception as exc:  # noqa: BLE001 -- a mode that cannot run here is reported, not fatal
                row.update(status="skipped", reason=f"{type(exc).__name__}: {exc}"[:300])
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def _trt_unet(host: Any, batch: int) -> Callable[..., Any]:
    """The UNet as a strongly typed fp16 TensorRT engine (msdfast.denoisers.tensorrt), called like the UNet."""
    from ..denoisers.tensorrt import TensorRTDenoiser

    if getattr(host, "tokenizer", None) is None:
        from types import SimpleNamespace
        host.tokenizer = SimpleNamespace(model_max_length=77)
    den = TensorRTDenoiser(host, opt_batch=batch, max_batch=max(batch, 8), fp16=True)
    return lambda z, t, encoder_hidden_states: den._run(z, t, encoder_hidden_states)


def msd_timings(host: Any, chains: int, steps: int, iters: int, warmup: int,
                modes: list[str]) -> list[dict[str, Any]]:
    from ..estimators.msd import MSD

    dev = host.device
    n = host.latent_size
    x = torch.randn(1, host.latent_channels, n, n, device=dev, dtype=torch.float32)
    cond, uncond = _text(host, 1), _text(host, 1)
    rows = []
    eager_unet = host.unet
    for mode in modes:
        row: dict[str, Any] = {"what": "msd", "chains": chains, "steps": steps, "mode": mode}
        try:
            if mode == "captured":
                if dev.type != "cuda":
                    raise RuntimeError("needs a CUDA GPU (CUDA graphs)")
                host.unet = torch.compile(eager_unet, mode="reduce-overhead")
            est = MSD(host, chains=chains, steps=steps, guidance_scale=7.5)
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            ms = time_ms(lambda: est(x, cond, uncond), dev, iters, warmup)
            row.update(ms=round(ms, 3), iters=iters, unet_calls_per_grad=steps, peak_mib=_peak_mib(dev),
                       status="ok")
        except Exception as exc:  # noqa: BLE001
            row.update(status="skipped", reason=f"{type(exc).__name__}: {exc}"[:300])
        finally:
            host.unet = eager_unet
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m msdfast.testing.gpu_timing", description=__doc__.split("\n")[0])
    p.add_argument("what", choices=("unet", "msd"))
    p.add_argument("--json", required=True, help="where to write the rows (a JSON list)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="the tiny SD instead of SD-1.5's shapes (dry run)")
    p.add_argument("--batches", type=int, nargs="+", default=[2, 8])
    p.add_argument("--modes", nargs="+", default=None)
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    a = p.parse_args(argv)
    dev = torch.device(a.device)
    host = _host(a.tiny, dev)
    if a.what == "unet":
        rows = unet_timings(host, a.batches, a.modes or ["eager", "compile", "graphs"], a.iters, a.warmup)
    else:
        rows = msd_timings(host, a.chains, a.steps, a.iters, a.warmup, a.modes or ["eager", "captured"])
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0 if any(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
