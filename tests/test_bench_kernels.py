"""`msdfast bench kernels`: the table's arithmetic on synthetic results, and one tiny real run of the in-package
harness (no timing assertions: only that every variant ran, was checked against the reference, and is reported)."""
from __future__ import annotations

import json

import pytest

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
    bw = stream_bandwidth(repeats=2, array_bytes=1 << 20)
    assert bw["bound"] == max(bw["read"], bw["copy"], bw["triad"]) > 0
