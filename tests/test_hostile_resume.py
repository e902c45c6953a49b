"""Resume state of the learning estimators (issue 17 item 5), through the API: VSD's learned network and
optimiser survive a --resume of a finished run, the global RNG state saved after a mid-run resume equals the
uninterrupted run's, and DSD spends the same NFE resumed or not (its seed paths are checkpointed)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_image_pipeline import _cfg

from msdfast.checkpoint import load_checkpoint
from msdfast.pipelines.image import distill_image

OPTIONS = {"vsd": {}, "dsd": {"ddim_steps": 2}}


def _run(den, out: Path, method: str, **kw):  # noqa: ANN001, ANN003, ANN202
    from msdfast.estimators import build
    cfg = _cfg(out, method=method, steps=3, ckpt_every=1, snapshot_every=3, options=OPTIONS[method])
    return distill_image(cfg, denoiser=den, estimator_factory=build, **kw)


@pytest.mark.parametrize("method", ["vsd", "dsd"])
def test_resume_matches_the_uninterrupted_run(den, tmp_path: Path, method: str) -> None:  # noqa: ANN001
    full = _run(den, tmp_path / "full", method)
    _run(den, tmp_path / "part", method, stop_after=1)
    done = _run(den, tmp_path / "part", method, resume=True)
    assert [r["nfe"] for r in done["history"]] == [r["nfe"] for r in full["history"]]   # DSD: paths not re-simulated
    assert [r["loss"] for r in done["history"]] == [r["loss"] for r in full["history"]]
    a, b = load_checkpoint(tmp_path / "full" / "checkpoint.pt"), load_checkpoint(tmp_path / "part" / "checkpoint.pt")
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"]) and torch.equal(a["rng"]["generator"], b["rng"]["generator"])
    for (k, x), y in zip(a["field"].items(), b["field"].values()):
        assert torch.equal(x, y), k


@pytest.mark.parametrize("method", ["vsd", "dsd"])
def test_resuming_a_finished_run_keeps_the_learned_state(den, tmp_path: Path, method: str) -> None:  # noqa: ANN001
    _run(den, tmp_path / "run", method)
    ck = tmp_path / "run" / "checkpoint.pt"
    before, raw = load_checkpoint(ck), ck.read_bytes()
    m = _run(den, tmp_path / "run", method, resume=True)
    assert m["finished"] and ck.read_bytes() == raw   # nothing ran: the checkpoint is not rewritten
    state = load_checkpoint(ck)["estimator"]
    if method == "vsd":
        assert "phi" in state and "optimizer" in state
    else:
        assert state["paths"] and torch.equal(state["seed"], before["estimator"]["seed"])
