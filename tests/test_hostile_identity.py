"""Run identity on --resume (issue 17 item 3): the model is compared by resolved path AND content hash (so `sd`
and `sd/` are the same run, a different model behind the same path is not), and so are the dtype and every
setting that changes results; settings that do not (snapshot cadence, progress) may change."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_image_pipeline import _cfg, standin_factory

from msdfast.denoisers.sd import load_stable_diffusion
from msdfast.errors import UserInputError
from msdfast.pipelines.image import distill_image
from msdfast.testing.tiny_sd import make_tiny_sd, tiny_sd_path


@pytest.fixture()
def model(root: Path, tmp_path: Path) -> Path:  # noqa: ANN001
    m = tmp_path / "sd"
    shutil.copytree(tiny_sd_path(root=root), m)
    return m


def _part(model: Path, out: Path, **kw) -> None:  # noqa: ANN003
    den = load_stable_diffusion(model, cache_dir=False)
    distill_image(_cfg(out, model=str(model), **kw), denoiser=den, estimator_factory=standin_factory, stop_after=2)


def _resume(model: str | Path, out: Path, **kw):  # noqa: ANN003, ANN202
    den = load_stable_diffusion(model, cache_dir=False, **{k: kw.pop(k) for k in ("dtype",) if k in kw})
    return distill_image(_cfg(out, model=str(model), **kw), denoiser=den, estimator_factory=standin_factory,
                         resume=True)


def test_trailing_slash_is_the_same_model(model: Path, tmp_path: Path) -> None:
    _part(model, tmp_path / "run")
    assert _resume(str(model) + "/", tmp_path / "run")["finished"]


def test_a_different_model_behind_the_same_path_is_refused(model: Path, tmp_path: Path) -> None:
    _part(model, tmp_path / "run")
    shutil.rmtree(model)
    make_tiny_sd(model, seed=5)   # same path, same file names and sizes, other weights
    with pytest.raises(UserInputError, match="--model: .*content") as e:
        _resume(model, tmp_path / "run")
    assert "\n" not in str(e.value)


def test_a_moved_model_is_refused_by_path(model: Path, tmp_path: Path) -> None:
    _part(model, tmp_path / "run")
    moved = tmp_path / "moved"
    shutil.copytree(model, moved)
    with pytest.raises(UserInputError, match="--model: .*path"):
        _resume(moved, tmp_path / "run")


def test_dtype_change_is_refused(model: Path, tmp_path: Path) -> None:
    _part(model, tmp_path / "run")
    with pytest.raises(UserInputError, match="--dtype"):
        _resume(model, tmp_path / "run", dtype="bfloat16")


@pytest.mark.parametrize("kw,opt", [({"lr": 0.02}, "--lr"), ({"seed": 4}, "--seed"), ({"steps": 5}, "--steps"),
                                    ({"weight_decay": 0.0}, "--weight-decay"), ({"options": {"t_range": [0.1, 0.9]}}, "--option"),
                                    ({"unet_backend": "onnx"}, "--unet-backend"), ({"field": "pixel"}, "--field"),
                                    ({"negative_prompt": "blurry"}, "--negative-prompt")])
def test_result_changing_settings_are_refused(model: Path, tmp_path: Path, kw: dict, opt: str) -> None:
    _part(model, tmp_path / "run")
    with pytest.raises(UserInputError, match=opt):
        _resume(model, tmp_path / "run", **kw)


def test_cadence_and_progress_may_change(model: Path, tmp_path: Path) -> None:
    _part(model, tmp_path / "run")
    assert _resume(model, tmp_path / "run", snapshot_every=1, ckpt_every=1, progress=False)["finished"]
