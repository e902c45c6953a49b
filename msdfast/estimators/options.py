"""The options each estimator takes, discoverable and checkable before any model loads.

`option_specs(method)` lists every keyword option of the method's class and of its bases (name, type, default,
doc): the doc is the option's entry in the class docstring ("name: text" under Args/Options). Options whose
type cannot come from a config file or the command line (a second Denoiser, a condition tensor) are marked
`settable=False`. `check_options(method, options)` coerces the given values to their types (msdfast.config.coerce)
and rejects unknown names with the list of valid ones; it needs no model, so the CLI runs it before loading
anything. `format_options(method)` is what `msdfast image --list-options METHOD` prints. `check_option_values` runs the
estimator's own value checks on a schedule-only stand-in, also before the model loads.
"""
from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from typing import Any, Mapping

from ..config import coerce, type_name
from ..errors import UserInputError
from .registry import METHODS, estimator_class

__all__ = ["OptionSpec", "option_specs", "check_options", "check_option_values", "format_options",
           "resolved_options"]

_SETTABLE = (int, float, str, bool, type(None), tuple, list, dict)


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    name: str
    type: Any
    default: Any
    doc: str
    settable: bool = True   # False: an object (a Denoiser, a tensor) only the Python API can pass

    @property
    def type_name(self) -> str:
        return type_name(self.type)


def _settable(tp: Any) -> bool:
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin is not None and origin is not typing.Literal:
        return all(_settable(a) for a in typing.get_args(tp) if a is not Ellipsis)
    return origin is typing.Literal or tp in _SETTABLE


def _docstring_entries(cls: type) -> dict[str, str]:
    """{option: doc} from "name: text" lines (and "a, b: text") of the class docstring, continuation lines joined."""
    out: dict[str, str] = {}
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    cur: list[str] | None = None
    indent = 0
    for line in lines:
        m = re.match(r"^(\s+)([a-z_][a-z0-9_]*(?:,\s*[a-z_][a-z0-9_]*)*):\s+(.*)$", line)
        if m:
            indent = len(m.group(1))
            cur = [m.group(3).strip()]
            for name in re.split(r",\s*", m.group(2)):
                out.setdefault(name, "")
                out[name] = cur   # type: ignore[assignment]
            continue
        if cur is not None and line.strip() and len(line) - len(line.lstrip()) > indent:
            cur.append(line.strip())
        else:
            cur = None
    return {k: " ".join(v) if isinstance(v, list) else v for k, v in out.items()}


def option_specs(method: str) -> list[OptionSpec]:
    """Every option of `method` (its class's keyword arguments and its bases'), method-specific ones first."""
    cls = estimator_class(method)
    specs: dict[str, OptionSpec] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            hints = typing.get_type_hints(init)
        except Exception:  # noqa: BLE001 -- an annotation we cannot resolve: fall back to Any
            hints = {}
        docs = _docstring_entries(klass)
        for p in inspect.signature(init).parameters.values():
            if p.kind is not p.KEYWORD_ONLY or p.name in specs:
                continue
            tp = hints.get(p.name, Any)
            specs[p.name] = OptionSpec(p.name, tp, p.default, docs.get(p.name, ""), _settable(tp))
    return list(specs.values())


def check_options(method: str, options: Mapping[str, Any], flag: str = "--option") -> dict[str, Any]:
    """The options coerced to their types; unknown or non-settable names and bad values are UserInputErrors
    naming `flag` and the option (the valid options listed)."""
    if method not in METHODS:
        raise UserInputError(f"method: expected one of {METHODS}, got {method!r}")
    specs = {s.name: s for s in option_specs(method) if s.settable}
    out = {}
    for k, v in options.items():
        name = f"{flag}{k}" if flag.endswith(".") else f"{flag} {k}" if flag.startswith("-") else f"{flag}.{k}"
        if k not in specs:
            raise UserInputError(f"{name}: not an option of {method} (valid: {', '.join(sorted(specs))}; "
                                 f"`msdfast image --list-options {method}` describes them)")
        out[k] = coerce(v, specs[k].type, name)
    return out


def check_option_values(method: str, options: Mapping[str, Any], scheduler_config: Mapping[str, Any]) -> None:
    """The estimator's own value checks (chains >= 1, steps <= T, a known weighting, ...) run WITHOUT the model:
    the class is built on a stand-in Denoiser that has only the model's noise schedule (its
    scheduler_config.json). Its UserInputErrors propagate; an estimator that needs the real network to be
    built (VSD's LoRA on the UNet) fails here in other ways, and is then checked when the model is loaded."""
    import torch

    from ..denoisers.base import Denoiser
    from ..schedule import VPSchedule

    stand_in = Denoiser(VPSchedule.from_config(scheduler_config))
    with torch.random.fork_rng(devices=[]):   # the probe must not move the global RNG of the run
        try:
            estimator_class(method)(stand_in, **options)
        except UserInputError:
            raise
        except Exception:  # noqa: BLE001 -- needs the real model: checked when the model is loaded
            return


def resolved_options(method: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Every settable option of `method` with its value in a run: the given ones, else the defaults."""
    return {s.name: options.get(s.name, s.default) for s in option_specs(method) if s.settable}


def format_options(method: str, *, defaults: Mapping[str, Any] | None = None, note: str = "") -> str:
    """A table of `method`'s options: name, type, default and doc (what --list-options prints). defaults:
    the defaults a job uses instead of the estimator's (e.g. `msdfast image`'s guidance_scale 7.5)."""
    defaults = defaults or {}
    specs = [s for s in option_specs(method) if s.settable]
    import textwrap

    lines = [f"options of {method} (--option KEY=VALUE; values are JSON, else text):"]
    for s in specs:
        lines.append(f"  {s.name}  {s.type_name}  (default: {defaults.get(s.name, s.default)!r})")
        if s.doc:
            lines += textwrap.wrap(s.doc, 100, initial_indent=" " * 6, subsequent_indent=" " * 6)
    if note:
        lines.append(note)
    return "\n".join(lines)
