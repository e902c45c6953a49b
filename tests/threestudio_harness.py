"""Import the REAL threestudio (commit 28d9d80, ../shared/ext/threestudio) on a CPU machine, for the tests.

threestudio is not on the package registries. Its guidance, prompt-processor, config and system modules import
on a CPU once a few imports are stubbed; everything else is threestudio's own code, read from its checkout:

* CUDA-only packages: `tinycudann`, `nerfacc`, `nvdiffrast` (and `igl`, a mesh library `utils/ops.py` imports
  for functions no tested path calls) -> empty modules whose attributes raise when used.
* Lightning: `pytorch_lightning` -> a LightningModule that is a plain nn.Module with Lightning's step counters
  and a `log` that records into `self.logged`; rank_zero helpers run on rank 0 (this process).
* Output-only packages of `utils/saving.py` (images, videos, meshes, wandb: cv2, imageio, trimesh, wandb) are
  stubbed only when not installed; the training-step loss logic never calls them.
* `extern` (threestudio's vendored zero123 code, not part of the checkout; imported unused by the SDI guidance).
* The aggregating package `__init__`s (`threestudio.models`, `.systems`, `.data`, `.models.guidance`, ...)
  import every CUDA-only geometry/renderer module; they are replaced by empty packages with threestudio's real
  `__path__`, so each submodule the tests import is threestudio's own file.
* `get_device()` returns the CPU.

`THREESTUDIO_ROOT` overrides the location (default: <repo>/../shared/ext/threestudio, as in CI).
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
import types
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
ROOT = Path(os.environ.get("THREESTUDIO_ROOT", REPO.parent / "shared" / "ext" / "threestudio"))

SUBMODULES = [
    "threestudio.models.prompt_processors.base",
    "threestudio.models.prompt_processors.stable_diffusion_prompt_processor",
    "threestudio.models.guidance.stable_diffusion_guidance",
    "threestudio.models.guidance.stable_diffusion_sdi_guidance",
    "threestudio.models.guidance.stable_diffusion_vsd_guidance",
    "threestudio.systems.dreamfusion",
    "threestudio.systems.magic3d",
    "threestudio.systems.sdi",
    "threestudio.systems.prolificdreamer",
    "threestudio.systems.latentnerf",
    "threestudio.systems.sjc",
    "threestudio.systems.fantasia3d",
]
# systems whose other dependencies may be missing (imagedreamfusion: torchmetrics): imported when they can be.
# (fantasia3d's training step checks isinstance against controlnet_guidance, which needs controlnet_aux)
OPTIONAL_SUBMODULES = ["threestudio.systems.imagedreamfusion", "threestudio.systems.eff_dreamfusion",
                       "threestudio.models.guidance.controlnet_guidance"]
UNAVAILABLE: dict[str, str] = {}
PACKAGES = ["threestudio.data", "threestudio.models", "threestudio.systems", "threestudio.models.guidance",
            "threestudio.models.prompt_processors", "threestudio.models.geometry", "threestudio.models.renderers",
            "threestudio.models.materials", "threestudio.models.background", "threestudio.models.exporters"]


def available() -> bool:
    return (ROOT / "threestudio" / "__init__.py").is_file() and (ROOT / "launch.py").is_file()


class _Missing(types.ModuleType):
    """A stubbed module: any attribute is a callable/class placeholder that raises when used."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)

        def _raise(*a: Any, **k: Any) -> Any:
            raise RuntimeError(f"{self.__name__}.{name} is stubbed in the CPU test harness")
        return type(name, (), {"__init__": _raise, "__call__": _raise})


_STUBBED: list[str] = []


def _stub(name: str, **attrs: Any) -> types.ModuleType:
    mod = _Missing(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    mod.__path__ = []  # a package, so dotted sub-imports resolve to further stubs
    vars(mod).update(attrs)
    sys.modules[name] = mod
    _STUBBED.append(name)
    return mod


def _stub_lightning() -> None:
    class LightningModule(torch.nn.Module):
        """Lightning's hooks/counters the threestudio systems read; `log` records."""

        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__()
            self.global_step = 0
            self.current_epoch = 0
            self.logged: dict[str, Any] = {}

        def log(self, name: str, value: Any, *a: Any, **k: Any) -> None:
            self.logged[name] = value

        def on_save_checkpoint(self, checkpoint: dict) -> None:  # Lightning's default hooks: no-ops
            pass

        def on_load_checkpoint(self, checkpoint: dict) -> None:
            pass

        def on_fit_start(self) -> None:
            pass

        def on_train_start(self) -> None:
            pass

    def rank_zero_only(fn: Any) -> Any:
        return fn

    def _noop(*a: Any, **k: Any) -> None:
        return None

    pl = _stub("pytorch_lightning", LightningModule=LightningModule)
    util = _stub("pytorch_lightning.utilities")
    rz = _stub("pytorch_lightning.utilities.rank_zero", rank_zero_only=rank_zero_only, rank_zero_debug=_noop,
               rank_zero_info=_noop, rank_zero_warn=_noop)
    loggers = _stub("pytorch_lightning.loggers")
    pl.utilities, util.rank_zero, pl.loggers = util, rz, loggers


_LOADED: types.ModuleType | None = None


def load() -> types.ModuleType:
    """Import threestudio (once per process) with the stubs above; returns the `threestudio` package."""
    global _LOADED
    if _LOADED is not None:
        return _LOADED
    if not available():
        raise FileNotFoundError(f"threestudio not found at {ROOT}")
    import accelerate  # noqa: F401  -- before any stub: these probe optional packages by spec
    import diffusers  # noqa: F401
    import transformers  # noqa: F401
    _stub_lightning()
    for name in ("tinycudann", "nerfacc", "nvdiffrast", "igl"):
        if importlib.util.find_spec(name) is None:
            _stub(name, free_temporary_memory=lambda: None)
    # threestudio's vendored `extern/` (zero123's ldm code) is not in the checkout; the SDI guidance imports it
    # without using it.
    for name in ("cv2", "imageio", "trimesh", "wandb", "extern", "extern.ldm_zero123"):
        if importlib.util.find_spec(name) is None:
            _stub(name)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    for pkg in PACKAGES:
        mod = types.ModuleType(pkg)
        mod.__path__ = [str(ROOT / Path(*pkg.split("."))) ]
        sys.modules[pkg] = mod
    ts = importlib.import_module("threestudio")
    for pkg in PACKAGES:  # bind the shells as attributes of their parents
        parent, _, child = pkg.rpartition(".")
        setattr(sys.modules[parent], child, sys.modules[pkg])
    for name in SUBMODULES:
        importlib.import_module(name)
    for name in OPTIONAL_SUBMODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            UNAVAILABLE[name] = f"needs {e.name}"
    # threestudio's modules hold their references; the rest of the test session must not see the stubs (other
    # libraries probe e.g. wandb or cv2 by name)
    for name in _STUBBED:
        sys.modules.pop(name, None)
    cpu = lambda: torch.device("cpu")  # noqa: E731
    for name, mod in list(sys.modules.items()):
        if name.startswith("threestudio") and hasattr(mod, "get_device"):
            mod.get_device = cpu
    _LOADED = ts
    return ts


def launch_module() -> types.ModuleType:
    """threestudio's launch.py as a module (its load_custom_modules reads ./custom of the current directory)."""
    load()
    if "threestudio_launch" not in sys.modules:
        spec = importlib.util.spec_from_file_location("threestudio_launch", ROOT / "launch.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["threestudio_launch"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["threestudio_launch"]
