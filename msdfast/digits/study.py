"""`msdfast digits`: the image-domain study on the digits model (issue 12).

Every estimator -- SDS, SDI, ASD, VSD, DSD and MSD (paper = the stable solver of Algorithm 2, the exact
posterior, Tweedie), each also with PSR k = 0.95 and 1.05 (thesis eq. 1.6) -- optimises an image field (pixel,
hash grid) for each prompted digit ("a handwritten 7") and each seed, through msdfast's image pipeline
(`msdfast.pipelines.image.distill_image`: render -> VAE encode with gradient -> estimator -> loss trick ->
AdamW, the code `msdfast image` runs), on the shipped model. Estimator options are the library's defaults
(as `msdfast image --method M` uses them); only the MSD solver differs between the three MSD rows.

Reference rows: `ddim` (the model's DDIM + CFG samples for the same digits and seeds, msdfast's sampler) and
`real` (held-out real digits of the prompted classes).

Metrics (msdfast.digits.metrics, on the evaluation classifier trained only on the real train split): accuracy
and confidence for the prompted digit, k-NN precision / recall (k = 3) and Frechet distance against the held-out
real digits OF THE PROMPTED CLASSES (for `real`: against the other held-out digits), diversity (mean pairwise
feature distance among one prompt's seeds), NFE per gradient (per sample for `ddim`), seconds per run.

Outputs in --out: cells/<row>.npz (one checkpoint per cell: a row's images, labels, seeds, NFE, seconds;
`--resume` reuses them when study.json matches), table.md / table.json, contact_<field>.png (rows x
digits/seeds, labelled), nfe.png (accuracy and recall against NFE per gradient) and images.npz: for each row
`<row>` [n, H, W] in [0, 1] with ink high, `<row>_labels`, `<row>_seeds`.

Also: `msdfast digits train` (the model), `msdfast digits train-classifier`, `msdfast digits gate`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .data import load_digits_split, to_gray
from .gate import DDIM_STEPS

__all__ = ["METHODS", "PSR_KS", "StudyConfig", "run_study", "row_name", "add_digits_arguments", "run_digits"]

# row key -> (estimator name, estimator options)
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "sds": ("sds", {}),
    "sdi": ("sdi", {}),
    "asd": ("asd", {}),
    "vsd": ("vsd", {}),
    "dsd": ("dsd", {}),
    # the paper's Stable Diffusion practice (sec. 4.3, Algorithm 2): the stable solver, kernel centres on the DDIM
    # inversion trajectory of x -- the estimator's defaults, as `msdfast image --method msd` runs it
    "msd-paper": ("msd", {"solver": "stable"}),
    "msd-posterior": ("msd", {"solver": "posterior"}),
    "msd-tweedie": ("msd", {"solver": "tweedie"}),
}
PSR_KS = (None, 0.95, 1.05)
FIELDS = ("pixel", "grid")
# AdamW learning rates per field, the same for every method: chosen (on SDS only, before any other method ran)
# so that a field moves from its grey start to a digit within the default 30 steps; the paper's 1e-2 over 400
# steps does not fit the time budget.
FIELD_LR = {"pixel": 0.2, "grid": 0.03}
# Default: <= 10 minutes on 2 free cores (two digits x two seeds x 24 method/PSR cells, hash grid, 30 steps);
# --full: all ten digits x four seeds, both fields, 100 steps.
DEFAULT_DIGITS = (3, 7)
DEFAULT_SEEDS = (0, 1)
DEFAULT_FIELDS = ("grid",)
DEFAULT_STEPS = 30
FULL_STEPS = 100
FULL_DIGITS = tuple(range(10))
FULL_SEEDS = (0, 1, 2, 3)


@dataclass
class StudyConfig:
    model: str = "digits"
    out: str = "runs/digits"
    digits: tuple[int, ...] = DEFAULT_DIGITS
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    methods: tuple[str, ...] = tuple(METHODS)
    psr: tuple[float | None, ...] = PSR_KS
    fields: tuple[str, ...] = DEFAULT_FIELDS
    steps: int = DEFAULT_STEPS
    guidance_scale: float = 7.5
    ddim_steps: int = DDIM_STEPS
    lr: dict[str, float] = field(default_factory=lambda: dict(FIELD_LR))

    def validate(self) -> None:
        from ..errors import UserInputError
        if not self.digits or any(not 0 <= d <= 9 for d in self.digits):
            raise UserInputError(f"--digits: expected digits in 0..9, got {list(self.digits)}")
        if not self.seeds:
            raise UserInputError("--seeds: expected at least one seed")
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise UserInputError(f"--methods: expected some of {', '.join(METHODS)}, got {', '.join(bad) or 'none'}")
        bad_f = [f for f in self.fields if f not in FIELDS]
        if bad_f or not self.fields:
            raise UserInputError(f"--fields: expected some of {', '.join(FIELDS)}, got {', '.join(bad_f) or 'none'}")
        for k in self.psr:
            if k is not None and not k > 0:
                raise UserInputError(f"--psr: PSR k must be positive, got {k}")
        if self.steps < 1 or self.ddim_steps < 1:
            raise UserInputError(f"--steps/--ddim-steps: must be >= 1, got {self.steps}/{self.ddim_steps}")
        if not self.guidance_scale >= 1:
            raise UserInputError(f"--guidance-scale: must be >= 1, got {self.guidance_scale}")


def row_name(method: str, psr_k: float | None, fld: str) -> str:
    return f"{method}{'' if psr_k is None else f'-psr{psr_k:g}'}-{fld}"


def _cells(cfg: StudyConfig) -> list[tuple[str, str, float | None, str]]:
    return [(row_name(m, k, f), m, k, f) for f in cfg.fields for m in cfg.methods for k in cfg.psr]


def _save_cell(path: Path, **arrays: Any) -> None:
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _distil_cell(cfg: StudyConfig, den: Any, method: str, psr_k: float | None, fld: str,
                 workdir: Path) -> dict[str, np.ndarray]:
    """One cell: every (digit, seed) run of one method / PSR / field through msdfast's image pipeline."""
    from ..pipelines.image import ImageConfig, distill_image
    from .model import prompt_for

    est, opts = METHODS[method]
    images, labels, seeds, nfe, secs = [], [], [], [], []
    for d in cfg.digits:
        for s in cfg.seeds:
            icfg = ImageConfig(model=cfg.model, prompt=prompt_for(d), method=est, steps=cfg.steps,
                               lr=cfg.lr[fld], seed=int(s), out=str(workdir / f"run_{d}_{s}"),
                               guidance_scale=cfg.guidance_scale, psr_k=psr_k, options=dict(opts),
                               ckpt_every=0, snapshot_every=0, progress=False, field=fld)
            m = distill_image(icfg, denoiser=den, overwrite=True)   # an interrupted cell is redone whole
            with torch.no_grad():
                img = to_gray(m["field"].render().float().clamp(0, 1))[0]
            images.append(img.cpu().numpy())
            labels.append(d)
            seeds.append(s)
            nfe.append(m["nfe_per_step"])
            secs.append(m["seconds"])
    return {"images": np.stack(images).astype(np.float32), "labels": np.asarray(labels, np.int64),
            "seeds": np.asarray(seeds, np.int64), "nfe": np.asarray(nfe, np.float64),
            "seconds": np.asarray(secs, np.float64)}


def _reference_cells(cfg: StudyConfig, den: Any) -> dict[str, dict[str, np.ndarray]]:
    from .gate import ddim_digits

    labels = [d for d in cfg.digits for _ in cfg.seeds]
    seeds = [s for _ in cfg.digits for s in cfg.seeds]
    t0 = time.perf_counter()
    ddim = ddim_digits(den, labels, seeds, guidance_scale=cfg.guidance_scale, steps=cfg.ddim_steps)
    dt = (time.perf_counter() - t0) / len(labels)
    split = load_digits_split()
    real_idx = _real_indices(split.heldout_labels, cfg)
    return {
        "ddim": {"images": ddim.numpy().astype(np.float32), "labels": np.asarray(labels, np.int64),
                 "seeds": np.asarray(seeds, np.int64), "nfe": np.full(len(labels), 2.0 * cfg.ddim_steps),
                 "seconds": np.full(len(labels), dt)},
        "real": {"images": split.heldout_images[real_idx].numpy().astype(np.float32),
                 "labels": split.heldout_labels[real_idx].numpy(), "seeds": real_idx.numpy(),
                 "nfe": np.zeros(len(real_idx)), "seconds": np.zeros(len(real_idx))},
    }


def _real_indices(heldout_labels: torch.Tensor, cfg: StudyConfig) -> torch.Tensor:
    """For each prompted digit, its first len(seeds) held-out images ("seeds" of the real row = their index)."""
    return torch.cat([torch.nonzero(heldout_labels == d)[:len(cfg.seeds), 0] for d in cfg.digits])


def _table(cfg: StudyConfig, cells: dict[str, dict[str, np.ndarray]]) -> list[dict[str, Any]]:
    from .classifier import load_classifier
    from .metrics import evaluate_images

    clf = load_classifier()
    split = load_digits_split()
    prompted = torch.isin(split.heldout_labels, torch.tensor(cfg.digits))
    ref_all = clf.features(split.heldout_images)
    rows = []
    for name, c in cells.items():
        ref_mask = prompted.clone()
        if name == "real":              # the real row is judged against the OTHER held-out digits
            ref_mask[torch.from_numpy(c["seeds"])] = False
        m = evaluate_images(clf, torch.from_numpy(c["images"]), torch.from_numpy(c["labels"]), ref_all[ref_mask])
        rows.append({"row": name, **m, "nfe_per_gradient": float(np.mean(c["nfe"])),
                     "seconds_per_run": float(np.mean(c["seconds"]))})
    return rows


def _markdown(rows: list[dict[str, Any]]) -> str:
    head = "| row | accuracy | confidence | precision | recall | FD | diversity | NFE/grad | s/run |\n"
    head += "|---|---|---|---|---|---|---|---|---|\n"
    return head + "".join(
        f"| {r['row']} | {r['accuracy']:.3f} | {r['confidence']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} | "
        f"{r['fd']:.1f} | {r['diversity']:.2f} | {r['nfe_per_gradient']:.1f} | {r['seconds_per_run']:.2f} |\n"
        for r in rows)


def _figures(cfg: StudyConfig, cells: dict[str, dict[str, np.ndarray]], rows: list[dict[str, Any]],
             out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for fld in cfg.fields:
        names = ["real", "ddim"] + [n for n, *_ in _cells(cfg) if n.endswith("-" + fld)]
        ncol = len(cells["ddim"]["labels"])
        fig, axes = plt.subplots(len(names), ncol, figsize=(0.8 * ncol + 2.2, 0.8 * len(names) + 0.4),
                                 squeeze=False)
        for i, n in enumerate(names):
            for j in range(ncol):
                ax = axes[i, j]
                ax.imshow(cells[n]["images"][j], cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([]), ax.set_yticks([])
                if i == 0:
                    ax.set_title(f"{cells['ddim']['labels'][j]} s{cells['ddim']['seeds'][j]}", fontsize=7)
            axes[i, 0].set_ylabel(n, rotation=0, ha="right", va="center", fontsize=7)
        fig.tight_layout(pad=0.2)
        fig.savefig(out / f"contact_{fld}.png", dpi=110)
        plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, key in zip(axes, ("accuracy", "recall")):
        for r in rows:
            if r["row"] == "real":
                continue
            marker = "s" if r["row"] == "ddim" else ("o" if r["row"].endswith("pixel") else "^")
            ax.scatter(max(r["nfe_per_gradient"], 0.5), r[key], marker=marker, s=18)
            ax.annotate(r["row"], (max(r["nfe_per_gradient"], 0.5), r[key]), fontsize=5)
        ax.set_xscale("log")
        ax.set_xlim(0.4, 2 * max(max(r["nfe_per_gradient"] for r in rows), 1.0))
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("NFE per gradient (ddim: per sample)")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[0].set_title("o pixel, ^ hash grid, s DDIM")
    fig.tight_layout()
    fig.savefig(out / "nfe.png", dpi=130)
    plt.close(fig)


def run_study(cfg: StudyConfig, *, resume: bool = False, progress: bool = True,
              denoiser: Any = None) -> list[dict[str, Any]]:
    """Run (or resume) the study; returns the table rows (also written to table.md / table.json)."""
    from tqdm.auto import tqdm

    from ..errors import UserInputError
    from .model import resolve_model

    cfg.validate()
    out = Path(cfg.out)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    meta = {**asdict(cfg), "psr": [k for k in cfg.psr]}
    meta_path = out / "study.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old != json.loads(json.dumps(meta)):
            raise UserInputError(f"--out: {str(out)!r} holds a study with another configuration; use a new --out")
        if not resume and any((out / "cells").glob("*.npz")):
            raise UserInputError(f"--out: {str(out)!r} already holds cells; pass --resume to continue it")
    meta_path.write_text(json.dumps(meta, indent=2))
    if denoiser is None:
        from ..denoisers.sd import load_stable_diffusion
        denoiser = load_stable_diffusion(resolve_model(cfg.model), cache_dir=False)
    cells: dict[str, dict[str, np.ndarray]] = {}
    ref_path = out / "cells" / "reference.npz"
    if resume and ref_path.exists():
        with np.load(ref_path) as z:
            cells.update({r: {k[len(r) + 1:]: z[k] for k in z.files if k.startswith(r + ".")} for r in ("ddim", "real")})
    else:
        cells.update(_reference_cells(cfg, denoiser))
        _save_cell(ref_path, **{f"{r}.{k}": v for r, c in cells.items() for k, v in c.items()})
    todo = _cells(cfg)
    bar = tqdm(todo, desc="digits study", disable=not progress)
    for name, method, k, fld in bar:
        path = out / "cells" / f"{name}.npz"
        bar.set_postfix(cell=name)
        if resume and path.exists():
            with np.load(path) as z:
                cells[name] = {key: z[key] for key in z.files}
            continue
        cells[name] = _distil_cell(cfg, denoiser, method, k, fld, out / "work" / name)
        _save_cell(path, **cells[name])
    rows = _table(cfg, cells)
    (out / "table.json").write_text(json.dumps(rows, indent=2))
    (out / "table.md").write_text(_markdown(rows))
    np.savez_compressed(out / "images.npz", **{
        f"{n}{suffix}": c[key] for n, c in cells.items()
        for suffix, key in (("", "images"), ("_labels", "labels"), ("_seeds", "seeds"))})
    _figures(cfg, cells, rows, out)
    return rows


# ----------------------------------------------------------------------------------------- CLI
def add_digits_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="digits_action", metavar="{train,train-classifier,gate}",
                           help="optional action (default: run the study)")
    from .classifier import add_train_classifier_arguments
    from .gate import add_gate_arguments
    from .train import add_train_arguments
    add_train_arguments(sub.add_parser("train", help="train the digits latent-diffusion model (SD format)"))
    add_train_classifier_arguments(sub.add_parser("train-classifier", help="train the evaluation classifier"))
    add_gate_arguments(sub.add_parser("gate", help="check the shipped weights' quality gate"))
    p.add_argument("--model", default="digits", help="'digits' (the shipped model) or a model folder")
    p.add_argument("--out", default="runs/digits")
    p.add_argument("--full", action="store_true",
                   help=f"all ten digits x {len(FULL_SEEDS)} seeds, both fields, {FULL_STEPS} steps (default: digits "
                        f"{DEFAULT_DIGITS} x {len(DEFAULT_SEEDS)} seeds, {DEFAULT_FIELDS[0]} field, {DEFAULT_STEPS} steps)")
    p.add_argument("--digits", type=int, nargs="+", default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--methods", nargs="+", default=list(METHODS), help=", ".join(METHODS))
    p.add_argument("--fields", nargs="+", default=None, help=", ".join(FIELDS))
    p.add_argument("--steps", type=int, default=None, help="optimisation steps per run")
    p.add_argument("--guidance-scale", type=float, default=7.5, help="CFG (diffusers form), as msdfast image")
    p.add_argument("--ddim-steps", type=int, default=DDIM_STEPS)
    p.add_argument("--resume", action="store_true", help="reuse the finished cells in --out")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true")


def run_digits(args: argparse.Namespace) -> int:
    action = getattr(args, "digits_action", None)
    if action == "train":
        from .train import run_train
        return run_train(args)
    if action == "train-classifier":
        from .classifier import run_train_classifier
        return run_train_classifier(args)
    if action == "gate":
        from .gate import run_gate
        return run_gate(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    digits = args.digits or (FULL_DIGITS if args.full else DEFAULT_DIGITS)
    seeds = args.seeds or (FULL_SEEDS if args.full else DEFAULT_SEEDS)
    fields = args.fields or (FIELDS if args.full else DEFAULT_FIELDS)
    steps = args.steps if args.steps is not None else (FULL_STEPS if args.full else DEFAULT_STEPS)
    cfg = StudyConfig(model=args.model, out=args.out, digits=tuple(digits), seeds=tuple(seeds),
                      methods=tuple(args.methods), fields=tuple(fields), steps=steps,
                      guidance_scale=args.guidance_scale, ddim_steps=args.ddim_steps)
    t0 = time.perf_counter()
    rows = run_study(cfg, resume=args.resume, progress=not args.no_progress)
    print(_markdown(rows))
    print(f"{len(rows)} rows in {time.perf_counter() - t0:.0f} s -> {Path(cfg.out)} "
          "(table.md, contact_*.png, nfe.png, images.npz)")
    return 0
