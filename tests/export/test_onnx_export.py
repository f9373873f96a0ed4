"""Exported ONNX files run in onnxruntime and give PyTorch's numbers; the runners work alone."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from worldflux.core.errors import CheckpointError, ConfigError
from worldflux.core.io import sha256_file
from worldflux.export import (
    OnnxDynamics,
    OnnxMPCPolicy,
    PETSDynamicsGraph,
    export_agent,
    policy_graph,
    read_metadata,
    sample_policy_noise,
)
from worldflux.training.config import TrainConfig
from worldflux.training.environment import make_env


@pytest.fixture(scope="module")
def policy_file(agent, tmp_path_factory):
    result = export_agent(agent, tmp_path_factory.mktemp("onnx") / "policy.onnx")
    assert result.max_diff < 1e-4, result.max_abs_diff
    return result


def _run(path, feeds):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    names = [i.name for i in session.get_inputs()]
    return dict(zip(outputs, session.run(outputs, {n: feeds[n] for n in names}), strict=True))


def test_dynamics_export_matches_the_model(agent, tmp_path):
    result = export_agent(agent, tmp_path / "model.onnx", what="dynamics")
    onnx.checker.check_model(str(result.path), full_check=True)
    assert result.max_diff < 1e-4
    model = agent.model
    rng = np.random.default_rng(3)
    for n in (1, 37):  # the batch size is dynamic
        obs = rng.normal(size=(n, 3)).astype(np.float32)
        action = rng.uniform(-1, 1, size=(n, 1)).astype(np.float32)
        got = OnnxDynamics(result.path).predict(obs, action)
        assert set(got) == {"next_obs_mean", "next_obs_logvar", "reward"}
        assert got["next_obs_mean"].shape == (3, n, 3) and got["reward"].shape == (3, n)
        with torch.no_grad():
            want = PETSDynamicsGraph(model)(torch.as_tensor(obs), torch.as_tensor(action))
            # Independently: the model's deterministic transition averages the members.
            state = model.transition(model.encode(torch.as_tensor(obs)), torch.as_tensor(action),
                                     deterministic=True)
        for name, value in zip(("next_obs_mean", "next_obs_logvar", "reward"), want, strict=True):
            np.testing.assert_allclose(got[name], value.numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(got["next_obs_mean"].mean(0), state["obs"].numpy(), atol=1e-4)
        np.testing.assert_allclose(got["reward"].mean(0), state["reward"].numpy(), atol=1e-4)
    # The ensemble learnt something: next cos(theta) close to the current one.
    assert np.abs(got["next_obs_mean"][:, :, 0] - obs[:, 0]).mean() < 0.5
    sidecar = json.loads(result.sidecar.read_text())
    assert sidecar["kind"] == "pets-dynamics" and sidecar["ensemble_size"] == 3
    assert [i["name"] for i in sidecar["inputs"]] == ["obs", "action"]
    assert sidecar["outputs"][0]["shape"] == [3, "N", 3]


def test_policy_export_matches_pytorch_given_the_same_noise(agent, policy_file):
    graph = policy_graph(agent)
    rng = np.random.default_rng(5)
    centre = graph.centre().numpy()
    feeds = {"init_mean": centre}
    for _ in range(3):
        feeds.update(obs=rng.normal(size=3).astype(np.float32),
                     **sample_policy_noise(graph.layout.to_dict(), rng))
        got = _run(policy_file.path, feeds)
        with torch.no_grad():
            want = graph(*(torch.as_tensor(feeds[n]) for n in graph.input_names))
        for name, value in zip(graph.output_names, want, strict=True):
            np.testing.assert_allclose(got[name], value.numpy(), atol=1e-4, rtol=0)
        assert got["action"].shape == (1,) and -1 <= float(got["action"][0]) <= 1
        np.testing.assert_allclose(got["next_mean"][-1], centre[-1])  # new last step: centre
        feeds["init_mean"] = got["next_mean"]


def test_policy_description_is_read_back(agent, policy_file):
    sidecar = json.loads(policy_file.sidecar.read_text())
    assert sidecar == policy_file.metadata
    assert sidecar["sha256"] == sha256_file(policy_file.path)
    assert sidecar["kind"] == "pets-policy" and sidecar["file"] == "policy.onnx"
    assert [i["name"] for i in sidecar["inputs"]] == ["obs", "init_mean", "sample_noise",
                                                      "particle_noise"]
    assert sidecar["inputs"][2]["shape"] == [2, 24, 5, 1]  # [I, P, H, A]
    assert sidecar["inputs"][3]["shape"] == [2, 5, 3, 32, 4]  # 24 * 4 particles / 3 members
    assert [o["name"] for o in sidecar["outputs"]] == ["action", "next_mean", "plan_value"]
    assert (sidecar["action_low"], sidecar["action_high"]) == (-1.0, 1.0)
    assert sidecar["planner"]["population"] == 24 and sidecar["num_particles"] == 4
    assert sidecar["propagation"] == "ts_inf" and sidecar["opset"] == 18
    import worldflux

    assert sidecar["worldflux_version"] == worldflux.__version__
    # No exporter debug info (stack traces naming local paths) is left in the nodes.
    proto = onnx.load(str(policy_file.path))
    assert proto.graph.node and not any(n.metadata_props for n in proto.graph.node)
    assert "pets.py" not in policy_file.path.read_bytes().decode("latin-1")
    # The same description is embedded in the file itself.
    embedded = read_metadata(policy_file.path, ort.InferenceSession(str(policy_file.path)))
    assert {k: v for k, v in sidecar.items() if k not in ("file", "sha256", "validation")} == embedded


def test_onnx_mpc_policy_controls_pendulum_from_the_file_alone(agent, policy_file, tmp_path):
    # Without the sidecar: the description is read from the file.
    alone = tmp_path / "alone.onnx"
    alone.write_bytes(policy_file.path.read_bytes())
    policy, twin = OnnxMPCPolicy(alone, seed=3), OnnxMPCPolicy(policy_file.path, seed=3)
    env = make_env(TrainConfig(env="Pendulum-v1"), seed=0)
    obs, _ = env.reset(seed=0)
    graph = policy_graph(agent)
    rng = np.random.default_rng(3)  # the policy's own draws, replayed
    mean = graph.centre().numpy()
    for _ in range(4):
        feeds = {"obs": obs.astype(np.float32), "init_mean": mean,
                 **sample_policy_noise(graph.layout.to_dict(), rng)}
        with torch.no_grad():
            want_action, mean, _ = (t.numpy() for t in
                                    graph(*(torch.as_tensor(feeds[n]) for n in graph.input_names)))
        action = policy.act(obs)
        np.testing.assert_allclose(action, want_action, atol=1e-4, rtol=0)
        np.testing.assert_allclose(policy.mean, mean, atol=1e-4, rtol=0)  # warm start carried
        np.testing.assert_array_equal(twin.act(obs), action)
        assert action.dtype == np.float32 and np.isfinite(policy.last_value)
        obs, reward, *_ = env.step(action)
        assert np.isfinite(reward)
    env.close()
    policy.reset()
    np.testing.assert_array_equal(policy.mean, graph.centre().numpy())
    with pytest.raises(ConfigError, match=r"obs: got shape \(2,\), expected \(3,\)"):
        policy.act(np.zeros(2))
    with pytest.raises(ConfigError, match="expected 'pets-dynamics'"):
        OnnxDynamics(policy_file.path)


def test_icem_policy_exports_and_carries_its_elites(agent, tmp_path):
    result = export_agent(agent, tmp_path / "icem.onnx",
                          overrides={"planner.name": "icem", "planner.horizon": "3"})
    assert result.max_diff < 1e-4, result.max_abs_diff
    names = [i["name"] for i in result.metadata["inputs"]]
    assert names == ["obs", "init_mean", "sample_noise", "particle_noise", "prev_elites",
                     "prev_elites_valid", "tail_noise"]
    assert result.metadata["layout"]["populations"] == [24, 19]  # decay 1.25
    policy = OnnxMPCPolicy(result.path, seed=0)
    graph = policy_graph(agent, {"planner.name": "icem", "planner.horizon": "3"})
    rng = np.random.default_rng(0)
    obs = np.array([1.0, 0.0, 0.0], np.float32)
    assert not policy.elites_valid
    for valid in (0.0, 1.0):
        feeds = {"obs": obs, "init_mean": policy.mean, "prev_elites": policy.elites,
                 "prev_elites_valid": np.asarray(valid, np.float32),
                 **sample_policy_noise(graph.layout.to_dict(), rng)}
        with torch.no_grad():
            want = graph(*(torch.as_tensor(feeds[n]) for n in graph.input_names))
        action = policy.act(obs)
        np.testing.assert_allclose(action, want[0].numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(policy.elites, want[3].numpy(), atol=1e-4, rtol=0)
        assert policy.elites_valid and policy.elites.shape == (2, 3, 1)  # round(0.3 * 5)


def test_export_refuses_untrained_and_unsupported_agents(agent, tmp_path):
    from worldflux.agents import build_agent

    untrained = build_agent("pets", agent.obs_spec, agent.action_spec, device=torch.device("cpu"))
    with pytest.raises(CheckpointError, match="never trained"):
        export_agent(untrained, tmp_path / "x.onnx")
    random_agent = build_agent("random", agent.obs_spec, agent.action_spec,
                               device=torch.device("cpu"))
    with pytest.raises(ConfigError, match="agent 'random': ONNX export is not supported"):
        export_agent(random_agent, tmp_path / "x.onnx")
    with pytest.raises(ConfigError, match="what: got 'encoder'"):
        export_agent(agent, tmp_path / "x.onnx", what="encoder")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="opset: got 13"):
        export_agent(agent, tmp_path / "x.onnx", opset=13)
    with_reward_fn = build_agent("pets", agent.obs_spec, agent.action_spec,
                                 device=torch.device("cpu"))
    with_reward_fn.trained = True
    with_reward_fn.set_reward_function(lambda obs, action, next_obs: -next_obs[:, 2] ** 2)
    with pytest.raises(ConfigError, match="Python reward function"):
        export_agent(with_reward_fn, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_missing_onnx_extra_names_the_install_command(agent, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript -> ImportError
    with pytest.raises(ImportError, match=r"pip install worldflux\[onnx\]"):
        export_agent(agent, tmp_path / "x.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"pip install worldflux\[onnx\]"):
        OnnxMPCPolicy(tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_deterministic_members_export_without_noise_or_variance(make_agent, tmp_path):
    agent = make_agent({"model.stochastic": "false", "planner.horizon": "2",
                        "planner.iterations": "1"}, fit=False)
    dynamics = export_agent(agent, tmp_path / "det_model.onnx", what="dynamics")
    assert dynamics.max_diff < 1e-4
    assert dynamics.metadata["stochastic"] is False
    got = OnnxDynamics(dynamics.path).predict(np.ones((4, 3)), np.zeros((4, 1)))
    assert set(got) == {"next_obs_mean", "reward"}
    with torch.no_grad():
        state = agent.model.transition(agent.model.encode(torch.ones(4, 3)), torch.zeros(4, 1),
                                       deterministic=True)
    np.testing.assert_allclose(got["next_obs_mean"].mean(0), state["obs"].numpy(), atol=1e-4)

    policy = export_agent(agent, tmp_path / "det_policy.onnx")
    assert policy.max_diff < 1e-4
    assert [i["name"] for i in policy.metadata["inputs"]] == ["obs", "init_mean", "sample_noise"]
    runner = OnnxMPCPolicy(policy.path, seed=0)
    assert runner.act(np.ones(3, np.float32)).shape == (1,)
