"""Env-steps/s of chunked stepping when only the observations a policy reads are built, vs every row's.

A VLA acting in chunks of 8 reads the observation after the chunk's last row; the other 7 rows' observations
(for rgb: every camera rendered) are thrown away. The ManiSkill env's `step_without_obs` skips them; the
vector env's `observe_every_row=True` restores the old behaviour. Both envs of a row are built first, then
timing blocks alternate between them for `--rounds` rounds; each column is its median block.

    python benchmarks/chunk_observation.py --obs-mode state --num-envs 8 --chunk 8       # any machine
    python benchmarks/chunk_observation.py --obs-mode rgb --num-envs 16 32 --chunk 8    # needs a Vulkan GPU
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_args import positive_int  # noqa: E402


def time_block(env: gym.vector.VectorEnv, chunks: int, actions: torch.Tensor) -> float:
    """Env-steps/s over `chunks` chunk calls; actions `(N, chunk, act_dim)`."""
    start = time.perf_counter()
    for _ in range(chunks):
        env.step(actions)
    return actions.shape[0] * actions.shape[1] * chunks / (time.perf_counter() - start)


def measure(args: argparse.Namespace, obs_mode: str, num_envs: int) -> dict[bool, float]:
    """Median env-steps/s with observe_every_row True / False, alternating blocks."""
    camera = {"camera_size": args.camera_size} if obs_mode == "rgb" else {}  # the state env takes no camera size
    envs = {
        every: gym.make_vec(
            f"rlinf/ManiSkill-{args.task}",
            num_envs=num_envs,
            vectorization_mode="vector_entry_point",
            obs_mode=obs_mode,
            control_mode=args.control_mode,
            **camera,
            max_episode_steps=args.episode_steps,
            observe_every_row=every,
        )
        for every in (True, False)
    }
    try:
        rng = np.random.default_rng(0)
        act_dim = envs[True].single_action_space.shape[0]
        actions = torch.from_numpy(rng.uniform(-0.3, 0.3, (num_envs, args.chunk, act_dim)).astype(np.float32))
        for env in envs.values():
            env.reset(seed=0)
            time_block(env, 2, actions)  # warm-up
        rates: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.rounds):
            for every, env in envs.items():
                rates[every].append(time_block(env, args.chunks, actions))
        return {every: float(np.median(values)) for every, values in rates.items()}
    finally:
        for env in envs.values():
            env.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="PickCube")
    parser.add_argument("--control-mode", default="pd_ee_delta_pos")
    parser.add_argument("--obs-mode", nargs="+", default=["state"], choices=["state", "rgb"])
    parser.add_argument("--num-envs", type=positive_int, nargs="+", default=[8])
    parser.add_argument("--chunk", type=positive_int, default=8)
    parser.add_argument("--chunks", type=positive_int, default=10, help="chunk calls per timing block")
    parser.add_argument("--rounds", type=positive_int, default=5)
    parser.add_argument("--camera-size", type=positive_int, default=96, help="rgb only: camera height = width")
    parser.add_argument("--episode-steps", type=positive_int, default=150)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import rlinf_embodied  # noqa: F401  (registers the ids)

    header = "| obs | envs | chunk | every row's obs (steps/s) | only read obs (steps/s) | speed-up |\n|---|---:|---:|---:|---:|---:|"
    camera = f", camera {args.camera_size} px" if "rgb" in args.obs_mode else ""
    print(f"{args.task}, control mode {args.control_mode}{camera}, {args.rounds} rounds")
    rows = []
    for obs_mode in args.obs_mode:
        for num_envs in args.num_envs:
            rates = measure(args, obs_mode, num_envs)
            rows.append(
                f"| {obs_mode} | {num_envs} | {args.chunk} | {rates[True]:.1f} | {rates[False]:.1f} "
                f"| {rates[False] / rates[True]:.2f}x |"
            )
            print(rows[-1], flush=True)  # a cut-off run still reports its rows
    print("\n" + header)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
