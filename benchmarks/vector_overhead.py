"""The fixed cost of one `step` call of each vector env, measured on a simulator-free toy env.

ToyReach's own step costs a few microseconds, so what is left is the vector env's machinery: pipes,
pickling, shared memory and the episode bookkeeping. Columns:
- gymnasium AsyncVectorEnv (one process per env, shared memory): the reference.
- our SubprocVectorEnv (one process per env).
- our BatchedVectorEnv over BatchedToyReach (all envs in this process: what physx_cuda uses, here on CPU).
- the episode bookkeeping alone: SubprocVectorEnv's numpy version vs the torch `EpisodeStats` the
  batched envs use (on CPU), per step call.

    python benchmarks/vector_overhead.py --num-envs 1 4 16 --steps 2000
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable

import gymnasium as gym
import numpy as np
import torch

from rlinf_embodied.envs.batched import BatchedVectorEnv
from rlinf_embodied.envs.batching import EpisodeStats
from rlinf_embodied.envs.testing import BatchedToyReach, ToyReachEnv, ToyReachFactory
from rlinf_embodied.envs.vector import SubprocVectorEnv

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_args import positive_int  # noqa: E402

ACT_DIM = 4


class GymToyReach(gym.Env):
    """ToyReachEnv as a `gymnasium.Env`, for AsyncVectorEnv."""

    def __init__(self) -> None:
        self.toy = ToyReachEnv(act_dim=ACT_DIM, goal_radius=0.0)
        self.observation_space, self.action_space = self.toy.observation_space, self.toy.action_space

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.toy.reset(seed=seed)

    def step(self, action):
        return self.toy.step(action)


def microseconds_per_call(function: Callable[[], object], calls: int) -> float:
    for _ in range(min(100, calls)):  # warm-up
        function()
    start = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - start) / calls * 1e6


def time_vector_env(env: gym.vector.VectorEnv, steps: int) -> float:
    actions = np.zeros((env.num_envs, ACT_DIM), np.float32)
    env.reset(seed=0)
    try:
        return microseconds_per_call(lambda: env.step(actions), steps)
    finally:
        env.close()


def time_bookkeeping(num_envs: int, calls: int) -> tuple[float, float]:
    """(numpy, torch) microseconds of one step's episode bookkeeping, no env ending."""
    rewards, success = np.zeros((num_envs, 1), np.float32), np.zeros((num_envs, 1), bool)
    ended, applied = np.zeros(num_envs, bool), np.ones(num_envs, np.int64)
    subproc = SubprocVectorEnv([ToyReachFactory(act_dim=ACT_DIM)] * num_envs, num_workers=1)
    instructions = [""] * num_envs
    try:
        numpy_us = microseconds_per_call(
            lambda: subproc._episode_info(rewards, success, ended, applied, ended, ended, instructions), calls
        )
    finally:
        subproc.close()
    stats = EpisodeStats(num_envs)
    torch_us = microseconds_per_call(
        lambda: stats.update(
            torch.from_numpy(rewards), torch.from_numpy(success), torch.from_numpy(ended), torch.from_numpy(applied)
        ),
        calls,
    )
    return numpy_us, torch_us


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-envs", type=positive_int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--steps", type=positive_int, default=2000)
    args = parser.parse_args(argv)
    header = (
        f"{'envs':>5} {'AsyncVectorEnv us':>18} {'Subproc us':>11} {'vs Async':>9} {'Batched us':>11} "
        f"{'bookkeeping numpy us':>21} {'torch us':>9}"
    )
    print(header, flush=True)
    for num_envs in args.num_envs:
        async_us = time_vector_env(
            gym.vector.AsyncVectorEnv(
                [GymToyReach] * num_envs, context="forkserver", autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
            ),
            args.steps,
        )
        subproc_us = time_vector_env(
            SubprocVectorEnv(
                [ToyReachFactory(act_dim=ACT_DIM, goal_radius=0.0)] * num_envs,
                num_workers=num_envs,
                max_episode_steps=50,
            ),
            args.steps,
        )
        batched_us = time_vector_env(
            BatchedVectorEnv(
                BatchedToyReach(num_envs, act_dim=ACT_DIM, goal_radius=0.0), lambda raw: raw, max_episode_steps=50
            ),
            args.steps,
        )
        numpy_us, torch_us = time_bookkeeping(num_envs, args.steps)
        print(
            f"{num_envs:>5} {async_us:>18.0f} {subproc_us:>11.0f} {subproc_us / async_us:>8.2f}x "
            f"{batched_us:>11.0f} {numpy_us:>21.1f} {torch_us:>9.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
