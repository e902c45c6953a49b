"""Lockstep batching (msdfast.denoisers.lockstep, `msdfast sweep --runs-per-batch K`): K runs make ONE denoiser
evaluation per solver step, and each run's result equals the run alone -- bit for bit when the model is
batch-invariant, within float round-off for a UNet evaluated at another batch size."""
from __future__ import annotations

import contextlib
import json
import shutil
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

from msdfast.cli import main
from msdfast.denoisers.base import Denoiser
from msdfast.denoisers.lockstep import LockstepBatcher
from msdfast.schedule import VPSchedule
from msdfast.sweep.runner import run_shard
from msdfast.sweep.spec import expand_runs, load_spec


# ---------------------------------------------------------------------- the batcher on a toy denoiser
class _Affine(Denoiser):
    """eps = z * (1 + t / 1000) + cond: per-sample, so batching cannot change a bit; records each call's batch."""

    def __init__(self) -> None:
        super().__init__(VPSchedule.stable_diffusion())
        self.batches: list[int] = []

    def _eps(self, z: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        self.batches.append(z.shape[0])
        if (t < 0).any():
            raise RuntimeError("negative t")
        out = z * (1 + t.to(z.dtype) / 1000).view(-1, 1, 1)
        return out if cond is None else out + cond


@contextlib.contextmanager
def _served(batcher: LockstepBatcher) -> Iterator[None]:
    """batcher.serve() in a helper thread for the block (the runner serves from its main thread)."""
    server = threading.Thread(target=batcher.serve, daemon=True)
    server.start()
    yield
    server.join(timeout=60)
    assert not server.is_alive(), "lockstep: the server did not end after every member left"


def _run_members(den: Denoiser, work: list[list[tuple[int, ...]]]) -> tuple[LockstepBatcher, list[Any]]:
    """Member j makes the evaluations work[j] (each a (batch, t) pair) in its own thread; returns the results."""
    batcher = LockstepBatcher(den)
    members = [batcher.join() for _ in work]
    results: list[Any] = [None] * len(work)

    def go(j: int) -> None:
        try:
            out = []
            for i, (b, t) in enumerate(work[j]):
                z = torch.full((b, 2, 3), float(10 * j + i))
                out.append((z, t, members[j].eps(z, t)))
            results[j] = out
        except Exception as e:  # noqa: BLE001 -- checked by the caller
            results[j] = e
        finally:
            members[j].leave()

    threads = [threading.Thread(target=go, args=(j,), daemon=True) for j in range(len(work))]
    with _served(batcher):
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=60)
    assert not any(th.is_alive() for th in threads), "lockstep deadlock"
    return batcher, results


def test_one_evaluation_per_round_and_each_member_gets_its_slice() -> None:
    den = _Affine()
    # 3 members, 4 / 2 / 3 evaluations of batch 1 / 2 / 3: rounds of 3, 3, 2, 1 requests
    work = [[(1, 100)] * 4, [(2, 200)] * 2, [(3, 300)] * 3]
    batcher, results = _run_members(den, work)
    assert batcher.calls == 4 and den.batches == [6, 6, 4, 1]      # member order; finished members drop out
    ref = _Affine()
    for j, out in enumerate(results):
        assert len(out) == len(work[j])
        for z, t, eps in out:
            assert torch.equal(eps, ref.eps(z, t))
    assert den.stats.nfe == 17                                       # the shared count: the sum of the members'


def test_groups_by_shape_and_errors_reach_every_member_of_the_group() -> None:
    den = _Affine()
    batcher = LockstepBatcher(den)
    a, b = batcher.join(), batcher.join()
    got: dict[str, Any] = {}

    def call(name: str, m: Any, z: torch.Tensor, t: int) -> None:
        try:
            got[name] = m.eps(z, t)
        except RuntimeError as e:
            got[name] = e
        finally:
            m.leave()

    th = [threading.Thread(target=call, args=("a", a, torch.ones(1, 2, 3), 5)),
          threading.Thread(target=call, args=("b", b, torch.ones(2, 4), 7))]   # another shape: its own call
    with _served(batcher):
        for x in th:
            x.start()
        for x in th:
            x.join(timeout=60)
    assert batcher.calls == 2 and sorted(den.batches) == [1, 2]
    assert torch.equal(got["a"], _Affine().eps(torch.ones(1, 2, 3), 5))
    assert torch.equal(got["b"], _Affine().eps(torch.ones(2, 4), 7))
    batcher, results = _run_members(_Affine(), [[(1, -1)], [(1, 3)]])   # one bad request fails its whole call
    assert all(isinstance(r, RuntimeError) and "negative t" in str(r) for r in results)


def test_member_counts_its_own_nfe_and_sees_the_shared_model() -> None:
    den = _Affine()
    den.model_hash = "abc"
    batcher = LockstepBatcher(den)
    m = batcher.join()
    assert m.model_hash == "abc" and m.schedule is den.schedule and isinstance(m, Denoiser)
    with _served(batcher):
        m.eps_pair(torch.ones(2, 2, 3), 4, None, None)                 # the only member: fires at once
        assert m.stats.nfe == 4 and den.stats.nfe == 4 and den.batches == [4]
        m.leave()

    class _Pair(_Affine):
        def eps_pair(self, *a: Any, **k: Any) -> Any:   # an evaluation around _eps: not batchable
            raise AssertionError

    with pytest.raises(TypeError, match="overrides Denoiser.eps_pair"):
        LockstepBatcher(_Pair())


# ---------------------------------------------------------------------- sweeps of tiny SD
def _per_sample(den: Any) -> Any:
    """The same model evaluated one sample at a time: batch-invariant, so batching cannot move a bit."""
    base = type(den)

    class PerSample(base):  # type: ignore[misc, valid-type]
        def _eps(self, z: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
            return torch.cat([base._eps(self, z[i:i + 1], t[i:i + 1], None if cond is None else cond[i:i + 1])
                              for i in range(z.shape[0])])

    den.__class__ = PerSample
    return den


def _sweep(tmp: Path, name: str, model: str, **kw: Any) -> list[Any]:
    d = {"job": "image", "model": model, "out": str(tmp / name), "prompts": ["a red apple", "a blue car"],
         "seeds": [0, 1], "methods": ["sds"], "settings": {"steps": 3, "resolution": 16, "ckpt_every": 1,
                                                           "snapshot_every": 0}}
    d.update(kw)
    p = tmp / f"{name}.json"
    p.write_text(json.dumps(d))
    return expand_runs(load_spec(p))


def _results(runs: list[Any]) -> dict[str, Any]:
    from msdfast.checkpoint import load_checkpoint

    out = {}
    for r in runs:
        m = json.loads((r.folder / "metrics.json").read_text())
        assert m["finished"] and not (r.folder / "run.lock").exists()
        out[r.id] = {"final": (r.folder / "final.png").read_bytes(),
                     "history": [{k: v for k, v in h.items() if k != "seconds"} for h in m["history"]],
                     "field": load_checkpoint(r.folder / "checkpoint.pt")["field"]}
    return out


def _pixels(png: bytes) -> torch.Tensor:
    import io

    import numpy as np
    from PIL import Image
    return torch.from_numpy(np.asarray(Image.open(io.BytesIO(png))).astype(np.int16))


def _assert_equal(a: dict[str, Any], b: dict[str, Any], *, rtol: float = 0.0) -> None:
    """Bit for bit (rtol 0), or: per-step loss and |g| within rtol, final images within one 8-bit level, field
    tensors within 5e-3 (Adam normalises each entry's step, so an entry whose gradient is round-off small moves by
    up to lr = 1e-2 either way; the losses and images are the tight checks)."""
    assert a.keys() == b.keys()
    for k in a:
        ha, hb = a[k]["history"], b[k]["history"]
        assert [h["nfe"] for h in ha] == [h["nfe"] for h in hb], k     # each run's NFE: counted per run
        if rtol == 0:
            assert ha == hb and a[k]["final"] == b[k]["final"], k
            for n, v in a[k]["field"].items():
                assert torch.equal(v, b[k]["field"][n]), (k, n)
            continue
        for x, y in zip(ha, hb):
            for key in ("loss", "grad_norm"):
                assert x[key] == pytest.approx(y[key], rel=rtol), (k, key)
        assert (_pixels(a[k]["final"]) - _pixels(b[k]["final"])).abs().max() <= 1, k
        for n, v in a[k]["field"].items():
            torch.testing.assert_close(v, b[k]["field"][n], rtol=0, atol=5e-3, msg=f"{k} {n}")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    from msdfast.testing.tiny_sd import tiny_sd_path
    return str(tiny_sd_path(root=tmp_path_factory.mktemp("lockstep_model")))


def _load(runs: list[Any]) -> Any:
    from msdfast.pipelines.common import load_denoiser
    return load_denoiser(runs[0].config, "cpu")


def test_batched_runs_equal_solo_runs_bit_for_bit(tmp_path: Path, model: str) -> None:
    """Every method, 2 prompts x 2 seeds, K = 1 vs K = 4 on the batch-invariant model: the same bits, each run's
    own NFE; the 4 SDS runs (same call structure) make ONE evaluation per step of 4x the solo batch."""
    methods = ["sds", "msd", "dsd", "vsd", "sdi", "asd"]
    res, dens = {}, {}
    for k in (1, 4):
        runs = _sweep(tmp_path, f"k{k}", model, methods=methods)
        dens[k] = _per_sample(_load(runs))
        run_shard("image", runs, device="cpu", denoiser=dens[k], runs_per_batch=k)
        res[k] = _results(runs)
    _assert_equal(res[1], res[4])
    assert dens[1].stats.nfe == dens[4].stats.nfe
    assert len(dens[4].stats.calls) < len(dens[1].stats.calls) / 2

    sds = {}
    for k in (1, 4):
        runs = _sweep(tmp_path, f"sds{k}", model, prompts=["a red apple", "a blue car"], seeds=[0, 1])
        dens[k] = _per_sample(_load(runs))
        run_shard("image", runs, device="cpu", denoiser=dens[k], runs_per_batch=k)
        sds[k] = _results(runs)
    _assert_equal(sds[1], sds[4])
    solo, batched = dens[1].stats.calls, dens[4].stats.calls
    assert len(batched) * 4 == len(solo) and {c.batch for c in batched} == {4 * c.batch for c in solo}


def test_batched_3d_and_resume_inside_a_batch(tmp_path: Path, model: str) -> None:
    """3D (views batched too), and a run interrupted after its first checkpoint resumed among fresh runs."""
    kw = {"job": "3d", "prompts": ["a hamburger"], "methods": ["sds", "msd"],
          "settings": {"steps": 2, "render_size": 8, "n_samples": 8, "snapshot_views": 2, "ckpt_every": 1,
                       "snapshot_every": 0, "grid": {"n_levels": 2, "log2_hashmap_size": 10}}}
    res = {}
    for k in (1, 2):
        runs = _sweep(tmp_path, f"3d{k}", model, **kw)
        run_shard("3d", runs, device="cpu", denoiser=_per_sample(_load(runs)), runs_per_batch=k)
        res[k] = _results(runs)
    _assert_equal(res[1], res[2])

    runs = _sweep(tmp_path, "img_resume", model, methods=["sds", "dsd"])
    from msdfast.pipelines.image import distill_image
    den = _per_sample(_load(runs))
    distill_image(runs[2].config, stop_after=1, denoiser=den)        # interrupted: checkpoint at step 1
    run_shard("image", runs, device="cpu", denoiser=den, runs_per_batch=4)
    ref = _sweep(tmp_path, "img_ref", model, methods=["sds", "dsd"])
    run_shard("image", ref, device="cpu", denoiser=den, runs_per_batch=1)
    _assert_equal(_results(runs), _results(ref))


def test_real_unet_batched_within_round_off_and_cli(tmp_path: Path, model: str,
                                                    capsys: pytest.CaptureFixture) -> None:
    """The tiny UNet itself (its matmuls block differently at batch 8 than at 2): equal within float32
    round-off -- far below what a wrong noise stream or a swapped slice would move (checked: seeds swapped)."""
    runs1 = _sweep(tmp_path, "solo", model, methods=["sds", "msd"], seeds=[0, 1])
    run_shard("image", runs1, device="cpu", runs_per_batch=1)
    p = tmp_path / "batched.json"
    shutil.copy(tmp_path / "solo.json", p)
    spec = json.loads(p.read_text())
    spec["out"] = str(tmp_path / "batched")
    p.write_text(json.dumps(spec))
    assert main(["sweep", str(p), "--runs-per-batch", "4"]) == 0
    assert "8 runs (8 ran)" in capsys.readouterr().out
    a, b = _results(runs1), _results(expand_runs(load_spec(p)))
    _assert_equal(a, b, rtol=1e-4)
    ids = list(a)       # the check can fail: the same prompt and method with the other seed (runs 0 and 2) fails it
    r0, r2 = runs1[0], runs1[2]
    assert (r0.seed, r2.seed) == (0, 1) and (r0.method, r0.prompt_index) == (r2.method, r2.prompt_index)
    with pytest.raises(AssertionError, match="loss|grad_norm"):
        _assert_equal({ids[0]: a[ids[0]]}, {ids[0]: a[ids[2]]}, rtol=1e-4)
    assert main(["sweep", str(p), "--runs-per-batch", "0"]) == 2
    assert "--runs-per-batch: must be >= 1, got 0" in capsys.readouterr().err


def test_a_failing_run_does_not_hang_the_batch(tmp_path: Path, model: str) -> None:
    """A run that fails mid-loop (its estimator raises at its second step) leaves the batch: the other slot's run
    finishes, no later run starts, and the failure is raised."""
    from msdfast.estimators import build

    class _FailsAtStep2:
        def __init__(self, est: Any) -> None:
            self.est, self.calls = est, 0

        def __getattr__(self, name: str) -> Any:
            return getattr(self.est, name)

        def __call__(self, *a: Any, **k: Any) -> Any:
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("boom at step 2")
            return self.est(*a, **k)

    def factory(method: str, denoiser: Any, **options: Any) -> Any:
        est = build(method, denoiser, **options)
        return _FailsAtStep2(est) if method == "dsd" else est

    runs = _sweep(tmp_path, "fail", model, methods=["sds", "dsd"], prompts=["a red apple", "a blue car"],
                  seeds=[0])                          # runs: p0 sds, p0 dsd, p1 sds, p1 dsd -> slots of 2
    with pytest.raises(RuntimeError, match="boom at step 2"):
        run_shard("image", runs, device="cpu", denoiser=_load(runs), runs_per_batch=2, estimator_factory=factory)
    finished = [json.loads((r.folder / "metrics.json").read_text())["finished"]
                if (r.folder / "metrics.json").exists() else None for r in runs]
    assert finished[0] is True                       # the other slot's run went on alone and finished
    assert not (runs[1].folder / "metrics.json").exists() or finished[1] is False
    assert not runs[3].folder.exists()               # after a failure no new run starts
    assert not any((r.folder / "run.lock").exists() for r in runs if r.folder.exists())
