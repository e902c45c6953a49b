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

METRICS = (("nll", "NLL mean(-log p) ↓"), ("nll_of_mean", "NLL -log(mean p) ↓"), ("precision", "Precision ↑"),
           ("recall", "Recall ↑"), ("mmd", "MMD ↓ (x1e-4)"))
# The MSD paper's published values (tables 1-3), shown in parentheses beside ours. Its single NLL matches
# -log(mean p) (its DDIM -1.85; docs/math.md sec. 3), so it sits in that block. msdfast row key -> the paper's row.
PAPER_ROWS = {"ddim": "DDIM", "sds": "SDS", "vsd": "VSD", "sdi": "SDI", "msd-paper": "Ours"}
PAPER_TABLE1 = {   # metric -> paper row -> [ideal, learned, learned+cfg, learned+autoguidance]
    "nll_of_mean": {"DDIM": [-1.85, -1.51, -1.59, -1.67], "SDS": [36.15, 9.12, 15.96, 11.33],
                    "VSD": [9.97, 9.88, 18.97, 11.52], "SDI": [24.28, -2.87, 27.37, 0.65],
                    "Ours": [-1.32, -2.02, -1.15, -1.99]},
    "mmd": {"DDIM": [0.860, 0.007, 257.43, 0.25], "SDS": [328.0, 87.04, 3875.11, 71.05],
            "VSD": [230.9, 94.68, 3845.41, 70.25], "SDI": [29.93, 459.9, 69.23, 15089],
            "Ours": [30.46, 12.79, 133.41, 122.94]},
    "precision": {"DDIM": [0.97, 0.95, 0.97, 0.96], "SDS": [0.08, 0.01, 0.17, 0.04], "VSD": [0.05, 0.10, 0.21, 0.03],
                  "SDI": [0.27, 0.97, 0.30, 0.51], "Ours": [0.92, 0.97, 0.94, 0.97]},
    "recall": {"DDIM": [0.93, 0.96, 0.44, 0.79], "SDS": [0.03, 0.00, 0.03, 0.03], "VSD": [0.02, 0.05, 0.05, 0.03],
               "SDI": [0.01, 0.12, 0.48, 0.51], "Ours": [0.33, 0.42, 0.40, 0.43]},
}
PAPER_TABLE2 = {   # data set -> paper row -> metric -> [ideal, learned]
    "spiral": {
        "DDIM": {"nll_of_mean": [-1.39, -1.32], "precision": [0.97, 0.96], "recall": [0.93, 0.96], "mmd": [0.410, 1.160]},
        "SDS": {"nll_of_mean": [30.37, 8.13], "precision": [0.02, 0.04], "recall": [0.03, 0.11], "mmd": [13.85, 274.3]},
        "VSD": {"nll_of_mean": [10.15, 8.90], "precision": [0.04, 0.07], "recall": [0.09, 0.14], "mmd": [23.46, 271.8]},
        "SDI": {"nll_of_mean": [35.64, 19.16], "precision": [0.10, 0.12], "recall": [0.90, 0.42], "mmd": [39.51, 2008]},
        "Ours": {"nll_of_mean": [-1.28, -1.51], "precision": [0.99, 0.98], "recall": [0.18, 0.18], "mmd": [4.490, 18.41]}},
    "pinwheel": {
        "DDIM": {"nll_of_mean": [-1.19, -1.1], "precision": [0.97, 0.97], "recall": [0.94, 0.97], "mmd": [1.05, 0.270]},
        "SDS": {"nll_of_mean": [2.29, 2.00], "precision": [0.85, 0.90], "recall": [0.03, 0.01], "mmd": [5.18, 36.37]},
        "VSD": {"nll_of_mean": [3.34, 2.28], "precision": [0.65, 0.97], "recall": [0.04, 0.02], "mmd": [6.78, 33.36]},
        "SDI": {"nll_of_mean": [28.31, 17.33], "precision": [0.17, 0.51], "recall": [0.001, 0.15], "mmd": [6.13, 98.09]},
        "Ours": {"nll_of_mean": [-1.94, -2.19], "precision": [0.99, 0.99], "recall": [0.01, 0.13], "mmd": [5.83, 7.250]}},
}
PAPER_TABLE3 = {   # data set -> paper row -> "ideal / learned" log-efficiency
    "tree": {"SDS": "-7.37 / -6.89", "VSD": "-5.92 / -3.83", "SDI": "14.18 / 14.21", "Ours": "13.44 / 7.65"},
    "spiral": {"SDS": "-8.48 / -7.57", "VSD": "-6.85 / -4.45", "SDI": "13.94 / 14.17", "Ours": "13.38 / 6.32"},
    "pinwheel": {"SDS": "-7.82 / -6.99", "VSD": "-6.36 / -3.93", "SDI": "14.19 / 14.18", "Ours": "13.76 / 7.08"},
}
NOTES = """Notes. NLL is reported two ways: mean(-log p) over the final points, and -log(mean p). The paper's values
(in parentheses beside ours, from its tables 1-3) match the second definition: its DDIM -1.85 is what -log(mean p)
gives for DDIM and for true samples of tree class A (mean(-log p) gives about -1.33 for those, and no correct
sampler reaches -1.85 with it). `inf` in table 3 (eq. 17, |g|^2 / (MSE cost)) means zero variance: the
estimator is deterministic at a fixed x (Tweedie MSD, SDI at its annealed t, and MSD whose kernel pull erases
the chain's noise), so its MSE over repeated estimates is 0. `n/a`: not measured or undefined (e.g. a zero
mean gradient)."""
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


def _paper_cell(metric: str, method: str, column: str, dataset: str = "tree") -> Any:
    """The paper's value for (metric, our method key, column) or None."""
    row = PAPER_ROWS.get(method)
    if row is None:
        return None
    if dataset == "tree":
        vals = PAPER_TABLE1.get(metric, {}).get(row)
        return vals[TREE_GUIDANCE.index(column)] if vals and column in TREE_GUIDANCE else None
    vals = PAPER_TABLE2.get(dataset, {}).get(row, {}).get(metric)
    return vals[("ideal", "learned").index(column)] if vals and column in ("ideal", "learned") else None


def _with_paper(v: Any, metric: str, paper: Any) -> str:
    ours = _fmt(v, metric)
    if paper is None:
        return ours
    p = f"{paper:.3g}" if metric == "mmd" else f"{paper:.2f}"
    return f"{ours} ({p})"


def markdown(results: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    """All tables as markdown, the paper's values in parentheses. results: {"methods", "cells", "efficiency", ...}."""
    methods = results["methods"]
    cells, eff = results["cells"], results.get("efficiency", {})
    lab = (lambda m: labels.get(m, m))
    lines: list[str] = ["# msdfast toy study: MSD paper tables 1-3", "",
                        "Ours, with the paper's published value in parentheses where it has one (row 'Ours' = "
                        "'MSD (paper)').", ""]
    t1 = table1(cells, methods)
    if t1["nll"]["columns"]:
        lines += ["## Table 1: tree (fractal), class-conditional", ""]
        for metric, title in METRICS:
            block = t1[metric]
            lines += [f"| {title} | " + " | ".join(block["columns"]) + " |",
                      "|---" * (len(block["columns"]) + 1) + "|"]
            for m in methods:
                vals = [_with_paper(v, metric, _paper_cell(metric, m, c))
                        for v, c in zip(block["rows"][m], block["columns"])]
                lines.append(f"| {lab(m)} | " + " | ".join(vals) + " |")
            lines.append("")
    t2 = table2(cells, methods)
    if t2:
        lines += ["## Table 2: unconditional toy data sets", ""]
        for ds, block in t2.items():
            hdr = [f"{title} {c}" for _, title in METRICS for c in block["columns"]]
            lines += [f"| {ds} | " + " | ".join(hdr) + " |", "|---" * (len(hdr) + 1) + "|"]
            for m in methods:
                vals = [_with_paper(v, metric, _paper_cell(metric, m, c, ds)) for metric, _ in METRICS
                        for v, c in zip(block["rows"][m][metric], block["columns"])]
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
                cell = " / ".join("–" if x is None else x for x in v)
                paper = PAPER_TABLE3.get(d, {}).get(PAPER_ROWS.get(m, ""))
                row.append(cell if paper is None else f"{cell} ({paper})")
            lines.append(f"| {lab(m)} | " + " | ".join(row) + " |")
        lines.append("")
    cost = [(k, c) for k, c in cells.items() if c.get("nfe_per_point") is not None]
    if cost:
        lines += ["## Cost per cell", "", "| column | method | NFE per point per step | seconds |", "|---|---|---|---|"]
        for k, c in cost:
            lines.append(f"| {c['column']} | {lab(c['method'])} | {c['nfe_per_point']:.3g} "
                         f"| {c.get('seconds', 0):.1f} |")
        lines.append("")
    lines += [NOTES, ""]
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
    doc["metric_definitions"] = {"nll": "mean_i(-log p(x_i))", "nll_of_mean": "-log(mean_i p(x_i)) (the paper's)",
                                 "precision": "Kynkaanniemi et al. 2019, k = 3", "recall": "Kynkaanniemi et al. 2019, k = 3",
                                 "mmd": "biased MMD^2, RBF bandwidths (0.02, 0.05, 0.1, 0.2, 0.5)"}
    doc["paper"] = {"rows": PAPER_ROWS, "table1": PAPER_TABLE1, "table2": PAPER_TABLE2, "table3": PAPER_TABLE3}
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
