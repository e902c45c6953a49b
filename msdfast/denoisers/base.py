"""The denoiser protocol every sampler and estimator is written against (docs/math.md sec. 1).

A denoiser predicts eps_hat(z, t, cond) for a batch of VP-noised inputs z_t = alpha_t x + sigma_t eps at
integer timesteps t (a [B] long tensor). Subclasses implement `_eps(z, t, cond)` -- ONE batched
evaluation -- and the base class adds:
  * NFE accounting: every evaluation adds its batch size to `stats.nfe` and logs (batch, seconds),
    which `msdfast profile` reads. A CFG pair counts 2 per sample (docs/math.md sec. 2).
  * `eps_pair`: conditional and unconditional predictions from ONE batched call (cond and uncond
    concatenated) where the model allows it; models whose "unconditional" is a different network
    (the toy's A+B model, autoguidance's small model) override it.
  * EDM/VE form: `denoise_ve(x, s, cond)` = D(x; s) with z = alpha x, s = sigma/alpha
    (docs/math.md sec. 1), for Euler/Heun samplers; toy denoisers natively defined in VE form implement
    `_denoise_ve` and get `_eps` for free.

Conditions are opaque to samplers: a tensor whose first dim is the batch (class ids, text
embeddings), or None. `cat_cond` / `repeat_cond` say how to batch them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ..ops import checks
from ..schedule import VPSchedule

Cond = torch.Tensor | None


@dataclass
class DenoiserCall:
    batch: int
    seconds: float
    tag: str = ""


@dataclass
class DenoiserStats:
    """Counts of denoiser evaluations; reset per gradient by the profiler."""

    nfe: int = 0
    calls: list[DenoiserCall] = field(default_factory=list)
    record_calls: bool = True
    synchronize: bool = False  # set by the profiler on CUDA so call times are real

    def reset(self) -> None:
        self.nfe = 0
        self.calls.clear()

    @property
    def seconds(self) -> float:
        return sum(c.seconds for c in self.calls)


class Denoiser(torch.nn.Module):
    """Base class of all denoisers (eps prediction on a VP schedule)."""

    def __init__(self, schedule: VPSchedule) -> None:
        super().__init__()
        self.schedule = schedule
        self.stats = DenoiserStats()

    # ------------------------------------------------------------------ to implement
    def _eps(self, z: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        """One batched eps prediction; default: from the VE-form denoiser."""
        a = self.schedule.alpha(t, device=z.device).to(z.dtype)
        s = self.schedule.ve_sigma(t, device=z.device).to(z.dtype)
        shape = (-1,) + (1,) * (z.ndim - 1)
        x = z / a.reshape(shape)
        d = self._denoise_ve(x, s, cond)
        return (x - d) / s.reshape(shape)

    def _denoise_ve(self, x: torch.Tensor, s: torch.Tensor, cond: Cond) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} implements neither _eps nor _denoise_ve")

    # ------------------------------------------------------------------ conditions
    @staticmethod
    def cat_cond(conds: list[Cond]) -> Cond:
        if any(c is None for c in conds):
            if not all(c is None for c in conds):
                raise ValueError("cond: cannot batch a None condition with a tensor condition")
            return None
        return torch.cat(conds, dim=0)

    @staticmethod
    def repeat_cond(cond: Cond, n: int) -> Cond:
        """cond for a batch repeated n times chain-major (as torch.cat([z] * n))."""
        if cond is None or n == 1:
            return cond
        return cond.repeat(n, *([1] * (cond.ndim - 1)))   # == torch.cat([cond] * n), one op

    # ------------------------------------------------------------------ public API
    def _timed(self, fn: Any, batch: int, tag: str, *args: Any) -> torch.Tensor:
        st = self.stats
        if torch.compiler.is_compiling():   # inside a captured graph: counted, not timed (no host clock/sync)
            st.nfe += batch
            return fn(*args)
        if st.synchronize and torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn(*args)
        if st.synchronize and torch.cuda.is_available():
            torch.cuda.synchronize()
        st.nfe += batch
        if st.record_calls:
            st.calls.append(DenoiserCall(batch, time.perf_counter() - t0, tag))
        return out

    def _check(self, z: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        if not isinstance(z, torch.Tensor) or z.ndim < 2:
            raise ValueError("z: expected a batch tensor [B, ...]")
        t = torch.as_tensor(t, device=z.device)
        if t.ndim == 0:
            t = t.expand(z.shape[0])
        if t.shape != (z.shape[0],):
            raise ValueError(f"t: expected shape [{z.shape[0]}] (or a scalar), got {tuple(t.shape)}")
        if t.dtype.is_floating_point:
            raise TypeError("t: expected integer timesteps")
        return t

    def eps(self, z: torch.Tensor, t: torch.Tensor | int, cond: Cond = None, *, tag: str = "") -> torch.Tensor:
        """eps_hat(z, t, cond): one batched evaluation, counted."""
        t = self._check(z, t)
        return self._timed(self._eps, z.shape[0], tag, z, t, cond)

    def eps_pair(self, z: torch.Tensor, t: torch.Tensor | int, cond: Cond, uncond: Cond, *,
                 tag: str = "") -> tuple[torch.Tensor, torch.Tensor]:
        """(eps_c, eps_u) from ONE batched call of size 2B (cond first, as threestudio)."""
        t = self._check(z, t)
        both = self._timed(self._eps, 2 * z.shape[0], tag, torch.cat([z, z]), torch.cat([t, t]),
                           self.cat_cond([cond, uncond]))
        return both.chunk(2)

    def denoise_ve(self, x: torch.Tensor, s: torch.Tensor | float, cond: Cond = None, *,
                   tag: str = "") -> torch.Tensor:
        """EDM/VE form D(x; s) (continuous s > 0), counted."""
        s = torch.as_tensor(s, dtype=x.dtype, device=x.device)
        if s.ndim == 0:
            s = s.expand(x.shape[0])
        checks.require(s, lambda v: ~(v > 0), "s: noise level must be positive")
        return self._timed(self._denoise_ve, x.shape[0], tag, x, s, cond)

    def denoise_ve_pair(self, x: torch.Tensor, s: torch.Tensor | float, cond: Cond, uncond: Cond, *,
                        tag: str = "") -> tuple[torch.Tensor, torch.Tensor]:
        """(D_c, D_u) in VE form from one batched call of size 2B."""
        s = torch.as_tensor(s, dtype=x.dtype, device=x.device)
        if s.ndim == 0:
            s = s.expand(x.shape[0])
        both = self._timed(self._denoise_ve, 2 * x.shape[0], tag, torch.cat([x, x]), torch.cat([s, s]),
                           self.cat_cond([cond, uncond]))
        return both.chunk(2)
