"""Agents: the acting-and-learning side (MPC over world models, later actor-critic and RL)."""

from worldflux.agents.base import Agent, AgentRegistry, agent_config_class, build_agent

__all__ = ["Agent", "AgentRegistry", "agent_config_class", "build_agent"]
