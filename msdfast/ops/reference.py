"""Plain-PyTorch reference implementations: the definition of correct for every backend.

Each function takes already-validated arguments (see msdfast.ops for the public, checked API),
computes in float32 (float64 where the input is float64) and returns outputs in the input dtype.
Per-sample coefficients arrive packed as a float32 table `coef` of shape [B or 1, C]; the column
layouts are fixed by STEP_COLUMNS / GRAD_COLUMNS so every backend reads the same table.
"""
from __future__ import annotations

import torch

# Columns of the per-sample coefficient table of the fused sampling step (ddim_step).
STEP_COLUMNS = ("guidance", "psr", "alpha_t", "sigma_t", "alpha_next", "c_eps", "c_noise", "decay")
# Columns of the per-sample coefficient table of the distillation-gradient combination (distill_grad).
GRAD_COLUMNS = ("guidance", "psr", "weight")


def _acc_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _col(coef: torch.Tensor, j: int, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Column j of a [B or 1, C] table, shaped to broadcast over like's trailing dims."""
    return coef[:, j].to(dtype).reshape(coef.shape[0], *([1] * (like.ndim - 1)))


def guided_eps(eps_c: torch.Tensor, eps_u: torch.Tensor | None, guidance: torch.Tensor,
               psr: torch.Tensor) -> torch.Tensor:
    """eps_g = r (eps_u + w (eps_c - eps_u)) (CFG in diffusers form, then PSR; docs/math.md sec. 1)."""
    eps = eps_c if eps_u is None else eps_u + guidance * (eps_c - eps_u)
    return psr * eps


def ddim_step(z: torch.Tensor, eps_c: torch.Tensor, eps_u: torch.Tensor | None, coef: torch.Tensor,
              center: torch.Tensor | None, noise: torch.Tensor | None,
              return_x0: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One fused sampling-loop step (docs/math.md sec. 1-2; MSD paper eq. 14-15 for the kernel pull).

        eps_g  = r (eps_u + w (eps_c - eps_u))                      CFG + PSR (thesis eq. 1.6)
        x0_hat = (z - sigma_t eps_g) / alpha_t                       Tweedie
        z'     = alpha_next x0_hat + c_eps eps_g + c_noise noise     DDIM (eta) / DDPM / inversion
        z_out  = c + (z' - c) decay                                  exact kernel-ODE solution, if centre c

    Deterministic DDIM has c_eps = sigma_next, c_noise = 0; the same step with t_next > t is DDIM
    inversion. Returns (z_out, x0_hat) with x0_hat empty unless return_x0.
    """
    acc = _acc_dtype(z)
    col = lambda j: _col(coef, j, z, acc)  # noqa: E731
    eps = guided_eps(eps_c.to(acc), None if eps_u is None else eps_u.to(acc), col(0), col(1))
    x0 = (z.to(acc) - col(3) * eps) / col(2)
    zn = col(4) * x0 + col(5) * eps
    if noise is not None:
        zn = zn + col(6) * noise.to(acc)
    if center is not None:
        c = center.to(acc)
        zn = c + (zn - c) * col(7)
    x0_out = x0.to(z.dtype) if return_x0 else z.new_empty(0)
    return zn.to(z.dtype), x0_out


def distill_grad(eps_c: torch.Tensor, eps_target: torch.Tensor, eps_u: torch.Tensor | None,
                 coef: torch.Tensor, x: torch.Tensor | None,
                 clip: float | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Score-distillation gradient combination (SDS/ASD/VSD/DSD/SDI; docs/math.md sec. 2).

        g = nan_to_num( weight (r (eps_u + w (eps_c - eps_u)) - eps_target) ), clamped to [-clip, clip]
        target = x - g   (the loss-trick target; empty when x is None)
        norm = ||g||_2 over the whole batch (threestudio's "grad_norm"), accumulated in float64, a float32 scalar.
    nan_to_num maps NaN to 0 and +-inf to the dtype's largest finite values (torch.nan_to_num).
    """
    acc = _acc_dtype(eps_c)
    col = lambda j: _col(coef, j, eps_c, acc)  # noqa: E731
    eps = guided_eps(eps_c.to(acc), None if eps_u is None else eps_u.to(acc), col(0), col(1))
    g = col(2) * (eps - eps_target.to(acc))
    g = torch.nan_to_num(g.to(eps_c.dtype)).to(acc)
    if clip is not None:
        g = g.clamp(-clip, clip)
    norm = torch.linalg.vector_norm(g, dtype=torch.float64).to(torch.float32)   # accumulated in float64
    target = (x.to(acc) - g).to(x.dtype) if x is not None else eps_c.new_empty(0)
    return g.to(eps_c.dtype), target, norm


def chain_mean_shift(y: torch.Tensor, x: torch.Tensor, n_chains: int) -> torch.Tensor:
    """MSD's descent gradient g = x - mean_i y_i (MSD paper Algorithm 2, sign per docs/math.md sec. 2).

    y holds N product samples per element of x laid out chain-major: y.view(N, B, ...)[i] is chain i.
    """
    acc = _acc_dtype(x)
    mean = y.to(acc).reshape(n_chains, *x.shape).mean(dim=0)
    return (x.to(acc) - mean).to(x.dtype)


def noise_to_levels(x: torch.Tensor, eps: torch.Tensor, alphas: torch.Tensor,
                    sigmas: torch.Tensor) -> torch.Tensor:
    """Noise x to L levels with one shared eps: out[l*B + b] = alphas[b, l] x[b] + sigmas[b, l] eps[b].

    L = 1 is SDS's forward noising; L = 2 is DSD's interpolation x_hat(t), x_hat(t + delta)
    (DSD paper eq. 9-10) and ASD's shared-noise pair, laid out level-major so the result is one
    denoiser batch.
    """
    acc = _acc_dtype(x)
    B, L = alphas.shape
    shape = (L, B) + (1,) * (x.ndim - 1)
    a = alphas.t().to(acc).reshape(shape)
    s = sigmas.t().to(acc).reshape(shape)
    out = a * x.to(acc).unsqueeze(0) + s * eps.to(acc).unsqueeze(0)
    return out.reshape(L * B, *x.shape[1:]).to(x.dtype)


def empirical_denoiser(x: torch.Tensor, data: torch.Tensor, s: torch.Tensor,
                       chunk: int = 4096) -> torch.Tensor:
    """Ideal denoiser of an empirical distribution (MSD paper eq. 16):

        D(x; s) = sum_i u_i N(x; u_i, s^2 I) / sum_i N(x; u_i, s^2 I)

    a softmax over data of logits -|x - u_i|^2 / (2 s^2). Computed over query chunks so peak memory is
    chunk x N, in float32 (float64 if x is), as logits -(|x - u_i|^2 - min_j |x - u_j|^2) c with
    c = min(1 / 2s^2, largest finite value): the softmax shifted by the nearest distance. That defines the
    small-s limit: once 1 / 2s^2 overflows, D is the nearest data point (the mean of equally near ones), never NaN.
    s is per query, shape [M].
    """
    acc = _acc_dtype(x)
    u = data.to(acc)
    out = torch.empty(x.shape, dtype=acc, device=x.device)
    cmax = torch.finfo(acc).max
    for i in range(0, x.shape[0], chunk):
        q = x[i:i + chunk].to(acc)
        d2 = torch.cdist(q, u).square() if acc == torch.float64 else (
            (q * q).sum(1, keepdim=True) - 2 * q @ u.t() + (u * u).sum(1)[None, :]).clamp_min(0)
        c = (0.5 / s[i:i + chunk].to(acc) ** 2).clamp_max(cmax)
        logits = -(d2 - d2.amin(dim=1, keepdim=True)) * c[:, None]
        out[i:i + chunk] = torch.softmax(logits, dim=1) @ u
    return out.to(x.dtype)


def gmm_score(x: torch.Tensor, weights: torch.Tensor, means: torch.Tensor, covs: torch.Tensor,
              s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Score and log-density of a 2D Gaussian mixture smoothed to noise level s (docs/math.md sec. 3):

        p_s(x) = sum_k phi_k N(x; mu_k, S_k + s^2 I),  score = grad_x log p_s(x)
               = sum_k r_k(x) (S_k + s^2 I)^-1 (mu_k - x),  r_k = softmax_k(log phi_k + log N_k)

    in float32, float64 for float64 x (use float64 for the tree: its components are so thin that float32
    densities underflow); outputs in x's dtype. weights are normalised here; s is per query, shape [M], in x's
    dtype (msdfast.ops.gmm_score keeps it there: a float32 s moves the tree's logp by 1e-4).
    """
    dt = _acc_dtype(x)
    w = weights.to(dt)
    logw = torch.log(w / w.sum())
    C = covs.to(dt)[None] + (s.to(dt) ** 2)[:, None, None, None] * torch.eye(2, dtype=dt, device=x.device)
    a, b, d = C[..., 0, 0], C[..., 0, 1], C[..., 1, 1]          # [M, K]
    det = a * d - b * b
    diff = means.to(dt)[None] - x.to(dt)[:, None]               # mu_k - x, [M, K, 2]
    # C^-1 (mu - x) for the symmetric 2x2 C.
    sol0 = (d * diff[..., 0] - b * diff[..., 1]) / det
    sol1 = (a * diff[..., 1] - b * diff[..., 0]) / det
    maha = diff[..., 0] * sol0 + diff[..., 1] * sol1
    logn = -0.5 * maha - 0.5 * torch.log(det) - torch.log(torch.tensor(2 * torch.pi, dtype=dt))
    logits = logw[None] + logn
    logp = torch.logsumexp(logits, dim=1)
    r = torch.softmax(logits, dim=1)
    score = torch.stack([(r * sol0).sum(1), (r * sol1).sum(1)], dim=1)
    return score.to(x.dtype), logp.to(x.dtype)


# Hash-grid encoding (Instant-NGP, Mueller et al. 2022 sec. 3; tiny-cuda-nn's grid math, encodings/grid.h).
HASH_PRIMES = (1, 2654435761, 805459861, 3674653429, 2097192037, 1434869437, 2165219737)
GRID_INTERPOLATIONS = ("Linear", "Nearest", "Smoothstep")   # the `interp` argument is an index into this


def _grid_corners(x: torch.Tensor, scale: float, resolution: int, size: int, interp: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Table indices [N, C] and interpolation weights [N, C] of the C = 2^D (1 for Nearest) corners of
    each point at one level: pos = scale x + 0.5 (one float32 rounding for float32 x, like tcnn's fmaf),
    grid = floor(pos), index = dense stride while resolution^D <= size, else XOR_d grid_d p_d in uint32;
    then % size."""
    D = x.shape[1]
    if x.dtype == torch.float32:   # the float64 product of two float32 values is exact: one rounding = fmaf
        pos = (x.double() * scale + 0.5).float()
    else:
        pos = x * scale + 0.5
    grid_f = torch.floor(pos)
    frac = pos - grid_f
    grid = grid_f.to(torch.int64)
    if interp == 1:   # Nearest: the lower corner, weight 1
        corners = torch.zeros(1, D, dtype=torch.int64, device=x.device)
    else:
        corners = torch.tensor([[(c >> d) & 1 for d in range(D)] for c in range(2 ** D)], device=x.device)
        if interp == 2:
            frac = frac * frac * (3.0 - 2.0 * frac)
    cg = grid[:, None, :] + corners[None]                                               # [N, C, D]
    if interp == 1:
        w = torch.ones(cg.shape[:-1], dtype=frac.dtype, device=x.device)
    else:
        w = torch.where(corners[None].bool(), frac[:, None, :], 1.0 - frac[:, None, :]).prod(-1)
    if resolution ** D > size:
        h = torch.zeros(cg.shape[:-1], dtype=torch.int64, device=x.device)
        for d in range(D):
            h = h ^ ((cg[..., d] * HASH_PRIMES[d]) & 0xFFFFFFFF)                       # uint32 wraparound
    else:
        h, stride = torch.zeros(cg.shape[:-1], dtype=torch.int64, device=x.device), 1
        for d in range(D):
            h = h + cg[..., d] * stride
            stride *= resolution
    return h % size, w


def hash_grid_encode(x: torch.Tensor, params: torch.Tensor, scales: list[float], resolutions: list[int],
                     sizes: list[int], offsets: list[int], n_features: int, interp: int) -> torch.Tensor:
    """Multiresolution grid encoding: x [N, D] (in [0, 1]^D) -> [N, L * F], level-major (tcnn's layout).

        out[n, l F + f] = sum_c w_c(x_n) params[(offset_l + index_l(corner_c(x_n))) F + f]

    Level l has scale_l, resolution_l, table size_l and entry offset_l (msdfast.fields.hashgrid.grid_levels);
    params is the flat table of all levels. Differentiable in x and params (plain autograd).
    """
    table = params.view(-1, n_features)
    outs = []
    for scale, res, size, off in zip(scales, resolutions, sizes, offsets):
        idx, w = _grid_corners(x, scale, res, size, interp)
        # F.embedding, not table[idx]: its CPU backward is deterministic (index_put_ accumulate is not),
        # which the pipelines' bit-exact resume relies on.
        vals = torch.nn.functional.embedding(idx + off, table)                           # [N, C, F]
        outs.append((w[..., None] * vals.to(w.dtype)).sum(1))
    return torch.cat(outs, dim=1).to(x.dtype)


def hash_grid_encode_backward(grad_out: torch.Tensor, x: torch.Tensor, n_params: int, scales: list[float],
                              resolutions: list[int], sizes: list[int], offsets: list[int], n_features: int,
                              interp: int) -> torch.Tensor:
    """d loss / d params [n_params] of hash_grid_encode given grad_out [N, L F]: the encoding is linear in
    params, so each corner's entry receives w_c grad_out (summed over points, in point order)."""
    F = n_features
    grad = torch.zeros(n_params // F, F, dtype=torch.float32, device=x.device)
    for l, (scale, res, size, off) in enumerate(zip(scales, resolutions, sizes, offsets)):
        idx, w = _grid_corners(x, scale, res, size, interp)
        contrib = w.float()[..., None] * grad_out[:, l * F:(l + 1) * F].float()[:, None, :]   # [N, C, F]
        grad.index_add_(0, (idx + off).reshape(-1), contrib.reshape(-1, F))
    return grad.reshape(-1).to(grad_out.dtype)
