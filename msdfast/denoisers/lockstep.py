"""Lockstep batching: K independent runs share ONE denoiser and every solver step makes ONE evaluation for all
of them (x chains x CFG x views).

Each run keeps its own code path -- the job's run function, its loop, checkpoints and RNG streams -- and runs in
its own thread with its own `BatchMember`, a Denoiser view of the shared model. A member's evaluation is not
made at once: it waits until every member of the batcher is waiting for one, then the requests are concatenated
along the batch dimension (z, t or s, conditions; one call per group of compatible shapes) and evaluated in ONE
call of the shared denoiser by the serving thread (`LockstepBatcher.serve`, the caller's: the thread that loaded
the model), and each run gets its slice back. This is dynamic batching with a barrier.

What a run computes does not depend on the others:
  * its noise comes from its own torch.Generator (the pipelines' per-run stream), never from a shared one;
  * its NFE is counted on its member's `stats` (the shared denoiser's count is the sum);
  * code that draws from torch's GLOBAL stream (the pipelines seed it to initialise a field's MLP) runs before a
    run's first evaluation; `BatchMember.serialized_setup()` makes those setups take turns, so no run seeds or
    draws the global stream while another one does.
So a run's result equals the run made alone up to the denoiser's own dependence on the batch size: the float
round-off of matmuls blocked for another batch (about 1e-6 relative in a float32 UNet; nothing for a
batch-invariant model).

Determinism: an evaluation fires only when every member is waiting, and it takes exactly one request from each
member, in member order; so the n-th batched evaluation holds the n-th request of every member still joined.
Which runs share a call, and in which order, never depends on thread timing: the same sweep gives the same bits.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from .base import Cond, Denoiser

__all__ = ["LockstepBatcher", "BatchMember"]

# The public calls a member inherits from Denoiser; a shared denoiser that overrides one of them routes some
# evaluations around `_eps` / `_denoise_ve`, which the member could not batch.
_PUBLIC_CALLS = ("eps", "eps_pair", "denoise_ve", "denoise_ve_pair")


@dataclass
class _Request:
    member: int
    kind: str                      # "eps" (z, t) or "ve" (x, s)
    z: torch.Tensor
    t: torch.Tensor
    cond: Cond
    grad: bool                     # the submitting thread's grad mode (thread-local in torch)
    result: torch.Tensor | None = None
    error: BaseException | None = None
    done: bool = False

    def key(self) -> tuple:
        """Requests with equal keys are concatenated into one evaluation."""
        c = None if self.cond is None else (tuple(self.cond.shape[1:]), self.cond.dtype, self.cond.device)
        return (self.kind, tuple(self.z.shape[1:]), self.z.dtype, self.z.device, self.t.dtype, c, self.grad)


class LockstepBatcher:
    """Gathers the evaluations of several runs' `BatchMember`s into one call of `denoiser` (module doc).

    `calls` counts the batched evaluations made, `batch_sizes` their sizes (for tests and benchmarks).
    """

    def __init__(self, denoiser: Denoiser) -> None:
        if not isinstance(denoiser, Denoiser):
            raise TypeError(f"denoiser: expected a msdfast Denoiser, got {type(denoiser).__name__}")
        for name in _PUBLIC_CALLS:
            if getattr(type(denoiser), name) is not getattr(Denoiser, name):
                raise TypeError(f"denoiser: {type(denoiser).__name__} overrides Denoiser.{name}, so its evaluations "
                                "cannot be batched across runs")
        self.denoiser = denoiser
        self.calls = 0
        self.batch_sizes: list[int] = []
        self._cv = threading.Condition()
        self._members: list[int] = []
        self._pending: dict[int, _Request] = {}
        self._next_id = 0
        self._setup = threading.Lock()

    def join(self) -> "BatchMember":
        """A new member; from now on no evaluation fires until it waits for one too, or leaves."""
        with self._cv:
            mid = self._next_id
            self._next_id += 1
            self._members.append(mid)
        return BatchMember(self, mid)

    # ------------------------------------------------------------------ member side
    def _leave(self, mid: int) -> None:
        with self._cv:
            if mid in self._members:
                self._members.remove(mid)
            self._cv.notify_all()   # the server may now have a full round, or no members left

    def _submit(self, mid: int, kind: str, z: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        req = _Request(mid, kind, z, t, cond, torch.is_grad_enabled())
        with self._cv:
            if mid not in self._members:
                raise RuntimeError("BatchMember: evaluation after leave()")
            self._pending[mid] = req
            self._cv.notify_all()
            while not req.done:
                self._cv.wait()
        if req.error is not None:
            raise req.error
        assert req.result is not None
        return req.result

    def _take_if_ready(self) -> list[_Request] | None:
        """Under the lock: every member's request, in member order, once every member waits for one."""
        if not self._pending or len(self._pending) < len(self._members):
            return None
        return [self._pending.pop(m) for m in self._members]

    # ------------------------------------------------------------------ the batched evaluation
    def serve(self) -> None:
        """Make the batched evaluations, in the calling thread, until every member has left.

        The thread that loaded the model serves (the runner's main thread): on the CPU, torch's intra-op
        parallel regions opened from a secondary Python thread cost ~3x more for a small UNet than from the main
        thread (measured: digits UNet at batch 2, 2 threads, 6-10 ms from the main thread, 22-25 ms from another
        one); on CUDA the loading thread's device and stream are the ones set up.
        """
        while True:
            with self._cv:
                batch = self._take_if_ready()
                while batch is None and self._members:
                    self._cv.wait(timeout=0.5)   # bounded, so Ctrl-C reaches a serving main thread
                    batch = self._take_if_ready()
            if batch is None:
                return
            self._evaluate(batch)

    def _evaluate(self, batch: list[_Request]) -> None:
        groups: dict[tuple, list[_Request]] = {}
        for r in batch:
            groups.setdefault(r.key(), []).append(r)
        den = self.denoiser
        for reqs in groups.values():
            try:
                z = torch.cat([r.z for r in reqs]) if len(reqs) > 1 else reqs[0].z
                t = torch.cat([r.t for r in reqs]) if len(reqs) > 1 else reqs[0].t
                cond = den.cat_cond([r.cond for r in reqs]) if len(reqs) > 1 else reqs[0].cond
                fn = den._eps if reqs[0].kind == "eps" else den._denoise_ve
                with torch.set_grad_enabled(reqs[0].grad):
                    out = den._timed(fn, z.shape[0], "lockstep", z, t, cond)
                self.calls += 1
                self.batch_sizes.append(int(z.shape[0]))
                for r, part in zip(reqs, out.split([r.z.shape[0] for r in reqs])):
                    r.result = part
            except BaseException as e:  # noqa: BLE001 -- handed to every run of the group, raised in its thread
                for r in reqs:
                    r.error = e
        with self._cv:
            for r in batch:
                r.done = True
            self._cv.notify_all()


class BatchMember(Denoiser):
    """One run's view of a LockstepBatcher's shared denoiser: its evaluations are batched with the other
    members' (module doc), its NFE counted on its own `stats`; every other attribute (schedule, text encoder,
    VAE, dtype, model hash, ...) is the shared denoiser's."""

    def __init__(self, batcher: LockstepBatcher, member_id: int) -> None:
        super().__init__(batcher.denoiser.schedule)
        self._batcher = batcher
        self._member_id = member_id
        self._in_setup = False

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "_batcher":
                raise
            return getattr(self._batcher.denoiser, name)

    def _eps(self, z: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        self._end_setup()
        return self._batcher._submit(self._member_id, "eps", z, t, cond)

    def _denoise_ve(self, x: torch.Tensor, s: torch.Tensor, cond: Cond) -> torch.Tensor:
        self._end_setup()
        return self._batcher._submit(self._member_id, "ve", x, s, cond)

    @contextlib.contextmanager
    def serialized_setup(self) -> Iterator[None]:
        """Run a run's start (up to its first evaluation, or its end) while no other member is in its start:
        the starts may use torch's global RNG (module doc)."""
        self._batcher._setup.acquire()
        self._in_setup = True
        try:
            yield
        finally:
            self._end_setup()

    def _end_setup(self) -> None:
        if self._in_setup:
            self._in_setup = False
            self._batcher._setup.release()

    def leave(self) -> None:
        """This member makes no more evaluations (its runs are done, or failed)."""
        self._end_setup()
        self._batcher._leave(self._member_id)
