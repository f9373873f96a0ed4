"""Time mbrl-lib's PETS planner at given settings (runs in a separate venv with `mbrl` installed).

Prints one JSON line: {"ms_per_decision": [...], "settings": {...}}. Not imported by worldflux.
"""

import json
import sys
import time

import gymnasium as gym
import mbrl.env.termination_fns as termination_fns
import mbrl.models as models
import mbrl.planning as planning
import numpy as np
import omegaconf
import torch


def main() -> None:
    population, iterations, horizon, particles, decisions = (int(a) for a in sys.argv[1:6])
    optimizer = sys.argv[6] if len(sys.argv) > 6 else "cem"
    torch.manual_seed(0)
    env = gym.make("Pendulum-v1", disable_env_checker=True)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    member = models.GaussianMLP(obs_dim + act_dim, obs_dim + 1, "cpu", num_layers=3,
                                ensemble_size=5, hid_size=200, deterministic=False,
                                propagation_method="fixed_model",
                                activation_fn_cfg={"_target_": "torch.nn.SiLU"})
    dynamics = models.OneDTransitionRewardModel(member, target_is_delta=True, normalize=True,
                                                learned_rewards=True)
    generator = torch.Generator().manual_seed(0)
    model_env = models.ModelEnv(env, dynamics, termination_fns.no_termination, None, generator)
    if optimizer == "icem":
        optimizer_cfg = {"_target_": "mbrl.planning.ICEMOptimizer", "num_iterations": iterations,
                         "elite_ratio": 0.1, "population_size": population,
                         "population_decay_factor": 1.25, "colored_noise_exponent": 2.0,
                         "keep_elite_frac": 0.3, "alpha": 0.1, "device": "cpu",
                         "lower_bound": "???", "upper_bound": "???", "return_mean_elites": True}
    else:
        optimizer_cfg = {"_target_": "mbrl.planning.CEMOptimizer", "num_iterations": iterations,
                         "elite_ratio": 0.1, "population_size": population, "alpha": 0.1,
                         "device": "cpu", "lower_bound": "???", "upper_bound": "???",
                         "return_mean_elites": True, "clipped_normal": False}
    low = np.tile(env.action_space.low, (horizon, 1)).tolist()
    high = np.tile(env.action_space.high, (horizon, 1)).tolist()
    optimizer_cfg["lower_bound"], optimizer_cfg["upper_bound"] = low, high
    agent_cfg = omegaconf.OmegaConf.create({
        "_target_": "mbrl.planning.TrajectoryOptimizerAgent", "_recursive_": False,
        "planning_horizon": horizon, "replan_freq": 1, "verbose": False,
        "action_lb": env.action_space.low.tolist(),
        "action_ub": env.action_space.high.tolist(), "optimizer_cfg": optimizer_cfg})
    agent = planning.create_trajectory_optim_agent_for_model(model_env, agent_cfg,
                                                             num_particles=particles)
    obs, _ = env.reset(seed=0)
    times = []
    for _ in range(decisions + 1):
        start = time.perf_counter()
        action = agent.act(obs)
        times.append((time.perf_counter() - start) * 1000)
        obs, *_ = env.step(np.asarray(action, dtype=np.float32))
    print(json.dumps({"ms_per_decision": times[1:], "torch": torch.__version__,
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
