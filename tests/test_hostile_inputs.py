"""Hostile inputs (issue 17 items 6-8): bad numbers and files through the CLI (one line naming the option or
file, exit 2, nothing run) and the API (UserInputError / ValueError naming the argument); no silent tiling of
conditions, no empty batches, no division by zero, no silent NaN gradients."""
from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import pytest
import torch
from estimator_helpers import GaussianDenoiser

from msdfast import ops
from msdfast.errors import UserInputError
from msdfast.schedule import VPSchedule
from msdfast.testing.tiny_sd import tiny_sd_path


def _cli(argv: list[str]) -> tuple[int, str]:
    """Exit code and stderr of `msdfast ARGV` (the loaders' own progress bars, transformers' "Loading weights",
    are dropped: the check is on msdfast's lines)."""
    from msdfast.cli import main
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code
    lines = [ln for ln in err.getvalue().replace("\r", "\n").splitlines() if ln.strip() and "it/s]" not in ln]
    return rc, "\n".join(lines)


@pytest.fixture(scope="module")
def model(root: Path) -> str:  # noqa: ANN001
    return str(tiny_sd_path(root=root))


# (command, extra flags, text the one-line error must contain)
CLI_CASES = [
    ("image", ["--resolution", "0"], "resolution"),
    ("image", ["--option", "chains=2.7"], "chains"),
    ("image", ["--option", "lambda_min=NaN"], "lambda_min"),
    ("image", ["--lr", "inf"], "--lr"),
    ("image", ["--guidance-scale", "inf"], "--guidance-scale"),
    ("image", ["--guidance-scale", "nan"], "--guidance-scale"),
    ("image", ["--weight-decay", "inf"], "--weight-decay"),
    ("image", ["--psr-k", "nan"], "--psr-k"),
    ("image", ["--seed", str(2 ** 70)], "seed"),
    ("image", ["--steps", "0"], "steps"),
    ("image", ["--steps", "three"], "--steps"),
    ("image", ["--method", "msd", "--option", "lambda_0=0.001", "--option", "lambda_min=0.01"], "lambda_min"),
    ("3d", ["--radius", "inf"], "--radius"),
    ("3d", ["--blob-scale", "nan"], "--blob-scale"),
    ("3d", ["--grid", "nlevels=8"], "nlevels"),
    ("3d", ["--grid", "n_levels=0"], "n_levels"),
    ("3d", ["--elevation-range", "nan", "10"], "elevation"),
    ("3d", ["--render-size", "0"], "render_size"),
]


@pytest.mark.parametrize("cmd,flags,names", CLI_CASES, ids=[" ".join(c[1])[:40] for c in CLI_CASES])
def test_cli_bad_values_are_one_line_errors(model: str, tmp_path: Path, cmd: str, flags: list, names: str) -> None:
    out = tmp_path / "run"
    rc, err = _cli([cmd, "--model", model, "--prompt", "a", "--steps", "1", "--no-progress", "--out", str(out),
                    *flags])
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and names in err, err
    assert not out.exists() or not any(out.iterdir())   # nothing was run or written


TOY_CASES = [(["--threads", "0"], "--threads"), (["--lr", "inf"], "--lr"), (["--grid", "1"], "--grid"),
             (["--steps", "0"], "steps")]


@pytest.mark.parametrize("flags,names", TOY_CASES)
def test_cli_toy_bad_values(tmp_path: Path, flags: list, names: str) -> None:
    rc, err = _cli(["toy", "--out", str(tmp_path / "t"), *flags])
    assert rc == 2 and len(err.splitlines()) == 1 and names in err, err


@pytest.mark.parametrize("content", ["{}", "", "not json", "[1, 2]"])
def test_empty_or_broken_scheduler_config_names_the_file(model: str, tmp_path: Path, content: str) -> None:
    bad = tmp_path / "sd"
    shutil.copytree(model, bad)
    f = bad / "scheduler" / "scheduler_config.json"
    f.write_text(content)
    rc, err = _cli(["image", "--model", str(bad), "--prompt", "a", "--steps", "1", "--no-progress",
                    "--out", str(tmp_path / "run")])
    assert rc == 2 and len(err.splitlines()) == 1 and "scheduler_config.json" in err, err


def test_cli_damaged_checkpoint_and_locked_folder(model: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    base = ["image", "--model", model, "--prompt", "a", "--steps", "2", "--no-progress", "--out", str(out),
            "--field", "latent", "--method", "sds", "--ckpt-every", "1"]
    assert _cli(base)[0] == 0
    rc, err = _cli(base)   # a new run on a non-empty folder
    assert rc == 2 and "--out" in err and "--overwrite" in err and len(err.splitlines()) == 1, err
    ck = out / "checkpoint.pt"
    ck.write_bytes(ck.read_bytes()[:-100])
    rc, err = _cli(base + ["--resume"])
    assert rc == 2 and str(ck) in err and len(err.splitlines()) == 1, err
    from msdfast.runlock import RunLock
    with RunLock(out):
        rc, err = _cli(base + ["--overwrite"])
    assert rc == 2 and "in use" in err and len(err.splitlines()) == 1, err
    rc, err = _cli([a if a != str(out) else str(tmp_path / "nothing") for a in base] + ["--resume"])
    assert rc == 2 and "does not exist" in err, err


# ---------------------------------------------------------------------- API: estimators
def _gauss() -> GaussianDenoiser:
    return GaussianDenoiser(VPSchedule.stable_diffusion())


@pytest.mark.parametrize("method", ["sds", "sdi", "asd", "vsd", "msd", "dsd"])
def test_condition_batch_must_match_the_latent_batch(method: str) -> None:
    from msdfast.estimators import build
    est = build(method, _gauss())
    x = torch.randn(4, 2)
    with pytest.raises(UserInputError, match="cond: batch 1 does not match x's batch 4"):
        est(x, torch.zeros(1, dtype=torch.long), torch.ones(1, dtype=torch.long), generator=torch.Generator())
    with pytest.raises(UserInputError, match="uncond: batch 2"):
        est(x, torch.zeros(4, dtype=torch.long), torch.ones(2, dtype=torch.long), generator=torch.Generator())
    with pytest.raises(UserInputError, match="empty batch"):
        est(torch.randn(0, 2), generator=torch.Generator())


class _Overflow(GaussianDenoiser):
    def _denoise_ve(self, x, s, cond):  # noqa: ANN001, ANN202
        out = super()._denoise_ve(x, s, cond)
        out[0] = float("nan")
        return out


@pytest.mark.parametrize("method", ["sds", "sdi", "asd", "msd", "dsd"])
def test_a_nan_estimate_follows_the_one_documented_rule(method: str) -> None:
    """Every estimator maps NaN in its estimate to 0 (torch.nan_to_num, estimators.base): never a NaN gradient,
    the same rule for all (MSD's chain mean shift included)."""
    from msdfast.estimators import build
    est = build(method, _Overflow(VPSchedule.stable_diffusion()))
    res = est(torch.randn(3, 2), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(res.grad).all() and torch.isfinite(res.loss)


def test_msd_naive_solver_in_fp16_is_finite_or_an_error() -> None:
    from msdfast.estimators import build
    est = build("msd", _gauss(), solver="naive")
    x = torch.randn(8, 4, 8, 8).half()
    res = est(x, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(res.grad).all() and res.grad.abs().max() > 0


# ---------------------------------------------------------------------- API: ops
@pytest.mark.parametrize("s", [float("inf"), float("nan"), 0.0, -1.0])
def test_noise_level_must_be_finite(s: float) -> None:
    x, data = torch.randn(4, 2), torch.randn(10, 2)
    with pytest.raises(ValueError, match="s: noise level must be positive and finite"):
        ops.empirical_denoiser(x, data, torch.full((4,), s))


@pytest.mark.parametrize("s", [float("inf"), float("nan"), -1.0])
def test_gmm_noise_level_must_be_finite(s: float) -> None:
    from msdfast.denoisers.gmm import GMM
    g = GMM(torch.tensor([1.0]), torch.zeros(1, 2), torch.eye(2).unsqueeze(0) * 0.1)
    with pytest.raises(ValueError, match="finite"):
        ops.gmm_score(torch.randn(3, 2), g.weights, g.means, g.covs, torch.full((3,), s))


def test_chain_mean_shift_never_divides_by_zero() -> None:
    with pytest.raises(ValueError, match="x: empty batch"):
        ops.chain_mean_shift(torch.randn(4, 2), torch.randn(0, 2))
    with pytest.raises(ValueError, match="y: shape"):
        ops.chain_mean_shift(torch.randn(0, 2), torch.randn(2, 2))


@pytest.mark.parametrize("damage", ["single-file", "utf8-prompt", "empty-vocab"])
def test_cli_model_and_prompt_errors_are_one_line(model: str, tmp_path: Path, damage: str) -> None:
    """Item 8: a single-file model (the message suggests no option the CLI lacks), a prompt that is not UTF-8,
    an empty vocab.json."""
    prompt, m = "a", model
    if damage == "single-file":
        m = str(tmp_path / "model.safetensors")
        shutil.copy(next((Path(model) / "unet").glob("*.safetensors")), m)
    elif damage == "utf8-prompt":
        prompt = "a\udcff"   # how Python hands an argv byte that is not UTF-8 to the program
    else:
        m = str(tmp_path / "sd")
        shutil.copytree(model, m)
        (Path(m) / "tokenizer" / "vocab.json").write_text("")
    rc, err = _cli(["image", "--model", m, "--prompt", prompt, "--steps", "1", "--no-progress",
                    "--out", str(tmp_path / "run")])
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert ("prompt" if damage == "utf8-prompt" else "--model") in err and "config=" not in err, err
