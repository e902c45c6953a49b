"""Backend registry and dispatch for msdfast.ops.

Each backend module registers its implementations with `register(op, backend, fn, devices)`.
Dispatch picks, for the tensor's device type, the first available backend in PREFERENCE order,
unless the caller passes backend=... or the environment forces one:
  MSDFAST_BACKEND=reference|compiled|triton        (all ops)
  MSDFAST_BACKEND_<OP>=...  e.g. MSDFAST_BACKEND_DDIM_STEP=triton   (one op; wins over the global one)
Forcing a backend that has no implementation for that op/device raises a clear error.

The environment is read once, when msdfast.ops is imported; after changing it at run time call
`reload_environment()` (msdfast.ops.reload_backend_environment). Why: the choice is made on every op call and
two os.environ lookups plus the preference walk cost ~4 us, a quarter of a small fused kernel; resolved
choices are cached per (op, device type, backend argument) instead.
"""
from __future__ import annotations

import os
from typing import Any, Callable

BACKENDS = ("reference", "compiled", "triton")
# Fastest first. Triton is preferred only on CUDA; on the CPU it runs in the (slow) interpreter
# and is therefore used only when forced.
PREFERENCE = {"cuda": ("compiled", "triton", "reference"), "cpu": ("compiled", "reference")}

_REGISTRY: dict[str, dict[str, tuple[Callable[..., Any], frozenset[str]]]] = {}
_ENV: dict[str, str] = {}                                       # MSDFAST_BACKEND* variables, read at import
_CHOSEN: dict[tuple[str, str, str | None], Callable[..., Any]] = {}   # (op, device type, backend) -> impl


def register(op: str, backend: str, fn: Callable[..., Any], devices: tuple[str, ...]) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend: unknown {backend!r}, expected one of {BACKENDS}")
    _REGISTRY.setdefault(op, {})[backend] = (fn, frozenset(devices))
    _CHOSEN.clear()


def reload_environment() -> None:
    """Re-read MSDFAST_BACKEND and MSDFAST_BACKEND_<OP> (they are read once, at import)."""
    _ENV.clear()
    _ENV.update({k: v for k, v in os.environ.items() if k.startswith("MSDFAST_BACKEND")})
    _CHOSEN.clear()


def available(op: str, device_type: str) -> list[str]:
    """Backends that implement op for this device type, in preference order."""
    impls = _REGISTRY.get(op, {})
    order = PREFERENCE.get(device_type, ("reference",)) + tuple(b for b in BACKENDS)
    seen: list[str] = []
    for b in order:
        if b in impls and device_type in impls[b][1] and b not in seen:
            seen.append(b)
    return seen


def _forced(op: str) -> str | None:
    val = _ENV.get(f"MSDFAST_BACKEND_{op.upper()}") or _ENV.get("MSDFAST_BACKEND")
    if val and val not in BACKENDS:
        raise ValueError(f"MSDFAST_BACKEND: unknown backend {val!r}, expected one of {BACKENDS}")
    return val or None


def choose(op: str, device_type: str, backend: str | None = None) -> str:
    """The backend that will run op on device_type (explicit argument > environment > preference)."""
    want = backend or _forced(op)
    have = available(op, device_type)
    if want is not None:
        if want not in BACKENDS:
            raise ValueError(f"backend: unknown {want!r}, expected one of {BACKENDS}")
        if want not in have:
            raise RuntimeError(f"backend: {want!r} has no implementation of op {op!r} on {device_type} "
                               f"(available: {have or 'none'}); see msdfast.info()")
        return want
    if not have:
        raise RuntimeError(f"op {op!r}: no backend implements it on device type {device_type!r}")
    return have[0]


def call(op: str, device_type: str, backend: str | None, *args: Any) -> Any:
    try:
        fn = _CHOSEN[(op, device_type, backend)]
    except KeyError:
        fn = _CHOSEN[(op, device_type, backend)] = _REGISTRY[op][choose(op, device_type, backend)][0]
    return fn(*args)


def table() -> dict[str, dict[str, str]]:
    """{op: {device_type: chosen backend}} for cpu and cuda (for msdfast.info())."""
    out: dict[str, dict[str, str]] = {}
    for op in sorted(_REGISTRY):
        row = {}
        for dev in ("cpu", "cuda"):
            try:
                row[dev] = choose(op, dev)
            except (RuntimeError, ValueError):
                row[dev] = "-"
        out[op] = row
    return out


reload_environment()
