"""msdfast/_threads.py: the wait policy set before torch loads, cgroup quotas (v1 and v2), the default count."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from msdfast import _threads
from msdfast.errors import UserInputError


def _run(code: str, env: dict[str, str]) -> str:
    import os

    full = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS",
                                                             "MSDFAST_NUM_THREADS")}
    full.update(env)
    return subprocess.check_output([sys.executable, "-c", code], env=full, text=True).strip()


def test_passive_wait_policy_is_set_before_torch_loads_and_user_choices_win() -> None:
    code = "import os, msdfast; print(os.environ.get('OMP_WAIT_POLICY'), msdfast._threads.wait_policy())"
    assert _run(code, {}) == "PASSIVE PASSIVE"
    assert _run(code, {"OMP_WAIT_POLICY": "active"}) == "active ACTIVE"
    # torch first: the OpenMP runtime has read its environment already; msdfast leaves it alone
    assert _run("import os, torch, msdfast; print(os.environ.get('OMP_WAIT_POLICY'), msdfast._threads.wait_policy())",
                {}) == "None None"


def test_forced_thread_count() -> None:
    assert _run("import msdfast, torch; print(torch.get_num_threads())", {"MSDFAST_NUM_THREADS": "1"}) == "1"


def test_cgroup_v2_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_threads, "_CGROUP_ROOT", tmp_path)
    leaf = tmp_path / "user.slice" / "job"
    leaf.mkdir(parents=True)
    (leaf / "cpu.max").write_text("max 100000\n")                  # unlimited at the leaf
    (tmp_path / "user.slice" / "cpu.max").write_text("150000 100000\n")   # 1.5 CPUs above it
    assert _threads.cpu_quota("0::/user.slice/job\n") == pytest.approx(1.5)
    assert _threads.cpu_quota("0::/\n") is None


def test_cgroup_v1_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_threads, "_CGROUP_ROOT", tmp_path)
    d = tmp_path / "cpu,cpuacct" / "docker" / "abc"
    d.mkdir(parents=True)
    (d / "cpu.cfs_quota_us").write_text("300000\n")
    (d / "cpu.cfs_period_us").write_text("100000\n")
    assert _threads.cpu_quota("4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n") == pytest.approx(3.0)
    (d / "cpu.cfs_quota_us").write_text("-1\n")
    assert _threads.cpu_quota("3:cpu,cpuacct:/docker/abc\n") is None


def test_available_cpus_caps_affinity_by_the_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_threads.os, "sched_getaffinity", lambda _pid: set(range(8)))
    monkeypatch.setattr(_threads, "cpu_quota", lambda: 2.5)
    assert _threads.available_cpus() == 3
    monkeypatch.setattr(_threads, "cpu_quota", lambda: 0.2)
    assert _threads.available_cpus() == 1
    monkeypatch.setattr(_threads, "cpu_quota", lambda: None)
    assert _threads.available_cpus() == 8


def test_bad_forced_count_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSDFAST_NUM_THREADS", "two")
    with pytest.raises(UserInputError, match="MSDFAST_NUM_THREADS"):
        _threads.default_threads()


def _env(**extra: str) -> dict[str, str]:
    import os

    full = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS",
                                                             "MSDFAST_NUM_THREADS")}
    full.update(extra)
    return full


@pytest.mark.parametrize("value", ["abc", "0"])
def test_bad_forced_count_is_one_line_and_exit_2_in_the_cli(value: str) -> None:
    """`msdfast` imports the package (which reads MSDFAST_NUM_THREADS) before main() runs: the error must still
    be main()'s one line and exit 2, not an import traceback."""
    proc = subprocess.run([sys.executable, "-m", "msdfast", "toy", "--help"], env=_env(MSDFAST_NUM_THREADS=value),
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "MSDFAST_NUM_THREADS" in lines[0] and repr(value) in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_forced_count_raises_at_library_import() -> None:
    """A library user (not the `msdfast` command) gets the UserInputError from `import msdfast` itself."""
    proc = subprocess.run([sys.executable, "-c", "import msdfast"], env=_env(MSDFAST_NUM_THREADS="abc"),
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "UserInputError: MSDFAST_NUM_THREADS" in proc.stderr, proc.stderr
