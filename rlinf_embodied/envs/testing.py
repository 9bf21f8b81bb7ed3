"""Tiny deterministic envs for tests of the shared vector-env machinery (no simulator).

`ToyReachEnv`: a point in [-1, 1]^act_dim moves by `0.1 * action` per step; it succeeds (and
terminates) when it comes within `goal_radius` of a seeded goal. The reward is the negative
distance. With `image_size`, it also renders a uint8 "rgb" frame whose colour encodes the state,
so video tests need no renderer. It offers `step_without_obs` / `observe` like the ManiSkill env, and
counts the observations it builds in `observations_built`. `crash_at_step` / `hang_at_step` make it fail on purpose;
`build_seconds` makes its construction slow, `fail_to_build_in_subprocess` makes it fail in a vector env's worker.
`BatchedToyReach`: N of them behind ManiSkill's batched API, for `BatchedVectorEnv`.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from typing import Any, Optional

import gymnasium as gym
import numpy as np
import torch


class ToyReachEnv:
    """See the module docstring. Observation "state" = (position, goal), float32 (2 * act_dim,)."""

    def __init__(
        self,
        act_dim: int = 2,
        image_size: Optional[int] = None,
        goal_radius: float = 0.1,
        crash_at_step: Optional[int] = None,
        hang_at_step: Optional[int] = None,
        fail_reset_after_step: Optional[int] = None,
        instruction: str = "move the point to the goal",
        build_seconds: float = 0.0,
        fail_to_build_in_subprocess: bool = False,
    ):
        time.sleep(build_seconds)  # a simulator's construction time
        if fail_to_build_in_subprocess and multiprocessing.parent_process() is not None:
            raise RuntimeError("ToyReachEnv failed to build (fail_to_build_in_subprocess=True)")
        self.act_dim, self.goal_radius, self.image_size = act_dim, goal_radius, image_size
        self.crash_at_step, self.hang_at_step = crash_at_step, hang_at_step
        self.fail_reset_after_step = fail_reset_after_step  # a simulator's own error in reset (not the caller's)
        self.instruction = instruction
        spaces: dict[str, gym.spaces.Space] = {"state": gym.spaces.Box(-np.inf, np.inf, (2 * act_dim,), np.float32)}
        if image_size:
            spaces["rgb"] = gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (act_dim,), np.float32)
        self.rng = np.random.default_rng()
        self.position = np.zeros(act_dim, np.float32)
        self.goal = np.zeros(act_dim, np.float32)
        self.total_steps = 0
        self.observations_built = 0

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None) -> tuple[dict, dict]:
        from .registration import reject_unknown_reset_options

        reject_unknown_reset_options("ToyReachEnv", options, ())  # as the simulators' envs do
        if self.fail_reset_after_step is not None and self.total_steps >= self.fail_reset_after_step:
            raise RuntimeError(f"ToyReachEnv failed to reset after {self.total_steps} steps (fail_reset_after_step)")
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.position = self.rng.uniform(-1, 1, self.act_dim).astype(np.float32)
        self.goal = self.rng.uniform(-1, 1, self.act_dim).astype(np.float32)
        return self._obs(), {"success": False}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict[str, Any]]:
        reward, terminated, truncated, info = self.step_without_obs(action)
        return self._obs(), reward, terminated, truncated, info

    def step_without_obs(self, action: np.ndarray) -> tuple[float, bool, bool, dict[str, Any]]:
        self.total_steps += 1
        if self.crash_at_step is not None and self.total_steps >= self.crash_at_step:
            os._exit(3)
        if self.hang_at_step is not None and self.total_steps >= self.hang_at_step:
            time.sleep(3600)
        action = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
        self.position = np.clip(self.position + 0.1 * action, -1.0, 1.0).astype(np.float32)
        distance = float(np.linalg.norm(self.position - self.goal))
        success = distance < self.goal_radius
        return -distance, success, False, {"success": success}

    def observe(self) -> dict[str, np.ndarray]:
        return self._obs()

    def _obs(self) -> dict[str, np.ndarray]:
        self.observations_built += 1
        obs = {"state": np.concatenate([self.position, self.goal]).astype(np.float32)}
        if self.image_size:
            colour = ((self.position[:3] + 1.0) * 127.5).astype(np.uint8)
            obs["rgb"] = np.broadcast_to(
                colour[:3].reshape(1, 1, -1), (self.image_size, self.image_size, colour[:3].size)
            ).copy()
            if obs["rgb"].shape[-1] < 3:
                obs["rgb"] = np.concatenate(
                    [obs["rgb"], np.zeros((self.image_size, self.image_size, 3 - obs["rgb"].shape[-1]), np.uint8)], -1
                )
        return obs

    def close(self) -> None:
        pass


class ToyReachFactory:
    """A picklable factory: `ToyReachFactory(**kwargs)()` builds `ToyReachEnv(**kwargs)`."""

    def __init__(self, **kwargs: Any):
        self.kwargs = kwargs

    def __call__(self) -> ToyReachEnv:
        return ToyReachEnv(**self.kwargs)


class BatchedToyReach:
    """`num_envs` `ToyReachEnv`s behind ManiSkill's batched API (`batched.BatchedSim`), for tests of
    `BatchedVectorEnv` without a GPU simulator. Every env steps on every call, as in a batched sim;
    `reset(seed=[...], options={"env_idx": idx})` resets only `idx`. `num_resets[i]` counts env i's resets."""

    def __init__(self, num_envs: int, **env_kwargs: Any):
        self.num_envs, self.device = num_envs, torch.device("cpu")
        self.envs = [ToyReachEnv(**env_kwargs) for _ in range(num_envs)]
        self.single_action_space = self.envs[0].action_space
        self.num_resets = [0] * num_envs

    def _stack(self, observations: list[dict]) -> dict:
        return {key: torch.from_numpy(np.stack([obs[key] for obs in observations])) for key in observations[0]}

    def reset(self, seed: Any = None, options: Optional[dict] = None) -> tuple[dict, dict]:
        indices = [int(i) for i in (options or {}).get("env_idx", range(self.num_envs))]
        seeds = list(seed) if isinstance(seed, (list, tuple)) else [seed] * self.num_envs
        for index in indices:
            self.envs[index].reset(seed=seeds[index])
            self.num_resets[index] += 1
        return self._stack([env._obs() for env in self.envs]), {}

    def step(self, actions: Any) -> tuple[dict, Any, Any, Any, dict]:
        results = [env.step(np.asarray(action)) for env, action in zip(self.envs, actions.cpu().numpy())]
        success = torch.tensor([r[2] for r in results])
        return (
            self._stack([r[0] for r in results]),
            torch.tensor([r[1] for r in results], dtype=torch.float32),
            success.clone(),
            torch.zeros(self.num_envs, dtype=torch.bool),
            {"success": success},
        )

    def close(self) -> None:
        for env in self.envs:
            env.close()
