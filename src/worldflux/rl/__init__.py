"""Fast RL core: batched envs, PPO and AlphaZero, policies exported for deployment."""

from worldflux.rl.env import NATIVE_ENVS, BatchedEnv, GymnasiumAdapter, make_batched_env
from worldflux.rl.policy import (
    POLICIES,
    Conv1dPolicy,
    Conv2dPolicy,
    MLPPolicy,
    Policy,
    PolicyConfig,
    build_policy,
)
from worldflux.rl.ppo import PPO, PPOConfig

__all__ = [
    "NATIVE_ENVS", "POLICIES", "PPO", "BatchedEnv", "Conv1dPolicy", "Conv2dPolicy",
    "GymnasiumAdapter", "MLPPolicy", "PPOConfig", "Policy", "PolicyConfig", "build_policy",
    "make_batched_env",
]
