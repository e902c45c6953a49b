"""A sweep's summary: summary.json, summary.md and contact_sheet.png in the sweep folder.

Per group -- a method and its grid values (the "variant") -- the metrics every run reports in its metrics.json
(msdfast.pipelines.common.run_distillation): the final loss (the last step's), the total NFE, NFE per step, the
seconds of the steps and the steps done, as mean and spread (sample standard deviation, 0 for one run) over the
group's runs (its seeds and prompts; n says how many). summary.json also lists every run's own values; a run
that is not finished is listed as missing and left out of the statistics.

Job toy adds the cell's own metrics (msdfast.toy.cell: NLL both ways, precision, recall, MMD). Job digits adds the
evaluation classifier's view of each final.png (msdfast.digits.classifier; the image taken to gray as the digits
study does, msdfast.digits.data.to_gray, at the classifier's 32 px): `accuracy` (1 when the argmax class is the
prompted digit), `confidence`
(the softmax probability of the prompted digit) -- per run, and mean and spread per group -- and per group
`diversity`, the mean pairwise distance of the classifier's features among one digit's seeds, averaged over the
digits (msdfast.digits.metrics.diversity; DSD's point is that it grows).

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
# A job's own metrics: the digits classifier's (computed here from final.png), the toy cell's (in metrics.json).
JOB_METRICS = {"digits": ("accuracy", "confidence"), "toy": ("nll", "nll_of_mean", "precision", "recall", "mmd")}
_FILE_METRICS = JOB_METRICS["toy"]


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
            "converged": bool(m.get("converged", False)), **{k: m[k] for k in _FILE_METRICS if k in m}}


def _mean_std(xs: Sequence[float]) -> dict[str, float]:
    n = len(xs)
    mean = sum(xs) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std}


# Jobs whose prompts are different worlds (the toy's columns: other data sets, other denoisers), so a group is
# one column's method and variant instead of pooling over prompts.
PER_PROMPT_GROUPS = ("toy",)


def _group_key(run: Run, job: str = "") -> tuple[int | None, str, str]:
    return (run.prompt_index if job in PER_PROMPT_GROUPS else None), run.method, run.variant_label


def collect(spec: SweepSpec, runs: Sequence[Run]) -> dict[str, Any]:
    """Write summary.json, summary.md and contact_sheet.png into spec.out; returns the summary."""
    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    finished = {r.id: m for r in runs if (m := run_metrics(r)) is not None}
    metrics, diversity = METRICS + JOB_METRICS.get(spec.job, ()), {}
    if spec.job == "digits":
        diversity = _digits_metrics(spec, [r for r in runs if r.id in finished], finished)
    per_run, groups = [], {}
    for r in runs:
        m = finished.get(r.id)
        per_run.append({"id": r.id, "folder": str(r.folder.relative_to(out)), "prompt": spec.prompts[r.prompt_index],
                        "seed": r.seed, "method": r.method, "variant": r.variant, "finished": m is not None,
                        **(m or {})})
        g = groups.setdefault(_group_key(r, spec.job), {"method": r.method, "variant": r.variant, "runs": [],
                                                        "missing": 0})
        if spec.job in PER_PROMPT_GROUPS:
            g["prompt"] = spec.prompts[r.prompt_index]
        if m is None:
            g["missing"] += 1
        else:
            g["runs"].append(m)
    table = []
    for key, g in groups.items():
        row = {**({"prompt": g["prompt"]} if "prompt" in g else {}), "method": g["method"], "variant": g["variant"],
               "n": len(g["runs"]), "missing": g["missing"]}
        for k in metrics:
            xs = [m[k] for m in g["runs"] if m.get(k) is not None and m[k] == m[k]]   # nan: not measured
            row[k] = _mean_std(xs) if xs else None
        if spec.job == "digits":
            row["diversity"] = diversity.get(key)
        table.append(row)
    summary = {"job": spec.job, "model": spec.model, "prompts": spec.prompts, "seeds": spec.seeds,
               "complete": all(p["finished"] for p in per_run), "groups": table, "runs": per_run}
    write_atomic(out / "summary.json", json.dumps(summary, indent=2).encode())
    write_atomic(out / "summary.md", _markdown(summary).encode())
    _contact_sheet(spec, runs, out / "contact_sheet.png")
    return summary


def _digits_metrics(spec: SweepSpec, done: Sequence[Run],
                    metrics: dict[str, dict[str, Any]]) -> dict[tuple[str, str], float | None]:
    """Add the classifier's accuracy and confidence to the metrics of every finished run in `done`; returns each
    group's diversity (None below two seeds of a digit) (module doc)."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from ..digits.classifier import load_classifier
    from ..digits.data import RESOLUTION, to_gray
    from ..digits.metrics import diversity

    if not done:
        return {}
    gray = []
    for r in done:   # the study's evaluation path: RGB in [0, 1] -> channel mean (to_gray) at the classifier's size
        with Image.open(r.folder / "final.png") as im:
            rgb = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
        if rgb.shape[-1] != RESOLUTION or rgb.shape[-2] != RESOLUTION:
            rgb = F.interpolate(rgb, size=(RESOLUTION, RESOLUTION), mode="bilinear", antialias=True,
                                align_corners=False)
        gray.append(to_gray(rgb)[0])
    labels = torch.tensor([spec.classes[r.prompt_index] for r in done])
    net = load_classifier()
    with torch.no_grad():
        feats = net.features(torch.stack(gray))
        prob = net.head(feats).softmax(-1)
    for i, r in enumerate(done):
        metrics[r.id].update(accuracy=float(prob[i].argmax() == labels[i]), confidence=float(prob[i, labels[i]]))
    out: dict[tuple[str, str], float | None] = {}
    for key in dict.fromkeys(_group_key(r, spec.job) for r in done):
        idx = [i for i, r in enumerate(done) if _group_key(r, spec.job) == key]
        d = diversity(feats[idx], labels[idx])
        out[key] = None if d != d else d     # nan: no digit with two seeds in the group
    return out


def _fmt(stat: dict[str, float] | None, digits: int = 4) -> str:
    if stat is None:
        return "-"
    return f"{stat['mean']:.{digits}g} ± {stat['std']:.2g}"


def _markdown(s: dict[str, Any]) -> str:
    done = sum(r["finished"] for r in s["runs"])
    digits = s["job"] == "digits"
    extra = JOB_METRICS.get(s["job"], ())
    per_prompt = s["job"] in PER_PROMPT_GROUPS
    lead = "| column " if per_prompt else ""
    lines = [f"# Sweep summary: {s['job']}, {done}/{len(s['runs'])} runs finished", "",
             f"model `{s['model']}`; {len(s['prompts'])} prompts x {len(s['seeds'])} seeds {s['seeds']}; "
             "mean ± sample std over each group's runs (" + ("seeds" if per_prompt else "seeds and prompts") + ").",
             "",
             lead + "| method | variant | n | missing | final loss | NFE | NFE/step | seconds | steps |"
             + "".join(f" {k.replace('_', ' ')} |" for k in extra) + (" diversity |" if digits else ""),
             "|---" * per_prompt + "|---|---|---|---|---|---|---|---|---|" + "---|" * (len(extra) + digits)]
    for g in s["groups"]:
        var = " ".join(f"{k}={json.dumps(v)}" for k, v in g["variant"].items()) or "-"
        lines.append((f"| {g['prompt']} " if per_prompt else "")
                     + f"| {g['method']} | {var} | {g['n']} | {g['missing']} | {_fmt(g['final_loss'])} | "
                     f"{_fmt(g['total_nfe'], 6)} | {_fmt(g['nfe_per_step'])} | {_fmt(g['seconds'], 3)} | "
                     f"{_fmt(g['steps_done'], 6)} |" + "".join(f" {_fmt(g[k], 3)} |" for k in extra)
                     + (f" {'-' if g['diversity'] is None else format(g['diversity'], '.3g')} |" if digits else ""))
    if digits:
        lines += ["", "accuracy / confidence: the evaluation classifier on each final.png (prompted digit); diversity: "
                  "mean pairwise classifier-feature distance among one digit's seeds."]
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
