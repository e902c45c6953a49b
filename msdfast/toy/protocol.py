"""The MSD paper's 2D distillation protocol (sec. 4.2; docs/math.md sec. 3) as data + three functions.

* A COLUMN is (data set, denoiser, guidance): tree with the ideal GMM denoiser / learned MLP / learned + CFG
  / learned + autoguidance (table 1), spiral and pinwheel with the ideal empirical denoiser (eq. 16) / learned
  MLP (table 2). `build_world` turns a column into the denoiser, conditions, guidance options and the
  held-out data the metrics compare against.
* A METHOD is a row: "ddim" (the reference row: DDIM samples from noise) or an estimator of
  `msdfast.estimators` with its options (`METHOD_SPECS`).
* `optimise` runs the paper's protocol for one (column, method): targets start on a dense grid over
  [-1.5, 1.5]^2, Adam with lr 0.08 for 150 steps on the estimator's descent gradient, the estimator's
  `update_step` hook once per step (SDI's annealed t, MSD's bandwidth lambda_0 = sqrt(0.1) decayed linearly).
  `evaluate` scores final points with `msdfast.toy.metrics` (NLL, precision/recall k = 3, MMD).

MSD rows (docs/math.md sec. 2 audits the paper's readings):
* "msd-paper", "MSD (paper)": the stable solver (eq. 14-15) with the kernel centred on x (c_t = alpha_t x, eq.
  9/12), kernel-ODE time u = sigma (the VE noise level of the EDM code the toy is built on), the 32 sampler
  steps of fig. 2, lambda_0 = sqrt(0.1) decayed linearly (sec. 4.2) -- `MSD_PAPER`.
* "msd-sd-inversion", "MSD (SD heuristics: inversion centres)": the paper's Stable Diffusion practice (sec. 4.3:
  centres on the DDIM inversion trajectory of x) with u = tau and 10 steps. On the toy, inverting off-manifold
  grid targets is ill-conditioned and g becomes inversion error: kept to show it, labelled as not the paper's 2D
  reading.
* the rest are msdfast's additions (noised kernel, exact posterior, Tweedie), labelled as such.

Cost: one evaluation of the tree's exact GMM denoiser on M points is M x 1016 Gaussian components in float64
(~0.06-0.09 s of one CPU core for M = 1024). The paper uses 1e3 Monte Carlo samples per estimate; msdfast runs
1 chain per target and step (`MSD_FAST`, `MSD_PAPER`): fewer chains keep the estimator's mean (what Adam
follows over 150 steps) and only raise its per-step variance (eq. 17 is independent of N). "MSD (paper)"
costs 32 NFE per target per step, the inversion row 20, "posterior" <= 10, "tweedie" 1.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from ..denoisers.base import Cond, Denoiser
from .report import column_key

DATASETS = ("tree", "spiral", "pinwheel")
DENOISERS = ("ideal", "learned")
GUIDANCES = ("none", "cfg", "autoguidance")
LAMBDA_0 = math.sqrt(0.1)   # paper sec. 4.2: initial bandwidth 0.316 ~ sqrt(0.1), decayed linearly


@dataclass(frozen=True)
class ColumnSpec:
    """One column of tables 1/2: a data set, a denoiser and (tree + learned only) a guidance."""

    dataset: str
    denoiser: str
    guidance: str = "none"

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset: expected one of {DATASETS}, got {self.dataset!r}")
        if self.denoiser not in DENOISERS:
            raise ValueError(f"denoiser: expected one of {DENOISERS}, got {self.denoiser!r}")
        if self.guidance not in GUIDANCES:
            raise ValueError(f"guidance: expected one of {GUIDANCES}, got {self.guidance!r}")
        if self.guidance != "none" and (self.dataset != "tree" or self.denoiser != "learned"):
            raise ValueError("guidance: CFG and autoguidance columns exist for the tree with the learned denoiser "
                             "only (paper table 1)")

    @property
    def key(self) -> str:
        return column_key(self.dataset, self.denoiser, self.guidance)


# The complete grid of tables 1 and 2.
FULL_COLUMNS = (ColumnSpec("tree", "ideal"), ColumnSpec("tree", "learned"), ColumnSpec("tree", "learned", "cfg"),
                ColumnSpec("tree", "learned", "autoguidance"), ColumnSpec("spiral", "ideal"),
                ColumnSpec("spiral", "learned"), ColumnSpec("pinwheel", "ideal"), ColumnSpec("pinwheel", "learned"))


@dataclass(frozen=True)
class MethodSpec:
    """A row: `estimator` is a name for msdfast.estimators.build (None for the DDIM reference).

    options: the row's fixed settings (what defines it: `--msd` never changes them); defaults: the study's
    settings for the row (the MSD solver budget) that `--msd KEY=VALUE` may change (ProtocolConfig.options_for).
    """

    key: str
    label: str
    estimator: str | None
    options: tuple[tuple[str, Any], ...] = ()
    defaults: tuple[tuple[str, Any], ...] = ()


# MSD solver settings of the study. The paper: 1e3 Monte Carlo samples per estimate. Here: 1 chain (module doc;
# table 3 measures the variance).
MSD_FAST = (("bandwidth", LAMBDA_0), ("bandwidth_schedule", "linear"), ("chains", 1), ("steps", 10))
# The paper's 2D reading (module doc): stable solver, centre x, u = sigma, 32 steps, lambda_0 = sqrt(0.1) linear.
MSD_PAPER = (("solver", "stable"), ("centers", "scaled"), ("kernel_time", "sigma"), ("steps", 32),
             ("bandwidth", LAMBDA_0), ("bandwidth_schedule", "linear"), ("chains", 1))

METHOD_SPECS: dict[str, MethodSpec] = {m.key: m for m in (
    MethodSpec("ddim", "DDIM (reference)", None),
    MethodSpec("sds", "SDS", "sds"),
    # VSD's premise is that eps_phi tracks the particles' own score. With the estimator's default phi_lr 1e-3
    # the toy MLP, at mid-run, is 2-7x further from the particles' exact denoiser (t >= 600) than at 1e-2, and
    # that error, not the data, dominates VSD's variance (table 3); tables 1-2 barely move (tree NLL 66.4 ->
    # 67.5). Measured in issue 5; 1e-2 is the better-trained, fairer baseline.
    MethodSpec("vsd", "VSD", "vsd", (("phi_lr", 1e-2),)),
    MethodSpec("sdi", "SDI", "sdi"),
    MethodSpec("asd", "ASD", "asd"),
    MethodSpec("dsd", "DSD", "dsd"),
    MethodSpec("msd-paper", "MSD (paper)", "msd", tuple(kv for kv in MSD_PAPER if kv[0] != "chains"),
               (("chains", 1),)),   # the chain count is the study's budget (--msd chains=N), not the reading
    MethodSpec("msd-sd-inversion", "MSD (SD heuristics: inversion centres)", "msd",
               (("solver", "stable"), ("centers", "inversion"), ("kernel_time", "tau")), MSD_FAST),
    MethodSpec("msd-noised", "MSD (ours: stable, noised kernel)", "msd",
               (("solver", "stable"), ("kernel_time", "noised"), ("centers", "scaled")), MSD_FAST),
    MethodSpec("msd-naive", "MSD (naive eq. 12)", "msd", (("solver", "naive"),), MSD_FAST),
    MethodSpec("msd-posterior", "MSD (ours: exact posterior)", "msd", (("solver", "posterior"),), MSD_FAST),
    MethodSpec("msd-tweedie", "MSD (ours: Tweedie)", "msd", (("solver", "tweedie"),), MSD_FAST),
    # Not in the paper: the zero-variance Tweedie estimator with a smaller initial bandwidth. lambda_0 =
    # sqrt(0.1) smooths the tree so much that the exact mean shift sends every target to a few modes
    # (recall ~0.01); lambda_0 = 0.05 keeps the branches apart (msdfast's measured improvement, README).
    MethodSpec("msd-tweedie-0.05", "MSD (ours: Tweedie, λ0 0.05)", "msd",
               (("solver", "tweedie"), ("bandwidth", 0.05)), MSD_FAST),
)}
PAPER_METHODS = ("ddim", "sds", "vsd", "sdi", "msd-paper")
DEFAULT_METHODS = ("ddim", "sds", "vsd", "sdi", "msd-paper", "msd-sd-inversion", "msd-noised", "msd-posterior",
                   "msd-tweedie", "msd-tweedie-0.05")
FULL_METHODS = ("ddim", "sds", "vsd", "sdi", "asd", "dsd", "msd-paper", "msd-sd-inversion", "msd-noised", "msd-naive",
                "msd-posterior", "msd-tweedie", "msd-tweedie-0.05")
LABELS = {k: m.label for k, m in METHOD_SPECS.items()}


@dataclass
class ProtocolConfig:
    """Every knob of the protocol; `fingerprint()` keys the resume cache."""

    grid: int = 32                   # targets: grid x grid points over [-1.5, 1.5]^2 (paper: "densely")
    steps: int = 150                 # Adam steps (paper)
    lr: float = 0.08                 # Adam learning rate (paper)
    n_data: int = 10_000             # data samples: empirical denoiser's set and the metrics' reference (paper)
    ddim_steps: int = 32             # DDIM reference row (paper fig. 2: 32 steps)
    cfg_scale: float = 4.0           # diffusers-form CFG weight against the A+B model (Karras et al. toy: 4)
    autoguidance_scale: float = 3.0  # autoguidance weight against the small guide model (Karras et al. toy: 3)
    msd_options: dict[str, Any] = field(default_factory=dict)   # every MSD row's settings but its fixed ones
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per row key: beats everything
    seed: int = 0
    data_seed: int = 0

    def fingerprint(self) -> dict[str, Any]:
        return asdict(self)

    def options_for(self, spec: MethodSpec) -> dict[str, Any]:
        """The row's estimator options. Precedence (issue 11 item 5): the row's defaults < `--msd` (every MSD
        row) < the row's fixed settings (spec.options: `--msd` never rewrites what defines a row, e.g. the
        lambda_0 = 0.05 of msd-tweedie-0.05) < `--option ROW.KEY=VALUE` (names the row, so it wins)."""
        opts = dict(spec.defaults)
        if spec.estimator == "msd":
            opts.update(self.msd_options)
        opts.update(spec.options)
        opts.update(self.method_options.get(spec.key, {}))
        return opts


def grid_points(n: int, lo: float = -1.5, hi: float = 1.5, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """n x n targets on a regular grid over [lo, hi]^2 (paper: "initialise target points densely across a grid")."""
    if n < 1:
        raise ValueError(f"grid: expected a positive number of points per axis, got {n}")
    xs = torch.linspace(lo, hi, n, dtype=dtype)
    gx, gy = torch.meshgrid(xs, xs, indexing="xy")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)


@dataclass
class World:
    """Everything one column needs: the denoiser and how to condition and guide it, and the data."""

    column: ColumnSpec
    denoiser: Denoiser
    cond_id: int | None               # the tree's class id (A = 0); None for unconditional sets
    uncond_id: int | None             # CFG's unconditional class id (A+B = 2), or None
    guide: Denoiser | None            # autoguidance's small model, or None
    guidance_scale: float             # 1 = no guidance
    train: torch.Tensor               # data points (float64)
    heldout: torch.Tensor             # held-out data points (float64): the metrics' reference
    gmm: Any = None                   # the exact mixture (tree), for NLL and density plots

    def cond(self, batch: int, device: torch.device | str = "cpu") -> Cond:
        return None if self.cond_id is None else torch.full((batch,), self.cond_id, dtype=torch.long, device=device)

    def uncond(self, batch: int, device: torch.device | str = "cpu") -> Cond:
        if self.uncond_id is None or self.guidance_scale == 1.0 or self.guide is not None:
            return None
        return torch.full((batch,), self.uncond_id, dtype=torch.long, device=device)

    def total_nfe(self) -> int:
        """Evaluations of the denoiser and of the guide model (a separate network with its own counter)."""
        return self.denoiser.stats.nfe + (0 if self.guide is None else self.guide.stats.nfe)

    def estimator_options(self) -> dict[str, Any]:
        """The guidance options every estimator of this column gets."""
        if self.guidance_scale == 1.0:
            return {}
        opts: dict[str, Any] = {"guidance_scale": self.guidance_scale}
        if self.guide is not None:
            opts["guide"] = self.guide
        return opts

    def guidance(self, batch: int, device: torch.device | str = "cpu") -> Any:
        """A `Guidance` for the DDIM reference sampler."""
        from ..samplers.guidance import Guidance
        return Guidance(self.denoiser, self.cond(batch, device), self.uncond(batch, device), self.guidance_scale,
                        self.guide if self.guidance_scale != 1.0 else None)


def build_world(column: ColumnSpec, cfg: ProtocolConfig) -> World:
    """Denoisers and data of a column (H3's msdfast.toy / msdfast.denoisers pieces)."""
    from .datasets import TREE_CLASS_IDS, load_dataset
    tree = column.dataset == "tree"
    ds = load_dataset("tree_A" if tree else column.dataset, n_train=cfg.n_data, n_heldout=cfg.n_data,
                      seed=cfg.data_seed)
    guide, scale = None, 1.0
    cond_id = uncond_id = None
    if column.denoiser == "ideal":
        if tree:
            from .models import tree_denoiser
            den: Denoiser = tree_denoiser()      # one GMM per class: cond A = 0 (A+B = 2 is CFG's uncond)
            cond_id, uncond_id = TREE_CLASS_IDS["A"], TREE_CLASS_IDS["AB"]
        else:
            from ..denoisers.empirical import EmpiricalDenoiser
            den = EmpiricalDenoiser(ds.train.to(torch.float32))
    else:
        # Learned toy models are trained per class / data set (the condition is ignored); CFG's unconditional
        # branch is the A+B model and autoguidance's the small class-A model, both passed as `guide`.
        from .models import load_toy_mlp
        den = load_toy_mlp("tree_A" if tree else column.dataset)
        if column.guidance == "cfg":
            guide, scale = load_toy_mlp("tree_AB"), cfg.cfg_scale
        elif column.guidance == "autoguidance":
            guide, scale = load_toy_mlp("tree_A_guide"), cfg.autoguidance_scale
    return World(column, den, cond_id, uncond_id, guide, scale, ds.train, ds.heldout, ds.gmm)


@dataclass
class CellResult:
    """Final points and bookkeeping of one (column, method, seed)."""

    points: np.ndarray
    nfe: int
    seconds: float
    steps_run: int
    info: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] | None = None
    probe_points: np.ndarray | None = None   # the targets at probe_at (the iterates table 3 is measured on)


def _scalar_info(info: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in info.items():
        if isinstance(v, (int, float)):
            out[k] = float(v)
        elif isinstance(v, torch.Tensor) and v.numel() == 1:
            out[k] = float(v)
    return out


def reference_samples(world: World, n: int, cfg: ProtocolConfig, seed: int) -> CellResult:
    """The DDIM row: n samples from noise with `cfg.ddim_steps` DDIM steps and the column's guidance."""
    from ..samplers.ddim import ddim_sample
    gen = torch.Generator().manual_seed(seed)
    nfe0, t0 = world.total_nfe(), time.perf_counter()
    z = torch.randn(n, 2, generator=gen)
    x = ddim_sample(world.guidance(n), z, cfg.ddim_steps, generator=gen)
    nfe = world.total_nfe() - nfe0
    return CellResult(x.double().numpy(), nfe, time.perf_counter() - t0, cfg.ddim_steps)


def make_estimator(world: World, spec: MethodSpec, cfg: ProtocolConfig) -> Any:
    """msdfast.estimators.build(spec.estimator, denoiser, **guidance options, **method options)."""
    from ..estimators import build
    if spec.estimator is None:
        raise ValueError(f"method: {spec.key!r} is a sampler, not an estimator")
    return build(spec.estimator, world.denoiser, **world.estimator_options(), **cfg.options_for(spec))


def optimise(world: World, spec: MethodSpec, cfg: ProtocolConfig, seed: int,
             on_step: Callable[[int], None] | None = None, probe_at: float | None = None) -> CellResult:
    """Paper protocol for one (column, method): grid targets, Adam(lr) for cfg.steps steps on g.

    probe_at: a fraction of the run at which the estimator's state_dict() is kept (CellResult.state), so
    efficiency and landscape can be measured on the estimator as it was then (VSD's trained variational
    model, SDI's annealed t, MSD's bandwidth), together with the targets at that step
    (CellResult.probe_points: the points that step's gradient is computed at).

    Adam gets g itself as the gradient (the loss trick's g / B is the same direction; Adam is scale
    invariant but for its eps). An estimator whose info reports `finished` (MSD: lambda < lambda_min,
    the paper's convergence criterion) stops the run early.
    """
    if spec.estimator is None:
        n = cfg.grid * cfg.grid
        res = reference_samples(world, n, cfg, seed)
        if on_step:
            on_step(cfg.steps)
        return res
    torch.manual_seed(seed)  # estimators that build their own modules (VSD's MLP) initialise reproducibly
    gen = torch.Generator().manual_seed(seed)
    est = make_estimator(world, spec, cfg)
    x = grid_points(cfg.grid).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=cfg.lr)
    B = x.shape[0]
    cond, uncond = world.cond(B), world.uncond(B)
    nfe0, t0, k, info, probe, probe_x = world.total_nfe(), time.perf_counter(), 0, {}, None, None
    probe_step = min(int(round(probe_at * (cfg.steps - 1))), cfg.steps - 1) if probe_at is not None else -1
    for k in range(cfg.steps):
        est.update_step(k, cfg.steps)
        if k == probe_step:
            probe = copy.deepcopy(est.state_dict()) if hasattr(est, "state_dict") else None
            probe_x = x.detach().double().numpy().copy()
        out = est(x, cond, uncond, generator=gen)
        info = out.info
        opt.zero_grad(set_to_none=False)
        x.grad = torch.nan_to_num(out.grad.to(x.dtype))
        opt.step()
        if on_step:
            on_step(1)
        if bool(info.get("finished", False)):
            if on_step:
                on_step(cfg.steps - k - 1)
            break
    return CellResult(x.detach().double().numpy(), world.total_nfe() - nfe0, time.perf_counter() - t0, k + 1,
                      _scalar_info(info), probe, probe_x)


# Estimators whose state is tied to the particle batch (DSD fixes one seed eps* per particle): efficiency and
# landscapes rebuild them for every call, so repeated estimates are independent (a new seed each).
PER_PARTICLE_STATE = ("dsd",)


def probed_estimator(world: World, spec: MethodSpec, cfg: ProtocolConfig, state: dict[str, Any] | None,
                     progress: float) -> Any:
    """A fresh estimator restored to its state at `progress` of the run (optimise(probe_at=...)), or, without
    a saved state, just advanced there with update_step."""
    est = make_estimator(world, spec, cfg)
    if state is not None and hasattr(est, "load_state_dict") and spec.estimator not in PER_PARTICLE_STATE:
        est.load_state_dict(copy.deepcopy(state))
    else:
        est.update_step(min(int(round(progress * (cfg.steps - 1))), cfg.steps - 1), cfg.steps)
    return est


def estimate_fn(world: World, spec: MethodSpec, cfg: ProtocolConfig, state: dict[str, Any] | None,
                progress: float) -> Callable[[torch.Tensor, torch.Generator | None], tuple[torch.Tensor, int]]:
    """(points, generator) -> (g, NFE incl. the guide's) of the estimator as it was at `progress` of its run,
    for msdfast.toy.efficiency / landscape.

    Every call starts from the SAME saved state (a fresh estimator restored from `state`): no update_step
    between calls, and no state an estimator changes while it estimates carries over. VSD trains eps_phi on
    the points it is called at; without the restore, eq. 17's repeats would come from 16 different eps_phi
    fitted to the measurement points rather than independent draws of the estimator as it was at the probe.
    """
    probed_estimator(world, spec, cfg, state, progress)   # fail early on a state that does not load

    def fn(pts: torch.Tensor, gen: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
        e = probed_estimator(world, spec, cfg, None if spec.estimator in PER_PARTICLE_STATE else state, progress)
        n0 = world.total_nfe()
        out = e(pts, world.cond(pts.shape[0]), world.uncond(pts.shape[0]), generator=gen)
        return out.grad, world.total_nfe() - n0
    return fn


def subsample(points: torch.Tensor | np.ndarray, n: int) -> torch.Tensor:
    """At most n of the points [P, D], evenly spaced in their (grid-initialised) order: float32 [min(n, P), D].

    Targets keep the order of the grid they started on, so an even stride keeps the subset spread over the
    initial domain."""
    pts = torch.as_tensor(points).to(torch.float32)
    if pts.ndim != 2 or pts.shape[0] < 1:
        raise ValueError(f"points: expected [P >= 1, D], got {tuple(pts.shape)}")
    if n < 1:
        raise ValueError(f"n: expected a positive number of points, got {n}")
    if n >= pts.shape[0]:
        return pts.clone()
    idx = torch.linspace(0, pts.shape[0] - 1, n, dtype=torch.float64).round().long()
    return pts[idx].clone()


def evaluate(world: World, points: np.ndarray) -> dict[str, float]:
    """Table 1/2 metrics of final points (msdfast.toy.metrics): NLL under the true density (tree: exact GMM;
    spiral / pinwheel: the documented KDE over held-out points) as mean(-log p) ("nll") and -log(mean p)
    ("nll_of_mean", the paper's), precision / recall (k = 3) and MMD against
    as many held-out points as there are targets (k-NN radii depend on the set sizes, so they match)."""
    from . import metrics
    pts = torch.as_tensor(points, dtype=torch.float64)
    if not torch.isfinite(pts).all():
        raise ValueError("points: final points contain NaN or inf")
    ref = world.heldout[: pts.shape[0]]
    precision, recall = metrics.precision_recall(ref, pts)
    truth = world.gmm if world.gmm is not None else world.heldout
    return {"nll": metrics.nll(pts, truth), "nll_of_mean": metrics.nll_of_mean(pts, truth),
            "precision": precision, "recall": recall, "mmd": metrics.mmd(pts, ref)}


def log_density(world: World) -> Callable[[torch.Tensor], torch.Tensor]:
    """The column's true log density for figures: the GMM (tree) or the metrics' KDE over held-out points."""
    if world.gmm is not None:
        return world.gmm.log_prob
    from . import metrics
    return lambda x: metrics.kde_log_prob(x, world.heldout)
