"""One source of configuration (msdfast.config): the KEY=VALUE parser, coercion, the precedence rule
(defaults < --config < flags < per-method options; a conflict is an error), --list-options, one-line CLI errors,
and `--config RUN/config.json` replaying a run bit for bit on the CPU (tiny SD)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from msdfast.config import (add_job_arguments, coerce, config_from_args, dataclass_from_mapping, option,
                            parse_key_value, parse_key_values)
from msdfast.errors import UserInputError
from msdfast.pipelines.image import ImageConfig
from msdfast.testing.tiny_sd import tiny_sd_path

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------- parser and coercion
@pytest.mark.parametrize("text, key, value", [("chains=4", "chains", 4), ("bandwidth=0.05", "bandwidth", 0.05),
                                               ("solver=stable", "solver", "stable"), ('solver="naive"', "solver", "naive"),
                                               ("t_range=[0.1, 0.9]", "t_range", [0.1, 0.9]), ("clip=null", "clip", None),
                                               ("shared_seed=true", "shared_seed", True), ("x=a=b", "x", "a=b")])
def test_key_value_parser(text: str, key: str, value: Any) -> None:
    assert parse_key_value(text, "--option") == (key, value)


def test_key_value_errors_name_the_flag() -> None:
    with pytest.raises(UserInputError, match=r"^--msd: expected KEY=VALUE, got 'chains'$"):
        parse_key_value("chains", "--msd")
    with pytest.raises(UserInputError, match="--option chains: given twice"):
        parse_key_values(["chains=2", "chains=3"], "--option")


@pytest.mark.parametrize("value, tp, expected", [("3", int, 3), (3.0, int, 3), ("1e-3", float, 1e-3), (2, float, 2.0),
                                                  ([1, 2], tuple[float, float], (1.0, 2.0)), (None, float | None, None),
                                                  ("false", bool, False), ({"a": 1}, dict[str, Any], {"a": 1})])
def test_coerce(value: Any, tp: Any, expected: Any) -> None:
    out = coerce(value, tp, "x")
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize("value, tp, msg", [(2.7, int, "chains: expected an integer, got 2.7"),
                                             (True, int, "expected an integer"),
                                             ("nan", float, "chains: must be finite, got nan"),
                                             (math.inf, float, "must be finite"), ("abc", float, "expected a number"),
                                             ([1.0], tuple[float, float], "expected 2 values"),
                                             (3, str, "expected a string")])
def test_coerce_rejects_without_repair(value: Any, tp: Any, msg: str) -> None:
    with pytest.raises(UserInputError, match=msg):
        coerce(value, tp, "chains")


@dataclasses.dataclass
class _Job:
    name: str = option(help="required name")
    steps: int = option(10, help="steps")
    scale: float = option(7.5, help="a scale")
    kind: str = option("a", choices=("a", "b"), help="kind")
    options: dict[str, Any] = option(default_factory=dict, flag="--option", help="per-method options")


def _resolve(argv: list[str]) -> _Job:
    p = argparse.ArgumentParser()
    add_job_arguments(p, _Job, required=("name",))
    return config_from_args(p.parse_args(argv), _Job, promoted=("scale",))


def test_dataclass_from_mapping_names_source_and_key() -> None:
    assert dataclass_from_mapping(_Job, {"name": "x", "steps": "3"}, "guidance") == _Job("x", 3)
    with pytest.raises(UserInputError, match=r"guidance: unknown key 'stpes' \(valid: .*steps"):
        dataclass_from_mapping(_Job, {"name": "x", "stpes": 3}, "guidance")
    with pytest.raises(UserInputError, match="guidance: steps: expected an integer"):
        dataclass_from_mapping(_Job, {"name": "x", "steps": 2.5}, "guidance")
    with pytest.raises(UserInputError, match="guidance: kind: expected one of"):
        dataclass_from_mapping(_Job, {"name": "x", "kind": "c"}, "guidance")
    with pytest.raises(UserInputError, match="guidance: missing required key 'name'"):
        dataclass_from_mapping(_Job, {}, "guidance")


# ---------------------------------------------------------------------- precedence
def test_precedence_file_then_flags_then_options(tmp_path: Path) -> None:
    f = tmp_path / "job.yaml"
    f.write_text("name: from-file\nsteps: 5\nscale: 3.0\noptions: {chains: 2, steps_inner: 4}\n")
    cfg = _resolve(["--config", str(f)])
    assert (cfg.name, cfg.steps, cfg.scale, cfg.options) == ("from-file", 5, 3.0, {"chains": 2, "steps_inner": 4})
    cfg = _resolve(["--config", str(f), "--steps", "7", "--option", "chains=8"])   # flags beat the file, key-wise
    assert (cfg.steps, cfg.options) == (7, {"chains": 8, "steps_inner": 4})
    cfg = _resolve(["--config", str(f), "--option", "scale=2.5"])                  # a per-method option sets the field
    assert cfg.scale == 2.5 and "scale" not in cfg.options


def test_option_and_flag_for_one_setting_is_an_error(tmp_path: Path) -> None:
    """issue 11 item 5: --option guidance_scale=... and --guidance-scale cannot both silently apply."""
    with pytest.raises(UserInputError, match=r"--option scale=2.0 conflicts with scale=4.0"):
        _resolve(["--name", "x", "--scale", "4", "--option", "scale=2"])
    f = tmp_path / "job.json"
    f.write_text(json.dumps({"name": "x", "scale": 4, "options": {"scale": 2}}))
    with pytest.raises(UserInputError, match=r"job.json: options: scale=2.0 conflicts with scale=4"):
        _resolve(["--config", str(f)])


def test_flag_beats_the_files_per_method_option(tmp_path: Path) -> None:
    f = tmp_path / "job.json"
    f.write_text(json.dumps({"name": "x", "options": {"scale": 2}}))
    cfg = _resolve(["--config", str(f), "--scale", "4"])   # the command line is above the file, whatever the form
    assert cfg.scale == 4.0 and cfg.options == {}


def test_missing_required_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match=r"^--name: required"):
        _resolve([])
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x",')
    with pytest.raises(UserInputError, match=r"bad.json: not valid JSON \(line 1"):
        _resolve(["--config", str(bad)])
    with pytest.raises(UserInputError, match=r"nope.yaml: no such file"):
        _resolve(["--config", str(tmp_path / "nope.yaml")])
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(UserInputError, match="list.yaml: expected a mapping"):
        _resolve(["--config", str(tmp_path / "list.yaml")])


def test_image_config_promotes_guidance_options(tmp_path: Path) -> None:
    from msdfast.pipelines.common import add_distill_arguments, distill_config_from_args

    p = argparse.ArgumentParser()
    add_distill_arguments(p, ImageConfig)
    m = str(tmp_path)   # a folder (the model is not loaded here)
    args = p.parse_args(["--model", m, "--prompt", "p", "--option", "guidance_scale=3", "--option", "chains=2"])
    cfg = distill_config_from_args(args, ImageConfig)
    assert cfg.guidance_scale == 3.0 and cfg.options == {"chains": 2}
    with pytest.raises(UserInputError, match="--option guidance_scale=3.0 conflicts with guidance_scale=7.5"):
        distill_config_from_args(p.parse_args(["--model", m, "--prompt", "p", "--guidance-scale", "7.5",
                                               "--option", "guidance_scale=3"]), ImageConfig)
    with pytest.raises(UserInputError, match=r"--option chainz: not an option of msd \(valid: .*chains.*--list-options msd"):
        distill_config_from_args(p.parse_args(["--model", m, "--prompt", "p", "--option", "chainz=2"]),
                                 ImageConfig)


# ---------------------------------------------------------------------- the command line (subprocess)
def _msdfast(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "msdfast", *argv], capture_output=True, text=True, cwd=cwd,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1",
                               "MSDFAST_CACHE": str(cwd or REPO / ".cache-test")}, timeout=300)


def test_list_options_prints_type_default_and_doc_without_a_model() -> None:
    r = _msdfast("image", "--list-options", "msd")
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.split()[:1] == ["chains"])
    assert "int" in line and "(default: 1)" in line
    assert "product samples" in r.stdout                      # the doc of chains
    assert "guidance_scale" in r.stdout and "(default: 7.5)" in r.stdout   # the job's default, not the estimator's


CLI_ERRORS = [
    (["--steps", "abc"], "--steps"),
    (["--seed", str(2**70)], "seed"),
    (["--option", "chainz=2"], "--option chainz"),
    (["--option", "chains=2.7"], "--option chains"),
    (["--lr", "inf"], "--lr"),
    (["--guidance-scale", "5", "--option", "guidance_scale=3"], "guidance_scale"),
    (["--config", "missing.json"], "missing.json"),
    (["--method", "foo"], "--method"),
]


@pytest.mark.parametrize("extra, named", CLI_ERRORS, ids=[c[1] for c in CLI_ERRORS])
def test_user_errors_are_one_line_naming_the_argument(tmp_path: Path, extra: list[str], named: str) -> None:
    from msdfast.cli import main

    argv = ["image", "--model", str(tmp_path / "no-model"), "--prompt", "p", "--out", str(tmp_path / "run"), *extra]
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(argv)
    lines = err.getvalue().strip().splitlines()
    assert rc == 2 and len(lines) == 1 and named in lines[0], lines
    assert lines[0].startswith("msdfast image: error: ")
    assert not (tmp_path / "run").exists()      # checked before anything is written or loaded


def test_one_line_error_in_a_subprocess_and_traceback_with_debug(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    r = _msdfast("image", "--config", str(bad), cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "bad.json: not valid JSON" in r.stderr and "Traceback" not in r.stderr
    r = _msdfast("image", "--config", str(bad), "--debug", cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" in r.stderr and "UserInputError" in r.stderr


# ---------------------------------------------------------------------- run folder and replay
def _image_argv(model: Path, out: Path, *extra: str) -> list[str]:
    return ["image", "--model", str(model), "--prompt", "a red apple", "--method", "msd", "--steps", "3",
            "--out", str(out), "--no-progress", "--ckpt-every", "0", "--snapshot-every", "1",
            "--option", "chains=2", "--option", "steps=2", "--option", "bandwidth_schedule=constant",
            "--seed", "5", "--lr", "0.03", *extra]


def test_config_json_replays_the_run_bit_for_bit(tmp_path: Path, den, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("MSDFAST_CACHE", str(tmp_path / "cache"))
    from msdfast.cli import main

    model = tiny_sd_path(root=tmp_path.parent)
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(_image_argv(model, a, "--psr-k", "0.9", "--field", "pixel", "--resolution", "32")) == 0
    cfg = json.loads((a / "config.json").read_text())
    run = cfg["run"]
    assert run["model_path"] == str(model.resolve()) and len(run["model_hash"]) == 64
    assert run["torch"] == torch.__version__ and {"diffusers", "transformers", "msdfast", "commit"} <= set(run)
    assert run["estimator_options"]["chains"] == 2 and run["estimator_options"]["solver"] == "stable"
    assert run["estimator_options"]["guidance_scale"] == 7.5 and run["estimator_options"]["psr_k"] == 0.9
    assert set(run["backends"]) >= {"ddim_step", "chain_mean_shift"}
    assert main(["image", "--config", str(a / "config.json"), "--out", str(b)]) == 0
    assert (a / "final.png").read_bytes() == (b / "final.png").read_bytes()
    la = [json.loads(x) for x in (a / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (b / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in la] == [0, 1, 2]
    assert [r["loss"] for r in la] == [r["loss"] for r in lb] and [r["grad_norm"] for r in la] == [
        r["grad_norm"] for r in lb]
    cb = json.loads((b / "config.json").read_text())
    assert {k: v for k, v in cfg.items() if k not in ("out", "run")} == {k: v for k, v in cb.items()
                                                                          if k not in ("out", "run")}


def test_metrics_jsonl_continues_on_resume(tmp_path: Path, den) -> None:  # noqa: ANN001
    from msdfast.pipelines.image import distill_image

    from test_image_pipeline import standin_factory

    cfg = dict(model="unused", prompt="a red apple", method="sds", steps=4, seed=3, ckpt_every=1,
               snapshot_every=2, progress=False)
    distill_image(ImageConfig(out=str(tmp_path), **cfg), denoiser=den, estimator_factory=standin_factory,
                  stop_after=2)
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [0, 1]
    distill_image(ImageConfig(out=str(tmp_path), **cfg), denoiser=den, estimator_factory=standin_factory,
                  resume=True)
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2, 3]
    from PIL import Image
    strip = Image.open(tmp_path / "progress.png")
    assert strip.height > 128      # a label band above the snapshots (steps 1, 2, 4)


# ---------------------------------------------------------------------- the toy's rows (issue 11 item 5)
def _toy_plan(*argv: str):  # noqa: ANN202
    from msdfast.toy.study import add_toy_arguments, plan_from_args

    p = argparse.ArgumentParser()
    add_toy_arguments(p)
    return plan_from_args(p.parse_args(list(argv)))


def test_toy_msd_flag_never_rewrites_a_rows_fixed_settings() -> None:
    from msdfast.toy.protocol import LAMBDA_0, METHOD_SPECS

    plan = _toy_plan("--msd", "bandwidth=0.1", "chains=3")
    opts = {m: plan.cfg.options_for(METHOD_SPECS[m]) for m in plan.methods if METHOD_SPECS[m].estimator == "msd"}
    assert opts["msd-tweedie-0.05"]["bandwidth"] == 0.05          # the row IS lambda_0 = 0.05: kept
    assert opts["msd-paper"]["bandwidth"] == LAMBDA_0 and opts["msd-paper"]["steps"] == 32   # the paper's reading
    assert opts["msd-tweedie"]["bandwidth"] == 0.1 and opts["msd-sd-inversion"]["bandwidth"] == 0.1
    assert all(o["chains"] == 3 for o in opts.values())           # the budget is the study's, every row gets it
    assert opts["msd-tweedie-0.05"]["solver"] == "tweedie"
    # naming the row changes it: per-row options beat the row's own settings
    plan = _toy_plan("--msd", "bandwidth=0.1", "--option", "msd-tweedie-0.05.bandwidth=0.2")
    assert plan.cfg.options_for(METHOD_SPECS["msd-tweedie-0.05"])["bandwidth"] == 0.2


@pytest.mark.parametrize("argv, msg", [
    (["--msd", "solver=naive"], "--msd solver: every selected MSD row fixes solver"),
    (["--msd", "guidance_scale=3"], "guidance is the column's"),
    (["--option", "sds.guidance_scale=3"], "guidance is the column's"),
    (["--msd", "chainz=2"], "--msd chainz: not an option of msd"),
    (["--option", "sdi.inversion_steps=2.5"], "--option sdi.inversion_steps: expected an integer"),
    (["--option", "nosuch.steps=3"], "--option nosuch.steps: expected ROW.KEY=VALUE"),
])
def test_toy_option_errors(argv: list[str], msg: str) -> None:
    with pytest.raises(UserInputError, match=msg):
        _toy_plan(*argv)


def test_toy_config_file_and_flags(tmp_path: Path) -> None:
    f = tmp_path / "toy.yaml"
    f.write_text("steps: 20\nmethods: [sds, msd-paper]\nmsd: {chains: 2}\nefficiency: false\n")
    plan = _toy_plan("--config", str(f), "--steps", "30")
    assert plan.cfg.steps == 30 and plan.methods == ["sds", "msd-paper"] and not plan.efficiency
    assert plan.cfg.msd_options == {"chains": 2} and plan.settings["steps"] == 30
    f.write_text("methods: [sds, nosuch]\n")
    with pytest.raises(UserInputError, match="toy.yaml: methods: expected one of"):
        _toy_plan("--config", str(f))


def _one_line_error(argv: list[str]) -> str:
    import contextlib
    import io

    from msdfast.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(argv)
    lines = [ln for ln in err.getvalue().splitlines() if ln.strip() and "Loading weights" not in ln]
    assert rc == 2 and len(lines) == 1, err.getvalue()
    return lines[0]


def test_every_command_reports_user_errors_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bench.json"
    bad.write_text('{"benchmarks": [{"name": 1}]}')
    cases = [
        (["bench", "kernels", "--from-json", str(bad)], "bench.json: not a msdfast bench result"),
        (["bench", "kernels", "--from-json", str(tmp_path / "none.json")], "none.json: no such file"),
        (["demo", "--shape", "a,b"], "--shape"),
        (["profile", "--method", "msd", "--toy", "tree", "--option", "chains=x"], "--option chains"),
        (["profile", "--method", "msd", "--toy", "tree", "--seed", str(2**70)], "--seed"),
        (["toy", "--msd", "solver=naive"], "--msd solver"),
        (["toy", "--threads", "0"], "--threads"),
        (["toy", "--seeds", str(2**70)], "--seeds"),
        (["toy", "train", "nosuch"], "MODEL 'nosuch'"),
        (["toy", "train", "tree_A", "--iterations", "0"], "--iterations"),
        (["3d", "--model", str(tmp_path), "--prompt", "p", "--elevation-range", "10", "0"], "elevation_range"),
        (["3d", "--model", str(tmp_path), "--prompt", "p", "--blob-scale", "nan"], "--blob-scale"),
        (["image", "--model", str(tmp_path), "--prompt", "\udcff\udcfe"], "prompt: not valid UTF-8"),
        (["nosuch"], "invalid choice"),
        (["digits", "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "dg")], "nowhere"),
    ]
    for argv, named in cases:
        line = _one_line_error(argv)
        assert named in line and "error:" in line, (argv, line)


def test_damaged_model_folder_is_one_line_naming_it(tmp_path: Path, den) -> None:  # noqa: ANN001
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_sd_path(root=tmp_path.parent), model)
    (model / "tokenizer" / "vocab.json").write_text("")
    line = _one_line_error(["image", "--model", str(model), "--prompt", "p", "--steps", "1", "--out",
                            str(tmp_path / "run")])
    assert f"--model {model}: cannot load the model" in line
    line = _one_line_error(["image", "--model", str(model / "unet" / "config.json"), "--prompt", "p"])
    assert "not a folder" in line and "config=" not in line    # never suggests an option the CLI lacks


def test_toy_config_json_replays_the_settings(tmp_path: Path) -> None:
    plan = _toy_plan("--msd", "chains=2", "--steps", "12", "--methods", "sds", "msd-paper", "--no-landscape",
                     "--option", "msd-tweedie-0.05.bandwidth=0.2")
    f = tmp_path / "config.json"   # what run_study writes: the settings and, under "run", the provenance
    f.write_text(json.dumps({**plan.settings, "run": {"job": "toy"}}))
    again = _toy_plan("--config", str(f))
    assert again.cfg == plan.cfg and again.methods == plan.methods and again.landscape is False


def test_log_lines_without_a_terminal(tmp_path: Path, den, caplog: pytest.LogCaptureFixture) -> None:  # noqa: ANN001
    """stdout is not a terminal under pytest: the bar becomes `msdfast.run` log lines (step, loss, NFE, ETA)."""
    import logging

    from msdfast.pipelines.image import distill_image
    from test_image_pipeline import standin_factory

    with caplog.at_level(logging.INFO, logger="msdfast.run"):
        distill_image(ImageConfig(model="unused", prompt="p", method="sds", steps=20, out=str(tmp_path),
                                  ckpt_every=0, snapshot_every=0, field="latent", progress=True),
                      denoiser=den, estimator_factory=standin_factory)
    lines = [r.getMessage() for r in caplog.records if r.name == "msdfast.run"]
    steps = [int(m.split("step ")[1].split("/")[0]) for m in lines]
    assert steps == [1, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20]   # first, every 10%, last
    assert "loss" in lines[-1] and "nfe 2" in lines[-1] and "s left" in lines[-1]


def test_threestudio_estimator_block_checked_before_the_model_loads() -> None:
    from msdfast.adapters.threestudio import translate_config

    with pytest.raises(UserInputError, match=r"guidance.estimator.chainz: not an option of msd"):
        translate_config({"method": "msd", "estimator": {"chainz": 2}})
    with pytest.raises(UserInputError, match=r"guidance.estimator.chains: expected an integer, got 2.5"):
        translate_config({"method": "msd", "estimator": {"chains": 2.5}})
    assert translate_config({"method": "msd", "estimator": {"chains": "4"}})["estimator"]["chains"] == 4


def test_3d_config_json_replays_the_run_bit_for_bit(tmp_path: Path, den, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """Tuples (camera ranges), the hash-grid dict and bools go through config.json and back unchanged."""
    monkeypatch.setenv("MSDFAST_CACHE", str(tmp_path / "cache"))
    from msdfast.cli import main

    model = tiny_sd_path(root=tmp_path.parent)
    a, b = tmp_path / "a", tmp_path / "b"
    argv = ["3d", "--model", str(model), "--prompt", "a red apple", "--method", "sds", "--steps", "2",
            "--out", str(a), "--no-progress", "--ckpt-every", "0", "--snapshot-every", "1", "--render-size", "16",
            "--n-samples", "8", "--hidden", "16", "--grid", "n_levels=4", "--grid", "log2_hashmap_size=12",
            "--elevation-range", "0", "30", "--batch-size", "2", "--no-view-dependent", "--seed", "7"]
    assert main(argv) == 0
    cfg = json.loads((a / "config.json").read_text())
    assert cfg["elevation_range"] == [0.0, 30.0] and cfg["grid"] == {"n_levels": 4, "log2_hashmap_size": 12}
    assert cfg["view_dependent"] is False
    assert main(["3d", "--config", str(a / "config.json"), "--out", str(b)]) == 0
    assert (a / "final.png").read_bytes() == (b / "final.png").read_bytes()
    la, lb = ((d / "metrics.jsonl").read_text().splitlines() for d in (a, b))
    strip = lambda ls: [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in ls]  # noqa: E731
    assert strip(la) == strip(lb) and "azimuth" in json.loads(la[0])


@pytest.mark.parametrize("method, opt, msg", [("msd", "chains=0", "chains: must be >= 1"),
                                              ("msd", "steps=5000", "steps: must be in [1, 1000]"),
                                              ("sds", "weighting=bar", "weighting: expected one of"),
                                              ("sdi", "eta=3", "eta: must be in [0, 1]"),
                                              ("vsd", "phi_lr=-1", "phi_lr: must be positive")])
def test_option_values_checked_before_the_model_loads(tmp_path: Path, den, method: str, opt: str, msg: str,  # noqa: ANN001
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """On a stand-in with the model's schedule only: the loader is never called, no run folder is made."""
    import msdfast.denoisers.sd as sd

    def no_load(*a: Any, **k: Any) -> Any:
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(sd, "load_stable_diffusion", no_load)
    out = tmp_path / "run"
    line = _one_line_error(["image", "--model", str(tiny_sd_path(root=tmp_path.parent)), "--prompt", "p",
                            "--method", method, "--option", opt, "--out", str(out)])
    assert msg in line and not out.exists()
