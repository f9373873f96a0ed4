"""DreamerV3 family (``dreamerv3``): RSSM world model with categorical latents, symlog and
two-hot predictions, KL balancing with free bits (Hafner et al. 2023)."""

from worldflux.models.dreamerv3.config import SIZE_PRESETS, DreamerV3Config, Sizes
from worldflux.models.dreamerv3.model import DreamerV3Model

__all__ = ["SIZE_PRESETS", "DreamerV3Config", "DreamerV3Model", "Sizes"]
