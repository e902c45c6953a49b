"""Job configuration: a dataclass per job is the ONE source of its options.

From a job's config dataclass (`ImageConfig`, `ThreeDConfig`, `ToyConfig`, `ProfileConfig`, ...) come:

* its command-line flags (`add_config_arguments`: one flag per field, type and choices from the field, help text
  with the default shown; `option(...)` fields carry the help, a flag name or choices in their metadata);
* its config file (`--config FILE`, JSON or YAML: the fields by name; a run's `config.json` is such a file, its
  "run" entry (provenance) is ignored when read back, so `--config RUN/config.json` replays the run);
* any other mapping, e.g. the threestudio adapter's YAML section (`dataclass_from_mapping`).

Values from every source go through one coercion (`coerce`) against the field's type, so a bad value is a
`UserInputError` naming the field and where it came from (`--steps`, `run.yaml: steps`, `--option chains`).
Floats must be finite. KEY=VALUE text (`--option`, `--grid`, `--msd`) is parsed by ONE parser
(`parse_key_value`): the value is JSON when it parses as JSON (numbers, true/false/null, lists, quoted
strings), else the bare string.

PRECEDENCE (one rule for every job): dataclass defaults < config file < command-line flags < per-method options.
A per-method option that names a setting which also has its own field (e.g. `--option guidance_scale=5` and
`--guidance-scale`) sets that field; giving both in the same place (both on the command line, or both in one
file) is a conflict and an error, never a silent choice. A row's fixed settings in the toy study are not
options (see msdfast.toy.study).
"""
from __future__ import annotations

import argparse
import collections.abc
import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import UserInputError

__all__ = ["option", "parse_value", "parse_key_value", "parse_key_values", "coerce", "field_types",
           "dataclass_from_mapping", "load_config_file", "add_config_arguments", "given_flags", "resolve_config",
           "config_to_dict", "check_utf8", "check_seed", "add_job_arguments", "config_from_args", "flag_name", "field_metadata", "coerce_fields", "RUN_INFO_KEY", "type_name"]

RUN_INFO_KEY = "run"   # the provenance entry of a run's config.json (ignored when the file is read back)


def option(default: Any = dataclasses.MISSING, *, help: str = "", flag: str | None = None,
           choices: Iterable[Any] | None = None, metavar: str | None = None, cli: bool = True,
           default_factory: Any = dataclasses.MISSING, finite: bool = True, nargs: str | None = None) -> Any:
    """A config field with its command-line help (dataclasses.field plus metadata).

    flag: the command-line flag (default --field-name); choices: allowed values (of each element for a list);
    cli=False: config file only; finite=False: a float that may be inf; nargs: "+" lets a KEY=VALUE flag take
    several pairs at once (--msd chains=4 steps=16).
    """
    meta = {"help": help, "flag": flag, "choices": tuple(choices) if choices is not None else None,
            "metavar": metavar, "cli": cli, "finite": finite, "nargs": nargs}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# ---------------------------------------------------------------------- KEY=VALUE
def parse_value(text: str) -> Any:
    """A KEY=VALUE value: JSON when it parses (2, 0.5, true, null, [1, 2], "x"), else the bare string."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return {"True": True, "False": False, "None": None}.get(text, text)


def parse_key_value(text: str, flag: str) -> tuple[str, Any]:
    """'KEY=VALUE' -> (KEY, parsed VALUE); a UserInputError naming `flag` otherwise."""
    key, sep, value = str(text).partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserInputError(f"{flag}: expected KEY=VALUE, got {text!r}")
    return key, parse_value(value.strip())


def parse_key_values(items: Iterable[str], flag: str) -> dict[str, Any]:
    """Several KEY=VALUE texts -> dict; a key given twice is an error (no silent last-wins)."""
    out: dict[str, Any] = {}
    for it in items:
        k, v = parse_key_value(it, flag)
        if k in out and out[k] != v:
            raise UserInputError(f"{flag} {k}: given twice ({out[k]!r} and {v!r})")
        out[k] = v
    return out


def check_utf8(text: str, name: str) -> None:
    """Text that can be encoded (undecodable bytes on a command line arrive as surrogates): else an error naming it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UserInputError(f"{name}: not valid UTF-8 text") from None


def check_seed(seed: int, name: str) -> None:
    """A seed torch's generators accept: an integer in [0, 2**64); else an error naming it."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise UserInputError(f"{name}: must be an integer in [0, 2**64), got {seed!r}")


# ---------------------------------------------------------------------- types and coercion
def type_name(tp: Any) -> str:
    """A short readable name of a type annotation (for --help and --list-options)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_name(a) for a in args)}]"
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _from_text(value: Any, kind: type, name: str, noun: str) -> Any:
    """A number given as text (YAML, KEY=VALUE) parsed as `kind`; any other value unchanged."""
    if not isinstance(value, str):
        return value
    try:
        return kind(value.strip())
    except ValueError:
        raise UserInputError(f"{name}: expected {noun}, got {value!r}") from None


def coerce(value: Any, tp: Any, name: str, *, finite: bool = True) -> Any:
    """`value` as type `tp` (int, float, str, bool, None, X | None, Literal, tuple[...], list[X], dict[...], Any).

    Strings are converted where the target is a number or bool (YAML and KEY=VALUE hand over text). Raises
    UserInputError "<name>: expected <type>, got <value>" -- never a silent repair (2.7 is not an int).
    """
    if tp is Any or tp is object:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, name, finite=finite)
            except UserInputError as e:
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]
        raise UserInputError(f"{name}: expected {type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise UserInputError(f"{name}: expected one of {list(args)}, got {value!r}")
        return value
    if tp is type(None):
        if value is not None:
            raise UserInputError(f"{name}: expected null, got {value!r}")
        return None
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise UserInputError(f"{name}: expected true or false, got {value!r}")
    if tp is int:
        value = _from_text(value, int, name, "an integer")
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise UserInputError(f"{name}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        value = _from_text(value, float, name, "a number")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserInputError(f"{name}: expected a number, got {value!r}")
        value = float(value)
        if finite and not math.isfinite(value):
            raise UserInputError(f"{name}: must be finite, got {value}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise UserInputError(f"{name}: expected a string, got {value!r}")
        return value
    if origin in (tuple, list, collections.abc.Sequence) or tp in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise UserInputError(f"{name}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise UserInputError(f"{name}: expected {len(args)} values, got {len(value)} ({value!r})")
            return tuple(coerce(v, a, f"{name}[{i}]", finite=finite) for i, (v, a) in enumerate(zip(value, args)))
        elem = args[0] if args else Any
        out = [coerce(v, elem, f"{name}[{i}]", finite=finite) for i, v in enumerate(value)]
        return tuple(out) if (origin or tp) is tuple else out
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise UserInputError(f"{name}: expected a mapping of KEY: VALUE, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): coerce(v, vt, f"{name}.{k}", finite=finite) for k, v in value.items()}
    if isinstance(tp, type):
        if not isinstance(value, tp):
            raise UserInputError(f"{name}: expected {type_name(tp)}, got {value!r}")
        return value
    return value


def field_types(cls: type) -> dict[str, Any]:
    """{field name: resolved type annotation} of a dataclass (string annotations evaluated)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def field_metadata(cls: type) -> dict[str, dict[str, Any]]:
    """{field name: option metadata}, inherited from the base dataclass when a subclass only changes a default."""
    meta: dict[str, dict[str, Any]] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            for f in dataclasses.fields(klass):
                meta[f.name] = {**meta.get(f.name, {}), **{k: v for k, v in f.metadata.items() if v is not None}}
    return meta


def coerce_fields(cls: type, values: Mapping[str, Any], source: str | None) -> dict[str, Any]:
    """Coerce a mapping of field values of `cls`; unknown keys are an error naming `source` and the valid keys.

    source: a prefix for messages ("--config run.yaml" -> "--config run.yaml: steps: ..."); "" names the bare
    field ("steps: ..."); None names the command-line flag ("--steps: ...").
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    meta = field_metadata(cls)
    tps = field_types(cls)
    out = {}
    for k, v in values.items():
        if k not in fields:
            where = f"{source}: " if source else ""
            raise UserInputError(f"{where}unknown key {k!r} (valid: {', '.join(sorted(fields))})")
        m = meta.get(k, {})
        name = f"{source}: {k}" if source else k if source == "" else flag_name(k, m)
        out[k] = coerce(v, tps[k], name, finite=m.get("finite", True))
        choices = m.get("choices")
        for v in (out[k] if isinstance(out[k], (list, tuple)) else [out[k]]) if choices else ():
            if v is not None and v not in choices:
                raise UserInputError(f"{name}: expected one of {list(choices)}, got {v!r}")
    return out


def dataclass_from_mapping(cls: type, mapping: Mapping[str, Any] | None, source: str = "config") -> Any:
    """An instance of dataclass `cls` from a mapping (a YAML/JSON section, threestudio's cfg): unknown keys,
    bad types and missing required keys are UserInputErrors naming `source` and the key."""
    if mapping is not None and not isinstance(mapping, Mapping):
        raise UserInputError(f"{source}: expected a mapping of KEY: VALUE, got {type(mapping).__name__}")
    vals = coerce_fields(cls, dict(mapping or {}), source or "")
    missing = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in vals
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise UserInputError(f"{source}: missing required key {missing[0]!r}")
    return cls(**vals)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain JSON-able values (tuples as lists): what config.json stores and replays."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


# ---------------------------------------------------------------------- config files
def load_config_file(path: str | Path) -> dict[str, Any]:
    """A JSON or YAML (.yaml/.yml) config file as a mapping of field values; a run's config.json is accepted
    (its "run" provenance entry is dropped). Errors name the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserInputError(f"--config {p}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserInputError(f"--config {p}: cannot read ({e.__class__.__name__}: {e})") from None
    if p.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:  # pragma: no cover - pyyaml is a dependency
            raise UserInputError(f"--config {p}: reading YAML needs pyyaml (pip install pyyaml)") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            line = getattr(getattr(e, "problem_mark", None), "line", None)
            where = f" (line {line + 1})" if line is not None else ""
            raise UserInputError(f"--config {p}: not valid YAML{where}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserInputError(f"--config {p}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserInputError(f"--config {p}: expected a mapping of KEY: VALUE at the top, got {type(data).__name__}")
    data.pop(RUN_INFO_KEY, None)
    return data


# ---------------------------------------------------------------------- command line
def flag_name(name: str, meta: Mapping[str, Any] | None = None) -> str:
    """The command-line flag of field `name` (its metadata's "flag", else --name-with-dashes)."""
    return (meta or {}).get("flag") or "--" + name.replace("_", "-")


def _fmt_default(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return " ".join(str(x) for x in v) or "none"
    if isinstance(v, dict):
        return " ".join(f"{k}={json.dumps(x)}" for k, x in v.items()) or "none"
    return "none" if v is None else '""' if v == "" else str(v)


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


class _KeyValueAction(argparse.Action):
    """--flag KEY=VALUE, repeatable (or several values at once): into one dict."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        cur = dict(getattr(namespace, self.dest, None) or {})
        items = values if isinstance(values, list) else [values]
        new = parse_key_values(items, option_string or self.dest)
        for k, v in new.items():
            if k in cur and cur[k] != v:
                raise UserInputError(f"{option_string} {k}: given twice ({cur[k]!r} and {v!r})")
        cur.update(new)
        setattr(namespace, self.dest, cur)


def _scalar_type(tp: Any) -> Any:
    """The element type argparse should convert to (X of X | None); None when the type is not a scalar."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return _scalar_type(rest[0]) if len(rest) == 1 else str
    return tp if tp in (int, float, str) else None


def _list_type(tp: Any) -> Any:
    """X of list[X] / tuple[X, ...] (also inside X | None); None for other types."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return _list_type(rest[0]) if len(rest) == 1 else None
    if origin is list or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
        return args[0]
    return None


def add_config_arguments(parser: argparse.ArgumentParser | Any, cls: type, *, skip: Iterable[str] = (),
                         required: Iterable[str] = ()) -> None:
    """One flag per field of dataclass `cls` (module doc). Flags not given are absent from the parsed namespace
    (argparse.SUPPRESS), so `given_flags` tells them from defaults; `required` fields are listed as such in the
    help but checked after the config file is merged (`resolve_config`)."""
    tps, meta = field_types(cls), field_metadata(cls)
    skip, required = set(skip), set(required)
    for f in dataclasses.fields(cls):
        m = meta.get(f.name, {})
        if f.name in skip or not m.get("cli", True):
            continue
        tp, flag = tps[f.name], flag_name(f.name, m)
        default = _default_of(f)
        help_ = m.get("help", "")
        if f.name in required:
            help_ = (help_ + " " if help_ else "") + "(required)"
        elif tp is not bool and "(default" not in help_:
            help_ = (help_ + " " if help_ else "") + f"(default: {_fmt_default(default)})"
        kw: dict[str, Any] = dict(dest=f.name, default=argparse.SUPPRESS, help=help_)
        if m.get("metavar"):
            kw["metavar"] = m["metavar"]
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction,
                                help=f"{help_} (default: {'on' if default else 'off'})".strip(), dest=f.name,
                                default=argparse.SUPPRESS)
        elif origin is dict or tp is dict:
            kw.setdefault("metavar", "KEY=VALUE")
            if m.get("nargs"):
                kw["nargs"] = m["nargs"]
            parser.add_argument(flag, action=_KeyValueAction, **kw)
        elif origin is tuple and args and args[-1] is not Ellipsis:
            kw.setdefault("metavar", tuple(f"V{i}" for i in range(len(args))) if len(args) != 2 else ("LO", "HI"))
            parser.add_argument(flag, nargs=len(args), type=_scalar_type(args[0]) or str, **kw)
        elif _list_type(tp) is not None:
            if m.get("choices"):
                kw["choices"] = list(m["choices"])
            parser.add_argument(flag, nargs="+", type=_scalar_type(_list_type(tp)) or str, **kw)
        else:
            conv = _scalar_type(tp) or str
            if m.get("choices"):
                kw["choices"] = list(m["choices"])
            parser.add_argument(flag, type=conv, **kw)


def given_flags(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of `cls` given on the command line (flags left out are absent: add_config_arguments)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names}


def _promote(cls: type, values: dict[str, Any], options_field: str, promoted: Iterable[str], where: str,
             option_flag: str) -> dict[str, Any]:
    """Move per-method options that name a field (guidance_scale, psr_k, ...) onto that field; both in the same
    source is a conflict (the precedence rule in the module doc)."""
    opts = values.get(options_field)
    if not opts:
        return values
    values, opts = dict(values), dict(opts)
    tps = field_types(cls)
    for k in promoted:
        if k in opts:
            opts[k] = coerce(opts[k], tps[k], f"{where}{option_flag} {k}")
            if k in values:
                raise UserInputError(f"{where}{option_flag} {k}={opts[k]!r} conflicts with {k}={values[k]!r}: "
                                     f"give {k} once")
            values[k] = opts.pop(k)
    values[options_field] = opts
    return values


def resolve_config(cls: type, *, flags: Mapping[str, Any], config_file: str | Path | None = None,
                   options_field: str | None = "options", promoted: Iterable[str] = (),
                   option_flag: str = "--option") -> Any:
    """The job config from defaults < config file < flags < per-method options (module doc).

    flags: the fields given on the command line (`given_flags`). Per-method options (cfg.<options_field>) merge
    key by key across sources; `promoted` names option keys that are fields of their own (guidance_scale ...).
    Required fields missing from every source are an error naming the flag.
    """
    promoted = tuple(promoted)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    if config_file is not None:
        src = f"--config {config_file}"
        values = coerce_fields(cls, load_config_file(config_file), src)
        if options_field:
            values = _promote(cls, values, options_field, promoted, f"{src}: ", "options:")
    cli = coerce_fields(cls, dict(flags), None)
    if options_field:
        cli = _promote(cls, cli, options_field, promoted, "", option_flag)
        if options_field in cli and options_field in values:   # per-method options merge key by key
            cli[options_field] = {**values[options_field], **cli[options_field]}
    values.update(cli)
    missing = [n for n, f in fields.items() if n not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        flag = flag_name(missing[0], field_metadata(cls).get(missing[0]))
        raise UserInputError(f"{flag}: required (give it on the command line or in --config FILE)")
    return cls(**values)


def add_job_arguments(parser: argparse.ArgumentParser | Any, cls: type, *, required: Iterable[str] = (),
                      skip: Iterable[str] = ()) -> None:
    """--config FILE plus one flag per field of the job's config dataclass `cls`."""
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="JSON or YAML file of settings (a run's config.json replays that run); "
                             "flags given as well override it")
    add_config_arguments(parser, cls, required=required, skip=skip)


def config_from_args(args: argparse.Namespace, cls: type, *, options_field: str | None = "options",
                     promoted: Iterable[str] = (), option_flag: str = "--option") -> Any:
    """The job config of parsed arguments (`add_job_arguments`): defaults < --config < flags < options."""
    return resolve_config(cls, flags=given_flags(args, cls), config_file=getattr(args, "config", None),
                          options_field=options_field, promoted=promoted, option_flag=option_flag)
