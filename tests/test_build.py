"""The compiled extension and the csrc/ file convention: loaded, registered, reported, optional."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import msdfast
from msdfast import _backend, cli
from msdfast.ops import _compiled, _dispatch
from msdfast.ops.reference import ddim_step as reference_ddim

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
needs_ext = pytest.mark.skipif(not _backend.has_compiled(), reason=f"msdfast._C not built ({_backend._C_ERROR})")


def _cpu_ops() -> list[str]:
    """Op names defined by csrc/cpu/*.cpp schemas (m.def("name(...")."""
    names = []
    for f in sorted(CSRC.glob("cpu/*.cpp")):
        names += re.findall(r'm\.def\(\s*"(\w+)\(', f.read_text())
    return names


def test_extension_loads_when_required():
    """CI (.ci/run) sets MSDFAST_REQUIRE_EXT=1: there a missing extension is a failure, not a skip."""
    if os.environ.get("MSDFAST_REQUIRE_EXT") == "1":
        assert _backend.has_compiled(), _backend._C_ERROR
    elif not _backend.has_compiled():
        pytest.skip("msdfast._C not built")


@needs_ext
def test_build_info():
    info = _backend._C.build_info()
    assert info["optimized"] is True
    assert info["openmp"], "built without OpenMP: at::parallel_for would run serially"
    assert info["threads"] >= 1
    assert info["with_cuda"] == bool(torch._C._dispatch_has_kernel_for_dispatch_key("msdfast::ddim_step", "CUDA"))


@needs_ext
def test_every_cpu_source_registers_its_op():
    ops = _cpu_ops()
    assert "ddim_step" in ops
    table = _compiled.compiled_ops()
    for op in ops:
        assert hasattr(torch.ops.msdfast, op), f"csrc/cpu defines {op} but torch.ops.msdfast lacks it"
        assert "cpu" in table[op], f"{op}: no CPU kernel registered"
        assert _dispatch.choose(op, "cpu") == "compiled"


def test_cuda_sources_follow_the_convention():
    """csrc/cuda/<op>_kernel.cu is pure CUDA (so nvcc compiles it without torch) and has its header and glue."""
    kernels = sorted(CSRC.glob("cuda/*_kernel.cu"))
    assert kernels, "no CUDA kernels found"
    for k in kernels:
        op = k.name[: -len("_kernel.cu")]
        assert (CSRC / "cuda" / f"{op}_kernel.h").exists(), f"{op}: missing {op}_kernel.h"
        assert (CSRC / "cuda" / f"{op}_torch.cu").exists(), f"{op}: missing {op}_torch.cu"
        for f in (k, CSRC / "cuda" / f"{op}_kernel.h"):
            includes = re.findall(r'#include\s*[<"]([^>"]+)[>"]', f.read_text())
            bad = [i for i in includes if i.split("/")[0] in ("torch", "ATen", "c10")]
            assert not bad, f"{f.name} includes torch headers {bad}; keep kernels pure CUDA"


@needs_ext
def test_cli_info_reports_the_compiled_backend(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "compiled extension: loaded" in out
    assert re.search(r"ddim_step\s+compiled", out), out


@needs_ext
def test_cli_demo(capsys):
    assert cli.main(["demo", "--steps", "3", "--shape", "1,4,8,8"]) == 0
    out = capsys.readouterr().out
    assert "compiled" in out and "reference" in out


def test_import_and_ops_work_without_the_extension():
    """MSDFAST_DISABLE_EXT=1 (same code path as a failed build): import, info and ops still work."""
    code = ("import torch, msdfast; from msdfast import ops; "
            "z = torch.randn(2, 3); c = ops.step_coefficients(2, 0.8, 0.6, 0.9, 0.43); "
            "out = ops.ddim_step(z, z, c); assert ops.backend_table()['ddim_step']['cpu'] == 'reference'; "
            "msdfast.info()")
    env = dict(os.environ, MSDFAST_DISABLE_EXT="1")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "disabled by MSDFAST_DISABLE_EXT=1" in res.stdout


def test_forced_backend_environment(monkeypatch):
    """The environment is read at import and by reload_backend_environment(); calls then use the forced backend."""
    import msdfast.ops as ops
    calls = []
    monkeypatch.setitem(_dispatch._REGISTRY["ddim_step"], "reference",
                        (lambda *a: calls.append(1) or reference_ddim(*a), frozenset({"cpu"})))
    monkeypatch.setenv("MSDFAST_BACKEND_DDIM_STEP", "reference")
    try:
        ops.reload_backend_environment()
        assert _dispatch.choose("ddim_step", "cpu") == "reference"
        z = torch.randn(2, 3)
        ops.ddim_step(z, z, ops.step_coefficients(2, 0.8, 0.6, 0.9, 0.43))
        assert calls == [1]
        monkeypatch.setenv("MSDFAST_BACKEND_DDIM_STEP", "nope")
        ops.reload_backend_environment()
        with pytest.raises(ValueError, match="MSDFAST_BACKEND"):
            _dispatch.choose("ddim_step", "cpu")
    finally:
        monkeypatch.undo()
        ops.reload_backend_environment()
    assert _dispatch.choose("ddim_step", "cpu") == _dispatch.available("ddim_step", "cpu")[0]


def test_version_matches_pyproject():
    text = (ROOT / "pyproject.toml").read_text()
    assert f'version = "{msdfast.__version__}"' in text

