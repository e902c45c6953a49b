"""`msdfast sweep`: spec validation, the run list, shards, restart safety, and torchrun (2 ranks, gloo, CPU)
giving the single-process outputs bit for bit -- also when a rank is killed mid-run (--max-restarts=1)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from msdfast.cli import main
from msdfast.errors import UserInputError
from msdfast.sweep.shard import Shard, shard_from_env, take_shard
from msdfast.sweep.spec import expand_runs, load_spec

REPO = Path(__file__).resolve().parent.parent


def _spec(tmp_path: Path, name: str = "spec.json", **kw: Any) -> Path:
    d = {"job": "image", "model": "unused", "out": str(tmp_path / "out"), "prompts": ["a red apple", "a blue car"],
         "seeds": [0, 1], "methods": ["sds", "dsd"],
         "settings": {"steps": 3, "resolution": 16, "ckpt_every": 1, "snapshot_every": 2}}
    d.update(kw)
    p = tmp_path / name
    if name.endswith(".yaml"):
        import yaml
        p.write_text(yaml.safe_dump(d))
    else:
        p.write_text(json.dumps(d))
    return p


# ---------------------------------------------------------------------- validation (no model)
@pytest.mark.parametrize("change, message", [
    ({"prompts": "a red apple"}, "prompts: expected a list"),
    ({"seeds": [0, "x"]}, "seeds[1]: expected an integer"),
    ({"seeds": [0, 0]}, "seeds: lists a value twice"),
    ({"methods": []}, "methods: must list at least one value"),
    ({"methods": ["sds", "nope"]}, "methods: 'nope' is not a method"),
    ({"job": "digits"}, "prompts: job digits is prompted by `classes` (digits 0-9), not prompts"),
    ({"job": "digits", "prompts": [], "classes": [3, 11]}, "classes: expected digits 0-9, got 11"),
    ({"job": "digits", "prompts": [], "classes": [3, 3]}, "classes: lists a value twice"),
    ({"job": "digits", "prompts": []}, "classes: must list at least one digit"),
    ({"classes": [3]}, "classes: only job digits takes classes (job image takes prompts)"),
    ({"job": "toy"}, "prompts: job toy runs the study's `columns`"),
    ({"columns": ["tree/ideal"]}, "columns: only job toy takes columns"),
    ({"job": "toy", "prompts": [], "columns": ["tree/bogus"], "methods": ["sds"], "settings": {}},
     "column: 'tree/bogus': denoiser: expected one of"),
    ({"job": "toy", "prompts": [], "columns": ["tree/ideal"], "methods": ["msd"], "settings": {}},
     "methods: 'msd' is not a method (one of ddim, sds"),
    ({"job": "toy", "prompts": [], "columns": ["tree/ideal"], "methods": ["sds"], "settings": {"grid": 0}},
     "grid: must be >= 1"),
    ({"bogus": 1}, "unknown key 'bogus'"),
    ({"settings": {"stepz": 3}}, "settings: unknown key 'stepz'"),
    ({"settings": {"steps": "many"}}, "settings: steps: expected an integer"),
    ({"settings": {"steps": 0}}, "steps: must be >= 1"),
    ({"settings": {"seed": 3}}, "settings.seed: set by the spec's `seeds` key"),
    ({"grid": {"dtype": ["float32", "float16"]}}, "grid.dtype: decides how the model loads"),
    ({"grid": {"guidance_scale": [7.5, "x"]}}, "grid: guidance_scale: expected a number"),
    ({"grid": {"guidance_scale": []}}, "grid.guidance_scale: must list at least one value"),
    ({"grid": {"options.nope": [1, 2]}}, "not an option of sds"),
    ({"method_options": {"dsd": {"nope": 1}}}, "not an option of dsd"),
    ({"method_options": {"xyz": {}}}, "method_options: 'xyz' is not a method"),
])
def test_spec_errors_name_the_key(tmp_path: Path, change: dict, message: str) -> None:
    p = _spec(tmp_path, **change)
    with pytest.raises(UserInputError, match=None) as e:
        expand_runs(load_spec(p), source=str(p))
    assert message in str(e.value), str(e.value)
    assert str(p) in str(e.value)


def test_spec_file_errors_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("job: image\nprompts: [unclosed\n")
    assert main(["sweep", str(bad), "--dry-run"]) == 2
    assert f"SPEC {bad}: not valid YAML" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "missing.json"), "--dry-run"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["sweep", str(_spec(tmp_path, grid={"model": ["a", "b"]})), "--dry-run"]) == 2
    assert "grid.model: set by the spec's `model` key" in capsys.readouterr().err


# ---------------------------------------------------------------------- the run list
def test_dry_run_lists_runs_with_stable_ids(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    p = _spec(tmp_path, name="spec.yaml", grid={"guidance_scale": [5, 7.5]}, method_options={"dsd": {"ddim_steps": 3}})
    assert main(["sweep", str(p), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split("\t") for line in lines[2:]]
    assert lines[0].startswith("# 16 runs (image)") and len(rows) == 16   # 2 prompts x 2 seeds x 2 methods x 2
    assert len({r[0] for r in rows}) == 16 and all(len(r[0]) == 12 for r in rows)
    assert all(r[2] == "new" for r in rows)
    runs = expand_runs(load_spec(p))
    assert [r.id for r in runs] == [r[0] for r in rows]
    assert [(r.prompt_index, r.seed, r.method, r.variant["guidance_scale"]) for r in runs[:4]] == [
        (0, 0, "sds", 5.0), (0, 0, "sds", 7.5), (0, 0, "dsd", 5.0), (0, 0, "dsd", 7.5)]
    assert runs[2].config.options == {"ddim_steps": 3} and runs[0].config.options == {}
    assert runs[0].config.guidance_scale == 5.0 and runs[0].config.steps == 3
    assert runs[0].folder == tmp_path / "out" / "runs" / runs[0].id and runs[0].config.out == str(runs[0].folder)
    # extending the sweep (a seed more, another output folder, another cadence) keeps every run's id
    more = expand_runs(load_spec(_spec(tmp_path, name="more.json", seeds=[0, 1, 2], out=str(tmp_path / "o2"),
                                       grid={"guidance_scale": [5, 7.5]}, method_options={"dsd": {"ddim_steps": 3}},
                                       settings={"steps": 3, "resolution": 16, "ckpt_every": 7})))
    assert {r.id for r in runs} < {r.id for r in more} and len(more) == 24
    # ...while anything that changes a result changes it
    other = expand_runs(load_spec(_spec(tmp_path, name="o.json", settings={"steps": 4, "resolution": 16})))
    assert not {r.id for r in other} & {r.id for r in more}


def test_shards_from_torchrun_and_slurm() -> None:
    assert shard_from_env({}) == Shard()
    s = shard_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (s.index, s.count, s.local_rank, s.distributed) == (3, 4, 1, True)
    s = shard_from_env({"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "5"})
    assert (s.index, s.count, s.distributed) == (2, 3, False)
    s = shard_from_env({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2", "RANK": "1", "WORLD_SIZE": "2"})
    assert (s.index, s.count, s.rank) == (3, 4, 1)
    items = list(range(11))
    shards = [take_shard(items, Shard(i, 4)) for i in range(4)]
    assert sorted(x for sh in shards for x in sh) == items and shards[1] == [1, 5, 9]
    for env, msg in [({"SLURM_ARRAY_TASK_ID": "0"}, "SLURM_ARRAY_TASK_COUNT is not"),
                     ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 is not in"),
                     ({"WORLD_SIZE": "two"}, "WORLD_SIZE: expected an integer")]:
        with pytest.raises(UserInputError, match=msg):
            shard_from_env(env)
    if not torch.cuda.is_available():
        assert Shard(local_rank=1).device(None) == "cpu"
    assert Shard(local_rank=1).device("cuda") == "cuda:1" and Shard(local_rank=1).device("cuda:0") == "cuda:0"


# ---------------------------------------------------------------------- running (tiny SD)
def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               MSDFAST_CACHE=str(tmp_path / "cache"))
    env.pop("MSDFAST_VALUE_CHECKS", None)
    return env


def _outputs(out: Path) -> dict[str, Any]:
    """Every run's results: final image bytes, per-step losses/|g|/NFE, the trained field's tensors."""
    from msdfast.checkpoint import load_checkpoint

    res = {}
    for d in sorted((out / "runs").iterdir()):
        m = json.loads((d / "metrics.json").read_text())
        assert m["finished"], d
        assert not (d / "run.lock").exists() and not list(d.glob(".*.tmp")), d   # no writer left, no half files
        field = load_checkpoint(d / "checkpoint.pt")["field"]
        res[d.name] = {"final": (d / "final.png").read_bytes(),
                       "history": [{k: v for k, v in r.items() if k != "seconds"} for r in m["history"]],
                       "field": {k: v.clone() for k, v in field.items()}}
    return res


def _assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k]["final"] == b[k]["final"], k
        assert a[k]["history"] == b[k]["history"], k
        assert a[k]["field"].keys() == b[k]["field"].keys()
        for n in a[k]["field"]:
            assert torch.equal(a[k]["field"][n], b[k]["field"][n]), (k, n)


def test_sweep_runs_skips_finished_and_summarises(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from msdfast.testing.tiny_sd import tiny_sd_path

    model = tiny_sd_path(root=tmp_path.parent)
    p = _spec(tmp_path, model=str(model), prompts=["a red apple"], methods=["sds"], seeds=[0, 1],
              grid={"guidance_scale": [5, 7.5]})
    assert main(["sweep", str(p)]) == 0
    out = tmp_path / "out"
    runs = expand_runs(load_spec(p))
    assert "4 runs (4 ran)" in capsys.readouterr().out
    for r in runs:
        assert {"config.json", "metrics.json", "metrics.jsonl", "final.png", "progress.png", "checkpoint.pt",
                "snapshots"} <= {q.name for q in r.folder.iterdir()}
        cfg = json.loads((r.folder / "config.json").read_text())   # the job's own config.json: replayable
        assert cfg["seed"] == r.seed and cfg["guidance_scale"] == r.variant["guidance_scale"] and cfg["run"]["job"] == "image"
    s = json.loads((out / "summary.json").read_text())
    assert s["complete"] and [g["n"] for g in s["groups"]] == [2, 2]
    losses = [r["final_loss"] for r in s["runs"] if r["variant"] == {"guidance_scale": 5.0}]
    g0 = s["groups"][0]
    assert g0["variant"] == {"guidance_scale": 5.0}
    assert g0["final_loss"]["mean"] == pytest.approx(sum(losses) / 2)
    assert g0["final_loss"]["std"] == pytest.approx(abs(losses[0] - losses[1]) / 2 ** 0.5)
    assert g0["total_nfe"] == {"mean": 6.0, "std": 0.0}     # SDS: 2 NFE x 3 steps
    assert "| sds | guidance_scale=5.0 | 2 | 0 |" in (out / "summary.md").read_text()
    from PIL import Image
    with Image.open(out / "contact_sheet.png") as im:
        assert im.width > 4 * 16 and im.height > 16
    before = _outputs(out)
    stamps = {r.id: (r.folder / "final.png").stat().st_mtime_ns for r in runs}
    # a restart skips the finished runs; an interrupted one (checkpoint at step 1) resumes to the same result
    from msdfast.pipelines.image import distill_image
    import shutil
    shutil.rmtree(runs[3].folder)
    cfg = runs[3].config
    distill_image(cfg, stop_after=1)
    assert main(["sweep", str(p)]) == 0
    assert "4 runs (1 ran, 3 done)" in capsys.readouterr().out
    assert all((r.folder / "final.png").stat().st_mtime_ns == stamps[r.id] for r in runs[:3])
    _assert_same(before, _outputs(out))
    assert main(["sweep", str(p), "--dry-run"]) == 0
    assert [ln.split("\t")[2] for ln in capsys.readouterr().out.splitlines()[2:]] == ["done"] * 4
    # killed before its first checkpoint (config.json, metrics, snapshots, no checkpoint.pt): started again
    shutil.rmtree(runs[3].folder)
    distill_image(cfg, stop_after=1)
    (runs[3].folder / "checkpoint.pt").unlink()
    assert main(["sweep", str(p), "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[5].split("\t")[2] == "restart"
    assert main(["sweep", str(p)]) == 0
    assert "4 runs (1 ran, 3 done)" in capsys.readouterr().out
    _assert_same(before, _outputs(out))
    # a worker killed before the run wrote anything but its snapshots folder and a temporary file: started anew
    shutil.rmtree(runs[3].folder)
    (runs[3].folder / "snapshots").mkdir(parents=True)
    (runs[3].folder / ".config.json.123.abcd.tmp").write_text("{")
    assert main(["sweep", str(p)]) == 0
    assert "4 runs (1 ran, 3 done)" in capsys.readouterr().out
    _assert_same(before, _outputs(out))
    (out / "summary.json").unlink()
    assert main(["sweep", str(p), "--collect"]) == 0
    assert json.loads((out / "summary.json").read_text())["complete"]


def test_sweep_3d_and_option_values_checked_before_loading(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from msdfast.testing.tiny_sd import tiny_sd_path

    model = str(tiny_sd_path(root=tmp_path.parent))
    bad = _spec(tmp_path, name="bad.json", model=model, methods=["msd"], method_options={"msd": {"chains": 0}})
    assert main(["sweep", str(bad)]) == 2
    assert f"{bad}: run (msd seed 0 p0): chains: must be >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "out" / "runs").exists()
    p = _spec(tmp_path, name="3d.json", job="3d", model=model, prompts=["a hamburger"], methods=["sds"],
              seeds=[0, 1], settings={"steps": 2, "render_size": 8, "n_samples": 8, "snapshot_views": 2,
                                      "grid": {"n_levels": 2, "log2_hashmap_size": 10}})
    assert main(["sweep", str(p)]) == 0
    runs = expand_runs(load_spec(p))
    for r in runs:
        cfg = json.loads((r.folder / "config.json").read_text())
        assert cfg["run"]["job"] == "3d" and cfg["seed"] == r.seed and cfg["render_size"] == 8
        assert (r.folder / "final.png").exists() and (r.folder / "progress.png").exists()
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["complete"]


def test_run_held_by_another_writer_is_left_alone(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from msdfast.runlock import RunLock
    from msdfast.testing.tiny_sd import tiny_sd_path

    p = _spec(tmp_path, model=str(tiny_sd_path(root=tmp_path.parent)), prompts=["a red apple"], methods=["sds"],
              settings={"steps": 2, "resolution": 16})
    runs = expand_runs(load_spec(p))
    with RunLock(runs[0].folder):            # another writer (flock: a second open file, as another process)
        assert main(["sweep", str(p)]) == 0
    assert "2 runs (1 ran, 1 busy)" in capsys.readouterr().out
    assert [q.name for q in runs[0].folder.iterdir()] == [] and (runs[1].folder / "final.png").exists()
    assert not (tmp_path / "out" / "summary.json").exists()      # not every run finished: no summary yet
    assert main(["sweep", str(p)]) == 0
    assert "2 runs (1 ran, 1 done)" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["complete"]


@pytest.fixture(scope="module")
def dist_spec(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The CI sweep (2 prompts x 2 seeds x 2 methods, tiny SD) and its single-process outputs."""
    from msdfast.testing.tiny_sd import tiny_sd_path

    root = tmp_path_factory.mktemp("sweep_dist")
    model = tiny_sd_path(root=tmp_path_factory.getbasetemp())
    p = _spec(root, name="spec.yaml", model=str(model), out=str(root / "single"),
              settings={"steps": 12, "resolution": 16, "ckpt_every": 2, "snapshot_every": 4})
    r = subprocess.run([sys.executable, "-m", "msdfast", "sweep", str(p)], env=_env(root), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return p, _outputs(root / "single")


def _torchrun(spec: Path, out: Path, env: dict[str, str], *extra: str) -> subprocess.Popen:
    import yaml

    d = yaml.safe_load(spec.read_text())
    d["out"] = str(out)
    s2 = out.parent / f"{out.name}.yaml"
    s2.write_text(yaml.safe_dump(d))
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             *extra, "-m", "msdfast", "sweep", str(s2)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow   # ~30-60 s: a single-process sweep and two torchrun launches, each importing torch/diffusers
def test_torchrun_two_ranks_equal_single_process(dist_spec: tuple[Path, dict[str, Any]]) -> None:
    spec, single = dist_spec
    out = spec.parent / "ranks"
    p = _torchrun(spec, out, _env(spec.parent))
    log, _ = p.communicate(timeout=600)
    assert p.returncode == 0, log[-3000:]
    assert "shard 0/2: 4 runs (4 ran)" in log and "shard 1/2: 4 runs (4 ran)" in log
    assert "all 8 runs finished" in log
    _assert_same(single, _outputs(out))
    assert json.loads((out / "summary.json").read_text())["complete"]


@pytest.mark.slow   # ~30-60 s: torchrun twice (the restart) on top of the single-process reference
def test_killed_rank_restarts_and_completes_identically(dist_spec: tuple[Path, dict[str, Any]]) -> None:
    spec, single = dist_spec
    out = spec.parent / "killed"
    p = _torchrun(spec, out, _env(spec.parent), "--max-restarts=1")
    killed = None
    deadline = time.monotonic() + 600
    while killed is None and p.poll() is None and time.monotonic() < deadline:
        # a run in progress: its lock names the worker writing it; it has a checkpoint and no final metrics yet
        for d in sorted((out / "runs").glob("*")) if (out / "runs").is_dir() else []:
            try:
                owner = json.loads((d / "run.lock").read_text())
            except (OSError, ValueError):
                continue
            if (d / "checkpoint.pt").exists() and not (d / "metrics.json").exists():
                os.kill(owner["pid"], signal.SIGKILL)
                killed = d.name
                break
        time.sleep(0.01)
    log, _ = p.communicate(timeout=600)
    assert killed is not None, "no run was caught mid-run"
    assert p.returncode == 0, log[-3000:]
    assert "all 8 runs finished" in log
    assert "resuming run " + killed in log     # the killed run continued from its checkpoint
    _assert_same(single, _outputs(out))


def test_digits_sweep_reports_the_classifier_metrics(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Job digits: the shipped model, prompts from classes, the study's settings; the summary's accuracy and
    confidence are the evaluation classifier's on each final.png -- checked with real held-out digits put in place
    of two runs' images (the right digit scores 1, another digit 0)."""
    from PIL import Image

    from msdfast.digits.data import load_digits_split
    from msdfast.digits.model import prompt_for

    p = _spec(tmp_path, prompts=[], model="", job="digits", classes=[3, 7], methods=["sds"], seeds=[0, 1],
              settings={"steps": 2, "ckpt_every": 0, "snapshot_every": 0})
    spec = load_spec(p)
    assert spec.model == "digits" and spec.prompts == [prompt_for(3), prompt_for(7)]
    runs = expand_runs(spec)
    assert runs[0].config.field == "grid" and runs[0].config.lr == pytest.approx(0.03) and runs[0].config.steps == 2
    assert main(["sweep", str(p), "--runs-per-batch", "2"]) == 0
    assert "4 runs (4 ran)" in capsys.readouterr().out
    split = load_digits_split()
    real = {c: split.heldout_images[split.heldout_labels == c][0] for c in (3, 7)}
    assert [r.prompt_index for r in runs[:2]] == [0, 0]     # runs 0 and 1: prompt 0 (a 3), seeds 0 and 1
    for r, digit in ((runs[0], 3), (runs[1], 7)):
        Image.fromarray((real[digit].numpy() * 255).round().astype("uint8")).convert("RGB").save(r.folder / "final.png")
    assert main(["sweep", str(p), "--collect"]) == 0
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    by_id = {x["id"]: x for x in s["runs"]}
    assert by_id[runs[0].id]["accuracy"] == 1.0 and by_id[runs[0].id]["confidence"] > 0.9
    assert by_id[runs[1].id]["accuracy"] == 0.0 and by_id[runs[1].id]["confidence"] < 0.1
    g = s["groups"][0]
    accs = [x["accuracy"] for x in s["runs"]]
    assert g["n"] == 4 and g["accuracy"]["mean"] == pytest.approx(sum(accs) / 4)
    assert g["diversity"] is not None and g["diversity"] > 0
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "| accuracy | confidence | diversity |" in md


def test_toy_sweep_cells_equal_the_study_protocol(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Job toy: each run is one cell of the toy study (column, row, seed); its points and metrics are exactly
    what msdfast.toy.protocol's optimise + evaluate give for that cell; groups are per column."""
    import numpy as np

    from msdfast.toy.protocol import METHOD_SPECS, ColumnSpec, ProtocolConfig, build_world, evaluate, optimise

    settings = {"steps": 3, "grid": 6, "n_data": 300}
    p = _spec(tmp_path, prompts=[], model="", job="toy", columns=["tree/ideal", "spiral/ideal"],
              methods=["sds", "msd-tweedie"], seeds=[0, 1], settings=settings)
    assert main(["sweep", str(p), "--runs-per-batch", "2"]) == 2
    assert "--runs-per-batch: job toy runs one cell at a time" in capsys.readouterr().err
    assert main(["sweep", str(p)]) == 0
    assert "8 runs (8 ran)" in capsys.readouterr().out
    runs = expand_runs(load_spec(p))
    r = next(x for x in runs if x.prompt_index == 1 and x.method == "msd-tweedie" and x.seed == 1)
    cfg = ProtocolConfig(**settings, seed=1)
    world = build_world(ColumnSpec("spiral", "ideal"), cfg)
    ref = optimise(world, METHOD_SPECS["msd-tweedie"], cfg, 1)
    np.testing.assert_array_equal(np.load(r.folder / "points.npy"), ref.points)
    m = json.loads((r.folder / "metrics.json").read_text())
    assert m["nll"] == evaluate(world, ref.points)["nll"] and m["total_nfe"] == ref.nfe
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [(g["prompt"], g["method"], g["n"]) for g in s["groups"]] == [
        ("tree/ideal", "sds", 2), ("tree/ideal", "msd-tweedie", 2), ("spiral/ideal", "sds", 2),
        ("spiral/ideal", "msd-tweedie", 2)]
    g = s["groups"][3]
    nlls = [x["nll"] for x in s["runs"] if x["prompt"] == "spiral/ideal" and x["method"] == "msd-tweedie"]
    assert g["nll"]["mean"] == pytest.approx(sum(nlls) / 2) and m["nll"] in nlls
    assert "| column | method |" in (tmp_path / "out" / "summary.md").read_text()
