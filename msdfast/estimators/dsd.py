"""DSD: diverse score distillation (Yu et al., DSD paper sec. 3, Algorithms 1-3; thesis ch. 2; docs/math.md sec. 2)."""
from __future__ import annotations

from typing import Any

import torch

from .. import ops
from ..denoisers.base import Cond, Denoiser
from ..errors import UserInputError
from ..samplers.guidance import coefficients, guided_eps, step
from .common import GuidedEstimator, weighting

FORMS = ("interp", "2d")


class SeedPath:
    """The DDIM path of a seed eps* under one condition: z_k, eps_k on the trailing grid t_0 > ... > t_{K-1}.

    Computed ONCE per (seed, condition) -- it does not depend on the optimised x -- and cached
    (the public fork re-simulates up to 10 CFG steps every iteration).
    """

    def __init__(self, grid: list[int], z: torch.Tensor, eps: torch.Tensor) -> None:
        self.grid, self.z, self.eps = grid, z, eps   # z, eps: [K, B, ...]


class DSD(GuidedEstimator):
    """Diverse score distillation: a fixed seed eps* per particle defines an ODE path the optimisation follows.

    form "interp" (DSD eq. 9-10, Algorithms 1/3; the general form, default):
        t annealed t_max -> t_min over the run; delta = max(1, round(delta_frac (t - t_min)));
        x(t+delta) = DDIM-Forward(eps*, T -> t+delta): the cached path up to the grid point k at or above
            t+delta, then one DDIM step with the cached eps_k (0 NFE);
        eps(t+delta) = eps_g(x(t+delta), t+delta) with the ODE's CFG (`path_eps="exact"`, 1 guided call) or
            the cached eps_k (`path_eps="grid"`, 0 NFE);
        x_hat(t), x_hat(t+delta) = alpha x + sigma eps(t+delta) at both levels (ONE ops.noise_to_levels);
        g = w(t) [eps_g(x_hat(t), t) - eps_tgt(x_hat(t+delta), t+delta)]   (ONE denoiser batch: 3B with CFG),
        CFG guidance_scale on the first, target_guidance_scale (default 1 = pure conditional; paper B) on the
        second.
    form "2d" (DSD Algorithm 2): over N = total_steps optimisation steps, step i = step + 1 uses
        u = T (1 - i/N), u_delta = min(u + T/K, T) (K = ddim_steps), the grid point at or above u_delta and
        its cached eps (timestep index = u - 1), x_hat as above and
        g = (K / N) (sigma_t / alpha_t) [eps_g(x_hat(t), t) - eps_tgt(x_hat(t_delta), t_delta)],
        target_guidance_scale default = the ODE's (seed_guidance_scale). The weight sigma_t / alpha_t (the
        paper's sigma(t), VE units) and lr = K / N folded into g make the exact DSD* setting: with N == K,
        SGD lr 1 and x started at `initial_point` (the seed's x0 prediction at the top), the iterates are the
        DDIM x0 predictions and the final x is the DDIM sample from eps* (exact when final_alpha_cumprod = 1).

    Options (plus `GuidedEstimator`'s: guidance_scale (first term, 7.5-style CFG in diffusers w), guide,
    guidance_interval, psr_k, psr_s, t_range (interp form), weighting (interp form), clip):
        form: "interp" | "2d".
        ddim_steps: K, grid steps of the cached seed path (default 10, the paper's maximum).
        seed_guidance_scale: CFG of the seed's ODE (default: guidance_scale).
        target_guidance_scale: CFG of the second term (default: 1 for "interp", seed_guidance_scale for "2d").
        delta_frac: interp form's delta = delta_frac (t - t_min) (default 0.1, as ASD).
        path_eps: "exact" | "grid" (interp form; see above).
        shared_seed: one eps* for the whole batch (3D: all views of one shape) instead of one per element.
        cache_size: how many (condition -> path) entries to keep (view-dependent prompts), default 8.

    NFE per call (batch B; c, c_seed, c_tgt = 2 with CFG else 1 for the three scales):
        + K B c_seed once per new (seed, condition) (the cached path);
        interp: B c_seed (path_eps "exact"; 0 for "grid") + B (c + c_tgt);
        2d:     B (c + c_tgt), 0 on the final step (t = -1, weight 0).
    """

    name = "dsd"

    def __init__(self, denoiser: Denoiser, *, form: str = "interp", ddim_steps: int = 10,
                 seed_guidance_scale: float | None = None, target_guidance_scale: float | None = None,
                 delta_frac: float = 0.1, path_eps: str = "exact", shared_seed: bool = False,
                 cache_size: int = 8, **options: Any) -> None:
        super().__init__(denoiser, **options)
        if form not in FORMS:
            raise UserInputError(f"form: expected one of {FORMS}, got {form!r}")
        T = self.schedule.num_train_timesteps
        if not 1 <= int(ddim_steps) <= T:
            raise UserInputError(f"ddim_steps: must be in [1, {T}], got {ddim_steps}")
        if path_eps not in ("exact", "grid"):
            raise UserInputError(f"path_eps: expected 'exact' or 'grid', got {path_eps!r}")
        if not delta_frac >= 0:
            raise UserInputError(f"delta_frac: must be non-negative, got {delta_frac}")
        if int(cache_size) < 1:
            raise UserInputError(f"cache_size: must be >= 1, got {cache_size}")
        self.form, self.ddim_steps, self.delta_frac, self.path_eps = form, int(ddim_steps), float(delta_frac), path_eps
        self.seed_guidance_scale = self.guidance_scale if seed_guidance_scale is None else float(seed_guidance_scale)
        if target_guidance_scale is None:
            target_guidance_scale = 1.0 if form == "interp" else self.seed_guidance_scale
        self.target_guidance_scale = float(target_guidance_scale)
        self.shared_seed, self.cache_size = bool(shared_seed), int(cache_size)
        self.seed: torch.Tensor | None = None
        self._cache: list[tuple[Cond, Cond, SeedPath]] = []

    # ------------------------------------------------------------------ seed and cached path
    def _ensure_seed(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        shape = (1 if self.shared_seed else x.shape[0],) + tuple(x.shape[1:])
        if self.seed is None:
            self.seed = torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)
            self._cache.clear()
        elif tuple(self.seed.shape) != shape:
            raise ValueError(f"x: shape {tuple(x.shape)} does not match the DSD seed {tuple(self.seed.shape)}"
                             " (the seed is fixed per particle; build a new estimator for a new batch)")
        seed = self.seed.to(device=x.device, dtype=x.dtype)
        return seed.expand(x.shape) if self.shared_seed else seed

    @staticmethod
    def _same(a: Cond, b: Cond) -> bool:
        if a is None or b is None:
            return a is None and b is None
        return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b.to(a.device)))

    def path(self, x: torch.Tensor, cond: Cond, uncond: Cond,
             generator: torch.Generator | None = None) -> SeedPath:
        """The cached DDIM path of the seed under (cond, uncond) (built on first use: K guided calls)."""
        seed = self._ensure_seed(x, generator)
        for c, u, p in self._cache:
            if self._same(c, cond) and self._same(u, uncond):
                return p
        guidance = self.guidance(cond, uncond, scale=self.seed_guidance_scale)
        pairs = self.schedule.sampling_pairs(self.ddim_steps, "trailing")
        z, zs, es = seed, [], []
        for t, tn in pairs:   # the seed's guided DDIM ODE, on the shared guided step
            pred = guidance.predict(z, t, tag="dsd-path")
            zs.append(z)
            es.append(pred.combined())
            z = step(guidance, z, pred, t, tn)
        p = SeedPath([t for t, _ in pairs], torch.stack(zs), torch.stack(es))
        self._cache.insert(0, (cond, uncond, p))
        del self._cache[self.cache_size:]
        return p

    def initial_point(self, x: torch.Tensor, cond: Cond = None, uncond: Cond = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """The seed's x0 prediction at the top of its path: the start of the exact DSD* run."""
        with torch.no_grad():
            p = self.path(x, cond, uncond, generator)
            sch, t = self.schedule, p.grid[0]
            a, s = float(sch.alpha(t, dtype=torch.float64)), float(sch.sigma(t, dtype=torch.float64))
            return (p.z[0] - s * p.eps[0]) / a

    def _grid_index(self, t_up: int, grid: list[int]) -> int:
        """Index k of the grid point at or above timestep t_up (the path's last point reached by then)."""
        ks = [k for k, g in enumerate(grid) if g >= t_up]
        return ks[-1] if ks else 0

    # ------------------------------------------------------------------ gradient
    def _estimate(self, x: torch.Tensor, cond: Cond, uncond: Cond,
                  generator: torch.Generator | None) -> tuple[torch.Tensor, dict[str, Any]]:
        B, dev, sch = x.shape[0], x.device, self.schedule
        T = sch.num_train_timesteps
        p = self.path(x, cond, uncond, generator)
        if self.form == "2d":
            N = self.total_steps
            u = T * (1 - (self.step + 1) / N)
            u_d = min(u + T / self.ddim_steps, T)
            t_i, td_i = int(round(u)) - 1, int(round(u_d)) - 1
            k = self._grid_index(td_i, p.grid)
            eps_path = p.eps[k]
            if t_i < 0:   # the last step lands on clean data: weight sigma/alpha = 0 (set_alpha_to_one)
                if float(sch.sigma(-1, dtype=torch.float64)) == 0.0:
                    return torch.zeros_like(x), {"t": t_i, "t_delta": td_i, "grid_k": k}
                t_i = 0
            a_t = float(sch.alpha(t_i, dtype=torch.float64))
            weight = torch.full((B,), (self.ddim_steps / N) * float(sch.sigma(t_i, dtype=torch.float64)) / a_t,
                                device=dev)
        else:
            t_i = int(round(self.t_max - (self.t_max - self.t_min) * self.progress))
            td_i = min(t_i + max(1, int(round(self.delta_frac * (t_i - self.t_min)))), T - 1)
            k = self._grid_index(td_i, p.grid)
            if self.path_eps == "grid":
                eps_path = p.eps[k]
            else:
                tk = p.grid[k]
                ak, sk = float(sch.alpha(tk, dtype=torch.float64)), float(sch.sigma(tk, dtype=torch.float64))
                x0k = (p.z[k] - sk * p.eps[k]) / ak
                z_d = float(sch.alpha(td_i, dtype=torch.float64)) * x0k + \
                    float(sch.sigma(td_i, dtype=torch.float64)) * p.eps[k]
                eps_path = self.guidance(cond, uncond, scale=self.seed_guidance_scale).eps(z_d, td_i, tag="dsd-path")
            weight = weighting(self.weighting, sch, torch.full((B,), t_i, device=dev, dtype=torch.long))
        t = torch.full((B,), t_i, device=dev, dtype=torch.long)
        td = torch.full((B,), td_i, device=dev, dtype=torch.long)
        tt = torch.stack([t, td], dim=1)
        zz = ops.noise_to_levels(x, eps_path.to(x.dtype), sch.alpha(tt, device=dev), sch.sigma(tt, device=dev))
        extra = [(zz[B:], td, cond)]
        if self.target_guidance_scale != 1.0:
            if uncond is None:
                raise ValueError("uncond: target_guidance_scale != 1 needs the unconditional condition")
            extra.append((zz[B:], td, uncond))
        guidance = self.guidance(cond, uncond)
        pred = guidance.predict(zz[:B], t, extra=extra, tag=self.name)
        ext = pred.extra   # the target: CFG target_guidance_scale at t+delta, then PSR
        target = guided_eps(ext[0], ext[1] if len(ext) == 2 else None, self.target_guidance_scale,
                            guidance.psr(td, dev))
        coef = coefficients(guidance, B, t, dev, w=pred.w, r=pred.r, weight=weight)
        g, _, norm = ops.distill_grad(pred.eps_c, target, coef, eps_u=pred.eps_u, clip=self.clip)
        return g, {"t": t, "t_delta": td, "grid_k": k, "grad_norm": norm}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Step counters, the seed eps* and the cached seed paths (so a resumed run spends the same NFE as an
        uninterrupted one: the paths are not simulated again)."""
        def cpu(t: Cond) -> Cond:
            return None if t is None else t.detach().cpu().clone()
        paths = [{"cond": cpu(c), "uncond": cpu(u), "grid": list(p.grid), "z": cpu(p.z), "eps": cpu(p.eps)}
                 for c, u, p in self._cache]
        return {**super().state_dict(), "seed": cpu(self.seed), "paths": paths}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.seed = None if state["seed"] is None else state["seed"].clone()
        self._cache = [(r["cond"], r["uncond"], SeedPath([int(t) for t in r["grid"]], r["z"], r["eps"]))
                       for r in state.get("paths", [])]

