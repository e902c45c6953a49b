"""`msdfast info` and `msdfast demo`."""
from __future__ import annotations

import argparse
import time

import torch


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if len(shape) < 2 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected >= 2 positive sizes (batch first), got {text!r}")
    return shape


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shape", type=_shape, default="2,4,64,64", help="latent shape, comma separated")
    p.add_argument("--steps", type=_positive, default=50)


def run_info(args: argparse.Namespace) -> int:
    import msdfast

    msdfast.info()
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """Runs a CFG + PSR DDIM sampling loop of the fused step against the eager reference."""
    from msdfast import ops
    from msdfast.schedule import VPSchedule, psr_factor

    shape = args.shape
    sch = VPSchedule.stable_diffusion()
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(shape, generator=g)
    ec, eu = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    results = {}
    for backend in ("reference", ops._dispatch.choose("ddim_step", "cpu")):
        z = z0.clone()
        t0 = time.perf_counter()
        for t, tn in sch.sampling_pairs(args.steps):
            coef = ops.step_coefficients(shape[0], sch.alpha(t), sch.sigma(t), sch.alpha(tn), sch.sigma(tn),
                                         guidance_scale=7.5, psr=psr_factor(sch.snr(t), 0.95))
            z = ops.ddim_step(z, 0.1 * ec + 0.01 * z, coef, eps_u=0.1 * eu, backend=backend)
        results[backend] = (z, time.perf_counter() - t0)
    ref = results["reference"][0]
    for b, (z, sec) in results.items():
        err = (z - ref).abs().max().item()
        print(f"{b:>10}: {args.steps} fused steps on {shape} in {sec * 1e3:.1f} ms  (max |diff| vs reference {err:.2e})")
    return 0
