"""Multiresolution hash-grid encoding (Mueller et al. 2022, Instant-NGP sec. 3) with tiny-cuda-nn's exact math.

tiny-cuda-nn (`tinycudann`) is used when it imports and CUDA is available; importing it on a CPU machine raises
EnvironmentError, and ANY exception there falls back to `HashGridEncoding`, msdfast's own implementation with
the same config keys, the same grid math and the same flat parameter layout (so a tcnn `params` tensor loads
into it). The grid math (tiny-cuda-nn's `encodings/grid.h`):

  scale_l      = 2^(l log2(per_level_scale)) * base_resolution - 1
  resolution_l = ceil(scale_l) + 1
  pos          = scale_l * x + 0.5;  grid = floor(pos);  frac = pos - grid   (smoothstep'ed if asked)
  table size   = min(next_multiple(resolution_l^D, 8), 2^log2_hashmap_size)     (Hash)
  index        = sum_d grid_d * resolution_l^d          while resolution_l^D <= table size (dense level)
               = XOR_d (grid_d * p_d) in uint32           otherwise ("CoherentPrime" hash)
  index %= table size;  output [N, n_levels * n_features_per_level], level-major.

Inputs are expected in [0, 1]^D (callers normalise to a bounding box first).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch

__all__ = ["HashGridEncoding", "make_encoding", "tcnn_available", "grid_levels", "PRIMES"]

from ..ops import GridLevels, hash_grid_encode
from ..ops.reference import GRID_INTERPOLATIONS as _INTERP
from ..ops.reference import HASH_PRIMES as PRIMES


def _per_level_scale(cfg: Mapping[str, Any]) -> float:
    """per_level_scale, or derived from max_resolution: exp((ln max - ln base) / (n_levels - 1))."""
    if "max_resolution" in cfg and "per_level_scale" not in cfg:
        n = int(cfg.get("n_levels", 16))
        base = float(cfg.get("base_resolution", 16))
        return math.exp((math.log(float(cfg["max_resolution"])) - math.log(base)) / max(n - 1, 1))
    return float(cfg.get("per_level_scale", 2.0))


def _grid_scale(level: int, per_level_scale: float, base_resolution: int) -> float:
    """tcnn's grid_scale in float32 arithmetic: exp2f(level * log2f(per_level_scale)) * base - 1.0f.

    float32 like tcnn, so ceil() picks the same resolution where float64 would land on the other side.
    """
    f32 = np.float32
    log2_pls = f32(np.log2(f32(per_level_scale)))
    return float(f32(f32(np.exp2(f32(f32(level) * log2_pls))) * f32(base_resolution)) - f32(1.0))


def grid_levels(n_input_dims: int, config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per level: scale, resolution, table size, parameter offset (in entries), dense or hashed."""
    cfg = normalize_config(config)
    levels, offset = [], 0
    for lvl in range(cfg["n_levels"]):
        scale = _grid_scale(lvl, cfg["per_level_scale"], cfg["base_resolution"])
        res = int(math.ceil(scale)) + 1
        dense_size = min(res ** n_input_dims, 2 ** 31 - 1)
        size = -(-dense_size // 8) * 8
        if cfg["type"] == "Hash":
            size = min(size, 2 ** cfg["log2_hashmap_size"])
        levels.append({"scale": scale, "resolution": res, "size": size, "offset": offset,
                       "hashed": cfg["type"] == "Hash" and res ** n_input_dims > size})
        offset += size
    return levels


GRID_KEYS = ("otype", "type", "n_levels", "n_features_per_level", "log2_hashmap_size", "base_resolution",
             "per_level_scale", "max_resolution", "interpolation")


def normalize_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Accept tcnn's keys verbatim: otype HashGrid | DenseGrid | Grid (+ type Hash|Dense), or max_resolution.
    An unknown key (a typo such as `nlevels`) is an error, not silently ignored."""
    cfg = dict(config)
    unknown = sorted(set(cfg) - set(GRID_KEYS))
    if unknown:
        raise ValueError(f"config: unknown key(s) {', '.join(map(repr, unknown))}; expected some of {GRID_KEYS}")
    otype = cfg.get("otype", "HashGrid")
    if otype == "HashGrid":
        kind = "Hash"
    elif otype == "DenseGrid":
        kind = "Dense"
    elif otype == "Grid":
        kind = cfg.get("type", "Hash")
    else:
        raise ValueError(f"config: otype must be 'HashGrid', 'DenseGrid' or 'Grid', got {otype!r}")
    if kind not in ("Hash", "Dense"):
        raise ValueError(f"config: type must be 'Hash' or 'Dense' (Tiled is not supported), got {kind!r}")
    out = {"otype": "Grid", "type": kind, "n_levels": int(cfg.get("n_levels", 16)),
           "n_features_per_level": int(cfg.get("n_features_per_level", 2)),
           "log2_hashmap_size": int(cfg.get("log2_hashmap_size", 19)),
           "base_resolution": int(cfg.get("base_resolution", 16)),
           "per_level_scale": _per_level_scale(cfg), "interpolation": cfg.get("interpolation", "Linear")}
    for k in ("n_levels", "n_features_per_level", "base_resolution"):
        if out[k] < 1:
            raise ValueError(f"config: {k} must be >= 1, got {out[k]}")
    if not 1 <= out["log2_hashmap_size"] <= 30:
        raise ValueError(f"config: log2_hashmap_size must be in [1, 30], got {out['log2_hashmap_size']}")
    if out["per_level_scale"] <= 0:
        raise ValueError(f"config: per_level_scale must be positive, got {out['per_level_scale']}")
    if out["interpolation"] not in _INTERP:
        raise ValueError(f"config: interpolation must be one of {_INTERP}, got {out['interpolation']!r}")
    return out


class HashGridEncoding(torch.nn.Module):
    """tiny-cuda-nn's Grid encoding in PyTorch: x [N, D] in [0, 1] -> [N, n_levels * n_features_per_level].

    Parameters live in one flat tensor `params` laid out as tcnn's (level offset, then entry, then feature).
    """

    def __init__(self, n_input_dims: int, config: Mapping[str, Any], *, seed: int | None = None) -> None:
        super().__init__()
        if not 1 <= n_input_dims <= len(PRIMES):
            raise ValueError(f"n_input_dims: must be in [1, {len(PRIMES)}], got {n_input_dims}")
        self.n_input_dims = n_input_dims
        self.config = normalize_config(config)
        self.levels = grid_levels(n_input_dims, self.config)
        self.n_features_per_level = self.config["n_features_per_level"]
        self.n_output_dims = self.config["n_levels"] * self.n_features_per_level
        n_params = (self.levels[-1]["offset"] + self.levels[-1]["size"]) * self.n_features_per_level
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        # tcnn initialises grid entries uniformly in [-1e-4, 1e-4].
        self.params = torch.nn.Parameter((torch.rand(n_params, generator=gen) * 2 - 1) * 1e-4)
        self.grid = GridLevels(tuple(v["scale"] for v in self.levels), tuple(v["resolution"] for v in self.levels),
                               tuple(v["size"] for v in self.levels), tuple(v["offset"] for v in self.levels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.n_input_dims:
            raise ValueError(f"x: expected [N, {self.n_input_dims}], got {tuple(x.shape)}")
        # the fused op (msdfast.ops: compiled / Triton kernels, the reference for float64 or input gradients)
        return hash_grid_encode(x, self.params, self.grid, self.n_features_per_level, self.config["interpolation"])


_TCNN: Any = None


def tcnn_available() -> bool:
    """True when tinycudann imports AND a CUDA device exists; never raises (tcnn raises EnvironmentError on CPU)."""
    global _TCNN
    if _TCNN is None:
        try:
            import tinycudann  # type: ignore[import-not-found]
            _TCNN = tinycudann if torch.cuda.is_available() else False
        except Exception:  # noqa: BLE001 -- EnvironmentError, ImportError, CUDA init errors: all mean "absent"
            _TCNN = False
    return bool(_TCNN)


def make_encoding(n_input_dims: int, config: Mapping[str, Any], *, implementation: str = "auto",
                  seed: int | None = None) -> torch.nn.Module:
    """A grid encoding: tiny-cuda-nn's when available (implementation 'auto' or 'tcnn'), else msdfast's."""
    if implementation not in ("auto", "tcnn", "torch"):
        raise ValueError(f"implementation: expected 'auto', 'tcnn' or 'torch', got {implementation!r}")
    cfg = normalize_config(config)
    if implementation != "torch" and tcnn_available():
        tcfg = {k: v for k, v in cfg.items() if k != "otype"}
        tcfg["otype"] = "Grid"
        return _TCNN.Encoding(n_input_dims, tcfg, seed=seed if seed is not None else 1337)
    if implementation == "tcnn":
        raise RuntimeError("implementation: 'tcnn' requested but tinycudann is not importable with CUDA here")
    return HashGridEncoding(n_input_dims, cfg, seed=seed)
