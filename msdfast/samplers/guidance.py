"""Guidance: the ONE place where CFG, autoguidance, limited-interval guidance and PSR are computed.

`Guidance.predict(z, t)` evaluates the model branches at per-sample timesteps t and returns a
`GuidedEps`: eps_c, eps_u (or None), the per-sample CFG weight w and PSR factor r (docs/math.md sec. 1.3-1.4):

    eps_bar = r (eps_u + w (eps_c - eps_u)),   w = scale inside the interval, 1 outside,
    r = psr_factor(SNR_t, k, s)                                         (thesis ch. 1 eq. 1.6)

CFG is ONE batched call of cond + uncond (plus any `extra` groups a caller needs at other levels);
autoguidance / a separate unconditional model is a second call on the guide. A batch may straddle the
interval: w is per sample. With a python-int t (a sampling loop) an unguided step costs one call; with
per-sample tensor t (an estimator) the pair is always evaluated (no host sync deciding it).

`coefficients` is the one builder of the fused ops' coefficient tables: ops.ddim_step's (a step t -> t_next)
and ops.distill_grad's (a gradient weight), both carrying the guidance columns (w, r).

`guided_step` = predict + `step` (ops.ddim_step). With eta = 0 and t_next < t it is DDIM, with eta = 1 DDPM
ancestral sampling, with t_next > t DDIM inversion, with a centre and decay the stable MSD solver's step
(MSD paper eq. 15), with `offset` MSD's naive solver (eq. 12), and with ve=True (alpha = 1, sigma = the VE
level) an Euler step of EDM's probability-flow ODE. Every sampler and solver is built from it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from .. import ops
from ..denoisers.base import Cond, Denoiser
from ..errors import UserInputError
from ..schedule import psr_factor

__all__ = ["Guidance", "GuidedEps", "guided_eps", "coefficients", "step", "guided_step", "multi_eps", "InputBuffers",
           "match_batch"]

TimeArg = int | float | torch.Tensor
Weight = float | torch.Tensor


def check_batch(cond: Cond, batch: int, name: str = "cond") -> None:
    """A condition's batch must divide the sample batch (it is repeated chain-major to it)."""
    if cond is not None and batch % cond.shape[0] != 0:
        raise ValueError(f"{name}: batch {cond.shape[0]} does not divide the sample batch {batch}")


def match_batch(cond: Cond, batch: int, name: str = "cond") -> Cond:
    """Repeat a condition chain-major so its first dim equals batch (N chains of B conditions)."""
    if cond is None or cond.shape[0] == batch:
        return cond
    check_batch(cond, batch, name)
    return Denoiser.repeat_cond(cond, batch // cond.shape[0])


def _levels(level: TimeArg, batch: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Timesteps (dtype long) or VE levels (a float dtype) as a [batch] tensor."""
    t = torch.as_tensor(level, dtype=dtype, device=device)
    return t.expand(batch) if t.ndim == 0 else t


class InputBuffers:
    """The denoiser's batched inputs (z, t, cond) of a loop, allocated once and written in place.

    A guided call batches groups (cond half, uncond half, an estimator's extra groups; each a chain-major
    repeat of its condition) into ONE denoiser call. Instead of torch.cat-ing them for every call, `gather`
    copies each group's z and t into slices of preallocated buffers, and writes the conditions only when they
    changed (the same tensors at the same version are not written again: a loop's conditions are written once).
    The buffers live as long as their owner (a Guidance, or an estimator across its calls), which is also what
    CUDA-graph capture needs: static input addresses. Shapes, dtype or device that change reallocate. With
    autograd recording through an input (some group requires grad) it falls back to fresh tensors, so no
    in-place write can touch a saved tensor.
    """

    def __init__(self) -> None:
        self.z: torch.Tensor | None = None
        self.t: torch.Tensor | None = None
        self.cond: torch.Tensor | None = None
        self._cond_src: list[tuple[torch.Tensor, int, int]] = []   # (tensor, version, offset) last written

    @staticmethod
    def _fits(buf: torch.Tensor | None, shape: tuple[int, ...], like: torch.Tensor, dtype: torch.dtype) -> bool:
        return buf is not None and buf.shape == shape and buf.dtype == dtype and buf.device == like.device

    def gather(self, parts: list[tuple[torch.Tensor, TimeArg, Cond]], *, ve: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor, Cond]:
        """(z, t, cond) for one denoiser call of all groups, in place (see the class doc)."""
        z0 = parts[0][0]
        sizes = [p[0].shape[0] for p in parts]
        total = sum(sizes)
        tdt = z0.dtype if ve else torch.long
        conds = [p[2] for p in parts]
        if any(c is None for c in conds) and not all(c is None for c in conds):
            raise ValueError("cond: cannot batch a None condition with a tensor condition")
        if torch.is_grad_enabled() and any(p[0].requires_grad or (c is not None and c.requires_grad)
                                           for p, c in zip(parts, conds)):
            return InputBuffers()._fill(parts, sizes, total, tdt, conds)   # fresh tensors for the graph
        return self._fill(parts, sizes, total, tdt, conds)

    def _fill(self, parts: list[tuple[torch.Tensor, TimeArg, Cond]], sizes: list[int], total: int,
              tdt: torch.dtype, conds: list[Cond]) -> tuple[torch.Tensor, torch.Tensor, Cond]:
        z0 = parts[0][0]
        zshape = (total, *z0.shape[1:])
        if not self._fits(self.z, zshape, z0, z0.dtype):
            self.z = torch.empty(zshape, dtype=z0.dtype, device=z0.device)
        if not self._fits(self.t, (total,), z0, tdt):
            self.t = torch.empty((total,), dtype=tdt, device=z0.device)
        off = 0
        for (z, t, _), n in zip(parts, sizes):
            self.z[off:off + n].copy_(z)
            if isinstance(t, torch.Tensor) and t.ndim:
                self.t[off:off + n].copy_(t)
            else:
                self.t[off:off + n].fill_(t)
            off += n
        if conds[0] is None:
            self.cond, self._cond_src = None, []
            return self.z, self.t, None
        c0 = conds[0]
        cshape = (total, *c0.shape[1:])
        realloc = not self._fits(self.cond, cshape, c0, c0.dtype)
        if realloc:
            self.cond = torch.empty(cshape, dtype=c0.dtype, device=c0.device)
        offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        src = [(c, c._version, o) for c, o in zip(conds, offsets)]
        same = (not realloc and len(src) == len(self._cond_src)
                and all(a is b and va == vb and oa == ob for (a, va, oa), (b, vb, ob) in zip(src, self._cond_src)))
        if not same:
            for c, n, o in zip(conds, sizes, offsets):
                if c.shape[1:] != c0.shape[1:] or n % c.shape[0]:
                    raise ValueError(f"cond: batch {c.shape[0]} does not divide the sample batch {n}")
                # chain-major repeat (match_batch) written straight into the slice: [n/b, b, ...] <- [b, ...]
                self.cond[o:o + n].view(n // c.shape[0], *c.shape).copy_(c)
            self._cond_src = src
        return self.z, self.t, self.cond


def multi_eps(denoiser: Denoiser, parts: list[tuple[torch.Tensor, TimeArg, Cond]], tag: str = "", *,
              ve: bool = False, buffers: InputBuffers | None = None) -> list[torch.Tensor]:
    """The model output for several (z [B_i, ...], t, cond) groups from ONE batched denoiser call.

    ve=False: eps(z, t) at integer timesteps t; ve=True: eps = (x - D(x; s)) / s at VE levels s (EDM form).
    Conditions are repeated chain-major to each group's batch. `buffers` (a loop's InputBuffers) receive the
    batched inputs in place; without them a single group with a full-batch condition is passed as is, and
    anything else is gathered into fresh tensors.
    """
    if len(parts) == 1 and (parts[0][2] is None or parts[0][2].shape[0] == parts[0][0].shape[0]):
        z, t, cond = parts[0]
        if not ve:
            return [denoiser.eps(z, t, cond, tag=tag)]
        s = _levels(t, z.shape[0], z.device, z.dtype)
        return [(z - denoiser.denoise_ve(z, s, cond, tag=tag)) / s.reshape(-1, *([1] * (z.ndim - 1)))]
    z, t, cond = (buffers or InputBuffers()).gather(parts, ve=ve)
    if ve:
        out = (z - denoiser.denoise_ve(z, t, cond, tag=tag)) / t.reshape(-1, *([1] * (z.ndim - 1)))
    else:
        out = denoiser.eps(z, t, cond, tag=tag)
    return list(out.split([p[0].shape[0] for p in parts]))


def _column(v: Weight, like: torch.Tensor) -> torch.Tensor | float:
    """A scalar or per-sample [B] coefficient as the fused ops read it (float32), shaped to broadcast over like."""
    if not isinstance(v, torch.Tensor):
        return float(torch.tensor(v, dtype=torch.float32))
    v = v.to(device=like.device, dtype=torch.float32)
    return v.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1))) if v.ndim else v.to(like.dtype)


def guided_eps(eps_c: torch.Tensor, eps_u: torch.Tensor | None, w: Weight = 1.0, r: Weight = 1.0) -> torch.Tensor:
    """eps_bar = r (eps_u + w (eps_c - eps_u)) with scalar or per-sample w, r (the fused ops' reference)."""
    return ops.reference.guided_eps(eps_c, eps_u, _column(w, eps_c), _column(r, eps_c))


@dataclass
class GuidedEps:
    """The model branches at one (z, t) and how to combine them: eps_bar = r (eps_u + w (eps_c - eps_u)).

    w, r: python floats (one value for the batch) or per-sample [B] tensors; r None = the guidance's PSR at
    the prediction's timestep, left to the coefficient builder (a sampling step's table is cached). extra:
    the outputs of the caller's extra groups, batched into the same denoiser call.
    """

    eps_c: torch.Tensor
    eps_u: torch.Tensor | None
    w: Weight = 1.0
    r: Weight | None = 1.0
    extra: list[torch.Tensor] = field(default_factory=list)
    psr_of: Callable[[], Weight] | None = field(default=None, repr=False)

    def psr(self) -> Weight:
        """The PSR factor r (computed on demand when the prediction left it to the coefficient builder)."""
        return self.psr_of() if self.r is None and self.psr_of is not None else (1.0 if self.r is None else self.r)

    def combined(self) -> torch.Tensor:
        """The guided, PSR-rescaled eps_bar itself (for callers that need it, not a fused op)."""
        return guided_eps(self.eps_c, self.eps_u, self.w, self.psr())


@dataclass
class Guidance:
    """How eps is predicted at (z, t). `scale` is the diffusers CFG weight w (1 = pure conditional).

    CFG: give `uncond` (same denoiser). Autoguidance / a separate unconditional model: give `guide`
    (and `guide_cond`, default cond). Guidance applies only for t in `interval` = (t_lo, t_hi) if set,
    judged per sample. PSR (psr_k != 1) rescales the guided eps.
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
    inputs: InputBuffers = field(default_factory=InputBuffers, repr=False, compare=False)
    guide_inputs: InputBuffers = field(default_factory=InputBuffers, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.scale != 1.0 and self.uncond is None and self.guide is None:
            raise UserInputError("scale: guidance needs an uncond condition (CFG) or a guide model (autoguidance)")
        if self.uncond is not None and self.guide is not None:
            raise UserInputError("guide: give either uncond (CFG) or a guide model, not both")
        if self.interval is not None and (len(self.interval) != 2 or self.interval[0] > self.interval[1]):
            raise UserInputError(f"interval: expected (t_lo, t_hi) with t_lo <= t_hi, got {self.interval!r}")
        psr_factor(1.0, self.psr_k, self.psr_s)  # validates k and s

    @property
    def schedule(self):  # noqa: ANN201
        return self.denoiser.schedule

    # ------------------------------------------------------------------ the per-sample weights
    def cfg_weight(self, t: TimeArg, device: torch.device | str | None = None) -> Weight:
        """w per sample: `scale` for t inside the interval, 1 outside (and without guidance).

        t: integer timesteps, a python int (one value, decided on the host) or a [B] tensor (a [B] float32
        tensor of weights on t's device: a batch may straddle the interval; no host sync).
        """
        if self.scale == 1.0:
            return 1.0
        if self.interval is None:
            return float(self.scale)
        lo, hi = self.interval
        if isinstance(t, torch.Tensor) and t.ndim:
            inside = (t >= lo) & (t <= hi)   # device fills only: no host-to-device copy, no sync
            return torch.ones(t.shape, dtype=torch.float32, device=t.device).masked_fill_(inside, float(self.scale))
        return float(self.scale) if lo <= int(t) <= hi else 1.0

    def psr(self, t: TimeArg, device: torch.device | str | None = None) -> Weight:
        """PSR factor r_t (1.0 when off): per sample for tensor t, a 0-d tensor for a python int."""
        if self.psr_k == 1.0:
            return 1.0
        return psr_factor(self.schedule.snr(t, device=device), self.psr_k, self.psr_s)

    def _ve_time(self, s: TimeArg) -> TimeArg:
        """The schedule's nearest timestep of VE level(s) s (what the interval is judged on in EDM form)."""
        if isinstance(s, torch.Tensor) and s.ndim:
            return self.schedule.t_for_ve_sigma(s.detach().double().cpu())
        return int(self.schedule.t_for_ve_sigma(float(s)))

    def _psr_ve(self, s: TimeArg, like: torch.Tensor) -> Weight:
        """PSR at VE level s: SNR = 1 / s^2 (float64, then the sample dtype)."""
        if self.psr_k == 1.0:
            return 1.0
        sv = torch.as_tensor(s, dtype=torch.float64, device=like.device)
        return psr_factor(1.0 / sv ** 2, self.psr_k, self.psr_s).to(like.dtype)

    # ------------------------------------------------------------------ prediction
    def predict(self, z: torch.Tensor, t: TimeArg, *, extra: list[tuple[torch.Tensor, TimeArg, Cond]] | None = None,
                ve: bool = False, tag: str = "") -> GuidedEps:
        """The guided prediction at z and timestep(s) t (ve=True: VE levels s, eps = (x - D(x; s)) / s).

        Conditions are repeated chain-major to z's batch. `extra` groups (z_i, t_i, cond_i) ride in the same
        denoiser call (their outputs in .extra), so an estimator's whole step is one batch.
        """
        B = z.shape[0]
        w = self.cfg_weight(self._ve_time(t) if (ve and self.interval is not None and self.scale != 1.0) else t,
                            z.device)
        if isinstance(w, torch.Tensor) and w.device != z.device:
            w = w.to(z.device)
        guided = not (isinstance(w, float) and w == 1.0)
        check_batch(self.cond, B, "cond")
        groups = [(z, t, self.cond)]
        if guided and self.guide is None:
            check_batch(self.uncond, B, "uncond")
            groups.append((z, t, self.uncond))
        outs = multi_eps(self.denoiser, groups + list(extra or []), tag, ve=ve, buffers=self.inputs)
        eps_u = None
        if guided:
            if self.guide is None:
                eps_u = outs.pop(1)
            else:
                gcond = self.cond if self.guide_cond is None else self.guide_cond
                check_batch(gcond, B, "guide_cond")
                eps_u = multi_eps(self.guide, [(z, t, gcond)], tag, ve=ve, buffers=self.guide_inputs)[0]
        if ve:
            return GuidedEps(outs[0], eps_u, w, self._psr_ve(t, z), outs[1:])
        if isinstance(t, torch.Tensor):
            return GuidedEps(outs[0], eps_u, w, self.psr(t, z.device), outs[1:])
        return GuidedEps(outs[0], eps_u, w, None, outs[1:], psr_of=lambda: self.psr(t, z.device))

    def eps(self, z: torch.Tensor, t: TimeArg, *, tag: str = "") -> torch.Tensor:
        """The guided, PSR-rescaled eps_bar at (z, t)."""
        return self.predict(z, t, tag=tag).combined()

    def denoise_ve(self, x: torch.Tensor, s: TimeArg, *, tag: str = "") -> torch.Tensor:
        """The guided, PSR-rescaled VE denoiser D_bar(x; s) = x - s eps_bar (EDM form; eps = (x - D) / s,
        PSR with SNR = 1 / s^2, the interval judged at the schedule's nearest timestep of s)."""
        s_b = _levels(s, x.shape[0], x.device, x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return x - s_b * self.predict(x, s, ve=True, tag=tag).combined()


# ---------------------------------------------------------------------- the coefficient builder
def coefficients(guidance: Guidance, batch: int, t: TimeArg, device: torch.device, *, w: Weight = 1.0,
                 r: Weight | None = None, t_next: TimeArg | None = None, weight: Weight | None = None,
                 eta: Weight = 0.0, decay: Weight = 1.0, ve: bool = False) -> torch.Tensor:
    """The coefficient table of one fused op at t, carrying the guidance columns (CFG weight w, PSR r).

    t_next given: ops.ddim_step's table of a step t -> t_next (STEP_COLUMNS), on the guidance's schedule, or
      with ve=True on VE levels (alpha = 1, sigma = t -> t_next: EDM's Euler step). A step on a fixed grid
      with scalar settings is one [1, 8] row built once from the float64 master schedule on the host and
      cached per device (~80 us to build, more than the fused step itself; no device sync either way).
    weight given: ops.distill_grad's [B, 3] table (GRAD_COLUMNS).
    r defaults to guidance.psr(t) (pass the prediction's r for VE levels).
    """
    if (t_next is None) == (weight is None):
        raise ValueError("coefficients: give exactly one of t_next (ddim_step) or weight (distill_grad)")
    if weight is not None:
        return ops.grad_coefficients(batch, weight, guidance_scale=w,
                                     psr=guidance.psr(t, device) if r is None else r, device=device)
    if ve:
        return ops.step_coefficients(batch, 1.0, t, 1.0, t_next, guidance_scale=w, psr=1.0 if r is None else r,
                                     eta=eta, decay=decay, device=device)
    sch = guidance.schedule
    scalars = (t, t_next, w, eta, decay)
    if r is None and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scalars):
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
                                 guidance_scale=w, psr=guidance.psr(t, device) if r is None else r, eta=eta,
                                 decay=decay, device=device)


# ---------------------------------------------------------------------- the guided step
def step(guidance: Guidance, z: torch.Tensor, pred: GuidedEps, t: TimeArg, t_next: TimeArg, *,
         eta: Weight = 0.0, noise: torch.Tensor | None = None, center: torch.Tensor | None = None,
         decay: Weight = 1.0, offset: torch.Tensor | None = None, ve: bool = False,
         return_x0: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """One fused step t -> t_next (ops.ddim_step) of the prediction `pred`.

    eta > 0 needs `noise` (standard normal, z's shape); a centre c applies the MSD kernel pull
    z_out = c + (z' - c) decay (MSD paper eq. 15); `offset` is a term added to the guided eps_bar before the
    step (MSD's naive solver: the kernel score in eps form, eq. 12); ve=True steps VE levels (EDM).
    """
    # decided on the host for a python eta; a tensor eta (per sample) uses the noise it is given: reading it
    # would be a host sync (rows with eta = 0 get c_noise = 0)
    stochastic = eta != 0 if isinstance(eta, (int, float)) else noise is not None
    if noise is None and stochastic:
        raise ValueError("noise: eta > 0 needs a standard-normal noise tensor")
    if offset is not None:
        pred = GuidedEps(pred.combined() + offset, None)
    r = pred.r if (ve or offset is not None) else None   # None: guidance.psr(t), cached with the step table
    coef = coefficients(guidance, z.shape[0], t, z.device, w=pred.w, r=r, t_next=t_next, eta=eta, decay=decay,
                        ve=ve)
    eps_u = None if pred.eps_u is None else pred.eps_u.to(z.dtype)
    return ops.ddim_step(z, pred.eps_c.to(z.dtype), coef, eps_u=eps_u, center=center,
                         noise=noise if stochastic else None, return_x0=return_x0)


def guided_step(guidance: Guidance, z: torch.Tensor, t: TimeArg, t_next: TimeArg, *,
                eta: Weight = 0.0, noise: torch.Tensor | None = None, center: torch.Tensor | None = None,
                decay: Weight = 1.0, offset: torch.Tensor | None = None, return_x0: bool = False,
                eval_t: TimeArg | None = None, ve: bool = False,
                tag: str = "") -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """One guided prediction (one denoiser call: a batched CFG pair if guided) + one fused `step` t -> t_next.

    eval_t is the timestep the model sees (default t; inversion from clean data, t = -1, evaluates at 0 as
    diffusers' inverse scheduler does). See `step` for eta/noise, centre/decay, offset and ve.
    """
    pred = guidance.predict(z, t if eval_t is None else eval_t, ve=ve, tag=tag)
    return step(guidance, z, pred, t, t_next, eta=eta, noise=noise, center=center, decay=decay, offset=offset,
                ve=ve, return_x0=return_x0)
