"""Count device-to-host conversions (the reads that are a host sync on a GPU) on the CPU.

Every read of a tensor's value into Python -- `bool(t)` in an `if`, `t.item()`, `float(t)`, `int(t)` -- reaches the
dispatcher as aten::_local_scalar_dense (aten::equal and aten::is_nonzero too); `tolist()` and `numpy()` do not,
so they are patched. `count_conversions()` records each with the Python frame (file:line) that caused it.
"""
from __future__ import annotations

import contextlib
import traceback
from typing import Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_READS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.equal.default,
          torch.ops.aten.is_nonzero.default}


def _where() -> str:
    frames = [f for f in traceback.extract_stack()[:-2] if "/msdfast/" in f.filename or "/tests/" in f.filename]
    f = frames[-1] if frames else traceback.extract_stack()[-3]
    return f"{f.filename.rsplit('/', 2)[-2]}/{f.filename.rsplit('/', 1)[-1]}:{f.lineno}"


class _Reads(TorchDispatchMode):
    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        if func in _READS:
            self.log.append(f"{func}: {_where()}")
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def count_conversions() -> Iterator[list[str]]:
    log: list[str] = []
    orig = {name: getattr(torch.Tensor, name) for name in ("tolist", "numpy")}

    def patched(name: str):  # noqa: ANN202
        def fn(self, *a, **k):  # noqa: ANN001, ANN202
            log.append(f"Tensor.{name}: {_where()}")
            return orig[name](self, *a, **k)
        return fn

    for name in orig:
        setattr(torch.Tensor, name, patched(name))
    try:
        with _Reads(log):
            yield log
    finally:
        for name, fn in orig.items():
            setattr(torch.Tensor, name, fn)
