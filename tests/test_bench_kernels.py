"""`msdfast bench kernels`: the table's arithmetic on synthetic results, and one tiny real run of the in-package
harness (no timing assertions: only that every variant ran, was checked against the reference, and is reported)."""
from __future__ import annotations

import json
import os

import pytest
import torch

from msdfast import bench, cli
from msdfast.bench import cases as bench_cases
from msdfast.bench.harness import interleave, stream_bandwidth

MACHINE = {"cpu": "test cpu", "usable_cpus": 2, "threads": 1, "isa": "AVX2", "llc_mib": 32.0, "torch": "t",
           "python": "3", "wait_policy": "PASSIVE", "commit": "abc", "date": "now", "load_avg": 0.5,
           "load_avg_end": 0.7}


def _row(mode: str, **medians: float) -> dict:
    return {"op": "ddim_step", "size": "2x4x64x64", "mode": mode, "bytes": 10**6, "notes": [],
            **{k: {"median": v, "best": v / 2, "cpu_share": 0.95} for k, v in medians.items()}}


DATA = {"machine": MACHINE, "stream": {"read": 2e10, "copy": 1e10, "triad": 1.5e10, "bound": 2e10},
        "rows": [_row("dram", reference=400e-6, kernel=100e-6, raw=90e-6, inductor=110e-6,
                      **{"inductor-graph": 105e-6}),
                 _row("cache", reference=300e-6, kernel=20e-6)]}


def test_table_ratios_and_bound() -> None:
    text = bench.table(DATA)
    dram = next(ln for ln in text.splitlines() if "| dram |" in ln)
    cells = [c.strip() for c in dram.strip("|").split("|")]
    assert cells[3:8] == ["400.0", "100.0", "90.0", "110.0", "105.0"]
    assert cells[8:11] == ["4.00x", "1.10x", "1.05x"]
    # bytes / bound / best kernel time = 1e6 / 2e10 / 50e-6 = 100%
    assert cells[11] == "100%" and cells[12] == "0.95"
    cache = next(ln for ln in text.splitlines() if "| cache |" in ln)
    assert [c.strip() for c in cache.strip("|").split("|")][11] == "-"    # no bound for cached data
    assert "AVX2" in text and "threads 1" in text and "20.0 GB/s" in text


def test_the_row_bound_is_the_faster_of_stream_and_the_mix_kernel() -> None:
    """A mix kernel (the op's own reads and writes) faster than STREAM sets the row's bound; a slower one does
    not lower it."""
    fast = dict(DATA, rows=[dict(_row("dram", kernel=100e-6), mix={"median": 80e-6, "best": 40e-6,
                                                                    "cpu_share": 1.0})])
    slow = dict(DATA, rows=[dict(_row("dram", kernel=100e-6), mix={"median": 200e-6, "best": 100e-6,
                                                                    "cpu_share": 1.0})])
    cell = lambda d: next(ln for ln in bench.table(d).splitlines() if "| dram |" in ln).split("|")[12].strip()  # noqa: E731
    # fast: bound = 1e6 B / 40e-6 s = 25 GB/s > STREAM's 20 -> 1e6 / 25e9 / 50e-6 = 80%; slow: STREAM's 100%
    assert cell(fast) == "80%" and cell(slow) == "100%"


def test_traffic_is_the_ops_own_arrays_and_bytes() -> None:
    """Bytes = 4 x (elements read + written) as the kernels in csrc/cpu move them, and the bound kernel reads the
    very tensors the op reads."""
    want = {"ddim_step": (4, 1), "distill_grad": (4, 2), "chain_mean_shift": (bench_cases.N_CHAINS + 1, 1),
            "noise_to_levels": (2, bench_cases.N_LEVELS)}
    for case in bench_cases.build_cases(list(want), quick=True):
        args = case.make(0)
        arrays, nbytes = case.traffic(args)
        n = args[-1].numel() if case.op == "chain_mean_shift" else args[0].numel()
        r, w = want[case.op]
        assert len(arrays) == r and case.writes == w and nbytes == 4 * n * (r + w), case.op
        ptrs = {t.untyped_storage().data_ptr() for t in args if isinstance(t, torch.Tensor)}
        assert all(a.untyped_storage().data_ptr() in ptrs and a.numel() == n for a in arrays), case.op
    assert bench_cases.build_cases(["gmm_score"])[0].traffic(bench_cases.build_cases(["gmm_score"])[0].make(0)) \
        is None   # compute-bound: no bandwidth bound


@pytest.mark.parametrize("n_in,n_out", [(1, 1), (5, 1), (4, 2), (8, 4)])
def test_stream_mix_writes_the_sum_of_its_inputs(n_in: int, n_out: int) -> None:
    if bench.stream_mix_op() is None:
        if os.environ.get("MSDFAST_REQUIRE_EXT") == "1":   # CI builds the extension: there it must exist
            pytest.fail("msdfast_bench::stream_mix missing from the built extension")
        pytest.skip("msdfast._C not built, or built before csrc/bench_stream.cpp (rebuild it)")
    g = torch.Generator().manual_seed(n_in)
    xs = [torch.randn(70_001, generator=g) for _ in range(n_in)]   # > one 32k-element task, odd tail
    out = torch.ops.msdfast_bench.stream_mix(xs, n_out)
    want = xs[0].clone()
    for x in xs[1:]:
        want += x
    assert out.shape == (n_out, 70_001) and all(torch.equal(o, want) for o in out)
    with pytest.raises(RuntimeError, match="n_outputs"):
        torch.ops.msdfast_bench.stream_mix(xs, 0)


def test_cli_from_json_and_bad_file(tmp_path, capsys) -> None:
    p = tmp_path / "k.json"
    p.write_text(json.dumps(DATA))
    assert cli.main(["bench", "kernels", "--from-json", str(p), "--table", str(tmp_path / "k.md")]) == 0
    assert "4.00x" in capsys.readouterr().out
    assert (tmp_path / "k.md").read_text().startswith("Machine: test cpu")
    (tmp_path / "bad.json").write_text("{")
    assert cli.main(["bench", "kernels", "--from-json", str(tmp_path / "bad.json")]) == 2
    assert "--from-json" in capsys.readouterr().err


def test_a_tiny_real_run_checks_and_reports_every_variant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_cases, "LATENT_SHAPES", ((1, 4, 8, 8),))
    monkeypatch.setattr(bench, "BLOCK_SECONDS", 1e-4)
    monkeypatch.setattr(bench, "MAX_SETS", 16)
    monkeypatch.setattr(bench, "stream_bandwidth", lambda: stream_bandwidth(repeats=1, array_bytes=1 << 20))
    data = bench.run_cases(["ddim_step", "chain_mean_shift"], rounds=2, inductor=False, quick=True)
    assert [(r["op"], r["mode"]) for r in data["rows"]] == [("ddim_step", "dram"), ("ddim_step", "cache"),
                                                            ("chain_mean_shift", "dram"),
                                                            ("chain_mean_shift", "cache")]
    for r in data["rows"]:
        assert {"reference", "kernel", "raw"} <= set(r) and r["kernel"]["median"] > 0
        assert r["bytes"] > 0
        if bench.stream_mix_op() is not None:
            assert ("mix" in r) == (r["mode"] == "dram")   # the bound kernel: dram rows only
    assert data["rows"][0]["sets"] > 4          # DRAM rows cycle over more sets than fit in the cache
    assert "ddim_step" in bench.table(data)


def test_every_case_matches_its_reference() -> None:
    for case in bench_cases.build_cases(["ddim_step", "distill_grad", "chain_mean_shift", "noise_to_levels"],
                                  quick=True):
        bench._verify(case)


def test_interleave_and_stream_shapes() -> None:
    calls = []
    out = interleave({"a": lambda i: calls.append(("a", i)), "b": lambda i: calls.append(("b", i))}, 3, 2)
    assert len(out["a"].times) == 3 and len(calls) == 12
    assert calls[:4] == [("a", 0), ("a", 1), ("b", 0), ("b", 1)] and calls[4][0] == "b"   # rotating order
    calls.clear()
    out = interleave({"a": lambda i: calls.append("a"), "b": lambda i: calls.append("b")}, 2, {"a": 3, "b": 1})
    assert calls.count("a") == 6 and calls.count("b") == 2 and len(out["b"].times) == 2   # per-variant counts
    bw = stream_bandwidth(repeats=2, array_bytes=1 << 20)
    assert bw["bound"] == max(bw["read"], bw["copy"], bw["triad"]) > 0
