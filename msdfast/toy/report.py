"""Tables (markdown + JSON) and figures of the toy study, laid out like the MSD paper's tables 1-3.

Table 1: tree (class-conditional), one block per metric, rows = methods, columns = ideal / learned /
learned+CFG / learned+autoguidance. Table 2: spiral and pinwheel, rows = (data set, method), columns =
metric x (ideal, learned). Table 3: log-efficiency (eq. 17), rows = methods, columns = data sets,
cells "ideal / learned"; one table per set of points x it was measured on (results["efficiency_by_points"],
msdfast.toy.study: the estimators' own targets and/or a uniform grid), the first being "Table 3".
Only the columns and methods that were run appear.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

METRICS = (("nll", "NLL ↓"), ("precision", "Precision ↑"), ("recall", "Recall ↑"), ("mmd", "MMD ↓ (x1e-4)"))
TREE_GUIDANCE = ("ideal", "learned", "learned+cfg", "learned+autoguidance")
# the sets of points x table 3 may be measured on (msdfast.toy.study.EFF_POINTS)
EFF_POINT_TITLES = {"particles": "each estimator's own targets at the probe step", "grid": "a uniform grid"}


def column_key(dataset: str, denoiser: str, guidance: str = "none") -> str:
    """Canonical column name: 'tree/ideal', 'tree/learned+cfg', 'spiral/learned', ..."""
    g = "" if guidance in ("none", "", None) else f"+{guidance}"
    return f"{dataset}/{denoiser}{g}"


def split_column(col: str) -> tuple[str, str]:
    """'tree/learned+cfg' -> ('tree', 'learned+cfg')."""
    ds, _, rest = col.partition("/")
    return ds, rest


def _fmt(v: Any, metric: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a" if v is None or math.isnan(v) else ("inf" if v > 0 else "-inf")
    if metric == "mmd":
        return f"{v * 1e4:.3g}"
    if metric in ("precision", "recall"):
        return f"{v:.2f}"
    return f"{v:.2f}"


def _cell_value(cells: Mapping[str, Mapping[str, Any]], col: str, method: str, metric: str) -> Any:
    c = cells.get(f"{col}|{method}")
    if c is None:
        return None
    m = c.get("metrics", {})
    return m.get(metric)


def _ordered(items: Iterable[str], order: Iterable[str]) -> list[str]:
    items = list(dict.fromkeys(items))
    order = list(order)
    return sorted(items, key=lambda k: (order.index(k) if k in order else len(order), k))


def table1(cells: Mapping[str, Mapping[str, Any]], methods: list[str]) -> dict[str, Any]:
    """Tree table: {metric: {"columns": [...], "rows": {method: [values]}}}."""
    cols = _ordered([split_column(c["column"])[1] for c in cells.values()
                     if split_column(c["column"])[0] == "tree"], TREE_GUIDANCE)
    out: dict[str, Any] = {}
    for metric, _ in METRICS:
        out[metric] = {"columns": cols,
                       "rows": {m: [_cell_value(cells, f"tree/{c}", m, metric) for c in cols] for m in methods}}
    return out


def table2(cells: Mapping[str, Mapping[str, Any]], methods: list[str]) -> dict[str, Any]:
    """Spiral/pinwheel table: {dataset: {"columns": [denoisers], "rows": {method: {metric: [values]}}}}."""
    out: dict[str, Any] = {}
    for ds in ("spiral", "pinwheel"):
        cols = _ordered([split_column(c["column"])[1] for c in cells.values()
                         if split_column(c["column"])[0] == ds], ("ideal", "learned"))
        if not cols:
            continue
        out[ds] = {"columns": cols, "rows": {m: {metric: [_cell_value(cells, f"{ds}/{c}", m, metric) for c in cols]
                                                 for metric, _ in METRICS} for m in methods}}
    return out


def table3(eff: Mapping[str, Mapping[str, Any]], methods: list[str]) -> dict[str, Any]:
    """Efficiency table: eff maps 'column|method' -> Efficiency.as_dict(). {dataset: {method: [ideal, learned]}}."""
    out: dict[str, Any] = {}
    for key, e in eff.items():
        col, method = key.split("|")
        ds, den = split_column(col)
        slot = 0 if den == "ideal" else 1 if den == "learned" else None
        if slot is None:
            continue
        out.setdefault(ds, {}).setdefault(method, [None, None])[slot] = e.get("log_eff_str")
    order = _ordered(out, ("tree", "spiral", "pinwheel"))
    return {ds: {m: out[ds][m] for m in methods if m in out[ds]} for ds in order}


def markdown(results: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    """All tables as markdown. results: {"methods", "cells", "efficiency", "config"}."""
    methods = results["methods"]
    cells, eff = results["cells"], results.get("efficiency", {})
    lab = (lambda m: labels.get(m, m))
    lines: list[str] = ["# msdfast toy study: MSD paper tables 1-3", ""]
    t1 = table1(cells, methods)
    if t1["nll"]["columns"]:
        lines += ["## Table 1: tree (fractal), class-conditional", ""]
        for metric, title in METRICS:
            block = t1[metric]
            lines += [f"| {title} | " + " | ".join(block["columns"]) + " |",
                      "|---" * (len(block["columns"]) + 1) + "|"]
            for m in methods:
                lines.append(f"| {lab(m)} | " + " | ".join(_fmt(v, metric) for v in block["rows"][m]) + " |")
            lines.append("")
    t2 = table2(cells, methods)
    if t2:
        lines += ["## Table 2: unconditional toy data sets", ""]
        for ds, block in t2.items():
            hdr = [f"{title} {c}" for _, title in METRICS for c in block["columns"]]
            lines += [f"| {ds} | " + " | ".join(hdr) + " |", "|---" * (len(hdr) + 1) + "|"]
            for m in methods:
                vals = [_fmt(v, metric) for metric, _ in METRICS for v in block["rows"][m][metric]]
                lines.append(f"| {lab(m)} | " + " | ".join(vals) + " |")
            lines.append("")
    by_points = results.get("efficiency_by_points") or {None: eff}
    for reading, e in by_points.items():
        t3 = table3(e, methods)
        if not t3:
            continue
        where = "" if reading is None else f", x = {EFF_POINT_TITLES.get(reading, reading)}"
        lines += [f"## Table 3: log-efficiency (eq. 17){where}, ideal / learned", ""]
        dss = list(t3)
        lines += ["| method | " + " | ".join(dss) + " |", "|---" * (len(dss) + 1) + "|"]
        for m in methods:
            if not any(m in t3[d] for d in dss):
                continue
            row = []
            for d in dss:
                v = t3[d].get(m, [None, None])
                row.append(" / ".join("–" if x is None else x for x in v))
            lines.append(f"| {lab(m)} | " + " | ".join(row) + " |")
        lines.append("")
    cost = [(k, c) for k, c in cells.items() if c.get("nfe_per_point") is not None]
    if cost:
        lines += ["## Cost per cell", "", "| column | method | NFE per point per step | seconds |", "|---|---|---|---|"]
        for k, c in cost:
            lines.append(f"| {c['column']} | {lab(c['method'])} | {c['nfe_per_point']:.3g} "
                         f"| {c.get('seconds', 0):.1f} |")
        lines.append("")
    return "\n".join(lines)


def _jsonable(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.floating, float)):
        f = float(o)
        return f if math.isfinite(f) else None
    if isinstance(o, np.integer):
        return int(o)
    return o


def write_tables(out: Path, results: Mapping[str, Any], labels: Mapping[str, str]) -> tuple[Path, Path]:
    """results.md and results.json (tables 1-3 plus every cell's raw record) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    methods = results["methods"]
    doc = dict(results)
    doc["table1"] = table1(results["cells"], methods)
    doc["table2"] = table2(results["cells"], methods)
    doc["table3"] = table3(results.get("efficiency", {}), methods)
    doc["table3_by_points"] = {r: table3(e, methods) for r, e in (results.get("efficiency_by_points") or {}).items()}
    jp, mp = out / "results.json", out / "results.md"
    jp.write_text(json.dumps(_jsonable(doc), indent=1))
    mp.write_text(markdown(results, labels))
    return mp, jp


def save_points(out: Path, points: Mapping[str, np.ndarray]) -> Path:
    """All final optimised points in one .npz, keyed 'column|method' with '/' and '|' made file-safe."""
    p = out / "points.npz"
    np.savez_compressed(p, **{k.replace("/", "__").replace("|", "--"): v for k, v in points.items()})
    return p


def plot_landscapes(path: Path, panels: list[tuple[str, dict[str, np.ndarray]]],
                    data: np.ndarray | None = None) -> Path:
    """Reconstructed objective -L per method (landscape.reconstruct_landscape), colour = its rank (percentile),
    data points on top."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    n = max(len(panels), 1)
    fig = Figure(figsize=(2.4 * n, 2.6))
    FigureCanvasAgg(fig)
    for i, (title, land) in enumerate(panels):
        ax = fig.add_subplot(1, n, i + 1)
        xs, obj = land["xs"], land["objective"]
        # Colour = rank of -L: far from the data every estimator's field is a steep bowl that would leave no
        # colours for the structure near the data; ranks show where each method's peaks are.
        rank = np.argsort(np.argsort(obj.ravel())).reshape(obj.shape) / max(obj.size - 1, 1)
        ax.imshow(rank, origin="lower", extent=(xs[0], xs[-1], xs[0], xs[-1]), cmap="viridis")
        if data is not None:
            ax.scatter(data[:, 0], data[:, 1], s=0.3, c="w", alpha=0.3, linewidths=0)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    return path
