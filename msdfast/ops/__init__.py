"""msdfast.ops: the fused sampling-loop math, one checked Python signature per op, three backends.

Backends (see _dispatch): `reference` (plain PyTorch, msdfast.ops.reference), `compiled` (the msdfast._C
extension: C++/OpenMP on the CPU, CUDA kernels on NVIDIA GPUs) and `triton` (CUDA tensors; CPU tensors
under TRITON_INTERPRET=1 for tests). Every public function validates its arguments and raises errors
naming the offending argument; backends receive contiguous tensors on one device.

Per-sample coefficients are packed into small float32 tables on the tensors' device (built by
`step_coefficients` / `grad_coefficients`) so sampling loops never synchronise with the host; checks that read
tensor values run on CPU tensors or in debug mode only (msdfast.ops.checks).
"""
from __future__ import annotations

import contextlib
import math
import threading
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import torch

from . import _dispatch, checks, reference
from .reference import GRAD_COLUMNS, STEP_COLUMNS

__all__ = ["ddim_step", "distill_grad", "chain_mean_shift", "noise_to_levels", "empirical_denoiser",
           "empirical_score", "gmm_score", "hash_grid_encode", "GridLevels", "step_coefficients",
           "grad_coefficients", "STEP_COLUMNS", "GRAD_COLUMNS", "backend_table", "reload_backend_environment",
           "checks_once"]

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
Coef = torch.Tensor | float | int | Sequence[float]


# --------------------------------------------------------------------------------- validation
class _Like(NamedTuple):
    """The device, shape and dtype of an op's first input, read once for checking the others against."""

    device: torch.device
    shape: torch.Size
    dtype: torch.dtype


def _like(t: torch.Tensor) -> _Like:
    return _Like(t.device, t.shape, t.dtype)


def _check_tensor(name: str, t: torch.Tensor, like: torch.Tensor | _Like | None = None, *,
                  same_shape: bool = True, same_dtype: bool = True) -> None:
    # Ordered so that the common case (same dtype as `like`) costs one identity test: these checks run on
    # every op call, and at 2x4x64x64 a fused kernel takes ~10 us.
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if like is None or t.dtype is not like.dtype:
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name}: expected a floating dtype {FLOAT_DTYPES}, got {t.dtype}")
        if like is None:
            return
    if t.device != like.device:
        raise ValueError(f"{name}: on device {t.device}, expected {like.device} (same as the first input)")
    if same_shape and t.shape != like.shape:
        raise ValueError(f"{name}: shape {tuple(t.shape)} does not match {tuple(like.shape)}")
    if same_dtype and t.dtype is not like.dtype:
        raise TypeError(f"{name}: dtype {t.dtype} does not match {like.dtype}")


def _device_type(t: torch.Tensor) -> str:
    return "cpu" if t.is_cpu else t.device.type   # is_cpu is ~4x cheaper than building t.device


def _check_coef(name: str, coef: torch.Tensor, batch: int, ncol: int, device: torch.device) -> None:
    if not isinstance(coef, torch.Tensor) or coef.ndim != 2 or coef.shape[1] != ncol \
            or coef.shape[0] not in (1, batch):
        shape = tuple(coef.shape) if isinstance(coef, torch.Tensor) else type(coef).__name__
        raise ValueError(f"{name}: expected a [{batch} or 1, {ncol}] coefficient table, got {shape}")
    if coef.device != device:
        raise ValueError(f"{name}: on device {coef.device}, expected {device}")


def _per_sample(name: str, value: Coef, batch: int, device: torch.device,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A python scalar, sequence, 0-d or [B] tensor as a [B] tensor of dtype (float32 by default) on device."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.full((batch,), value, dtype=dtype, device=device)   # a fill on the device: no host copy
    t = torch.as_tensor(value, dtype=dtype, device=device) if not isinstance(value, torch.Tensor) \
        else value.to(device=device, dtype=dtype)
    if t.ndim == 0:
        return t.expand(batch)
    if t.ndim == 1 and t.shape[0] in (1, batch):
        return t.expand(batch)
    raise ValueError(f"{name}: expected a scalar or a [{batch}] tensor, got shape {tuple(t.shape)}")


def _level_table(t: torch.Tensor, batch: int) -> torch.Tensor:
    """A [B or 1, L] table as contiguous float32 [B, L] (no copies when it already is one)."""
    if t.dtype is not torch.float32:
        t = t.float()
    if t.shape[0] != batch:
        t = t.expand(batch, -1)
    return t.contiguous()


def _c(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.contiguous()


def _coef_table(coef: torch.Tensor) -> torch.Tensor:
    """A checked coefficient table as the kernels take it: float32, contiguous (.to() costs ~1 us as a no-op)."""
    return (coef if coef.dtype is torch.float32 else coef.float()).contiguous()


# --------------------------------------------------------------------------------- validation once per loop
_loop = threading.local()   # .checked: the (op, argument pattern) keys validated in the innermost checks_once()


@contextlib.contextmanager
def checks_once() -> Iterator[None]:
    """Validate the latent ops' arguments once per loop instead of on every call.

    Inside the block, the first call of ddim_step / distill_grad / chain_mean_shift / noise_to_levels with a
    given argument pattern (op + which optional tensors are given) runs the full checks (so bad input raises
    the same one-line error at loop entry); later calls with that pattern go straight to the backend (the
    wrapper's cost over the raw op drops from ~4 us to ~1 us at 2x4x64x64 on the CPU, where the fused step takes
    ~6 us: benchmarks/results/op_wrapper_overhead.md). The contract: within the block, a
    call's tensors have the shapes, dtypes and devices of the first call with its pattern -- what a sampling
    loop over one batch does. (The compiled kernels still check their arguments in C++.) Per thread; nests.
    """
    outer = getattr(_loop, "checked", None)
    _loop.checked = set()
    try:
        yield
    finally:
        _loop.checked = outer


def _check_once(key: tuple, check: Callable[..., Any], *args: Any) -> None:
    """check(*args), unless `key` was already checked in the current checks_once() block."""
    checked = getattr(_loop, "checked", None)
    if checked is None:
        check(*args)
    elif key not in checked:
        check(*args)
        checked.add(key)


# --------------------------------------------------------------------------------- coefficient tables
def step_coefficients(batch: int, alpha_t: Coef, sigma_t: Coef, alpha_next: Coef, sigma_next: Coef, *,
                      guidance_scale: Coef = 1.0, psr: Coef = 1.0, eta: Coef = 0.0, decay: Coef = 1.0,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """Pack the per-sample coefficients of `ddim_step` into a [batch, 8] float32 table (STEP_COLUMNS).

    eta is DDIM's stochasticity (0: deterministic DDIM or inversion, 1: DDPM ancestral):
        sigma_eta = eta sqrt((1 - abar') / (1 - abar)) sqrt(1 - abar / abar')   (Song et al. 2021, eq. 16)
        c_eps = sqrt(sigma_next^2 - sigma_eta^2), c_noise = sigma_eta.
    decay is exp(-|dtau| / lambda^2) of MSD's stable solver (ignored unless a centre is given).
    """
    device = torch.device(device)
    cols = [_per_sample(n, v, batch, device) for n, v in (
        ("guidance_scale", guidance_scale), ("psr", psr), ("alpha_t", alpha_t), ("sigma_t", sigma_t),
        ("alpha_next", alpha_next), ("sigma_next", sigma_next), ("eta", eta), ("decay", decay))]
    w, r, a, s, an, sn, et, dec = cols
    if isinstance(alpha_t, (int, float)):
        if not alpha_t > 0:
            raise ValueError("alpha_t: must be positive (the step divides by it)")
    else:
        checks.require(a, lambda v: v <= 0, "alpha_t: must be positive (the step divides by it)")
    abar, abar_n = a * a, an * an
    sig_eta = et * torch.sqrt(((1 - abar_n) / (1 - abar).clamp_min(1e-20)).clamp_min(0)
                              * (1 - abar / abar_n).clamp_min(0))
    c_eps = torch.sqrt((sn * sn - sig_eta * sig_eta).clamp_min(0))
    return torch.stack([w, r, a, s, an, c_eps, sig_eta, dec], dim=1).contiguous()


def grad_coefficients(batch: int, weight: Coef, *, guidance_scale: Coef = 1.0, psr: Coef = 1.0,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """Pack the per-sample coefficients of `distill_grad` into a [batch, 3] float32 table (GRAD_COLUMNS)."""
    device = torch.device(device)
    return torch.stack([_per_sample("guidance_scale", guidance_scale, batch, device),
                        _per_sample("psr", psr, batch, device),
                        _per_sample("weight", weight, batch, device)], dim=1).contiguous()


# --------------------------------------------------------------------------------- ops
def ddim_step(z: torch.Tensor, eps_c: torch.Tensor, coef: torch.Tensor, *, eps_u: torch.Tensor | None = None,
              center: torch.Tensor | None = None, noise: torch.Tensor | None = None, return_x0: bool = False,
              backend: str | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Fused CFG + PSR + DDIM step (+ eta noise) + MSD kernel pull, in one pass over memory.

    See msdfast.ops.reference.ddim_step for the equations. coef is a [B or 1, 8] table from
    `step_coefficients`. Returns z_out, or (z_out, x0_hat) with return_x0.
    """
    _check_once(("ddim_step", eps_u is None, center is None, noise is None), _check_ddim_step, z, eps_c, coef,
                eps_u, center, noise)
    out, x0 = _dispatch.call("ddim_step", _device_type(z), backend, z.contiguous(), eps_c.contiguous(),
                             _c(eps_u), _coef_table(coef), _c(center), _c(noise), bool(return_x0))
    return (out, x0) if return_x0 else out


def _check_ddim_step(z: Any, eps_c: Any, coef: Any, eps_u: Any, center: Any, noise: Any) -> None:
    _check_tensor("z", z)
    zl = _like(z)
    _check_tensor("eps_c", eps_c, zl)
    for name, t in (("eps_u", eps_u), ("center", center), ("noise", noise)):
        if t is not None:
            _check_tensor(name, t, zl)
    if not zl.shape or not zl.shape[0]:
        raise ValueError("z: expected a non-empty batch [B, ...]")
    _check_coef("coef", coef, zl.shape[0], len(STEP_COLUMNS), zl.device)


def distill_grad(eps_c: torch.Tensor, eps_target: torch.Tensor, coef: torch.Tensor, *,
                 eps_u: torch.Tensor | None = None, x: torch.Tensor | None = None, clip: float | None = None,
                 backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """g = weight (psr CFG(eps_u, eps_c) - eps_target), nan_to_num, clip; target = x - g; ||g||.

    Returns (g, target or None, grad_norm) in one pass. coef from `grad_coefficients`.
    """
    _check_once(("distill_grad", eps_u is None, x is None), _check_distill_grad, eps_c, eps_target, coef, eps_u, x)
    if clip is not None and not clip > 0:
        raise ValueError(f"clip: must be positive or None, got {clip}")
    g, target, norm = _dispatch.call("distill_grad", _device_type(eps_c), backend, eps_c.contiguous(),
                                     eps_target.contiguous(), _c(eps_u), _coef_table(coef), _c(x),
                                     None if clip is None else float(clip))
    return g, (target if x is not None else None), norm


def _check_distill_grad(eps_c: Any, eps_target: Any, coef: Any, eps_u: Any, x: Any) -> None:
    _check_tensor("eps_c", eps_c)
    el = _like(eps_c)
    _check_tensor("eps_target", eps_target, el)
    for name, t in (("eps_u", eps_u), ("x", x)):
        if t is not None:
            _check_tensor(name, t, el)
    _check_coef("coef", coef, el.shape[0], len(GRAD_COLUMNS), el.device)


def chain_mean_shift(y: torch.Tensor, x: torch.Tensor, *, backend: str | None = None) -> torch.Tensor:
    """MSD descent gradient g = x - mean_i y_i for N chains laid out chain-major in y [N*B, ...]."""
    _check_once(("chain_mean_shift",), _check_chain_mean_shift, y, x)
    return _dispatch.call("chain_mean_shift", _device_type(x), backend, y.contiguous(), x.contiguous(),
                          y.shape[0] // x.shape[0])


def _check_chain_mean_shift(y: Any, x: Any) -> None:
    _check_tensor("x", x)
    _check_tensor("y", y, x, same_shape=False)
    xs, ys = x.shape, y.shape   # each .shape access builds a torch.Size: read once (small-kernel overhead)
    if not xs or not xs[0]:   # an empty batch would make N = len(y) / 0
        raise ValueError(f"x: empty batch (shape {tuple(xs)}); chain_mean_shift needs B >= 1")
    if not ys or ys[1:] != xs[1:] or not ys[0] or ys[0] % xs[0]:
        raise ValueError(f"y: shape {tuple(ys)} is not [N*B, ...] for x of shape {tuple(xs)}")


def noise_to_levels(x: torch.Tensor, eps: torch.Tensor, alphas: torch.Tensor, sigmas: torch.Tensor, *,
                    backend: str | None = None) -> torch.Tensor:
    """out[l*B + b] = alphas[b, l] x[b] + sigmas[b, l] eps[b]: L noise levels, one shared eps, one batch."""
    _check_once(("noise_to_levels",), _check_noise_to_levels, x, eps, alphas, sigmas)
    B = x.shape[0]
    a, s = _level_table(alphas, B), _level_table(sigmas, B)
    return _dispatch.call("noise_to_levels", _device_type(x), backend, x.contiguous(), eps.contiguous(), a, s)


def _check_noise_to_levels(x: Any, eps: Any, alphas: Any, sigmas: Any) -> None:
    _check_tensor("x", x)
    _check_tensor("eps", eps, x)
    B = x.shape[0]
    for name, t in (("alphas", alphas), ("sigmas", sigmas)):
        if not isinstance(t, torch.Tensor) or t.ndim != 2 or t.shape[0] not in (1, B):
            raise ValueError(f"{name}: expected a [B, L] tensor with B = {B}")
        if t.device != x.device:
            raise ValueError(f"{name}: on device {t.device}, expected {x.device}")
    if alphas.shape[1] != sigmas.shape[1]:
        raise ValueError("sigmas: must have as many levels (columns) as alphas")


def empirical_denoiser(x: torch.Tensor, data: torch.Tensor, s: torch.Tensor | float, *,
                       backend: str | None = None) -> torch.Tensor:
    """Ideal denoiser of an empirical distribution (MSD paper eq. 16), streaming over data.

    x [M, d] queries, data [N, d], s per-query noise level ([M] or scalar, > 0). Returns D [M, d].
    """
    _check_tensor("x", x)
    _check_tensor("data", data, x, same_shape=False, same_dtype=False)
    if x.ndim != 2 or data.ndim != 2 or data.shape[1] != x.shape[1]:
        raise ValueError(f"data: expected [N, {x.shape[-1]}] for x of shape {tuple(x.shape)}")
    if data.shape[0] == 0:
        raise ValueError("data: must hold at least one point")
    if isinstance(s, (int, float)) and not (s > 0 and math.isfinite(s)):
        raise ValueError("s: noise level must be positive and finite")
    sv = _per_sample("s", s, x.shape[0], x.device)
    checks.require(sv, lambda v: ~((v > 0) & torch.isfinite(v)), "s: noise level must be positive and finite")
    return _dispatch.call("empirical_denoiser", x.device.type, backend, x.contiguous(),
                          data.to(x.dtype).contiguous(), sv.contiguous())


def empirical_score(x: torch.Tensor, data: torch.Tensor, s: torch.Tensor | float, *,
                    backend: str | None = None) -> torch.Tensor:
    """Score of the smoothed empirical distribution: (D(x; s) - x) / s^2 (Tweedie)."""
    d = empirical_denoiser(x, data, s, backend=backend)
    sv = _per_sample("s", s, x.shape[0], x.device).to(x.dtype)[:, None]
    return (d - x) / sv**2


def gmm_score(x: torch.Tensor, weights: torch.Tensor, means: torch.Tensor, covs: torch.Tensor,
              s: torch.Tensor | float = 0.0, *, backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Score and log-density of a 2D full-covariance Gaussian mixture at noise level s (per query).

    Streams over components with log-sum-exp. Use float64 for thin components (the tree toy).
    Returns (score [M, 2], logp [M]) in x's dtype.
    """
    _check_tensor("x", x)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"x: expected [M, 2] points, got {tuple(x.shape)}")
    K = weights.shape[0] if isinstance(weights, torch.Tensor) and weights.ndim == 1 else -1
    if K <= 0:
        raise ValueError("weights: expected a non-empty [K] tensor")
    if not isinstance(means, torch.Tensor) or means.shape != (K, 2):
        raise ValueError(f"means: expected shape [{K}, 2]")
    if not isinstance(covs, torch.Tensor) or covs.shape != (K, 2, 2):
        raise ValueError(f"covs: expected shape [{K}, 2, 2]")
    for name, t in (("weights", weights), ("means", means), ("covs", covs)):
        if t.device != x.device:
            raise ValueError(f"{name}: on device {t.device}, expected {x.device}")
    dt = x.dtype
    if isinstance(s, (int, float)) and not (s >= 0 and math.isfinite(s)):
        raise ValueError("s: noise level must be non-negative and finite")
    sv = _per_sample("s", s, x.shape[0], x.device, dt)   # in x's precision: float64 runs keep a float64 s
    checks.require(sv, lambda v: ~((v >= 0) & torch.isfinite(v)), "s: noise level must be non-negative and finite")
    return _dispatch.call("gmm_score", x.device.type, backend, x.contiguous(), weights.to(dt).contiguous(),
                          means.to(dt).contiguous(), covs.to(dt).contiguous(), sv.contiguous())


class GridLevels(NamedTuple):
    """The levels of a grid encoding (msdfast.fields.hashgrid.grid_levels): per level the position scale, the
    resolution, the table size and the first table entry. Built once per encoding."""

    scales: tuple[float, ...]
    resolutions: tuple[int, ...]
    sizes: tuple[int, ...]
    offsets: tuple[int, ...]


_GRID_MAX_DIMS, _GRID_MAX_LEVELS = 4, 32   # what the compiled and Triton kernels take (csrc/common/hash_grid.h)


def hash_grid_encode(x: torch.Tensor, params: torch.Tensor, levels: GridLevels, n_features: int,
                     interpolation: str = "Linear", *, backend: str | None = None) -> torch.Tensor:
    """Multiresolution (hash-)grid encoding x [N, D] in [0, 1]^D -> [N, L * F] (Instant-NGP sec. 3; tcnn's math).

    params: the flat float table of all levels (msdfast.fields.hashgrid.HashGridEncoding.params). Gradients
    flow to params through every backend; the fused kernels (compiled, triton) take float32 x and params with
    D <= 4 and no gradient w.r.t. x -- other calls run the reference, which autograd differentiates in both.
    """
    _check_tensor("x", x)
    if x.ndim != 2 or not 1 <= x.shape[1] <= len(reference.HASH_PRIMES):
        raise ValueError(f"x: expected [N, D] with 1 <= D <= {len(reference.HASH_PRIMES)}, got {tuple(x.shape)}")
    _check_tensor("params", params, x, same_shape=False, same_dtype=False)
    if params.ndim != 1:
        raise ValueError(f"params: expected a flat [P] table, got shape {tuple(params.shape)}")
    if interpolation not in reference.GRID_INTERPOLATIONS:
        raise ValueError(f"interpolation: expected one of {reference.GRID_INTERPOLATIONS}, got {interpolation!r}")
    L = len(levels.scales)
    if not (L >= 1 and len(levels.resolutions) == len(levels.sizes) == len(levels.offsets) == L):
        raise ValueError("levels: expected equally long scales/resolutions/sizes/offsets (one entry per level)")
    if (levels.offsets[-1] + levels.sizes[-1]) * n_features > params.numel():
        raise ValueError(f"params: {params.numel()} values cannot hold {L} levels of {n_features} features")
    interp = reference.GRID_INTERPOLATIONS.index(interpolation)
    fused = (x.dtype is torch.float32 and params.dtype is torch.float32 and not x.requires_grad
             and x.shape[1] <= _GRID_MAX_DIMS and L <= _GRID_MAX_LEVELS)
    name = backend or (None if fused else "reference")
    if _dispatch.choose("hash_grid_encode", _device_type(x), name) == "reference":
        return reference.hash_grid_encode(x, params, *levels, n_features, interp)   # autograd differentiates it
    if not fused:
        raise ValueError(f"backend: {backend!r} runs float32 x and params with D <= {_GRID_MAX_DIMS}, "
                         f"<= {_GRID_MAX_LEVELS} levels and no gradient w.r.t. x; use backend='reference'")
    # the fused ops carry their params backward (registered below): autograd works for direct op callers too
    return _dispatch.call("hash_grid_encode", _device_type(x), backend, x.contiguous(), params.contiguous(),
                          *levels, n_features, interp)


def backend_table() -> dict[str, dict[str, str]]:
    """Which backend each op uses on cpu and on cuda, given what is installed."""
    return _dispatch.table()


# --------------------------------------------------------------------------------- registration
for _op in ("ddim_step", "distill_grad", "chain_mean_shift", "noise_to_levels", "empirical_denoiser", "gmm_score",
            "hash_grid_encode", "hash_grid_encode_backward"):
    _dispatch.register(_op, "reference", getattr(reference, _op), ("cpu", "cuda"))

# Accelerated backends register themselves when they load; neither may make import fail.
from . import _compiled  # noqa: E402,F401
from . import _triton  # noqa: E402,F401


def _register_hash_grid_autograd() -> None:
    """The params gradient of every fused hash_grid_encode op (torch.ops.msdfast and msdfast_triton), registered
    with torch.library.register_autograd: the encoding is linear in params, so d loss / d params is the op's
    scatter backward (hash_grid_encode_backward of the same backend); no gradient w.r.t. x (msdfast.ops routes
    x that requires grad to the reference)."""
    from . import _compiled, _triton

    pairs = []
    if "hash_grid_encode" in _compiled.compiled_ops():
        pairs.append(("msdfast::hash_grid_encode", torch.ops.msdfast.hash_grid_encode_backward.default))
    if "hash_grid_encode" in _triton.OPS:
        pairs.append((_triton.OPS["hash_grid_encode"], _triton.OPS["hash_grid_encode_backward"]))

    def setup_context(ctx, inputs, output):  # noqa: ANN001, ANN202
        x, params, *meta = inputs
        ctx.save_for_backward(x)
        ctx.meta = (params.numel(), *meta)

    for op, backward_op in pairs:
        def backward(ctx, grad_out, backward_op=backward_op):  # noqa: ANN001, ANN202
            (x,) = ctx.saved_tensors
            grad = backward_op(grad_out.float().contiguous(), x, *ctx.meta)
            return (None, grad) + (None,) * len(ctx.meta[1:])
        torch.library.register_autograd(op, backward, setup_context=setup_context)


_register_hash_grid_autograd()


def reload_backend_environment() -> None:
    """Re-read MSDFAST_BACKEND / MSDFAST_BACKEND_<OP> after changing them at run time (read once at import)."""
    _dispatch.reload_environment()
