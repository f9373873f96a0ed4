"""TwisteRL PPO (or AlphaZero) on the 3x3 sliding puzzle; run by the peer venv's python.

Prints one JSON line: the wall time until the greedy policy solves >= TARGET of fresh depth-32
scrambles, the curve, and the collection throughput. The config is TwisteRL's puzzle example
(``examples/ppo_puzzle8_v1.json`` as its quick-start guide prints it: 512-wide embedding + one
256 layer, 1024 episodes per collection, gamma = lambda = 0.995 (its defaults), 10 epochs,
clip 0.1, vf 0.8, entropy 0.01, normalised advantages, Adam 1.5e-4, curriculum +1 depth
whenever the greedy success over 100 episodes is >= 0.85, up to depth 32) with
``num_cores`` set to this machine's cores and only the greedy evaluation kept in the loop (its
other evaluations would only slow it down).

Usage: python twisterl_puzzle.py SEED TARGET TIME_LIMIT_S EVAL_EPISODES [ppo|az]
"""

import json
import os
import sys
import time

import torch
from twisterl.utils import prepare_algorithm

DEPTH = 32


def config(algo: str, cores: int) -> dict:
    common = {
        "env_cls": "twisterl.envs.Puzzle",
        "env": {"difficulty": 1, "height": 3, "width": 3, "depth_slope": 2, "max_depth": 256},
        "policy_cls": "twisterl.nn.BasicPolicy",
        "policy": {"embedding_size": 512, "common_layers": [256], "policy_layers": [],
                   "value_layers": []},
    }
    learning = {"diff_threshold": 0.85, "diff_max": DEPTH, "diff_metric": "ppo_deterministic"}
    evals = {"ppo_deterministic": {"num_episodes": 100, "deterministic": True, "num_searches": 1,
                                   "num_cores": cores}}
    if algo == "ppo":
        algorithm = {
            "collecting": {"num_cores": cores, "num_episodes": 1024, "lambda": 0.995,
                           "gamma": 0.995},
            "training": {"num_epochs": 10, "vf_coef": 0.8, "ent_coef": 0.01, "clip_ratio": 0.1,
                         "normalize_advantage": True},
            "optimizer": {"lr": 0.00015},
        }
        cls = "twisterl.rl.PPO"
    else:
        algorithm = {
            "collecting": {"num_cores": cores, "num_episodes": 256, "num_mcts_searches": 100,
                           "C": 1.41, "max_expand_depth": 1, "seed": 123},
            "training": {"num_epochs": 10},
            "optimizer": {"lr": 0.0003},
        }
        cls = "twisterl.rl.AZ"
    algorithm.update({"learning": learning, "evals": evals, "device": "cpu",
                      "logging": {"log_freq": 0, "checkpoint_freq": 0}})
    return {**common, "algorithm_cls": cls, "algorithm": algorithm}


def main() -> None:
    seed, target, limit, episodes = (int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]),
                                     int(sys.argv[4]))
    algo = sys.argv[5] if len(sys.argv) > 5 else "ppo"
    torch.manual_seed(seed)
    if os.environ.get("TWISTERL_THREADS"):  # the same torch thread count as the worldflux run
        torch.set_num_threads(int(os.environ["TWISTERL_THREADS"]))
    cores = os.cpu_count() or 1
    start = time.perf_counter()
    algorithm = prepare_algorithm(config(algo, cores))
    cfg = algorithm.config
    curve, collect_time, update_time, solved_at = [], 0.0, 0.0, None
    iteration = 0
    while time.perf_counter() - start < limit:
        (times, bench, _), _ = algorithm.learn_step()
        collect_time += times["collect"]
        update_time += times["train"] + times["data_to_torch"]
        iteration += 1
        if bench["success"] >= cfg["learning"]["diff_threshold"] and \
                algorithm.env.difficulty < cfg["learning"]["diff_max"]:
            algorithm.env.difficulty += 1
        difficulty = algorithm.env.difficulty
        if difficulty >= DEPTH - 4 or iteration % 10 == 0:
            algorithm.sync_rs_policy()
            algorithm.env.difficulty = DEPTH
            (success, _), _ = algorithm.evaluate({"num_episodes": episodes, "deterministic": True,
                                                  "num_searches": 1, "num_mcts_searches": 0,
                                                  "seed": seed, "C": 1.41,
                                                  "max_expand_depth": 1, "num_cores": cores})
            algorithm.env.difficulty = difficulty
            elapsed = time.perf_counter() - start
            curve.append({"elapsed_s": round(elapsed, 2), "iteration": iteration,
                          "curriculum_depth": difficulty, "solve_rate": success})
            if success >= target:
                solved_at = elapsed
                break
    # Collection throughput: count the steps of one more collection with the final policy,
    # at depth 32 (the worldflux figure is taken at depth 32 too).
    algorithm.sync_rs_policy()
    algorithm.env.difficulty = DEPTH
    data, seconds = algorithm.collect()
    steps = len(data.obs)
    print(json.dumps({"seed": seed, "solved_at_s": solved_at,
                      "wall_time_s": round(time.perf_counter() - start, 2),
                      "iterations": iteration, "curve": curve,
                      "collect_steps": steps, "collect_s": round(seconds, 3),
                      "collect_steps_per_s": round(steps / seconds),
                      "collect_time_share": round(collect_time / (time.perf_counter() - start), 3),
                      "update_time_share": round(update_time / (time.perf_counter() - start), 3),
                      "cores": cores}))


if __name__ == "__main__":
    main()
