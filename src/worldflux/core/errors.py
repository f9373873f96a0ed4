"""Error types. Every message names the field, what was seen and what was expected."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class WorldFluxError(Exception):
    """Base class of every error raised on purpose by worldflux."""


class ContractError(WorldFluxError, ValueError):
    """Input does not match a model's ``io_contract()`` (key, shape, dtype or finiteness)."""


class ConfigError(WorldFluxError, ValueError):
    """A configuration key or value is unknown or invalid."""


class RegistryError(WorldFluxError, KeyError):
    """A name is not registered (model family, planner, agent, environment)."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class DataError(WorldFluxError, ValueError):
    """A replay file or dataset does not follow its documented schema."""


class EnvCheckError(WorldFluxError, ValueError):
    """A user environment breaks the gymnasium API in a way worldflux relies on."""


class CheckpointError(WorldFluxError, RuntimeError):
    """A checkpoint or saved model is missing, damaged or incompatible."""


def close_matches(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """Return ``" Did you mean: a, b?"`` for the candidates closest to ``name`` (or ``""``)."""
    matches = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(matches)}?" if matches else ""
