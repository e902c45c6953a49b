"""Which class implements each estimator method: the registry `build` and the option introspection share.

A method's module is imported only when the method is first used, so listing METHODS imports no estimator.
"""
from __future__ import annotations

import importlib

from ..errors import UserInputError
from .base import Estimator

METHODS = ("sds", "sdi", "asd", "vsd", "msd", "dsd")

# method -> (module, class); a method's module is imported when it is first used.
_REGISTRY: dict[str, tuple[str, str]] = {
    "sds": ("sds", "SDS"),
    "asd": ("sds", "ASD"),
    "sdi": ("sdi", "SDI"),
    "vsd": ("vsd", "VSD"),
    "msd": ("msd", "MSD"),
    "dsd": ("dsd", "DSD"),
}


def estimator_class(method: str) -> type[Estimator]:
    """The Estimator subclass implementing `method` (one of METHODS); its module is imported on first use."""
    if not isinstance(method, str) or method.lower() not in _REGISTRY:
        raise UserInputError(f"method: expected one of {METHODS}, got {method!r}")
    mod_name, cls_name = _REGISTRY[method.lower()]
    return getattr(importlib.import_module(f"{__package__}.{mod_name}"), cls_name)
