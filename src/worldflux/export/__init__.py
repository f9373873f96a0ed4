"""ONNX export of trained worldflux agents, and runners for the exported files.

Command line: ``worldflux export RUN_DIR --onnx FILE [--what policy|dynamics]``.

Python::

    from worldflux.export import export_run, OnnxMPCPolicy, OnnxDynamics

    export_run("runs/pets-pendulum", "policy.onnx")                   # + policy.onnx.json
    policy = OnnxMPCPolicy("policy.onnx", seed=0)   # numpy + onnxruntime, no torch involved
    policy.reset(); action = policy.act(obs)        # obs [D] -> action [A]

    export_run("runs/pets-pendulum", "model.onnx", what="dynamics")
    OnnxDynamics("model.onnx").predict(obs, action)  # [N, D], [N, A] -> {"next_obs_mean": ...}

What can be exported (PETS and MPC agents over its one-step families, stochastic or
deterministic members):

* ``policy``: the whole MPC decision (CEM, MPPI or iCEM, with the run's planner settings,
  TS-inf / TS-1 / expectation propagation and risk measure) as one graph with every random
  draw as an input; see
  :mod:`worldflux.export.pets` for the inputs and outputs, and :class:`PETSPolicyGraph` for the
  PyTorch function it computes.
* ``dynamics``: the ensemble one-step model with its normalisation,
  ``(obs [N, D], action [N, A]) -> next_obs_mean [E, N, D], next_obs_logvar [E, N, D]``
  (stochastic members only) ``, reward [E, N]`` (learned reward only).

Not exportable: the random-shooting planner (export with ``--set planner.name=cem``) and
policies that plan with a Python reward function instead of the learned reward head.

Public API: :func:`export_run`, :func:`export_agent`, :func:`export_pets_policy`,
:func:`export_pets_dynamics`, :func:`policy_graph`, :class:`ExportResult`,
:class:`PETSPolicyGraph`, :class:`PETSDynamicsGraph`, :class:`OnnxMPCPolicy`,
:class:`OnnxDynamics`, :func:`sample_policy_noise`, :func:`read_metadata`. The ``onnx``,
``onnxscript`` and ``onnxruntime`` packages (``pip install worldflux[onnx]``) are imported only
when an export or a runner is used.
"""

from worldflux.export.exporter import (
    DEFAULT_OPSET,
    ExportResult,
    export_agent,
    export_pets_dynamics,
    export_pets_policy,
    export_run,
    policy_graph,
)
from worldflux.export.pets import PETSDynamicsGraph, PETSPolicyGraph, PolicyLayout, policy_layout
from worldflux.export.runtime import (
    OnnxDynamics,
    OnnxMPCPolicy,
    read_metadata,
    sample_policy_noise,
)

__all__ = [
    "DEFAULT_OPSET", "ExportResult", "OnnxDynamics", "OnnxMPCPolicy", "PETSDynamicsGraph",
    "PETSPolicyGraph", "PolicyLayout", "export_agent", "export_pets_dynamics",
    "export_pets_policy", "export_run", "policy_graph", "policy_layout", "read_metadata",
    "sample_policy_noise",
]
