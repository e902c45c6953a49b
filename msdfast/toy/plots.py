"""Figures of the 2D toy world (PNG, matplotlib Agg): the data density as filled contours with samples on top,
as in the MSD paper's figures 1-3 (and Karras et al. 2024's toy figure).

Uses matplotlib's object API with the Agg canvas, so importing this module never changes the global backend.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

__all__ = ["density_grid", "draw_panel", "plot_samples", "plot_panels"]

LogProb = Callable[[torch.Tensor], torch.Tensor]
EXTENT = (-1.5, 1.5, -1.5, 1.5)


def density_grid(log_prob: LogProb, extent: Sequence[float] = EXTENT,
                 resolution: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, Y, log p) on a resolution^2 grid over extent = (x0, x1, y0, y1); log_prob maps [M, 2] -> [M]."""
    if resolution < 2:
        raise ValueError(f"resolution: must be >= 2, got {resolution}")
    gx = torch.linspace(extent[0], extent[1], resolution, dtype=torch.float64)
    gy = torch.linspace(extent[2], extent[3], resolution, dtype=torch.float64)
    X, Y = torch.meshgrid(gx, gy, indexing="xy")
    lp = log_prob(torch.stack([X.reshape(-1), Y.reshape(-1)], dim=1)).detach().to(torch.float64)
    return X.numpy(), Y.numpy(), lp.reshape(resolution, resolution).cpu().numpy()


def draw_panel(ax, samples: torch.Tensor | None = None, grid: tuple | None = None, *, title: str = "",
               extent: Sequence[float] = EXTENT, levels: int = 12, floor: float = 8.0,
               point_size: float = 2.0, color: str = "black", alpha: float = 0.35) -> None:
    """One panel: filled contours of log p (clipped `floor` nats below its max) and samples on top."""
    if grid is not None:
        X, Y, lp = grid
        lp = np.where(np.isfinite(lp), lp, -np.inf)
        top = float(np.max(lp))
        ax.contourf(X, Y, np.clip(lp, top - floor, top), levels=levels, cmap="Oranges")
        ax.contour(X, Y, lp, levels=[top - 0.5 * floor], colors=[(0.8, 0.6, 0.5)], linewidths=0.8)
    if samples is not None:
        pts = samples.detach().to(torch.float64).cpu().numpy()
        ax.scatter(pts[:, 0], pts[:, 1], s=point_size, c=color, alpha=alpha, linewidths=0)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def plot_panels(path: str | Path, panels: Sequence[dict], log_prob: LogProb | None = None, *,
                extent: Sequence[float] = EXTENT, resolution: int = 200, ncols: int | None = None,
                panel_size: float = 3.0, dpi: int = 120) -> Path:
    """Save a row (or grid) of panels as PNG. Each panel is a dict with "samples" and optional "title";
    the density of `log_prob` is drawn under every panel (computed once)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not panels:
        raise ValueError("panels: expected at least one panel")
    grid = density_grid(log_prob, extent, resolution) if log_prob is not None else None
    ncols = ncols or len(panels)
    nrows = -(-len(panels) // ncols)
    fig = Figure(figsize=(panel_size * ncols, panel_size * nrows))
    FigureCanvasAgg(fig)
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        draw_panel(ax, panel.get("samples"), grid, title=panel.get("title", ""), extent=extent)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return path


def plot_samples(path: str | Path, samples: torch.Tensor, log_prob: LogProb | None = None, *,
                 title: str = "", **kw) -> Path:
    """Save one panel: the density of `log_prob` (e.g. GMM.log_prob or a KDE) with samples on top."""
    return plot_panels(path, [{"samples": samples, "title": title}], log_prob, **kw)
