"""Write ONNX files of trained agents and check them against PyTorch.

Quick use::

    from worldflux.export import export_run
    result = export_run("runs/pets-pendulum", "pendulum_policy.onnx")     # the MPC decision
    result = export_run("runs/pets-pendulum", "pendulum_model.onnx", what="dynamics")
    result.max_abs_diff          # {"action": 2e-7, ...}: onnxruntime vs PyTorch, random inputs

Every export writes ``FILE`` atomically, embeds a JSON description in the model's metadata
(key ``"worldflux"``) and writes the same JSON, plus the validation figures and the file's
SHA-256, next to it as ``FILE.json``. The graph is checked with ``onnx.checker`` and run in
onnxruntime on random inputs; :attr:`ExportResult.max_abs_diff` holds the largest absolute
difference from the PyTorch reference per output.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from worldflux.core.errors import CheckpointError, ConfigError, WorldFluxError
from worldflux.core.io import atomic_write_bytes, atomic_write_text, sha256_file
from worldflux.export.pets import PETSDynamicsGraph, PETSPolicyGraph
from worldflux.export.runtime import METADATA_KEY, require_onnxruntime, sample_policy_noise

__all__ = ["DEFAULT_OPSET", "EXPORT_OVERRIDE_KEYS", "ExportResult", "export_agent",
           "export_pets_dynamics", "export_pets_policy", "export_run", "policy_graph"]

DEFAULT_OPSET = 18
"""ONNX opset written unless another is asked for."""
FORMAT_VERSION = 1
EXPORT_OVERRIDE_KEYS = ("planner.", "risk.", "num_particles", "propagation", "discount")
"""Agent settings that may be changed at export time (the model's weights stay as trained)."""

What = Literal["policy", "dynamics"]

_DESCRIPTIONS = {
    "obs": "observation",
    "action": "action, in the normalised bounds",
    "init_mean": "warm-start mean of the plan: centre of the bounds at an episode start, then "
                 "the previous decision's next_mean",
    "sample_noise": "standard normal sampling noise per iteration (iCEM: coloured); iteration i "
                    "uses its first populations[i] rows",
    "particle_noise": "standard normal noise of the sampled transitions [iteration, step, member, "
                      "column, target]; iteration i uses its first columns[i] columns",
    "member_noise": "uniform [0, 1) numbers; their argsort re-draws particle members (TS-1)",
    "prev_elites": "elites carried from the previous decision (iCEM): its next_elites",
    "prev_elites_valid": "1 when prev_elites come from a previous decision, 0 at an episode start",
    "tail_noise": "standard normal noise of the new last action of the carried elites (iCEM)",
    "next_mean": "warm start of the next decision (feed back as init_mean)",
    "plan_value": "predicted return of the best sequence found",
    "next_elites": "elites to carry to the next decision (feed back as prev_elites)",
    "next_obs_mean": "predicted mean next observation of every member",
    "next_obs_logvar": "log-variance of every member's next-observation prediction (raw units)",
    "reward": "predicted mean reward of every member",
}


@dataclass
class ExportResult:
    """What an export wrote and how closely onnxruntime reproduced PyTorch."""

    path: Path
    """The ONNX file."""
    sidecar: Path
    """``FILE.json``: the description of the file."""
    metadata: dict[str, Any]
    """The description (also embedded in the file under the metadata key ``"worldflux"``)."""
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    """Per output: largest absolute difference between onnxruntime and PyTorch (random inputs)."""

    @property
    def max_diff(self) -> float:
        return max(self.max_abs_diff.values(), default=float("nan"))


def require_onnx():
    """Import onnx, onnxscript and onnxruntime, or raise an ImportError naming the extra."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
    except ImportError as exc:
        raise ImportError(f"ONNX export needs onnx, onnxscript and onnxruntime ({exc}); "
                          "install them with: pip install worldflux[onnx]") from None
    require_onnxruntime()
    return onnx


# -- public API ---------------------------------------------------------------------------------
def export_run(run_dir: str | os.PathLike, path: str | os.PathLike, *, what: What = "policy",
               opset: int = DEFAULT_OPSET, device: str | None = "cpu",
               overrides: dict[str, str] | None = None, validate: bool = True) -> ExportResult:
    """Export the newest valid checkpoint of a run directory (see :func:`export_agent`)."""
    from worldflux.training.checkpoint import latest_checkpoint
    from worldflux.training.evaluate import load_run

    run_dir = Path(run_dir)
    if (run_dir / "config.json").is_file() and latest_checkpoint(run_dir) is None:
        raise CheckpointError(f"{run_dir / 'checkpoints'}: no valid checkpoint to export; "
                              "train the run (or let it reach its first checkpoint) first")
    agent, train_config, checkpoint, step = load_run(run_dir, device=device)
    source = {"run_dir": str(run_dir), "checkpoint": str(checkpoint), "step": int(step),
              "agent": getattr(agent, "name", type(agent).__name__), "env": train_config.env}
    return export_agent(agent, path, what=what, opset=opset, overrides=overrides, source=source,
                        validate=validate)


def export_agent(agent, path: str | os.PathLike, *, what: What = "policy",
                 opset: int = DEFAULT_OPSET, overrides: dict[str, str] | None = None,
                 source: dict[str, Any] | None = None, validate: bool = True) -> ExportResult:
    """Export an agent's policy (its whole MPC decision) or its world model's dynamics.

    Args:
        agent: a trained MPC agent over a :class:`~worldflux.models.pets.PETSModel` (``pets``;
            also its deterministic and single-network variants).
        path: the ``.onnx`` file to write.
        what: ``"policy"`` or ``"dynamics"``.
        opset: ONNX opset.
        overrides: planner settings for the exported policy, e.g. ``{"planner.population":
            "100"}`` (keys: ``planner.*``, ``num_particles``, ``propagation``, ``discount``).
        source: where the agent came from (recorded in the metadata).
        validate: run the file in onnxruntime against PyTorch on random inputs.
    """
    from worldflux.agents.mpc import MPCAgent
    from worldflux.models.pets import PETSModel

    if what not in ("policy", "dynamics"):
        raise ConfigError(f"what: got {what!r}, expected 'policy' or 'dynamics'")
    name = getattr(agent, "name", type(agent).__name__)
    if not (isinstance(agent, MPCAgent) and isinstance(agent.model, PETSModel)):
        raise ConfigError(f"agent '{name}': ONNX export is not supported for this agent "
                          "(supported: pets, and MPC agents over its one-step model families)")
    if not agent.trained:
        step = f" (checkpoint step {source['step']})" if source and "step" in source else ""
        raise CheckpointError(f"agent '{name}'{step}: its world model was never trained "
                              "(agent.trained is false); export a later checkpoint")
    if what == "dynamics":
        if overrides:
            raise ConfigError(f"--set {next(iter(overrides))}: settings only apply to the "
                              "policy export (--what policy)")
        return export_pets_dynamics(agent.model, path, opset=opset, source=source,
                                    validate=validate)
    if getattr(agent, "reward_fn", None) is not None:
        raise ConfigError(f"agent '{name}': plans with a Python reward function "
                          "(set_reward_function), which cannot be exported; the policy graph "
                          "plans with the learned reward head (model.learn_reward)")
    return export_pets_policy(agent, path, opset=opset, overrides=overrides, source=source,
                              validate=validate)


def policy_graph(agent, overrides: dict[str, str] | None = None) -> PETSPolicyGraph:
    """The reference :class:`PETSPolicyGraph` of a PETS agent (with export-time overrides)."""
    from worldflux.core.config import apply_overrides

    config = agent.config
    for key, value in (overrides or {}).items():
        if not any(key == k or (k.endswith(".") and key.startswith(k))
                   for k in EXPORT_OVERRIDE_KEYS):
            raise ConfigError(f"--set {key}: cannot be changed at export time; expected "
                              "planner.<field>, risk.<field>, num_particles, propagation or "
                              "discount")
        try:
            config = apply_overrides(config, {key: value})
        except ConfigError as exc:
            raise ConfigError(f"--set {key}: {exc}") from None
    config.validate()
    spec = agent.action_spec
    graph = PETSPolicyGraph(agent.model, config.planner, num_particles=config.num_particles,
                            propagation=config.propagation, discount=config.discount,
                            low=spec.low, high=spec.high, risk=config.risk)
    return graph.to(_device(agent.model))


def export_pets_policy(agent, path: str | os.PathLike, *, opset: int = DEFAULT_OPSET,
                       overrides: dict[str, str] | None = None,
                       source: dict[str, Any] | None = None, validate: bool = True,
                       seed: int = 0) -> ExportResult:
    """Export a PETS agent's MPC decision as one ONNX graph (:class:`PETSPolicyGraph`)."""
    require_onnx()
    graph = policy_graph(agent, overrides)
    layout = graph.layout
    device = _device(agent.model)
    feeds = _policy_feeds(graph, np.random.default_rng(seed))
    args = tuple(torch.as_tensor(feeds[n], device=device) for n in graph.input_names)
    spec = agent.action_spec
    planner = dataclasses.asdict(graph.planner)
    metadata = _metadata(
        "pets-policy", opset, graph.input_names, graph.output_names,
        {**{k: list(s) for k, (s, _) in layout.inputs().items()},
         **{k: list(s) for k, (s, _) in layout.outputs().items()}},
        obs_dim=layout.obs_dim, action_dim=layout.action_dim, action_low=float(spec.low),
        action_high=float(spec.high), family=getattr(agent.model, "family", "") or "pets",
        model=dataclasses.asdict(agent.model.config),
        planner=planner, risk=dataclasses.asdict(graph.risk),
        num_particles=layout.num_particles, propagation=layout.propagation,
        discount=graph.discount, layout=layout.to_dict(), compute_dtype="float32",
        agent_planning_dtype=str(agent.dtype).removeprefix("torch."), source=source or {})
    data = _export_bytes(graph, args, graph.input_names, graph.output_names, None, opset, metadata)
    diffs = _compare(data, graph, feeds, device) if validate else {}
    return _write(path, data, metadata, diffs)


def export_pets_dynamics(model, path: str | os.PathLike, *, opset: int = DEFAULT_OPSET,
                         source: dict[str, Any] | None = None, validate: bool = True,
                         seed: int = 0) -> ExportResult:
    """Export a :class:`~worldflux.models.pets.PETSModel` one-step ensemble prediction
    (:class:`PETSDynamicsGraph`) with a dynamic batch size ``N``."""
    require_onnx()
    graph = PETSDynamicsGraph(model)
    device = _device(model)
    rng = np.random.default_rng(seed)
    D, A, E = model.obs_dim, model.action_dim, model.config.ensemble_size
    stats_mean = model.input_norm.mean.detach().cpu().numpy()
    stats_std = model.input_norm.std.detach().cpu().numpy()
    rows = stats_mean + stats_std * rng.standard_normal((16, D + A))
    feeds = {"obs": rows[:, :D].astype(np.float32), "action": rows[:, D:].astype(np.float32)}
    args = tuple(torch.as_tensor(feeds[n], device=device) for n in ("obs", "action"))
    batch = torch.export.Dim("N", min=1)
    shapes: dict[str, list[Any]] = {"obs": ["N", D], "action": ["N", A],
                                    "next_obs_mean": [E, "N", D], "next_obs_logvar": [E, "N", D],
                                    "reward": [E, "N"]}
    metadata = _metadata(
        "pets-dynamics", opset, ["obs", "action"], graph.output_names, shapes, obs_dim=D,
        action_dim=A, ensemble_size=E, family=getattr(model, "family", "") or "pets",
        stochastic=bool(model.config.stochastic), model=dataclasses.asdict(model.config),
        source=source or {})
    data = _export_bytes(graph, args, ["obs", "action"], graph.output_names,
                         {"obs": {0: batch}, "action": {0: batch}}, opset, metadata)
    diffs = _compare(data, graph, feeds, device) if validate else {}
    if validate:  # the batch size is dynamic: check another one too
        other = {k: v[:3] for k, v in feeds.items()}
        for key, value in _compare(data, graph, other, device).items():
            diffs[key] = max(diffs[key], value)
    return _write(path, data, metadata, diffs)


# -- internals ----------------------------------------------------------------------------------
def _device(model: torch.nn.Module) -> torch.device:
    return next(model.buffers()).device


def _metadata(kind: str, opset: int, inputs: list[str], outputs: list[str],
              shapes: dict[str, list[Any]], **extra: Any) -> dict[str, Any]:
    from worldflux import __version__

    def entry(name: str) -> dict[str, Any]:
        return {"name": name, "shape": shapes[name], "dtype": "float32",
                "description": _DESCRIPTIONS.get(name, "")}

    metadata = {"format": "worldflux-onnx", "format_version": FORMAT_VERSION, "kind": kind,
                "worldflux_version": __version__, "torch_version": torch.__version__,
                "opset": int(opset), "inputs": [entry(n) for n in inputs],
                "outputs": [entry(n) for n in outputs], **extra}
    return json.loads(json.dumps(metadata))  # JSON types (tuples -> lists), as read back


def _policy_feeds(graph: PETSPolicyGraph, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random but plausible inputs: an observation from the model's input statistics."""
    lay, model = graph.layout, graph.model
    D = lay.obs_dim
    mean = model.input_norm.mean[:D].detach().cpu().numpy()
    std = model.input_norm.std[:D].detach().cpu().numpy()
    centre = graph.centre().detach().cpu().numpy()
    feeds = {"obs": (mean + std * rng.standard_normal(D)).astype(np.float32),
             "init_mean": centre.astype(np.float32),
             **sample_policy_noise(lay.to_dict(), rng)}
    if lay.planner == "icem":
        low, high = float(graph.low[0]), float(graph.high[0])
        elites = centre + 0.5 * rng.standard_normal((lay.keep, lay.horizon, lay.action_dim))
        feeds["prev_elites"] = np.clip(elites, low, high).astype(np.float32)
        feeds["prev_elites_valid"] = np.asarray(1.0, np.float32)
    return feeds


def _export_bytes(module: torch.nn.Module, args: tuple[torch.Tensor, ...], input_names: list[str],
                  output_names: list[str], dynamic_shapes: Any, opset: int,
                  metadata: dict[str, Any]) -> bytes:
    """torch.onnx (dynamo) export to bytes, with the metadata embedded and onnx.checker run."""
    onnx = require_onnx()
    if int(opset) < 18:
        raise ConfigError(f"opset: got {opset}, expected >= 18 (the torch.onnx exporter's floor)")
    was_training = module.training
    module.eval()
    quiet = io.StringIO()
    exporter_logger = logging.getLogger("torch.onnx")
    level = exporter_logger.level
    try:
        exporter_logger.setLevel(logging.ERROR)
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(quiet):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, args, input_names=input_names,
                                        output_names=output_names, dynamic_shapes=dynamic_shapes,
                                        opset_version=int(opset), dynamo=True, verbose=False,
                                        optimize=True)
    except Exception as exc:  # torch.onnx raises many types; report one clear line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WorldFluxError(f"torch.onnx.export of {type(module).__name__} failed: "
                             f"{type(exc).__name__}: {first}") from exc
    finally:
        exporter_logger.setLevel(level)
        module.train(was_training)
    proto = program.model_proto
    _strip_debug_info(proto)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata, sort_keys=True)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise WorldFluxError(f"exported {type(module).__name__}: onnx.checker rejects the "
                             f"graph ({str(exc).splitlines()[0]})") from None
    return proto.SerializeToString()


def _strip_debug_info(proto) -> None:
    """Drop the exporter's per-node debug metadata (stack traces with local paths, FX nodes):
    it is about half of the file and nothing at run time reads it."""
    graphs = [proto.graph]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
            for attr in node.attribute:
                if attr.HasField("g"):
                    graphs.append(attr.g)
                graphs.extend(attr.graphs)
    for function in proto.functions:
        for node in function.node:
            del node.metadata_props[:]
            node.doc_string = ""


def _compare(data: bytes, module: torch.nn.Module, feeds: dict[str, np.ndarray],
             device: torch.device) -> dict[str, float]:
    """Max |onnxruntime - PyTorch| per output on ``feeds``."""
    ort = require_onnxruntime()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    got = session.run(outputs, {n: feeds[n] for n in names})
    with torch.no_grad():
        want = module(*(torch.as_tensor(feeds[n], device=device) for n in names))
    diffs: dict[str, float] = {}
    for name, a, b in zip(outputs, got, want, strict=True):
        b = b.detach().float().cpu().numpy()
        if a.shape != b.shape:
            raise WorldFluxError(f"exported output {name}: onnxruntime gives shape {a.shape}, "
                                 f"PyTorch {b.shape}")
        diffs[name] = float(np.max(np.abs(a - b))) if a.size else 0.0
    return diffs


def _write(path: str | os.PathLike, data: bytes, metadata: dict[str, Any],
           diffs: dict[str, float]) -> ExportResult:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--onnx {path}: is a directory, expected a file name such as "
                          f"{path / 'policy.onnx'}")
    atomic_write_bytes(path, data)
    ort = require_onnxruntime()
    sidecar_data = {**metadata, "file": path.name, "sha256": sha256_file(path),
                    "validation": {"max_abs_diff": diffs, "onnxruntime_version": ort.__version__}}
    sidecar = Path(str(path) + ".json")
    atomic_write_text(sidecar, json.dumps(sidecar_data, indent=2, sort_keys=True))
    return ExportResult(path, sidecar, sidecar_data, diffs)
