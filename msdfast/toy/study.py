"""`msdfast toy`: the MSD paper's 2D distillation study (sec. 4.2, tables 1-3, figures 1 and 3).

    msdfast toy                      # the default subset: 1-4 min on 2 CPU cores (see DEFAULT below)
    msdfast toy --full               # the complete grid of tables 1-3: ~15 min on 1 CPU core
    msdfast toy --full --resume      # ... continued after an interruption (completed cells are kept)
    msdfast toy --dataset spiral --denoiser ideal learned --methods ddim sds msd --steps 150
    msdfast toy train [MODEL ...]    # train the shipped toy MLPs (msdfast.toy.train)

Writes to --out: results.md / results.json (tables 1-3 and every cell's record), points.npz (final optimised
points of every (column, method)), fig_points_<column>.png (fig. 1/3: points over the density),
fig_landscape_<column>.png (fig. 1/3: reconstructed loss landscape per method), config.json, and cells/
(one checkpoint per completed (column, method) cell, efficiency and landscape cell; --resume skips those
already done with the same configuration).

DEFAULT (no options): tree, class A, ideal (exact GMM) denoiser; rows DDIM, SDS, VSD, SDI, "MSD (paper)" (stable
solver, centre x, kernel time sigma, 32 steps, lambda_0 = sqrt(0.1) decayed linearly: protocol.MSD_PAPER), "MSD
(SD heuristics: inversion centres)" and msdfast's own variants (noised kernel, exact posterior, Tweedie, Tweedie
with lambda_0 = 0.05); a 32 x 32 grid of 1024 targets (the paper's ~1e3), 150 Adam steps (lr 0.08); table 3
(efficiency) for SDS, VSD, SDI and the MSD variants with 16 repeats at 256 points; landscapes on a 48 x 48 grid.
MSD runs 1 chain per gradient (the paper: 1e3 Monte Carlo samples). NLL is reported as mean(-log p) and as
-log(mean p) (the paper's); results.md shows the paper's values in parentheses beside ours.

Table 3 (eq. 17, msdfast.toy.efficiency) is measured on each estimator as it was at PROBE_AT of its run (its
saved state: VSD's eps_phi, SDI's t, MSD's lambda), at one of two sets of points x (--eff-points; the first
named is "Table 3", the others are printed below it):
  particles  (default) the estimator's own targets at PROBE_AT -- the iterates whose gradient the optimiser
             follows at that step (eff_grid^2 of them, evenly strided). The paper motivates eq. 17 by the
             optimisation walk (convergence, oscillation around optima), and VSD's eps_phi is trained on, and
             only meaningful near, those particles.
  grid       a fresh eff_grid x eff_grid grid over [-1.5, 1.5]^2, the same x for every method (the landscape's
             domain-wide reading; measures VSD's eps_phi off the points it was trained on).

Measured on a shared 2-core CPU machine with the compiled msdfast._C ops, 1 thread, with the issue-11 rows
("MSD (paper)": 32 NFE per target and step): default 55 s CPU (294 s wall on a machine loaded by other jobs);
--full 785 s CPU (3460 s wall, loaded). Earlier rows: default 71 s wall / 140 s CPU with 2 threads.
With the pure-PyTorch reference ops (no compiled extension) the exact GMM denoiser is ~3.5x slower: the default
took 747 s CPU on one core (2086 s wall on an overloaded machine).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..atomic import atomic_path, write_atomic
from ..config import RUN_INFO_KEY, add_job_arguments, check_seed, config_from_args, config_to_dict, option
from ..content_hash import file_digest
from ..errors import UserInputError
from ..runlock import open_run_folder
from . import report
from .plots import plot_panels
from .protocol import (DEFAULT_METHODS, FULL_COLUMNS, FULL_METHODS, LABELS, METHOD_SPECS, ColumnSpec,
                       ProtocolConfig, build_world, estimate_fn, evaluate, grid_points, log_density,
                       optimise, subsample)

log = logging.getLogger("msdfast.toy")

DEFAULT_GRID = 32
EFF_METHODS = ("sds", "vsd", "sdi", "msd-paper", "msd-sd-inversion", "msd-noised", "msd-naive", "msd-posterior", "msd-tweedie",
               "asd", "dsd")
# (msd-tweedie-0.05 has the same zero variance as msd-tweedie: no separate efficiency cell)
PROBE_AT = 0.5   # efficiency and landscapes are measured on each estimator as it was half-way through its run
EFF_POINTS = ("particles", "grid")   # where eq. 17 averages over x (module doc)


# ----------------------------------------------------------------------------------------- CLI
@dataclass
class ToyConfig:
    """The settings of `msdfast toy` (its flags, --config files and the config.json of a study come from it).

    Estimator options, lowest first (protocol.ProtocolConfig.options_for): the row's study defaults (MSD's
    solver budget) < `msd` (every MSD row) < the row's fixed settings (what defines the row: `msd` never
    rewrites them) < `options` ROW.KEY (names one row, so it wins). Guidance belongs to the column
    (cfg_scale, autoguidance_scale): guidance_scale/guide in `msd` or `options` is an error.
    """

    dataset: list[str] | None = option(None, choices=("tree", "spiral", "pinwheel"),
                                       help="data sets (default: tree; --full: all)")
    denoiser: list[str] | None = option(None, choices=("ideal", "learned"),
                                        help="ideal (exact GMM / empirical eq. 16) and/or learned MLP "
                                             "(default: ideal; --full: both)")
    guidance: list[str] | None = option(None, choices=("none", "cfg", "autoguidance"),
                                        help="guidance of the learned tree model (default: none; --full: all three)")
    methods: list[str] | None = option(None, choices=tuple(METHOD_SPECS),
                                       help=f"rows (default: {' '.join(DEFAULT_METHODS)}; --full: "
                                            f"{' '.join(FULL_METHODS)})")
    steps: int = option(150, help="Adam steps (paper: 150)")
    lr: float = option(0.08, help="Adam learning rate (paper: 0.08)")
    grid: int | None = option(None, help=f"targets per axis over [-1.5, 1.5]^2 (default {DEFAULT_GRID}: 1024 "
                                         "targets, the paper's ~1e3)")
    seeds: list[int] = option(default_factory=lambda: [0], help="seeds; metrics are averaged over them")
    n_data: int = option(10_000, help="data samples (paper: 1e4)")
    ddim_steps: int = option(32, help="DDIM steps of the reference row (paper: 32)")
    cfg_scale: float = option(4.0, help="CFG weight (diffusers form) for the cfg column")
    autoguidance_scale: float = option(3.0, help="autoguidance weight")
    msd: dict[str, Any] = option(default_factory=dict, nargs="+",
                                 help="MSD options for every MSD row except the settings that define a row "
                                      "(e.g. --msd chains=4 steps=16)")
    options: dict[str, Any] = option(default_factory=dict, flag="--option", nargs="+", metavar="ROW.KEY=VALUE",
                                     help="estimator option for one row; beats --msd and the row's own settings "
                                          "(e.g. --option sdi.inversion_steps=10)")
    out: str = option("toy_results", help="output folder")
    full: bool = option(False, help="the complete grid of tables 1-3: 8 columns x 13 rows (~15 min on one core)")
    efficiency: bool = option(True, help="table 3")
    landscape: bool = option(True, help="the landscape figures")
    eff_grid: int = option(16, help="eq. 17 averages over eff-grid^2 points x (grid reading: points per axis)")
    eff_points: list[str] = option(default_factory=lambda: list(EFF_POINTS), choices=EFF_POINTS,
                                   help="where eq. 17 is measured: the estimator's own targets at the probe step "
                                        "('particles') and/or a uniform grid ('grid'); the first is table 3")
    eff_repeats: int = option(16, help="independent estimates per point for eq. 17")
    landscape_grid: int = option(48, help="landscape grid points per axis")
    landscape_nfe: int = option(64, help="NFE budget per landscape point: repeats = budget / the method's NFE "
                                         "per estimate")
    figure_resolution: int = option(100, help="density grid of the point figures")
    threads: int | None = option(None, help="torch CPU threads (default: torch's)")
    progress: bool = option(True, help="progress bar")


def add_toy_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `msdfast toy` (and the `train` action, routed to msdfast.toy.train)."""
    sub = parser.add_subparsers(dest="toy_action", metavar="{train}",
                                help="optional action: 'train' trains the shipped toy MLPs (msdfast.toy.train)")
    tp = sub.add_parser("train", help="train the toy MLP denoisers (msdfast.toy.train)")
    from .train import add_train_arguments
    add_train_arguments(tp)
    g = parser.add_argument_group("study")
    add_job_arguments(g, ToyConfig)
    g.add_argument("--resume", action="store_true", help="skip cells already completed in --out with the same config")
    g.add_argument("--overwrite", action="store_true", help="delete the study already in --out and start again")


@dataclass
class Plan:
    columns: list[ColumnSpec]
    methods: list[str]
    seeds: list[int]
    cfg: ProtocolConfig
    out: Path
    resume: bool = False
    efficiency: bool = True
    landscape: bool = True
    eff_methods: list[str] = field(default_factory=list)
    eff_grid: int = 16
    eff_repeats: int = 16
    eff_points: list[str] = field(default_factory=lambda: list(EFF_POINTS))
    landscape_grid: int = 48
    landscape_nfe: int = 64
    progress: bool = True
    figure_resolution: int = 100
    settings: dict[str, Any] = field(default_factory=dict)   # the ToyConfig it came from (config.json)


def plan_from_args(args: argparse.Namespace) -> Plan:
    """The plan of parsed `msdfast toy` arguments (defaults < --config < flags, msdfast.config)."""
    plan = plan_from_config(config_from_args(args, ToyConfig, options_field=None))
    plan.resume = bool(getattr(args, "resume", False))
    return plan


def plan_from_config(tc: ToyConfig) -> Plan:
    """Resolve the defaults / --full into the list of columns, rows and the protocol config."""
    full = bool(tc.full)
    datasets = tc.dataset or (["tree", "spiral", "pinwheel"] if full else ["tree"])
    denoisers = tc.denoiser or (["ideal", "learned"] if full else ["ideal"])
    guidances = tc.guidance or (["none", "cfg", "autoguidance"] if full else ["none"])
    columns = []
    for c in FULL_COLUMNS:
        if c.dataset in datasets and c.denoiser in denoisers and c.guidance in guidances:
            columns.append(c)
    if not columns:
        raise UserInputError("--dataset/--denoiser/--guidance: this selection names no column of tables 1-2 "
                             "(guidance applies to the tree's learned denoiser only)")
    methods = list(tc.methods or (FULL_METHODS if full else DEFAULT_METHODS))
    if tc.steps < 1:
        raise UserInputError(f"--steps: must be >= 1, got {tc.steps}")
    grid = tc.grid or DEFAULT_GRID
    if grid < 2:
        raise UserInputError(f"--grid: must be >= 2, got {grid}")
    if tc.eff_grid < 1 or tc.eff_repeats < 2:
        raise UserInputError("--eff-grid: must be >= 1 and --eff-repeats >= 2 (eq. 17 needs two independent "
                             "estimates)")
    for k in ("n_data", "ddim_steps", "landscape_grid", "landscape_nfe", "figure_resolution"):
        if getattr(tc, k) < 1:
            raise UserInputError(f"--{k.replace('_', '-')}: must be >= 1, got {getattr(tc, k)}")
    if not tc.seeds:
        raise UserInputError("--seeds: give at least one seed")
    for sd in tc.seeds:
        check_seed(sd, "--seeds")
    if tc.threads is not None and tc.threads < 1:
        raise UserInputError(f"--threads: must be >= 1, got {tc.threads}")
    options: dict[str, dict[str, Any]] = {}
    for key, val in tc.options.items():
        m, _, k = key.rpartition(".")   # row keys may hold dots (msd-tweedie-0.05), option names do not
        if m not in METHOD_SPECS or not k:
            raise UserInputError(f"--option {key}: expected ROW.KEY=VALUE with ROW in {tuple(METHOD_SPECS)}")
        options.setdefault(m, {})[k] = val
    msd_rows = [m for m in methods if METHOD_SPECS[m].estimator == "msd"]
    for k in tc.msd:
        if msd_rows and all(k in dict(METHOD_SPECS[m].options) for m in msd_rows):
            raise UserInputError(f"--msd {k}: every selected MSD row fixes {k} (it defines the row); "
                                 f"use --option ROW.{k}=VALUE to change one row")
    _check_row_options(methods, tc.msd, options)
    cfg = ProtocolConfig(grid=grid, steps=tc.steps, lr=tc.lr, n_data=tc.n_data, ddim_steps=tc.ddim_steps,
                         cfg_scale=tc.cfg_scale, autoguidance_scale=tc.autoguidance_scale,
                         msd_options=dict(tc.msd), method_options=options)
    for m in msd_rows:
        kept = sorted(k for k in tc.msd if k in dict(METHOD_SPECS[m].options) and k not in options.get(m, {}))
        if kept:
            log.info("toy: row %s keeps its own %s (--msd does not change what defines a row)", m, ", ".join(kept))
    return Plan(columns, methods, list(tc.seeds), cfg, Path(tc.out), False, tc.efficiency, tc.landscape,
                [m for m in methods if m in EFF_METHODS], tc.eff_grid, tc.eff_repeats,
                list(dict.fromkeys(tc.eff_points)), tc.landscape_grid, tc.landscape_nfe, tc.progress,
                tc.figure_resolution, settings=config_to_dict(tc))


_COLUMN_OPTIONS = ("guidance_scale", "guide", "guide_cond")   # the column's guidance (--cfg-scale ...)


def _check_row_options(methods: list[str], msd: dict[str, Any], options: dict[str, dict[str, Any]]) -> None:
    """Every --msd / --option value checked against its estimator's options before anything runs."""
    from ..estimators.options import check_options

    for k in list(msd) + [k for o in options.values() for k in o]:
        if k in _COLUMN_OPTIONS:
            raise UserInputError(f"--msd/--option {k}: guidance is the column's; use --cfg-scale or "
                                 "--autoguidance-scale")
    if msd:
        check_options("msd", msd, "--msd")
    for row, opts in options.items():
        est = METHOD_SPECS[row].estimator
        if est is None:
            raise UserInputError(f"--option {row}.{next(iter(opts))}: {row} is the DDIM reference sampler, it has "
                                 "no estimator options")
        opts.update(check_options(est, opts, f"--option {row}."))


def run_toy(args: argparse.Namespace) -> int:
    """Entry point of `msdfast toy` (msdfast.cli)."""
    if getattr(args, "toy_action", None) == "train":
        from .train import run_train
        return int(run_train(args) or 0)
    plan = plan_from_args(args)   # every setting checked before anything runs
    if plan.settings.get("threads"):
        torch.set_num_threads(plan.settings["threads"])
    t0, c0 = time.perf_counter(), time.process_time()
    # one writer per --out; --resume needs completed cells, a new study an empty folder (or --overwrite)
    with open_run_folder(plan.out, resume=plan.resume, overwrite=bool(getattr(args, "overwrite", False)),
                         checkpoint="cells"):
        results = run_study(plan)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        write_atomic(plan.out / "timing.json", json.dumps({"wall_seconds": wall, "cpu_seconds": cpu,
                                                           "threads": torch.get_num_threads()}).encode())
    print(report.markdown(results, LABELS))
    print(f"wrote {plan.out}/results.md, results.json, points.npz and figures in {wall:.0f} s "
          f"({cpu:.0f} s CPU, {torch.get_num_threads()} threads)")
    return 0


# ----------------------------------------------------------------------------------------- cells
CELL_EXTRA = {"probe_points": True}   # cells keep the targets at PROBE_AT (older checkpoints lack them: rerun)


def eff_points(reading: str, eff_grid: int, probe: np.ndarray | None) -> torch.Tensor:
    """The points x eq. 17 averages over (module doc): eff_grid^2 of the estimator's targets at PROBE_AT
    ('particles') or an eff_grid x eff_grid grid over [-1.5, 1.5]^2 ('grid')."""
    if reading == "grid":
        return grid_points(eff_grid)
    if reading == "particles":
        if probe is None:
            raise ValueError("probe: the 'particles' reading needs the targets at the probe step (optimise(probe_at=))")
        return subsample(probe, eff_grid * eff_grid)
    raise ValueError(f"reading: expected one of {EFF_POINTS}, got {reading!r}")


def _safe(key: str) -> str:
    return key.replace("/", "__").replace("|", "--").replace("+", "_")


class CellStore:
    """One checkpoint per completed cell in out/cells/ (JSON record + .npz arrays + .pt estimator state)."""

    def __init__(self, out: Path, fingerprint: dict[str, Any], resume: bool) -> None:
        self.dir = out / "cells"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fp = json.loads(json.dumps(fingerprint, default=str))
        self.resume = resume

    def load(self, kind: str, key: str, extra: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """The completed cell's record (+ "arrays", "state"), None when absent or from another configuration;
        UserInputError naming the file when a cell file is damaged (its JSON holds its companions' sha256)."""
        p = self.dir / f"{kind}--{_safe(key)}.json"
        if not self.resume or not p.is_file():
            return None
        try:
            rec = json.loads(p.read_text())
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:
            raise UserInputError(f"{p}: the cell file is damaged or truncated ({type(e).__name__}); delete it to "
                                 "recompute the cell") from e
        digest = rec.pop("sha256", None)
        if digest is not None and digest != hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest():
            raise UserInputError(f"{p}: the cell file does not match its checksum (it was modified or corrupted); "
                                 "delete it to recompute the cell")
        if (rec.get("fingerprint") != self.fp or rec.get("extra") != json.loads(json.dumps(extra, default=str))
                or "files" not in rec or digest is None):   # another configuration, or a cell of an older msdfast: recompute it
            return None
        sums = rec.pop("files")
        for suffix, digest in sums.items():
            f = self.dir / f"{kind}--{_safe(key)}.{suffix}"
            if not f.is_file() or file_digest(f) != digest:
                raise UserInputError(f"{f}: the cell file is missing or does not match its checksum in {p.name}; "
                                     "delete both to recompute the cell")
        try:
            if "npz" in sums:
                with np.load(self.dir / f"{kind}--{_safe(key)}.npz") as z:
                    rec["arrays"] = {k: z[k] for k in z.files}
            if "pt" in sums:   # estimator state: tensors, dicts, primitives
                rec["state"] = torch.load(self.dir / f"{kind}--{_safe(key)}.pt", weights_only=True)
        except Exception as e:  # noqa: BLE001 -- a file that matches its checksum but does not load
            raise UserInputError(f"{p}: a companion file of this cell cannot be loaded ({type(e).__name__})") from e
        return rec

    def save(self, kind: str, key: str, rec: dict[str, Any], arrays: dict[str, np.ndarray] | None = None,
             state: Any = None, extra: dict[str, Any] | None = None) -> None:
        base = self.dir / f"{kind}--{_safe(key)}"
        sums = {}
        if arrays:
            with atomic_path(f"{base}.npz") as tmp:
                with open(tmp, "wb") as f:
                    np.savez_compressed(f, **arrays)
            sums["npz"] = file_digest(f"{base}.npz")
        if state is not None:
            with atomic_path(f"{base}.pt") as tmp:
                torch.save(state, tmp)
            sums["pt"] = file_digest(f"{base}.pt")
        rec = json.loads(json.dumps(report._jsonable(dict(
            rec, fingerprint=self.fp, extra=json.loads(json.dumps(extra, default=str)), files=sums))))
        rec["sha256"] = hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest()
        # the JSON, written last and atomically, marks the cell complete and holds its companions' checksums
        write_atomic(f"{base}.json", json.dumps(rec).encode())


def _mean_metrics(per_seed: list[dict[str, float]]) -> dict[str, float]:
    keys = per_seed[0].keys()
    out = {k: float(np.mean([m[k] for m in per_seed])) for k in keys}
    if len(per_seed) > 1:
        out.update({f"{k}_std": float(np.std([m[k] for m in per_seed])) for k in keys})
    return out


def run_study(plan: Plan) -> dict[str, Any]:
    """Run every cell of the plan (resuming completed ones), then write tables, points and figures."""
    out = plan.out
    out.mkdir(parents=True, exist_ok=True)
    fp = {"protocol": plan.cfg.fingerprint(), "seeds": plan.seeds}
    store = CellStore(out, fp, plan.resume)
    from ..provenance import provenance

    # the settings (replayable: msdfast toy --config OUT/config.json) and, under "run", the resolved plan
    resolved = {"columns": [c.key for c in plan.columns], "methods": plan.methods, **fp,
                "efficiency": {"methods": plan.eff_methods, "grid": plan.eff_grid, "repeats": plan.eff_repeats,
                               "points": plan.eff_points, "probe_at": PROBE_AT} if plan.efficiency else None,
                "landscape": {"grid": plan.landscape_grid, "nfe_budget": plan.landscape_nfe, "probe_at": PROBE_AT}
                if plan.landscape else None,
                "row_options": {m: plan.cfg.options_for(METHOD_SPECS[m]) for m in plan.methods
                                if METHOD_SPECS[m].estimator}}
    write_atomic(out / "config.json", json.dumps(report._jsonable(
        {**plan.settings, RUN_INFO_KEY: {**provenance("toy", device="cpu"), **resolved}}), indent=1,
        default=str).encode())

    n_seeds = len(plan.seeds)
    eff_cols = [c for c in plan.columns if c.guidance == "none"]
    total = len(plan.columns) * len(plan.methods) * n_seeds * plan.cfg.steps
    total += (len(eff_cols) * len(plan.eff_methods) * plan.eff_repeats * len(plan.eff_points)) if plan.efficiency else 0
    total += (len(plan.columns) * len([m for m in plan.methods if METHOD_SPECS[m].estimator])) if plan.landscape else 0
    bar = tqdm(total=total, desc="msdfast toy", disable=not plan.progress, unit="step", dynamic_ncols=True)

    cells: dict[str, dict[str, Any]] = {}
    points: dict[str, np.ndarray] = {}
    states: dict[str, Any] = {}
    probe_points: dict[str, np.ndarray] = {}
    efficiency: dict[str, dict[str, dict[str, Any]]] = {r: {} for r in plan.eff_points}
    landscapes: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    worlds: dict[str, Any] = {}

    def world_of(col: ColumnSpec) -> Any:
        if col.key not in worlds:
            worlds[col.key] = build_world(col, plan.cfg)
        return worlds[col.key]

    for col in plan.columns:
        for m in plan.methods:
            key = f"{col.key}|{m}"
            bar.set_postfix_str(key)
            rec = store.load("cell", key, CELL_EXTRA)
            if rec is not None:
                bar.update(n_seeds * plan.cfg.steps)
            else:
                world, spec = world_of(col), METHOD_SPECS[m]
                per_seed, arrays, nfe, secs, state, steps_run = [], {}, 0, 0.0, None, []
                for s in plan.seeds:
                    res = optimise(world, spec, plan.cfg, plan.cfg.seed + s, on_step=bar.update,
                                   probe_at=PROBE_AT if spec.estimator else None)
                    metrics = evaluate(world, res.points)
                    per_seed.append(metrics)
                    arrays[f"seed{s}"] = res.points.astype(np.float32)
                    if res.probe_points is not None:
                        arrays[f"probe_seed{s}"] = res.probe_points.astype(np.float32)
                    nfe, secs = nfe + res.nfe, secs + res.seconds
                    steps_run.append(res.steps_run)
                    state = state if state is not None else res.state
                n_pts = plan.cfg.grid ** 2
                rec = {"column": col.key, "method": m, "metrics": _mean_metrics(per_seed), "per_seed": per_seed,
                       "nfe": nfe, "nfe_per_point": nfe / (n_seeds * n_pts * max(np.mean(steps_run), 1))
                       if spec.estimator else nfe / (n_seeds * n_pts),
                       "steps_run": steps_run, "seconds": secs}
                store.save("cell", key, rec, arrays, state, CELL_EXTRA)
                rec["arrays"], rec["state"] = arrays, state
            arrays = rec.pop("arrays")
            points[key] = arrays[f"seed{plan.seeds[0]}"]
            if f"probe_seed{plan.seeds[0]}" in arrays:
                probe_points[key] = arrays[f"probe_seed{plan.seeds[0]}"]
            states[key] = rec.pop("state", None)
            cells[key] = rec

    if plan.efficiency:
        from .efficiency import measure_efficiency
        for col in eff_cols:
            for m in plan.eff_methods:
                key = f"{col.key}|{m}"
                for reading in plan.eff_points:
                    if key not in cells or (reading == "particles" and key not in probe_points):
                        if key in cells:   # the run stopped before its probe step: no targets to measure at
                            tqdm.write(f"msdfast toy: no probe-step targets for {key}: particles efficiency skipped")
                        bar.update(plan.eff_repeats)
                        continue
                    bar.set_postfix_str(f"efficiency {key} ({reading})")
                    extra = {"grid": plan.eff_grid, "repeats": plan.eff_repeats, "points": reading}
                    rec = store.load("eff", f"{key}|{reading}", extra)
                    if rec is None:
                        world = world_of(col)
                        fn = estimate_fn(world, METHOD_SPECS[m], plan.cfg, states.get(key), PROBE_AT)

                        def counted(p: torch.Tensor, g: torch.Generator, fn: Any = fn) -> tuple[torch.Tensor, int]:
                            r = fn(p, g)
                            bar.update(1)
                            return r
                        pts = eff_points(reading, plan.eff_grid, probe_points.get(key))
                        rec = measure_efficiency(counted, pts, plan.eff_repeats, seed=plan.cfg.seed).as_dict()
                        store.save("eff", f"{key}|{reading}", rec, extra=extra)
                    else:
                        bar.update(plan.eff_repeats)
                        rec = {k: v for k, v in rec.items() if k not in ("fingerprint", "extra")}
                    efficiency[reading][key] = rec

    if plan.landscape:
        from .landscape import reconstruct_landscape
        for col in plan.columns:
            for m in plan.methods:
                spec = METHOD_SPECS[m]
                if spec.estimator is None:
                    continue
                key = f"{col.key}|{m}"
                if key not in cells:
                    bar.update(1)
                    continue
                bar.set_postfix_str(f"landscape {key}")
                # "restored": estimate_fn restores the probed state for every call (older landscapes did not)
                extra = {"grid": plan.landscape_grid, "nfe": plan.landscape_nfe, "state": "restored"}
                rec = store.load("land", key, extra)
                if rec is None:
                    world = world_of(col)
                    fn = estimate_fn(world, spec, plan.cfg, states.get(key), PROBE_AT)
                    gen = torch.Generator().manual_seed(plan.cfg.seed)
                    # NFE per estimate from two probe calls; repeats fill the per-point NFE budget, except for
                    # deterministic estimators (Tweedie MSD, SDI at a fixed t), for which one pass is exact.
                    probe_pts = grid_points(3)
                    g1, probe_nfe = fn(probe_pts, gen)
                    g2, _ = fn(probe_pts, gen)
                    deterministic = bool(torch.equal(g1, g2))
                    repeats = 1 if deterministic else int(np.clip(
                        plan.landscape_nfe // max(probe_nfe / probe_pts.shape[0], 1), 1, 64))
                    land = reconstruct_landscape(lambda p: fn(p, gen)[0], n=plan.landscape_grid, repeats=repeats)
                    store.save("land", key, {"repeats": repeats}, land, extra=extra)
                    rec = {"arrays": land}
                landscapes.setdefault(col.key, {})[m] = rec["arrays"]
                bar.update(1)
    bar.close()

    methods = [m for m in plan.methods if any(f"{c.key}|{m}" in cells for c in plan.columns)]
    primary = plan.eff_points[0] if plan.eff_points else "grid"
    results = {"methods": methods, "columns": [c.key for c in plan.columns], "cells": cells,
               "efficiency": efficiency.get(primary, {}), "efficiency_points": list(efficiency),
               "efficiency_by_points": efficiency, "config": fp}
    report.write_tables(out, results, LABELS)
    report.save_points(out, points)
    for col in plan.columns:
        world = world_of(col)
        panels = [{"title": LABELS[m], "samples": torch.as_tensor(points[f"{col.key}|{m}"])}
                  for m in methods if f"{col.key}|{m}" in points]
        plot_panels(out / f"fig_points_{_safe(col.key)}.png", panels, log_density(world),
                    resolution=plan.figure_resolution, panel_size=2.4)
        if col.key in landscapes:
            lp = [(LABELS[m], landscapes[col.key][m]) for m in methods if m in landscapes[col.key]]
            report.plot_landscapes(out / f"fig_landscape_{_safe(col.key)}.png", lp,
                                   world.heldout[:2000].numpy())
    return results
