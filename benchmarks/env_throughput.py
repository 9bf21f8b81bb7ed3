"""Env-steps/s of rlinf's ManiSkill vector env vs the raw backend in the same number of processes.

Raw backend: gymnasium's AsyncVectorEnv of ManiSkill CPUGymWrapper envs, one process per env, so
ours runs with num_workers = num_envs too ("rlinf"). Where the machine has fewer cores than envs, ours
also runs with its default num_workers = min(num_envs, cores) ("rlinf default"): several envs per
process, what `gym.make_vec` gives without the option.

All envs of a row are built first and stay open; then timing blocks of `--steps` steps alternate between
them for `--rounds` rounds, and each column reports its median block. Load from other tenants of a
shared host drifts over minutes; alternating short blocks exposes every env to the same drift, where
timing one env after another (as this script did before) let a 2x drift decide the ratio.

    python benchmarks/env_throughput.py --num-envs 1 4 16 --steps 100 --rounds 7 --obs-mode state
    python benchmarks/env_throughput.py --num-envs 16 --control-mode pd_ee_delta_pos   # IK in every step
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from typing import Callable

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_args import positive_int  # noqa: E402


def raw_env_fn(task_id: str, obs_mode: str, control_mode: str) -> Callable[[], gym.Env]:
    def thunk() -> gym.Env:
        torch.set_num_threads(1)
        from rlinf_embodied.envs.maniskill.headless import enable_headless

        enable_headless()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import mani_skill.envs  # noqa: F401
        from mani_skill.utils.wrappers.gymnasium import CPUGymWrapper

        env = gym.make(
            task_id,
            obs_mode=obs_mode,
            sim_backend="physx_cpu",
            num_envs=1,
            render_backend="none" if obs_mode == "state" else "gpu",
            reward_mode="normalized_dense",
            control_mode=control_mode,
        )
        return CPUGymWrapper(env, record_metrics=True)

    return thunk


def time_block(env: gym.vector.VectorEnv, steps: int, action: np.ndarray) -> float:
    """Env-steps/s over `steps` more steps of an env that is already reset (episodes auto-reset)."""
    start = time.perf_counter()
    for _ in range(steps):
        env.step(action)
    return env.num_envs * steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="PickCube")
    parser.add_argument("--control-mode", default="pd_joint_delta_pos")
    parser.add_argument("--num-envs", type=positive_int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--steps", type=positive_int, default=200)
    parser.add_argument("--obs-mode", nargs="+", default=["state"])
    parser.add_argument(
        "--rounds", type=positive_int, default=7, help="alternating timing blocks per env; median counts"
    )
    args = parser.parse_args(argv)
    import rlinf_embodied  # noqa: F401  (registers the ids)

    header = (
        f"{'obs':>6} {'envs':>5} {'raw steps/s':>12} {'rlinf steps/s':>14} {'overhead':>9} "
        f"{'rlinf default':>14} {'overhead':>9}"
    )
    print(f"{args.task}, control mode {args.control_mode}")
    print(header, flush=True)  # rows print as they finish, so a cut-off run still reports them
    rows = []
    for obs_mode in args.obs_mode:
        for num_envs in args.num_envs:
            envs = build_envs(args, obs_mode, num_envs)
            try:
                rates = time_alternating(envs, args.steps, args.rounds)
            finally:
                for env in envs.values():
                    env.close()
            rows.append((obs_mode, num_envs, rates["raw"], rates["rlinf"], rates.get("default", float("nan"))))
            print(format_row(*rows[-1]), flush=True)
    print("\n" + header)
    for row in rows:
        print(format_row(*row))


def build_envs(args: argparse.Namespace, obs_mode: str, num_envs: int) -> dict[str, gym.vector.VectorEnv]:
    """The row's envs: raw AsyncVectorEnv, ours with one process per env, and ours with its default
    workers where that differs (fewer cores than envs)."""
    from rlinf_embodied.envs.maniskill.env import task_spec

    envs = {
        "raw": gym.vector.AsyncVectorEnv(
            [raw_env_fn(task_spec(args.task).maniskill_id, obs_mode, args.control_mode)] * num_envs,
            context="forkserver",
            autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        )
    }
    worker_counts = {"rlinf": num_envs}
    default_workers = min(num_envs, os.cpu_count() or 1)
    if default_workers < num_envs:
        worker_counts["default"] = default_workers
    for name, workers in worker_counts.items():
        envs[name] = gym.make_vec(
            f"rlinf/ManiSkill-{args.task}",
            num_envs=num_envs,
            obs_mode=obs_mode,
            vectorization_mode="vector_entry_point",
            num_workers=workers,
            max_episode_steps=50,
            control_mode=args.control_mode,
        )
    return envs


def time_alternating(envs: dict[str, gym.vector.VectorEnv], steps: int, rounds: int) -> dict[str, float]:
    """Median env-steps/s per env over `rounds` blocks, the envs taking turns block by block."""
    actions = {}
    for name, env in envs.items():
        actions[name] = np.zeros((env.num_envs, env.single_action_space.shape[0]), np.float32)
        env.reset(seed=0)
        time_block(env, 5, actions[name])  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in envs}
    for _ in range(rounds):
        for name, env in envs.items():
            rates[name].append(time_block(env, steps, actions[name]))
    return {name: float(np.median(values)) for name, values in rates.items()}


def format_row(obs_mode: str, num_envs: int, raw_sps: float, ours_sps: float, default_sps: float) -> str:
    """Overhead = raw / ours - 1. The default-workers columns read "-" where the default is one process per env."""
    row = f"{obs_mode:>6} {num_envs:>5} {raw_sps:>12.1f} {ours_sps:>14.1f} {raw_sps / ours_sps - 1.0:>8.1%}"
    if np.isnan(default_sps):
        return row + f" {'-':>14} {'-':>9}"
    return row + f" {default_sps:>14.1f} {raw_sps / default_sps - 1.0:>8.1%}"


if __name__ == "__main__":
    main()
