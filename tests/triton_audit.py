"""Catch, under TRITON_INTERPRET=1, what the interpreter forgives and a GPU compile does not.

The interpreter keeps a Python float argument as a double and an out-of-range tile as a big numpy array;
the compiler types a float argument fp32 and an int argument i32 (i64 only from 2^31), and rejects tensors
of more than 2^20 elements. `audit()` records, for every Triton launch inside it:
  * scalar arguments and the kernel's annotations: a float must reach a `tl.float64` parameter (or be a
    constexpr), an int a `tl.int64` one (or a constexpr), so the compiled kernel sees the values the
    interpreter did and computes offsets in 64 bits;
  * the dtype of every block pointer offset (int64 required: no int32 overflow past 2^31 elements);
  * the largest tensor any kernel built (<= TRITON_MAX_TENSOR_NUMEL).
"""
from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

MAX_TENSOR_NUMEL = 1 << 20   # triton.language.TRITON_MAX_TENSOR_NUMEL


@dataclass
class Launches:
    kernels: set[str] = field(default_factory=set)
    bad_scalars: list[str] = field(default_factory=list)
    offset_dtypes: dict[str, set[str]] = field(default_factory=dict)
    max_numel: dict[str, int] = field(default_factory=dict)
    meta: dict[str, list[dict]] = field(default_factory=dict)

    def problems(self) -> list[str]:
        out = list(self.bad_scalars)
        out += [f"{k}: pointer offsets of dtype {sorted(d - {'int64'})}" for k, d in self.offset_dtypes.items()
                if d - {"int64"}]
        out += [f"{k}: a tensor of {n} elements > {MAX_TENSOR_NUMEL}" for k, n in self.max_numel.items()
                if n > MAX_TENSOR_NUMEL]
        return out


def _annotation(fn, name: str) -> str:  # noqa: ANN001
    ann = inspect.signature(fn).parameters[name].annotation
    return "" if ann is inspect.Parameter.empty else str(ann)


@contextlib.contextmanager
def audit() -> Iterator[Launches]:
    import triton.language as tl
    from triton.runtime import interpreter as ti

    rec = Launches()
    current: list[str] = []
    orig_call, orig_addptr, orig_post = ti.GridExecutor.__call__, ti.InterpreterBuilder.create_addptr, \
        ti.TensorHandle.__post_init__

    def call(self, *args, **kwargs):  # noqa: ANN001, ANN202
        name = self.fn.__name__
        rec.kernels.add(name)
        sig = inspect.signature(self.fn)
        bound = sig.bind(*args, **{k: v for k, v in kwargs.items() if k in sig.parameters})
        meta = {}
        for pname, value in bound.arguments.items():
            ann = _annotation(self.fn, pname)
            if "constexpr" in ann:
                meta[pname] = value
                continue
            if isinstance(value, bool) or hasattr(value, "data_ptr") or value is None:
                continue
            if isinstance(value, float) and "float64" not in ann and "fp64" not in ann:
                rec.bad_scalars.append(f"{name}.{pname}: a float reaches a parameter typed {ann or 'fp32'}")
            if isinstance(value, int) and "int64" not in ann and "i64" not in ann:
                rec.bad_scalars.append(f"{name}.{pname}: an int reaches a parameter typed {ann or 'i32'}")
        rec.meta.setdefault(name, []).append(meta)
        # The interpreter ignores annotations (an int is i32, a float a double); give annotated scalars the
        # compiled types so the kernel's index math runs in the interpreter as it will on a GPU.
        for pname, value in list(bound.arguments.items()):
            ann = _annotation(self.fn, pname)
            if isinstance(value, int) and not isinstance(value, bool) and ("int64" in ann or "i64" in ann):
                bound.arguments[pname] = tl.tensor(ti.TensorHandle(np.array([value], np.int64), tl.int64), tl.int64)
            elif isinstance(value, float) and ("float64" in ann or "fp64" in ann):
                bound.arguments[pname] = tl.tensor(ti.TensorHandle(np.array([value], np.float64), tl.float64),
                                                   tl.float64)
        args, kwargs = bound.args, {**{k: v for k, v in kwargs.items() if k not in sig.parameters}, **bound.kwargs}
        current.append(name)
        try:
            return orig_call(self, *args, **kwargs)
        finally:
            current.pop()

    def addptr(self, ptr, offset):  # noqa: ANN001, ANN202
        data = np.asarray(offset.data)
        # block offsets; a scalar or a broadcast constant (`ptr + 1`) cannot overflow
        if current and data.size > 1 and data.min() != data.max():
            rec.offset_dtypes.setdefault(current[-1], set()).add(str(offset.dtype))
        return orig_addptr(self, ptr, offset)

    def post(self):  # noqa: ANN001, ANN202
        if current:
            n = int(np.asarray(self.data).size)
            if n > rec.max_numel.get(current[-1], 0):
                rec.max_numel[current[-1]] = n
        return orig_post(self)

    ti.GridExecutor.__call__, ti.InterpreterBuilder.create_addptr, ti.TensorHandle.__post_init__ = call, addptr, post
    try:
        yield rec
    finally:
        ti.GridExecutor.__call__, ti.InterpreterBuilder.create_addptr, ti.TensorHandle.__post_init__ = \
            orig_call, orig_addptr, orig_post
