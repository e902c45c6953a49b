"""A sweep SPEC (YAML or JSON) and the list of runs it stands for.

    job: image                      # image, 3d, digits or toy
    model: /models/sd15             # a local diffusers folder, a built-in name or a cached hub id
    out: sweeps/fruit               # the sweep folder: runs/<id>/ per run, summary.*, contact_sheet.png
    prompts: [a red apple, a green pear]     # (digits: `classes: [3, 7]`; toy: `columns: [tree/ideal]`)
    seeds: [0, 1, 2]
    methods: [sds, msd, dsd]
    settings: {steps: 400, resolution: 256}        # the job's settings, the same in every run
    method_options: {msd: {chains: 4}}             # estimator options of one method (the job's `options`)
    grid: {guidance_scale: [7.5, 20], options.t_anneal: [true, false]}   # every combination is a run

Every key is checked against its type, and every run's job config (msdfast.pipelines.image.ImageConfig, ...) is
built from the settings through msdfast.config and validated, before any model loads; errors name the file and
the key ("sweep.yaml: grid.steps[1]: expected an integer, got 'x'").

Job `digits` is the image job on the digits model msdfast ships (`model` defaults to `digits`), prompted with
`classes` (digits 0-9, msdfast.digits.model.prompt_for) and starting from the digits study's settings (hash-grid
field, lr 0.03, 30 steps; `settings` overrides them); its summary adds the evaluation classifier's metrics
(msdfast.sweep.summary). Job `toy` runs cells of the 2D toy study (msdfast.toy.cell): `columns` (tree/ideal,
tree/learned+cfg, spiral/learned, ...) instead of prompts, the study's rows as methods (ddim, sds, msd-paper, ...),
ProtocolConfig's settings (steps, grid, lr, msd, ...); its summary adds NLL, precision, recall and MMD.

The runs are prompts x seeds x methods x grid combinations, in that nesting order (a stable order: the shards
of msdfast.sweep.shard are slices of it). A run's id is the first 12 hex digits of the SHA-256 of its resolved
config without the keys that do not change its results (msdfast.pipelines.common.NON_RESULT_KEYS: model path,
out, device, dtype, cadences, progress) -- so the same run has the same id on any machine, and extending a sweep
(one more seed, one more method) keeps every existing run's id and folder.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import coerce_fields, config_to_dict, dataclass_from_mapping, load_config_file, option
from ..errors import UserInputError

__all__ = ["SweepSpec", "Run", "JOBS", "load_spec", "expand_runs", "run_id", "LOAD_KEYS"]

# job -> (module, config class, run function); the run function is the one `msdfast <job>` calls.
JOBS = {"image": ("msdfast.pipelines.image", "ImageConfig", "distill_image"),
        "3d": ("msdfast.pipelines.threed", "ThreeDConfig", "distill_3d"),
        "digits": ("msdfast.pipelines.image", "ImageConfig", "distill_image"),
        "toy": ("msdfast.toy.cell", "ToyCellConfig", "run_toy_cell")}
# Jobs whose runs share ONE loaded Stable-Diffusion-format model (the toy's denoisers come with its columns).
SHARED_MODEL_JOBS = ("image", "3d", "digits")
# Settings that decide how the ONE denoiser of a process is loaded: fixed for the whole sweep (not in the grid).
LOAD_KEYS = ("model", "device", "dtype", "variant", "compile", "unet_backend")
# Settings a run gets from the spec's own lists or from the sweep (never in `settings` or `grid`).
_PER_RUN = {"prompt": "prompts", "column": "columns", "seed": "seeds", "method": "methods", "out": "out",
            "model": "model"}


@dataclass
class SweepSpec:
    """The keys of a sweep SPEC file (module doc)."""

    job: str = option(choices=tuple(JOBS), help="the job every run is")
    methods: list[str] = option(help="score-distillation methods")
    model: str = option("", help="the model of every run (loaded once per process; job digits: `digits`)")
    prompts: list[str] = option(default_factory=list, help="text prompts (job digits: from `classes`)")
    classes: list[int] = option(default_factory=list, help="job digits: the digits to prompt (0-9)")
    columns: list[str] = option(default_factory=list, help="job toy: the study's columns (tree/ideal, ...)")
    seeds: list[int] = option(default_factory=lambda: [0], help="seeds")
    out: str = option("sweeps/sweep", help="sweep folder")
    settings: dict[str, Any] = option(default_factory=dict, help="the job's settings, the same for every run")
    method_options: dict[str, dict[str, Any]] = option(default_factory=dict,
                                                       help="estimator options of one method: {METHOD: {KEY: V}}")
    grid: dict[str, list[Any]] = option(default_factory=dict,
                                        help="settings (or options.KEY) -> values; every combination is a run")


@dataclass(frozen=True)
class Run:
    """One run of a sweep: its id, folder, job config and the coordinates it came from."""

    id: str
    folder: Path
    config: Any                        # the job's config dataclass (ImageConfig, ThreeDConfig), out = folder
    prompt_index: int
    seed: int
    method: str
    variant: dict[str, Any]            # the grid values of this run ({} without a grid)

    @property
    def variant_label(self) -> str:
        return " ".join(f"{k}={json.dumps(v)}" for k, v in self.variant.items())

    @property
    def label(self) -> str:
        return " ".join(x for x in (self.method, self.variant_label, f"seed {self.seed}", f"p{self.prompt_index}")
                        if x)


def job_api(job: str, source: str = "SPEC") -> tuple[type, Any]:
    """(config class, run function) of a job."""
    if job not in JOBS:
        raise UserInputError(f"{source}: job: {job!r} is not a job of msdfast sweep (one of {', '.join(JOBS)})")
    import importlib

    module, cls, fn = JOBS[job]
    mod = importlib.import_module(module)
    return getattr(mod, cls), getattr(mod, fn)


def run_id(job: str, cfg: Any) -> str:
    """12 hex digits of SHA-256 over the job and the run's result-determining config (module doc)."""
    from ..pipelines.common import NON_RESULT_KEYS

    d = {k: v for k, v in config_to_dict(cfg).items() if k not in NON_RESULT_KEYS}
    text = json.dumps({"job": job, "config": d}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def load_spec(path: str | Path) -> SweepSpec:
    """The SPEC file as a SweepSpec, every key type-checked (errors name the file and the key)."""
    p = Path(path)
    try:
        data = load_config_file(p)
    except UserInputError as e:   # load_config_file names --config; here the file is the SPEC argument
        raise UserInputError(str(e).replace("--config ", "SPEC ", 1)) from None
    spec = dataclass_from_mapping(SweepSpec, data, source=str(p))
    if spec.job == "digits":
        _digits_prompts(spec, p)
    elif spec.classes:
        raise UserInputError(f"{p}: classes: only job digits takes classes (job {spec.job} takes prompts)")
    if spec.job == "toy":
        if spec.prompts:
            raise UserInputError(f"{p}: prompts: job toy runs the study's `columns` (tree/ideal, ...), not prompts")
        spec.prompts, spec.model = list(spec.columns), spec.model or "toy"
    elif spec.columns:
        raise UserInputError(f"{p}: columns: only job toy takes columns")
    if not spec.model:
        raise UserInputError(f"{p}: missing required key 'model'")
    for key in ("prompts", "seeds", "methods"):
        vals = getattr(spec, key)
        if not vals:
            raise UserInputError(f"{p}: {key}: must list at least one value")
        if len(set(vals)) != len(vals):
            raise UserInputError(f"{p}: {key}: lists a value twice ({vals!r})")
    return spec


def _digits_prompts(spec: SweepSpec, source: Path) -> None:
    """Job digits: prompts from `classes`, the shipped model by default, the study's settings under the spec's."""
    from ..digits.model import prompt_for
    from ..digits.study import DEFAULT_STEPS, FIELD_LR

    if spec.prompts:
        raise UserInputError(f"{source}: prompts: job digits is prompted by `classes` (digits 0-9), not prompts")
    if not spec.classes:
        raise UserInputError(f"{source}: classes: must list at least one digit (0-9)")
    bad = [c for c in spec.classes if not 0 <= c <= 9]
    if bad:
        raise UserInputError(f"{source}: classes: expected digits 0-9, got {bad[0]!r}")
    if len(set(spec.classes)) != len(spec.classes):
        raise UserInputError(f"{source}: classes: lists a value twice ({spec.classes!r})")
    spec.prompts = [prompt_for(c) for c in spec.classes]
    spec.model = spec.model or "digits"
    field = spec.settings.get("field", "grid")
    spec.settings = {"field": "grid", "lr": FIELD_LR.get(field, FIELD_LR["grid"]), "steps": DEFAULT_STEPS,
                     **spec.settings}


def _check_keys(cfg_cls: type, keys: Any, where: str, *, grid: bool) -> None:
    names = {f.name for f in dataclasses.fields(cfg_cls)}
    for k in keys:
        base = k.split(".", 1)[0] if grid else k
        if base in _PER_RUN:
            raise UserInputError(f"{where}.{k}: set by the spec's `{_PER_RUN[base]}` key, not here")
        if grid and base in LOAD_KEYS:
            raise UserInputError(f"{where}.{k}: decides how the model loads (once per process): set it in "
                                 "`settings`, not in the grid")
        if grid and k.startswith("options."):
            continue
        if base not in names:
            raise UserInputError(f"{where}: unknown key {k!r} (valid: {', '.join(sorted(names - set(_PER_RUN)))})")


def expand_runs(spec: SweepSpec, source: str = "SPEC") -> list[Run]:
    """Every run of the spec (prompts x seeds x methods x grid, in that order), each config validated."""
    cfg_cls, _ = job_api(spec.job, source)
    if spec.job == "toy":
        from ..toy.protocol import METHOD_SPECS as METHODS
    else:
        from ..estimators import METHODS

    _check_keys(cfg_cls, spec.settings, f"{source}: settings", grid=False)
    settings = coerce_fields(cfg_cls, spec.settings, f"{source}: settings")
    _check_keys(cfg_cls, spec.grid, f"{source}: grid", grid=True)
    axes = []
    for k, values in spec.grid.items():
        if not values:
            raise UserInputError(f"{source}: grid.{k}: must list at least one value")
        if not k.startswith("options."):
            values = [coerce_fields(cfg_cls, {k: v}, f"{source}: grid")[k] for v in values]
        axes.append([(k, v) for v in values])
    for m in list(spec.methods) + list(spec.method_options):
        if m not in METHODS:
            where = "methods" if m in spec.methods else "method_options"
            raise UserInputError(f"{source}: {where}: {m!r} is not a method (one of {', '.join(METHODS)})")

    root = Path(spec.out) / "runs"
    runs: list[Run] = []
    seen: dict[str, str] = {}
    for (pi, prompt), seed, method, combo in itertools.product(enumerate(spec.prompts), spec.seeds, spec.methods,
                                                              itertools.product(*axes)):
        values = dict(settings)
        options = {**values.get("options", {}), **spec.method_options.get(method, {})}
        for k, v in combo:
            if k.startswith("options."):
                options[k.split(".", 1)[1]] = v
            else:
                values[k] = v
        if spec.job == "toy":
            values.update(column=prompt, seed=seed, method=method, options=options)
        else:
            values.update(model=spec.model, prompt=prompt, seed=seed, method=method, options=options, progress=False)
        label = f"prompt {pi} seed {seed} {method}" + "".join(f" {k}={v!r}" for k, v in combo)
        try:
            cfg = cfg_cls(**values)
            cfg.validate()
        except UserInputError as e:
            raise UserInputError(f"{source}: run ({label}): {e}") from None
        rid = run_id(spec.job, cfg)
        if rid in seen:
            raise UserInputError(f"{source}: runs ({seen[rid]}) and ({label}) are the same run (id {rid})")
        seen[rid] = label
        cfg.out = str(root / rid)
        runs.append(Run(rid, root / rid, cfg, pi, seed, method, {k: v for k, v in combo}))
    return runs
