"""`msdfast bench kernels` table logic on a synthetic pytest-benchmark JSON (no benchmark is run here)."""
from __future__ import annotations

import json

from msdfast import bench, cli


def _b(group: str, impl: str, median: float, **extra) -> dict:
    return {"group": group, "name": f"test[{impl}]", "params": {"impl": impl},
            "stats": {"median": median, "iqr": 0.0, "rounds": 5},
            "extra_info": {"impl": impl, "op": group.split("-")[0], **extra}}


DATA = {"machine_info": {"cpu": {"brand_raw": "test cpu"}}, "datetime": "now", "benchmarks": [
    _b("distill_grad-cpu-2x4x64x64-fp32", "reference", 90e-6, bytes=786432),
    _b("distill_grad-cpu-2x4x64x64-fp32", "compiled", 30e-6, bytes=786432),
    _b("distill_grad-cpu-2x4x64x64-fp32", "compiled-raw", 20e-6, bytes=786432),
    _b("distill_grad-cpu-2x4x64x64-fp32", "clone", 10e-6, bytes=786432),
    _b("ideal_denoiser-cpu-1e4x1e5-fp32", "naive", 30.0, peak_mb=7500.0, analytic_mb=7629.0),
    _b("ideal_denoiser-cpu-1e4x1e5-fp32", "compiled", 2.0, peak_mb=0.0, analytic_mb=0.8),
]}


def test_summary_ratios():
    text = bench.summary(DATA)
    row = next(line for line in text.splitlines() if line.startswith("| distill_grad"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:] == ["90.0", "30.0", "3.00x", "20.0", "10.0", "33%", "50%"]
    ideal = next(line for line in text.splitlines() if line.startswith("| ideal_denoiser"))
    cells = [c.strip() for c in ideal.strip("|").split("|")]
    assert cells[1:4] == ["30000.0", "2000.0", "15.00x"]
    assert cells[-1] == f"{7500 / 0.8:.0f}x"  # divides by the larger of measured (0) and modelled (0.8) MiB


def test_cli_from_json(tmp_path, capsys):
    p = tmp_path / "k.json"
    p.write_text(json.dumps(DATA))
    assert cli.main(["bench", "kernels", "--from-json", "--json", str(p), "--table", str(tmp_path / "k.md")]) == 0
    out = capsys.readouterr().out
    assert "3.00x" in out
    try:
        bench.benchmarks_dir()
        assert "**distill_grad-cpu-2x4x64x64-fp32**" in out  # write_table's per-group tables follow
    except FileNotFoundError:  # an installed package without the source checkout's benchmarks/
        pass
    assert (tmp_path / "k.md").read_text().startswith("| group")
