"""Backend registry and dispatch for msdfast.ops.

Each backend module registers its implementations with `register(op, backend, fn, devices)`.
Dispatch picks, for the tensor's device type, the first available backend in PREFERENCE order,
unless the caller passes backend=... or the environment forces one:
  MSDFAST_BACKEND=reference|compiled|triton        (all ops)
  MSDFAST_BACKEND_<OP>=...  e.g. MSDFAST_BACKEND_DDIM_STEP=triton   (one op; wins over the global one)
Forcing a backend that has no implementation for that op/device raises a clear error.
"""
from __future__ import annotations

import os
from typing import Any, Callable

BACKENDS = ("reference", "compiled", "triton")
# Fastest first. Triton is preferred only on CUDA; on the CPU it runs in the (slow) interpreter
# and is therefore used only when forced.
PREFERENCE = {"cuda": ("compiled", "triton", "reference"), "cpu": ("compiled", "reference")}

_REGISTRY: dict[str, dict[str, tuple[Callable[..., Any], frozenset[str]]]] = {}


def register(op: str, backend: str, fn: Callable[..., Any], devices: tuple[str, ...]) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend: unknown {backend!r}, expected one of {BACKENDS}")
    _REGISTRY.setdefault(op, {})[backend] = (fn, frozenset(devices))


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
    val = os.environ.get(f"MSDFAST_BACKEND_{op.upper()}") or os.environ.get("MSDFAST_BACKEND")
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
    name = choose(op, device_type, backend)
    return _REGISTRY[op][name][0](*args)


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
