"""What a policy is built for, read off a vector env's spaces."""

from __future__ import annotations

from typing import Any


def env_spec(env: Any) -> dict[str, Any]:
    """action_dim and state_dim (0 without a "state" observation) size the policy; obs_keys are the
    observations the env produces (e.g. ["rgb", "state"]), checked against the cameras the policy reads;
    max_episode_steps is the vector env's time limit (None: only the task's own end), checked against the
    env steps one rollout covers."""
    spaces = getattr(env.single_observation_space, "spaces", {})
    state_space = spaces.get("state")
    return {
        "action_dim": int(env.single_action_space.shape[-1]),
        "state_dim": int(state_space.shape[-1]) if state_space is not None else 0,
        "obs_keys": sorted(spaces),
        "max_episode_steps": getattr(env, "max_episode_steps", None),
    }
