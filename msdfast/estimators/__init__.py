"""Score-distillation estimators behind one contract (msdfast.estimators.base)."""
from .base import Estimator, GradientEstimate, loss_trick  # noqa: F401
