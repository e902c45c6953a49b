"""Static input buffers of the solver loop (samplers.guidance.InputBuffers): the MSD loop makes no torch.cat per
denoiser call, the batched inputs equal the concatenation they replace, and changed conditions are rewritten."""
from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from estimator_helpers import GaussianDenoiser
from msdfast.estimators import build
from msdfast.samplers.guidance import InputBuffers, match_batch
from msdfast.schedule import VPSchedule


class OpCounter(TorchDispatchMode):
    """Counts every aten op dispatched inside the block (torch.cat and Tensor.repeat included)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


class AddressRecorder(GaussianDenoiser):
    """Records the storage address of every batched input z it is called with."""

    def __init__(self, *a, **kw) -> None:  # noqa: ANN002, ANN003
        super().__init__(*a, **kw)
        self.addresses: list[int] = []

    def _eps(self, z, t, cond):  # noqa: ANN001, ANN202
        self.addresses.append(z.data_ptr())
        return super()._eps(z, t, cond)


def _msd_cats(steps: int) -> tuple[int, int, set[int]]:
    """(torch.cat calls, NFE, input addresses) of one MSD estimate: stable solver, 4 chains, CFG, 2 views."""
    den = AddressRecorder(VPSchedule.stable_diffusion())
    est = build("msd", den, solver="stable", chains=4, steps=steps, guidance_scale=3.0, bandwidth=0.5,
                centers="scaled")
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    cond, uncond = torch.tensor([1, 1]), torch.tensor([0, 0])
    calls0 = den.stats.nfe
    with OpCounter() as c:
        est(x, cond, uncond, generator=torch.Generator().manual_seed(1))
    return c.ops["cat"], den.stats.nfe - calls0, set(den.addresses)


def test_the_msd_loop_makes_no_cat_per_denoiser_call() -> None:
    cats_short, nfe_short, _ = _msd_cats(steps=4)
    cats_long, nfe_long, addresses = _msd_cats(steps=12)
    assert len(addresses) == 1                # every call reads the same static input buffer
    assert nfe_long >= nfe_short + 8 * 16     # 8 more solver steps, each one CFG call of 2 x 4 chains x 2 views
    assert cats_long == cats_short            # zero torch.cat per extra denoiser call (setup cats only)


def test_gather_equals_the_concatenation_and_rewrites_changed_conditions() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, 3, generator=g)
    cond, uncond = torch.randn(2, 5, generator=g), torch.randn(1, 5, generator=g)
    extra_z, extra_c = torch.randn(2, 3, generator=g), torch.randn(2, 5, generator=g)
    parts = [(z, 7, cond), (z, 7, uncond), (extra_z, torch.tensor([3, 4]), extra_c)]
    buf = InputBuffers()
    zi, ti, ci = buf.gather(parts)
    torch.testing.assert_close(zi, torch.cat([z, z, extra_z]), rtol=0, atol=0)
    assert ti.tolist() == [7] * 12 + [3, 4] and ti.dtype == torch.long
    want = torch.cat([match_batch(cond, 6), match_batch(uncond, 6), extra_c])
    torch.testing.assert_close(ci, want, rtol=0, atol=0)
    ptrs = (zi.data_ptr(), ti.data_ptr(), ci.data_ptr())
    z2 = z + 1
    zi2, _, ci2 = buf.gather([(z2, 7, cond), (z2, 7, uncond), (extra_z, torch.tensor([3, 4]), extra_c)])
    assert (zi2.data_ptr(), ci2.data_ptr()) == ptrs[::2]        # the same buffers, written in place
    torch.testing.assert_close(zi2[:6], z2, rtol=0, atol=0)
    cond.mul_(2)                                                # in place: a new version, rewritten
    _, _, ci3 = buf.gather(parts)
    torch.testing.assert_close(ci3[:6], match_batch(cond, 6), rtol=0, atol=0)
    other = torch.randn(2, 5, generator=g)                      # another tensor: rewritten
    _, _, ci4 = buf.gather([(z, 7, other), (z, 7, uncond), (extra_z, torch.tensor([3, 4]), extra_c)])
    torch.testing.assert_close(ci4[:6], match_batch(other, 6), rtol=0, atol=0)


def test_inputs_that_record_autograd_get_fresh_tensors() -> None:
    buf = InputBuffers()
    z = torch.randn(2, 3)
    zi, _, _ = buf.gather([(z, 1, None), (z, 1, None)])
    zg = torch.randn(2, 3, requires_grad=True)
    zg_in, _, _ = buf.gather([(zg, 1, None), (zg, 1, None)])
    assert zg_in.data_ptr() != zi.data_ptr() and zg_in.requires_grad
    zg_in.sum().backward()
    torch.testing.assert_close(zg.grad, torch.full((2, 3), 2.0))
