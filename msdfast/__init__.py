"""msdfast: fast, trustworthy score distillation (MSD, DSD, PSR and baselines) with fused kernels."""
from __future__ import annotations

__version__ = "0.1.0"

from . import _threads  # noqa: E402  -- first: sets OMP_WAIT_POLICY before torch loads the OpenMP runtime

_threads.prepare_environment()

from . import _backend, ops, schedule  # noqa: E402,F401

_threads.apply_at_import()
from .schedule import VPSchedule  # noqa: E402,F401


def info(as_dict: bool = False):  # noqa: ANN201
    """Versions, optional accelerators and which backend each op uses on CPU and CUDA."""
    from ._info import collect, format_info

    data = collect()
    if as_dict:
        return data
    print(format_info(data))
    return None
