"""Denoisers behind one protocol (msdfast.denoisers.base.Denoiser)."""
from .base import Cond, Denoiser, DenoiserCall, DenoiserStats  # noqa: F401
