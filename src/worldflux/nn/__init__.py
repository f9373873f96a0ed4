"""Neural building blocks shared by families (depends only on torch and worldflux.core)."""

from worldflux.nn.ensemble import EnsembleLinear, EnsembleMLP, activation
from worldflux.nn.latent import (
    Gaussian,
    SimNorm,
    gaussian_nll,
    soft_bound_logvar,
    straight_through_categorical,
    unimix_logits,
)
from worldflux.nn.normalizer import Normalizer

__all__ = [
    "EnsembleLinear", "EnsembleMLP", "Gaussian", "Normalizer", "SimNorm", "activation",
    "gaussian_nll", "soft_bound_logvar", "straight_through_categorical", "unimix_logits",
]
