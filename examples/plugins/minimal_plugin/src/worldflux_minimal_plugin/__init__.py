"""A minimal worldflux plugin: the ``linear-gaussian`` world-model family.

Installing this package is enough: its entry point in the group ``worldflux.models`` names this
module, worldflux imports it lazily, and the decorator below registers the family::

    import worldflux
    model = worldflux.create_world_model("linear-gaussian", obs_shape=(3,), action_dim=1)
"""

from worldflux_minimal_plugin.model import LinearGaussianConfig, LinearGaussianModel

__all__ = ["LinearGaussianConfig", "LinearGaussianModel"]
