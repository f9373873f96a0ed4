"""The ``token`` family: VQ-VAE frame tokenizer + transformer dynamics (IRIS-like).

Quick use::

    import worldflux
    model = worldflux.create_world_model("token", obs_shape=(3, 64, 64), action_dim=4,
                                         action_kind="discrete", history=4)
    state = model.encode(frames)                  # frames [B, 3, 64, 64] uint8
    state = model.transition(state, actions)      # parallel decoding (config.decoding)
    state = model.transition(state, actions, mode="causal")   # token by token, KV cache
    frames = model.decode(state).preds["obs"]     # [B, 3, 64, 64] float 0..255
"""

from worldflux.models.token.config import TokenConfig
from worldflux.models.token.dynamics import TokenDynamics
from worldflux.models.token.model import TokenModel, make_windows, reference_rows
from worldflux.models.token.quantizer import Quantizer, kmeans
from worldflux.models.token.tokenizer import Tokenizer

__all__ = ["Quantizer", "TokenConfig", "TokenDynamics", "TokenModel", "Tokenizer", "kmeans",
           "make_windows", "reference_rows"]
