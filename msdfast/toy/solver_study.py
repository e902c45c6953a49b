"""Compare MSD's product samplers against the tree oracle: `python -m msdfast.toy.solver_study`.

Tree class A, ideal (exact GMM) denoiser, points near the tree (data + N(0, 0.1^2) noise). For each bandwidth
and solver: the bias of the N-chain mean shift against lambda^2 grad log p_lambda(x) (docs/math.md sec. 2; the
posterior/Tweedie rows against their discrete level lambda_eff), the per-chain spread, NFE per single-sample
estimate and the single-sample efficiency of MSD paper eq. 17, log(|m|^2 / (MSE_1 NFE_1)) with
MSE_1 = per-chain variance + |bias|^2.
"""
from __future__ import annotations

import argparse
import math
import time

import torch

ROWS: tuple[tuple[str, dict], ...] = (
    ("exact", {}), ("tweedie", {}), ("posterior", {"steps": 10}), ("posterior", {"steps": 32}),
    ("stable", {"steps": 10}), ("stable", {"steps": 32}), ("stable", {"steps": 32, "kernel_time": "sigma"}),
    ("stable", {"steps": 32, "kernel_time": "sigma", "centers": "scaled"}), ("naive", {"steps": 32}))


def run(points: int = 16, chains: int = 256, lambdas: tuple[float, ...] = (0.1, 0.3), seed: int = 0) -> list[dict]:
    """One row per (lambda, solver setting); see the module docstring."""
    from ..denoisers.gmm import GMMDenoiser
    from ..estimators import build
    from .datasets import tree_gmm

    gmm = tree_gmm("A")
    den = GMMDenoiser(gmm)
    g = torch.Generator().manual_seed(seed)
    x = (gmm.sample(points, generator=g) + 0.1 * torch.randn(points, 2, generator=g, dtype=torch.float64)).float()
    rows = []
    for lam in lambdas:
        oracle = lam**2 * gmm.score(x.double(), lam)
        for solver, kw in ROWS:
            n = 1 if solver == "tweedie" else chains
            est = build("msd", den, solver=solver, chains=n, bandwidth=lam, **kw)
            t0 = time.perf_counter()
            out = est(x, generator=torch.Generator().manual_seed(seed + 1))
            sec = time.perf_counter() - t0
            le = out.info.get("lambda_eff", lam)
            ref = le**2 * gmm.score(x.double(), le)
            ms = -out.grad.double()
            y = out.info["samples"].double().reshape(n, *x.shape)
            var = ((y - y.mean(0)) ** 2).sum(-1).mean().item() if n > 1 else 0.0
            nfe1 = out.nfe / (points * n)
            mse1 = var + ((ms - oracle) ** 2).sum(-1).mean().item()
            m2 = (oracle.norm(dim=1) ** 2).mean().item()
            eff = math.log(m2 / (mse1 * nfe1)) if nfe1 > 0 and mse1 > 0 else float("nan")
            rows.append({"lambda": lam, "solver": solver, "options": kw, "bias": (ms - ref).norm(dim=1).mean().item(),
                         "oracle_norm": oracle.norm(dim=1).mean().item(), "chain_std": math.sqrt(var),
                         "nfe_per_sample": nfe1, "log_efficiency": eff, "seconds": sec})
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--points", type=int, default=16)
    p.add_argument("--chains", type=int, default=256)
    p.add_argument("--lambdas", type=float, nargs="+", default=[0.1, 0.3])
    a = p.parse_args(argv)
    print("| lambda | solver | options | bias | mean abs(oracle) | chain std | NFE/sample | log eff (eq. 17) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in run(a.points, a.chains, tuple(a.lambdas)):
        opts = ", ".join(f"{k}={v}" for k, v in r["options"].items())
        print(f"| {r['lambda']} | {r['solver']} | {opts} | {r['bias']:.2e} | {r['oracle_norm']:.4f} | "
              f"{r['chain_std']:.3g} | {r['nfe_per_sample']:.2f} | {r['log_efficiency']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
