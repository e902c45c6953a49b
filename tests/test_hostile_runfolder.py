"""One writer per run folder (issue 17 item 4): the run lock, stale locks of killed processes, and the
new / --resume / --overwrite rules of a run folder, through the API and the pipelines."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_image_pipeline import _cfg, standin_factory

from msdfast.errors import UserInputError
from msdfast.pipelines.image import distill_image
from msdfast.runlock import LOCK_NAME, RunLock, lock_owner, open_run_folder

_HOLDER = """
import sys, time
from msdfast.runlock import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(60)
"""


def _holder(folder: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    p = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder)], stdout=subprocess.PIPE, text=True, env=env)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_second_writer_in_the_same_process_is_refused(tmp_path: Path) -> None:
    with RunLock(tmp_path) as lock:
        owner = lock_owner(tmp_path)
        assert owner["pid"] == os.getpid() and owner["host"] and owner["started"]
        with pytest.raises(UserInputError, match=f"pid {os.getpid()}") as e:
            RunLock(tmp_path).acquire()
        assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)
        assert lock.path.exists()
    assert not (tmp_path / LOCK_NAME).exists()   # released: the lock file is gone
    RunLock(tmp_path).acquire().release()         # and the folder can be taken again


def test_another_process_holds_the_lock_then_is_killed(tmp_path: Path) -> None:
    p = _holder(tmp_path)
    try:
        with pytest.raises(UserInputError, match=f"pid {p.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert lock_owner(tmp_path)["pid"] == p.pid   # the dead owner's lock file is still there: stale
    with RunLock(tmp_path):                       # ... and is taken over
        assert lock_owner(tmp_path)["pid"] == os.getpid()


def test_a_stale_lock_file_of_a_dead_pid_is_taken_over(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 2 ** 22 + 17, "host": "elsewhere", "started": "then"}))
    with RunLock(tmp_path):
        assert lock_owner(tmp_path)["pid"] == os.getpid()


def test_a_garbage_lock_file_is_taken_over(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).write_bytes(b"\x00\xff not json")
    with RunLock(tmp_path):
        assert lock_owner(tmp_path)["pid"] == os.getpid()


# ---------------------------------------------------------------------- run-folder rules
def test_resume_on_a_missing_folder_says_so(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="--resume: the run folder .* does not exist"):
        with open_run_folder(tmp_path / "nope", resume=True):
            pass
    assert not (tmp_path / "nope").exists()


def test_resume_without_a_checkpoint_says_so(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UserInputError, match="no checkpoint.pt"):
        with open_run_folder(tmp_path, resume=True):
            pass


def test_new_run_on_a_non_empty_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UserInputError, match="--out: .* is not empty; pass --resume .* --overwrite"):
        with open_run_folder(tmp_path):
            pass
    assert (tmp_path / "config.json").exists()


def test_overwrite_empties_a_run_folder_only(tmp_path: Path) -> None:
    (tmp_path / "snapshots").mkdir()
    (tmp_path / "snapshots" / "step_000001.png").write_bytes(b"x")
    (tmp_path / "config.json").write_text("{}")
    with open_run_folder(tmp_path, overwrite=True):
        assert [p.name for p in tmp_path.iterdir()] == [LOCK_NAME]
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("precious")
    with pytest.raises(UserInputError, match="--overwrite: .* does not hold an msdfast run"):
        with open_run_folder(home, overwrite=True):
            pass
    assert (home / "thesis.tex").read_text() == "precious"


def test_resume_and_overwrite_exclude_each_other(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="--overwrite"):
        with open_run_folder(tmp_path, resume=True, overwrite=True):
            pass


def test_out_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(UserInputError, match="--out: .* is a file"):
        with open_run_folder(tmp_path / "f"):
            pass


# ---------------------------------------------------------------------- the pipelines follow the rules
def test_image_run_refuses_a_locked_folder_before_loading_anything(den, tmp_path: Path) -> None:  # noqa: ANN001
    out = tmp_path / "run"
    p = _holder(out)
    try:
        with pytest.raises(UserInputError, match=f"pid {p.pid}"):
            distill_image(_cfg(out), denoiser=den, estimator_factory=standin_factory)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert [x.name for x in out.iterdir()] == [LOCK_NAME]   # nothing written by the refused run
    m = distill_image(_cfg(out, steps=2), denoiser=den, estimator_factory=standin_factory)   # stale: taken over
    assert m["finished"] and not (out / LOCK_NAME).exists()


def test_image_run_new_resume_overwrite(den, tmp_path: Path) -> None:  # noqa: ANN001
    out = tmp_path / "run"
    with pytest.raises(UserInputError, match="--resume"):
        distill_image(_cfg(out), denoiser=den, estimator_factory=standin_factory, resume=True)
    distill_image(_cfg(out, steps=2), denoiser=den, estimator_factory=standin_factory)
    with pytest.raises(UserInputError, match="not empty"):
        distill_image(_cfg(out, steps=2), denoiser=den, estimator_factory=standin_factory)
    before = (out / "final.png").stat().st_mtime_ns
    time.sleep(0.01)
    m = distill_image(_cfg(out, steps=2), denoiser=den, estimator_factory=standin_factory, overwrite=True)
    assert m["finished"] and (out / "final.png").stat().st_mtime_ns != before
