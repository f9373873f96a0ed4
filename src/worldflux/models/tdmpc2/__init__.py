"""TD-MPC2 family (``tdmpc2``): implicit world model with a SimNorm latent, two-hot reward and
Q ensemble, and a policy prior (Hansen, Su, Wang 2024)."""

from worldflux.models.tdmpc2.config import (
    MODEL_SIZES,
    ModelSizes,
    TDMPC2Config,
    discount_from_episode_length,
)
from worldflux.models.tdmpc2.model import TDMPC2Model, tdmpc2_sequences

__all__ = ["MODEL_SIZES", "ModelSizes", "TDMPC2Config", "TDMPC2Model",
           "discount_from_episode_length", "tdmpc2_sequences"]
