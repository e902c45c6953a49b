"""The benchmarked ops: for each, inputs, the plain-PyTorch reference (timed eagerly and compiled by inductor),
the fused kernel through the public API and through torch.ops directly, and the memory streams one call moves.

Memory-bound ops also name the float32 arrays one call reads (`reads(*args)`) and how many arrays of the same
size it writes (`writes`), each element read or written once (checked against csrc/cpu: ddim_step reads z, eps_c,
eps_u, center and writes z_out; distill_grad reads eps_c, eps_target, eps_u, x and writes g, target;
chain_mean_shift reads the N chains of y and x and writes g; noise_to_levels reads x, eps and writes L levels).
bytes = 4 x (elements read + elements written): the traffic of an ideal one-pass kernel. The row's bound kernel
(msdfast.bench.run_case, "mix") reads the very same arrays and writes as many.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from .. import ops
from ..ops import reference
from ..schedule import VPSchedule, psr_factor

__all__ = ["Case", "build_cases", "OPS"]

OPS = ("ddim_step", "distill_grad", "chain_mean_shift", "noise_to_levels", "gmm_score", "ideal_denoiser",
       "hash_grid")
LATENT_SHAPES = ((2, 4, 64, 64), (16, 4, 128, 128))
N_CHAINS, N_LEVELS = 4, 2


@dataclass
class Case:
    """One op at one size. make(seed) -> args; reference/kernel/raw(*args) -> output; post(output) finishes a
    call (a backward for fwd+bwd cases); check(kernel_out, reference_out) raises if they differ."""

    op: str
    label: str
    make: Callable[[int], tuple]
    reference: Callable[..., Any]
    kernel: Callable[..., Any]
    raw: Callable[..., Any] | None = None
    reads: Callable[..., list[torch.Tensor]] | None = None   # args -> the float32 arrays one call reads
    writes: int = 0                                          # arrays of the reads' size one call writes
    post: Callable[[Any], Any] | None = None
    check: Callable[[Any, Any], None] | None = None
    tol: float = 1e-5

    def traffic(self, args: tuple) -> tuple[list[torch.Tensor], int] | None:
        """(arrays read, bytes moved) of one call on args, None for ops that are not memory-bound. The arrays are
        equally long (n elements); bytes = 4 n (arrays read + arrays written)."""
        if self.reads is None:
            return None
        arrays = self.reads(*args)
        return arrays, 4 * arrays[0].numel() * (len(arrays) + self.writes)

    def call(self, fn: Callable[..., Any], args: tuple) -> Any:
        out = fn(*args)
        return self.post(out) if self.post is not None else out


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def _latent_cases(shape: tuple[int, ...]) -> list[Case]:
    sch = VPSchedule.stable_diffusion()
    B = shape[0]
    lbl = "x".join(map(str, shape))
    t = torch.linspace(981, 21, B).round().long()
    step_coef = ops.step_coefficients(B, sch.alpha(t), sch.sigma(t), sch.alpha(t - 20), sch.sigma(t - 20),
                                      guidance_scale=7.5, psr=psr_factor(sch.snr(t), 0.9), decay=0.97)

    def randn(seed: int, k: int, lead: int = 1) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return [torch.randn((lead * shape[0],) + shape[1:], generator=g) for _ in range(k)]

    def ddim(seed: int) -> tuple:
        z, ec, eu, c = randn(seed, 4)
        return z, ec, eu, step_coef, c

    def dgrad(seed: int) -> tuple:
        ec, et, eu, x = randn(seed, 4)
        coef = ops.grad_coefficients(B, torch.rand(B, generator=torch.Generator().manual_seed(seed)),
                                     guidance_scale=7.5, psr=0.95)
        return ec, et, eu, coef, x

    def cms(seed: int) -> tuple:
        (x,) = randn(seed, 1)
        (y,) = randn(seed + 10_000, 1, N_CHAINS)
        return y, x

    def ntl(seed: int) -> tuple:
        x, e = randn(seed, 2)
        g = torch.Generator().manual_seed(seed)
        return x, e, torch.rand(B, N_LEVELS, generator=g), torch.rand(B, N_LEVELS, generator=g)

    return [
        Case("ddim_step", lbl, ddim,
             lambda z, ec, eu, k, c: reference.ddim_step(z, ec, eu, k, c, None, False)[0],
             lambda z, ec, eu, k, c: ops.ddim_step(z, ec, k, eps_u=eu, center=c),
             lambda z, ec, eu, k, c: torch.ops.msdfast.ddim_step.default(z, ec, eu, k, c, None, False)[0],
             reads=lambda z, ec, eu, k, c: [z, ec, eu, c], writes=1),
        Case("distill_grad", lbl, dgrad,
             lambda ec, et, eu, k, x: reference.distill_grad(ec, et, eu, k, x, 1.0)[:2],
             lambda ec, et, eu, k, x: ops.distill_grad(ec, et, k, eps_u=eu, x=x, clip=1.0)[:2],
             lambda ec, et, eu, k, x: torch.ops.msdfast.distill_grad.default(ec, et, eu, k, x, 1.0)[:2],
             reads=lambda ec, et, eu, k, x: [ec, et, eu, x], writes=2),
        Case("chain_mean_shift", lbl, cms,
             lambda y, x: reference.chain_mean_shift(y, x, N_CHAINS),
             lambda y, x: ops.chain_mean_shift(y, x),
             lambda y, x: torch.ops.msdfast.chain_mean_shift.default(y, x, N_CHAINS),
             reads=lambda y, x: [*y.view(N_CHAINS, -1).unbind(0), x.view(-1)], writes=1),
        Case("noise_to_levels", lbl, ntl,
             lambda x, e, a, s: reference.noise_to_levels(x, e, a, s),
             lambda x, e, a, s: ops.noise_to_levels(x, e, a, s),
             lambda x, e, a, s: torch.ops.msdfast.noise_to_levels.default(x, e, a, s),
             reads=lambda x, e, a, s: [x, e], writes=N_LEVELS),
    ]


def _gmm_case(M: int, K: int, dtype: torch.dtype) -> Case:
    def make(seed: int) -> tuple:
        g = torch.Generator().manual_seed(seed)
        A = torch.randn(K, 2, 2, generator=g, dtype=dtype) * 0.1
        return (torch.randn(M, 2, generator=g, dtype=dtype), torch.rand(K, generator=g, dtype=dtype),
                torch.randn(K, 2, generator=g, dtype=dtype), A @ A.transpose(1, 2) + 1e-4 * torch.eye(2, dtype=dtype),
                torch.rand(M, generator=g, dtype=dtype) * 0.5)

    return Case("gmm_score", f"M{M}-K{K}-{str(dtype)[6:]}", make, reference.gmm_score, ops.gmm_score,
                torch.ops.msdfast.gmm_score.default, tol=1e-4,
                check=lambda a, b: torch.testing.assert_close(a[1], b[1], rtol=1e-4, atol=1e-4))


def _naive_ideal(x: torch.Tensor, data: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """The textbook ideal denoiser (eq. 16): all M x N logits at once (cdist + softmax + matmul)."""
    return torch.softmax(-torch.cdist(x, data).square() / (2 * s[:, None] ** 2), dim=1) @ data


def _ideal_case(M: int, N: int) -> Case:
    def make(seed: int) -> tuple:
        g = torch.Generator().manual_seed(seed)
        return torch.randn(M, 2, generator=g), torch.randn(N, 2, generator=g), torch.full((M,), 0.1)

    return Case("ideal_denoiser", f"{M:.0e}x{N:.0e}".replace("+0", ""), make, _naive_ideal, ops.empirical_denoiser,
                torch.ops.msdfast.empirical_denoiser.default, tol=1e-4)


def _hash_case() -> Case:
    from ..fields.hashgrid import HashGridEncoding
    from ..fields.nerf import default_nerf_grid_config

    enc = HashGridEncoding(3, default_nerf_grid_config(), seed=0)
    lv, F = enc.grid, enc.n_features_per_level
    n_points = 1 << 16

    def make(seed: int) -> tuple:
        g = torch.Generator().manual_seed(seed)
        params = torch.nn.Parameter(enc.params.detach().clone())
        return (torch.rand(n_points, 3, generator=g), params,
                torch.randn(n_points, enc.n_output_dims, generator=g))

    def fwd_ref(x: torch.Tensor, p: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (reference.hash_grid_encode(x, p, list(lv.scales), list(lv.resolutions), list(lv.sizes),
                                           list(lv.offsets), F, 0) * w).sum(), p

    def fwd_kernel(x: torch.Tensor, p: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (ops.hash_grid_encode(x, p, lv, F) * w).sum(), p

    def backward(out: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        loss, p = out
        p.grad = None
        loss.backward()
        return p.grad

    return Case("hash_grid", "3d-nerf-N65536-fwd+bwd", make, fwd_ref, fwd_kernel, None,
                post=backward, tol=1e-4)


def build_cases(op_names: tuple[str, ...] | list[str] = OPS, quick: bool = False) -> list[Case]:
    """The benchmark cases of the named ops (quick: the small sizes only)."""
    out: list[Case] = []
    for shape in (LATENT_SHAPES[:1] if quick else LATENT_SHAPES):
        out += [c for c in _latent_cases(shape) if c.op in op_names]
    if "gmm_score" in op_names:
        out += [_gmm_case(10_000, 64, torch.float32), _gmm_case(10_000, 64, torch.float64)]
    if "ideal_denoiser" in op_names:
        out.append(_ideal_case(1_000, 10_000))
    if "hash_grid" in op_names and not quick:
        out.append(_hash_case())
    return out
