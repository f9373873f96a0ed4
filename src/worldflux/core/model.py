"""The one contract every world-model family satisfies.

A family subclasses :class:`WorldModel`, sets ``family`` and implements ``initial_state``,
``encode``, ``transition``, ``decode``, ``loss`` and ``io_contract`` (``update`` and ``rollout``
have generic defaults). Public methods validate their inputs against ``io_contract()``
automatically: a subclass writes plain methods, and the base class wraps them on definition, so
an outer call validates once and the calls it makes internally run unchecked.
"""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from worldflux.core.spec import ActionSpec, IOContract, ObservationSpec
from worldflux.core.types import Batch, LossOutput, ModelOutput, State, Trajectory

if TYPE_CHECKING:  # the quality package depends on core, never the other way at run time
    from worldflux.quality.smoke import SmokeResult

_LOCAL = threading.local()


def _validated(name: str, method):
    """Wrap ``method`` so that the outermost call validates its arguments first."""

    @functools.wraps(method)
    def wrapper(self: WorldModel, *args, **kwargs):
        depth = getattr(_LOCAL, "depth", 0)
        if depth == 0 and getattr(_LOCAL, "enabled", True):
            args = self._validate_call(name, args)
        _LOCAL.depth = depth + 1
        try:
            return method(self, *args, **kwargs)
        finally:
            _LOCAL.depth = depth

    wrapper.__wf_validated__ = True
    return wrapper


class validation_disabled:
    """Context manager that skips input validation (for hot loops over already-checked data)."""

    def __enter__(self) -> None:
        self._previous = getattr(_LOCAL, "enabled", True)
        _LOCAL.enabled = False

    def __exit__(self, *exc: object) -> None:
        _LOCAL.enabled = self._previous


class WorldModel(nn.Module):
    """Base class of every world model.

    Args:
        config: the family's config dataclass (``model.config``).
        obs_spec: observation shape and dtype.
        action_spec: action width and kind.

    Methods (``B`` batch, ``T`` time, ``A`` action width):
        ``initial_state(batch_size) -> State``
        ``encode(obs [B, *obs_shape]) -> State``
        ``transition(state, action [B, A]) -> State`` (one imagined step)
        ``update(state, action [B, A], obs [B, *obs_shape]) -> State`` (filter a real step)
        ``decode(state) -> ModelOutput`` (``preds["obs"|"reward"|"continue"]``)
        ``rollout(state, actions [B, T, A]) -> Trajectory``
        ``loss(batch) -> LossOutput``
        ``io_contract() -> IOContract``
    """

    family: ClassVar[str] = ""
    _VALIDATED: ClassVar[tuple[str, ...]] = ("encode", "transition", "update", "rollout", "loss")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in cls._VALIDATED:
            method = cls.__dict__.get(name)
            if method is not None and not getattr(method, "__wf_validated__", False):
                setattr(cls, name, _validated(name, method))

    def __init__(self, config: Any, obs_spec: ObservationSpec, action_spec: ActionSpec) -> None:
        super().__init__()
        self.config = config
        self.obs_spec = obs_spec
        self.action_spec = action_spec

    # -- contract (families override) ----------------------------------------------------------
    def io_contract(self) -> IOContract:
        """Observation/action specs and the batch keys ``loss`` needs."""
        return IOContract(self.obs_spec, self.action_spec)

    def initial_state(self, batch_size: int) -> State:
        raise NotImplementedError

    def encode(self, obs: Tensor) -> State:
        raise NotImplementedError

    def transition(self, state: State, action: Tensor) -> State:
        raise NotImplementedError

    def update(self, state: State, action: Tensor, obs: Tensor) -> State:
        """Posterior step on a real observation; fully observed families simply re-encode."""
        return self.encode(obs)

    def decode(self, state: State) -> ModelOutput:
        raise NotImplementedError

    def rollout(self, state: State, actions: Tensor) -> Trajectory:
        """Apply ``actions [B, T, A]`` from ``state``; equals ``T`` calls of :meth:`transition`."""
        states, rewards, continues = [], [], []
        for t in range(actions.shape[1]):
            state = self.transition(state, actions[:, t])
            preds = self.decode(state).preds
            states.append(state)
            rewards.append(preds.get("reward", torch.zeros(actions.shape[0], device=actions.device)))
            if "continue" in preds:
                continues.append(preds["continue"])
        return Trajectory(
            states=State.stack(states, dim=1),
            rewards=torch.stack(rewards, 1),
            continues=torch.stack(continues, 1) if continues else None,
        )

    def loss(self, batch: Batch) -> LossOutput:
        raise NotImplementedError

    # -- quality gates (``worldflux verify``; families override) --------------------------------
    @classmethod
    def smoke_specs(cls) -> tuple[ObservationSpec, ActionSpec]:
        """Specs of the family's smoke task; ``worldflux verify FAMILY`` builds a model with them.

        Default: flat float observations ``(4,)`` and 2 continuous actions.
        """
        return ObservationSpec((4,)), ActionSpec(2)

    @classmethod
    def smoke_task(cls, seed: int, quick: bool = True) -> SmokeResult:
        """Does a fresh model of the family learn a tiny real task? (one seed of ``seed_success``)

        A family overrides this with what "learning" means for it. The default trains
        ``loss(batch)`` of a fresh model on batches from a linear-Gaussian system sized to
        :meth:`smoke_specs` and passes when the held-out loss falls by a set fraction (see
        :func:`worldflux.quality.smoke.generic_smoke_task`). ``quick`` is the CI budget (about
        a second); ``quick=False`` trains longer.
        """
        from worldflux.quality.smoke import generic_smoke_task

        return generic_smoke_task(cls, seed=seed, quick=quick)

    # -- helpers -------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Device of the first parameter (CPU for a parameter-free model)."""
        for tensor in self.parameters():
            return tensor.device
        return torch.device("cpu")

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, directory: str) -> None:
        """Write ``config.json``, ``model.safetensors`` and ``worldflux.json`` into ``directory``."""
        from worldflux.core.serialization import save_pretrained

        save_pretrained(self, directory)

    def push_to_hub(self, repo_id: str, *, token: str | None = None, private: bool | None = None,
                    revision: str | None = None, commit_message: str = "Upload worldflux model",
                    create_repo: bool = True) -> str:
        """Upload to the Hugging Face Hub repository ``repo_id``; returns the commit URL.

        See :func:`worldflux.core.serialization.push_to_hub` (needs ``worldflux[hub]``).
        """
        from worldflux.core.serialization import push_to_hub

        return push_to_hub(self, repo_id, token=token, private=private, revision=revision,
                           commit_message=commit_message, create_repo=create_repo)

    def _validate_call(self, name: str, args: tuple) -> tuple:
        contract = self.io_contract()
        args = list(args)
        if name == "encode" and args:
            args[0] = contract.validate_obs(args[0], "obs")
        elif name == "transition" and len(args) >= 2:
            _check_state(args[0])
            args[1] = contract.validate_actions(args[1], "action")
            _check_batch(args[0], args[1], "action")
        elif name == "update" and len(args) >= 3:
            _check_state(args[0])
            args[1] = contract.validate_actions(args[1], "action")
            args[2] = contract.validate_obs(args[2], "obs")
            _check_batch(args[0], args[1], "action")
        elif name == "rollout" and len(args) >= 2:
            _check_state(args[0])
            args[1] = contract.validate_actions(args[1], "actions", lead=2)
            _check_batch(args[0], args[1], "actions")
        elif name == "loss" and args:
            args[0] = contract.validate_batch(args[0])
        return tuple(args)


# ``__init_subclass__`` wraps only what subclasses define; the inherited defaults (``update``,
# ``rollout``) must validate too, or a family relying on them would skip input checks.
for _name in WorldModel._VALIDATED:
    setattr(WorldModel, _name, _validated(_name, WorldModel.__dict__[_name]))
del _name


def _check_state(state: Any) -> None:
    from worldflux.core.errors import ContractError

    if not isinstance(state, State):
        raise ContractError(f"state: got {type(state).__name__}, expected worldflux State")


def _check_batch(state: State, actions: Tensor, name: str) -> None:
    from worldflux.core.errors import ContractError

    if actions.shape[0] != state.batch_size:
        raise ContractError(
            f"{name}: got batch size {actions.shape[0]}, expected {state.batch_size} "
            f"(the state's batch size)"
        )
