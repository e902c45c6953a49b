"""Guided noise prediction and the one guided step every sampler and solver is built from.

`Guidance` says how eps is predicted at (z, t): the conditional model, optionally classifier-free
guidance (same model, uncond condition, ONE batched call), autoguidance or a separate unconditional
network (a second model: two calls), limited-interval guidance (Kynkaanniemi et al. 2024: CFG only
for t in [t_lo, t_hi]) and PSR (thesis ch. 1 eq. 1.6, applied after CFG).

`guided_step` = predict + the fused op `ops.ddim_step`. With eta = 0 and t_next < t it is DDIM, with
eta = 1 it is DDPM ancestral sampling, with t_next > t it is DDIM inversion, and with a centre and
decay it is the stable MSD solver's step (MSD paper eq. 15). One mechanism for all callers.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import ops
from ..denoisers.base import Cond, Denoiser
from ..schedule import psr_factor

TimeArg = int | torch.Tensor


def match_batch(cond: Cond, batch: int, name: str = "cond") -> Cond:
    """Repeat a condition chain-major so its first dim equals batch (N chains of B conditions)."""
    if cond is None or cond.shape[0] == batch:
        return cond
    if batch % cond.shape[0] != 0:
        raise ValueError(f"{name}: batch {cond.shape[0]} does not divide the sample batch {batch}")
    return Denoiser.repeat_cond(cond, batch // cond.shape[0])


@dataclass
class Guidance:
    """How eps is predicted at (z, t). `scale` is the diffusers CFG weight w (1 = pure conditional).

    CFG: give `uncond` (same denoiser). Autoguidance / a separate unconditional model: give `guide`
    (and `guide_cond`, default cond). Guidance applies only for t in `interval` = (t_lo, t_hi) if set.
    """

    denoiser: Denoiser
    cond: Cond = None
    uncond: Cond = None
    scale: float = 1.0
    guide: Denoiser | None = None
    guide_cond: Cond = None
    interval: tuple[int, int] | None = None
    psr_k: float = 1.0
    psr_s: float = 1.0

    def __post_init__(self) -> None:
        if self.scale != 1.0 and self.uncond is None and self.guide is None:
            raise ValueError("scale: guidance needs an uncond condition (CFG) or a guide model (autoguidance)")
        if self.uncond is not None and self.guide is not None:
            raise ValueError("guide: give either uncond (CFG) or a guide model, not both")
        if self.interval is not None and self.interval[0] > self.interval[1]:
            raise ValueError("interval: expected (t_lo, t_hi) with t_lo <= t_hi")
        psr_factor(1.0, self.psr_k, self.psr_s)  # validates k and s

    @property
    def schedule(self):  # noqa: ANN201
        return self.denoiser.schedule

    def _guided_at(self, t: TimeArg) -> bool:
        if self.scale == 1.0:
            return False
        if self.interval is None:
            return True
        tt = torch.as_tensor(t)
        inside = (tt >= self.interval[0]) & (tt <= self.interval[1])
        if inside.ndim and not (inside.all() or (~inside).all()):
            raise ValueError("interval: a batch straddling the guidance interval is not supported")
        return bool(inside.all())

    def predict(self, z: torch.Tensor, t: TimeArg, *, tag: str = "") -> tuple[torch.Tensor, torch.Tensor | None, float]:
        """(eps_c, eps_u or None, w). Conditions are repeated chain-major to z's batch."""
        B = z.shape[0]
        cond = match_batch(self.cond, B)
        if not self._guided_at(t):
            return self.denoiser.eps(z, t, cond, tag=tag), None, 1.0
        if self.guide is None:
            eps_c, eps_u = self.denoiser.eps_pair(z, t, cond, match_batch(self.uncond, B, "uncond"), tag=tag)
        else:
            eps_c = self.denoiser.eps(z, t, cond, tag=tag)
            gcond = self.cond if self.guide_cond is None else self.guide_cond
            eps_u = self.guide.eps(z, t, match_batch(gcond, B, "guide_cond"), tag=tag)
        return eps_c, eps_u, float(self.scale)

    def psr(self, t: TimeArg, device: torch.device) -> torch.Tensor | float:
        if self.psr_k == 1.0:
            return 1.0
        return psr_factor(self.schedule.snr(t, device=device), self.psr_k, self.psr_s)

    def eps(self, z: torch.Tensor, t: TimeArg, *, tag: str = "") -> torch.Tensor:
        """The guided, PSR-rescaled eps_bar itself (for estimators that need it, not a step)."""
        eps_c, eps_u, w = self.predict(z, t, tag=tag)
        coef = ops.grad_coefficients(z.shape[0], 1.0, guidance_scale=w, psr=self.psr(t, z.device), device=z.device)
        return ops.reference.guided_eps(eps_c, eps_u, coef[:, :1].reshape(-1, *([1] * (z.ndim - 1))).to(z.dtype),
                                        coef[:, 1:2].reshape(-1, *([1] * (z.ndim - 1))).to(z.dtype))

    # ------------------------------------------------------------------ EDM / VE form (toy samplers)
    def _guided_at_ve(self, s: torch.Tensor) -> bool:
        """Guidance on/off at VE noise level s; the interval (in timesteps) is mapped through the schedule's
        nearest timestep t(s) (s below s_0 maps to t = 0, above s_{T-1} to T - 1)."""
        if self.scale == 1.0 or self.interval is None:
            return self.scale != 1.0
        return self._guided_at(self.schedule.t_for_ve_sigma(s.detach().double().cpu()))

    def denoise_ve(self, x: torch.Tensor, s: torch.Tensor | float, *, tag: str = "") -> torch.Tensor:
        """The guided, PSR-rescaled VE denoiser D_bar(x; s) (EDM form, for Euler/Heun samplers).

        With eps = (x - D) / s (MATH.md sec. 1, z = alpha x), CFG/autoguidance and PSR act on eps exactly as
        in `eps`: eps_bar = r (eps_u + w (eps_c - eps_u)), r = psr_factor(SNR = 1 / s^2, k, psr_s);
        D_bar = x - s eps_bar. A CFG pair is ONE batched call (`denoise_ve_pair`); a guide model is a second.
        """
        B = x.shape[0]
        sv = torch.as_tensor(s, dtype=x.dtype, device=x.device)
        sv = sv.expand(B) if sv.ndim == 0 else sv
        cond = match_batch(self.cond, B)
        d_u = None
        if not self._guided_at_ve(sv):
            d_c = self.denoiser.denoise_ve(x, sv, cond, tag=tag)
        elif self.guide is None:
            d_c, d_u = self.denoiser.denoise_ve_pair(x, sv, cond, match_batch(self.uncond, B, "uncond"), tag=tag)
        else:
            d_c = self.denoiser.denoise_ve(x, sv, cond, tag=tag)
            gcond = self.cond if self.guide_cond is None else self.guide_cond
            d_u = self.guide.denoise_ve(x, sv, match_batch(gcond, B, "guide_cond"), tag=tag)
        shape = (B,) + (1,) * (x.ndim - 1)
        s_b = sv.reshape(shape)
        eps_c = (x - d_c) / s_b
        eps_u = None if d_u is None else (x - d_u) / s_b
        w = torch.tensor(float(self.scale) if d_u is not None else 1.0, dtype=x.dtype, device=x.device)
        r = 1.0 if self.psr_k == 1.0 else psr_factor(1.0 / sv.to(torch.float64) ** 2, self.psr_k, self.psr_s)
        r = torch.as_tensor(r, device=x.device).to(x.dtype)
        r = r.reshape(shape) if r.ndim else r
        return x - s_b * ops.reference.guided_eps(eps_c, eps_u, w, r)


def step_coefs(guidance: Guidance, batch: int, t: TimeArg, t_next: TimeArg, device: torch.device, *,
               w: float = 1.0, eta: float | torch.Tensor = 0.0,
               decay: float | torch.Tensor = 1.0) -> torch.Tensor:
    """The coefficient table of one guided step t -> t_next on the guidance's schedule.

    Sampling loops step on a fixed grid with scalar settings: then the table is one [1, 8] row,
    built once from the float64 master schedule on the host and cached per device (building it costs
    ~80 us, more than the fused step itself; no device sync either way). Per-sample inputs ([B]
    tensors) get a fresh [B, 8] table.
    """
    sch = guidance.schedule
    scalars = (t, t_next, w, eta, decay)
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scalars):
        key = (int(t), int(t_next), float(w), guidance.psr_k, guidance.psr_s, float(eta), float(decay), str(device))
        cache = sch._cache.setdefault("step_tables", {})
        if len(cache) > 4096:  # annealed settings (decay follows lambda) make new keys: stay bounded
            cache.clear()
        table = cache.get(key)
        if table is None:
            cpu = torch.device("cpu")
            table = ops.step_coefficients(1, sch.alpha(t, dtype=torch.float64), sch.sigma(t, dtype=torch.float64),
                                          sch.alpha(t_next, dtype=torch.float64),
                                          sch.sigma(t_next, dtype=torch.float64), guidance_scale=w,
                                          psr=guidance.psr(t, cpu), eta=eta, decay=decay, device=cpu).to(device)
            cache[key] = table
        return table
    return ops.step_coefficients(batch, sch.alpha(t, device=device), sch.sigma(t, device=device),
                                 sch.alpha(t_next, device=device), sch.sigma(t_next, device=device),
                                 guidance_scale=w, psr=guidance.psr(t, device), eta=eta, decay=decay,
                                 device=device)


def guided_step(guidance: Guidance, z: torch.Tensor, t: TimeArg, t_next: TimeArg, *,
                eta: float | torch.Tensor = 0.0, noise: torch.Tensor | None = None,
                center: torch.Tensor | None = None, decay: float | torch.Tensor = 1.0,
                return_x0: bool = False, eval_t: TimeArg | None = None,
                tag: str = "") -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """One denoiser call (batched CFG pair if guided) + one fused step t -> t_next.

    eta > 0 needs `noise` (standard normal, z's shape); a centre c applies the MSD kernel pull
    z_out = c + (z' - c) decay (MSD paper eq. 15). eval_t is the timestep the model sees (default t;
    inversion from clean data, t = -1, evaluates at 0 as diffusers' inverse scheduler does).
    """
    eps_c, eps_u, w = guidance.predict(z, t if eval_t is None else eval_t, tag=tag)
    if noise is None and torch.any(torch.as_tensor(eta) != 0):
        raise ValueError("noise: eta > 0 needs a standard-normal noise tensor")
    coef = step_coefs(guidance, z.shape[0], t, t_next, z.device, w=w, eta=eta, decay=decay)
    return ops.ddim_step(z, eps_c.to(z.dtype), coef, eps_u=None if eps_u is None else eps_u.to(z.dtype),
                         center=center, noise=noise if torch.any(torch.as_tensor(eta) != 0) else None,
                         return_x0=return_x0)
