"""A sweep's summary: summary.json, summary.md and contact_sheet.png in the sweep folder.

Per group -- a method and its grid values (the "variant") -- the metrics every run reports in its metrics.json
(msdfast.pipelines.common.run_distillation): the final loss (the last step's), the total NFE, NFE per step, the
seconds of the steps and the steps done, as mean and spread (sample standard deviation, 0 for one run) over the
group's runs (its seeds and prompts; n says how many). summary.json also lists every run's own values; a run
that is not finished is listed as missing and left out of the statistics.

The contact sheet has one row per prompt and one column per (method, variant, seed), each cell the run's
final.png labelled with its column; a missing run is a grey cell.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

from ..atomic import atomic_path, write_atomic
from .spec import Run, SweepSpec

__all__ = ["collect", "run_metrics", "METRICS"]

METRICS = ("final_loss", "total_nfe", "nfe_per_step", "seconds", "steps_done")


def run_metrics(run: Run) -> dict[str, Any] | None:
    """The run's reported metrics (METRICS), None while it is not finished."""
    try:
        m = json.loads((run.folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(m, dict) or not m.get("finished"):
        return None
    hist = m.get("history") or []
    return {"final_loss": hist[-1]["loss"] if hist else None, "total_nfe": m["total_nfe"],
            "nfe_per_step": m["nfe_per_step"], "seconds": m["seconds"], "steps_done": m["steps_done"],
            "converged": bool(m.get("converged", False))}


def _mean_std(xs: Sequence[float]) -> dict[str, float]:
    n = len(xs)
    mean = sum(xs) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std}


def _group_key(run: Run) -> tuple[str, str]:
    return run.method, run.variant_label


def collect(spec: SweepSpec, runs: Sequence[Run]) -> dict[str, Any]:
    """Write summary.json, summary.md and contact_sheet.png into spec.out; returns the summary."""
    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    per_run, groups = [], {}
    for r in runs:
        m = run_metrics(r)
        per_run.append({"id": r.id, "folder": str(r.folder.relative_to(out)), "prompt": spec.prompts[r.prompt_index],
                        "seed": r.seed, "method": r.method, "variant": r.variant, "finished": m is not None,
                        **(m or {})})
        g = groups.setdefault(_group_key(r), {"method": r.method, "variant": r.variant, "runs": [], "missing": 0})
        if m is None:
            g["missing"] += 1
        else:
            g["runs"].append(m)
    table = []
    for g in groups.values():
        row = {"method": g["method"], "variant": g["variant"], "n": len(g["runs"]), "missing": g["missing"]}
        for k in METRICS:
            xs = [m[k] for m in g["runs"] if m[k] is not None]
            row[k] = _mean_std(xs) if xs else None
        table.append(row)
    summary = {"job": spec.job, "model": spec.model, "prompts": spec.prompts, "seeds": spec.seeds,
               "complete": all(p["finished"] for p in per_run), "groups": table, "runs": per_run}
    write_atomic(out / "summary.json", json.dumps(summary, indent=2).encode())
    write_atomic(out / "summary.md", _markdown(summary).encode())
    _contact_sheet(spec, runs, out / "contact_sheet.png")
    return summary


def _fmt(stat: dict[str, float] | None, digits: int = 4) -> str:
    if stat is None:
        return "-"
    return f"{stat['mean']:.{digits}g} ± {stat['std']:.2g}"


def _markdown(s: dict[str, Any]) -> str:
    done = sum(r["finished"] for r in s["runs"])
    lines = [f"# Sweep summary: {s['job']}, {done}/{len(s['runs'])} runs finished", "",
             f"model `{s['model']}`; {len(s['prompts'])} prompts x {len(s['seeds'])} seeds {s['seeds']}; "
             "mean ± sample std over each group's runs (seeds and prompts).", "",
             "| method | variant | n | missing | final loss | NFE | NFE/step | seconds | steps |",
             "|---|---|---|---|---|---|---|---|---|"]
    for g in s["groups"]:
        var = " ".join(f"{k}={json.dumps(v)}" for k, v in g["variant"].items()) or "-"
        lines.append(f"| {g['method']} | {var} | {g['n']} | {g['missing']} | {_fmt(g['final_loss'])} | "
                     f"{_fmt(g['total_nfe'], 6)} | {_fmt(g['nfe_per_step'])} | {_fmt(g['seconds'], 3)} | "
                     f"{_fmt(g['steps_done'], 6)} |")
    lines += ["", "Prompts:", ""] + [f"{i}. {p}" for i, p in enumerate(s["prompts"])] + [""]
    return "\n".join(lines)


def _contact_sheet(spec: SweepSpec, runs: Sequence[Run], path: Path, height: int = 96) -> None:
    from PIL import Image, ImageDraw

    cols: list[tuple[str, str, int]] = []
    for r in runs:
        key = (r.method, r.variant_label, r.seed)
        if key not in cols:
            cols.append(key)
    cells: dict[tuple[int, int], Any] = {}
    for r in runs:
        c = cols.index((r.method, r.variant_label, r.seed))
        try:
            with Image.open(r.folder / "final.png") as im:
                im = im.convert("RGB")
            cells[(r.prompt_index, c)] = im.resize((max(1, im.width * height // im.height), height))
        except (OSError, ValueError):
            cells[(r.prompt_index, c)] = None
    width = max([im.width for im in cells.values() if im is not None] + [height])
    label_h, left = 24, 24
    sheet = Image.new("RGB", (left + width * len(cols), label_h + height * len(spec.prompts)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, (method, variant, seed) in enumerate(cols):
        draw.text((left + c * width + 2, 0), f"{method} s{seed}", fill="black")
        if variant:
            draw.text((left + c * width + 2, 11), variant[: max(4, width // 6)], fill="black")
    for p in range(len(spec.prompts)):
        draw.text((2, label_h + p * height + 2), f"p{p}", fill="black")
        for c in range(len(cols)):
            im = cells.get((p, c))
            x, y = left + c * width, label_h + p * height
            if im is None:
                draw.rectangle((x, y, x + width - 1, y + height - 1), fill=(160, 160, 160))
                if (p, c) in cells:
                    draw.text((x + 2, y + 2), "missing", fill="black")
            else:
                sheet.paste(im, (x, y))
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
