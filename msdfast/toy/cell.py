"""One cell of the 2D toy study -- a column, a row, a seed -- as a run with a folder of its own (the sweep's toy
job; `msdfast toy` runs whole tables through msdfast.toy.study).

The cell is the study's protocol exactly (msdfast.toy.protocol: `build_world`, `optimise`, `evaluate`): targets
on a grid, Adam on the estimator's gradient (or DDIM samples for the `ddim` row), then NLL (both definitions),
k-NN precision / recall and MMD against held-out data. A column's world (its denoisers and data) is built once
per process and reused by every cell of that column.

Run folder: config.json (the settings, replayable), points.npy (the final targets), final.png (the targets on
the column's density) and metrics.json (finished, NFE, seconds, steps and the metrics). A cell takes seconds, so
it has no checkpoint: an interrupted cell is run again.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import config_to_dict, option
from ..errors import UserInputError

__all__ = ["ToyCellConfig", "run_toy_cell", "METRICS"]

METRICS = ("nll", "nll_of_mean", "precision", "recall", "mmd")


@dataclass
class ToyCellConfig:
    """The settings of one toy cell (msdfast.toy.protocol.ProtocolConfig's, for one column, row and seed)."""

    column: str = option("tree/ideal", help="DATASET/DENOISER[+GUIDANCE]: tree/ideal, tree/learned+cfg, "
                                            "spiral/learned, ... (the study's columns)")
    method: str = option("msd-paper", help="the study's row: ddim, sds, vsd, sdi, asd, dsd, msd-paper, ...")
    seed: int = option(0, help="seed")
    steps: int = option(150, help="Adam steps (paper: 150)")
    lr: float = option(0.08, help="Adam learning rate (paper: 0.08)")
    grid: int = option(32, help="targets per axis over [-1.5, 1.5]^2")
    n_data: int = option(10_000, help="data samples (paper: 1e4)")
    ddim_steps: int = option(32, help="DDIM steps of the reference row")
    cfg_scale: float = option(4.0, help="CFG weight (diffusers form) of the cfg column")
    autoguidance_scale: float = option(3.0, help="autoguidance weight of the autoguidance column")
    msd: dict[str, Any] = option(default_factory=dict, help="options of every MSD row but the ones defining it")
    options: dict[str, Any] = option(default_factory=dict, help="estimator options of this row (beat `msd`)")
    out: str = option("runs/toy_cell", help="run folder")

    def column_spec(self) -> Any:
        from .protocol import ColumnSpec
        from .report import split_column

        ds, rest = split_column(self.column)
        den, _, guidance = rest.partition("+")
        try:
            return ColumnSpec(ds, den, guidance or "none")
        except ValueError as e:
            raise UserInputError(f"column: {self.column!r}: {e}") from None

    def validate(self) -> None:
        from .protocol import METHOD_SPECS
        from .study import _check_row_options

        self.column_spec()
        if self.method not in METHOD_SPECS:
            raise UserInputError(f"method: {self.method!r} is not a row of the toy study (one of "
                                 f"{', '.join(METHOD_SPECS)})")
        for name in ("steps", "grid", "n_data", "ddim_steps"):
            if getattr(self, name) < 1:
                raise UserInputError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise UserInputError(f"lr: must be > 0, got {self.lr}")
        _check_row_options([self.method], self.msd, {self.method: self.options} if self.options else {})

    def protocol(self) -> Any:
        from .protocol import ProtocolConfig

        return ProtocolConfig(grid=self.grid, steps=self.steps, lr=self.lr, n_data=self.n_data,
                              ddim_steps=self.ddim_steps, cfg_scale=self.cfg_scale,
                              autoguidance_scale=self.autoguidance_scale, msd_options=dict(self.msd),
                              method_options={self.method: dict(self.options)} if self.options else {},
                              seed=self.seed)


@functools.lru_cache(maxsize=8)
def _world(column: Any, n_data: int, cfg_scale: float, autoguidance_scale: float) -> Any:
    """A column's world, built once per process (what it depends on is the cache key)."""
    from .protocol import ProtocolConfig, build_world

    return build_world(column, ProtocolConfig(n_data=n_data, cfg_scale=cfg_scale,
                                              autoguidance_scale=autoguidance_scale))


def run_toy_cell(cfg: ToyCellConfig, *, resume: bool = False, overwrite: bool = False, denoiser: Any = None,
                 estimator_factory: Any = None) -> dict[str, Any]:
    """Run one cell into cfg.out (module doc); returns the metrics written to metrics.json.

    resume: a cell has no checkpoint, so there is nothing to resume (the sweep restarts unfinished cells);
    denoiser / estimator_factory: not used (the column's world holds the denoisers; the row names the
    estimator) -- accepted so that the sweep calls every job alike.
    """
    import numpy as np
    import torch

    from ..atomic import write_atomic
    from ..provenance import provenance
    from ..runlock import open_run_folder
    from .plots import plot_samples
    from .protocol import METHOD_SPECS, evaluate, log_density, optimise

    if denoiser is not None or estimator_factory is not None:
        raise TypeError("run_toy_cell: the toy's denoisers come from its column (denoiser, estimator_factory: None)")
    cfg.validate()
    out = Path(cfg.out)
    with open_run_folder(out, resume=resume, overwrite=overwrite):
        column = cfg.column_spec()
        world = _world(column, cfg.n_data, cfg.cfg_scale, cfg.autoguidance_scale)
        write_atomic(out / "config.json", json.dumps(
            {**config_to_dict(cfg), "run": provenance("toy")}, indent=2).encode())
        res = optimise(world, METHOD_SPECS[cfg.method], cfg.protocol(), cfg.seed)
        scores = evaluate(world, res.points)
        with (out / "points.npy").open("wb") as f:
            np.save(f, res.points)
        plot_samples(out / "final.png", torch.as_tensor(res.points), log_density(world),
                     title=f"{cfg.column} {cfg.method}")
        metrics = {"method": cfg.method, "column": cfg.column, "finished": True, "steps_done": res.steps_run,
                   "total_nfe": res.nfe, "nfe_per_step": res.nfe / max(res.steps_run, 1), "seconds": res.seconds,
                   **scores, "history": []}
        write_atomic(out / "metrics.json", json.dumps(metrics, indent=2).encode())
    return metrics
