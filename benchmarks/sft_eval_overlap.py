"""What SFT's periodic evaluations cost its training: evaluations training waits for vs `sft.eval_async`.

By default every `sft.eval_interval` steps the actor ranks stop, the trainer's state is offloaded and the episodes
run; with `sft.eval_async=true` a process of its own on the first actor GPU runs them while training goes on (at
most one at a time: a new one waits for the one before it). The same SFT run is timed both ways, after start-up
(`SFTRunner.run`), on a synthetic demonstration dataset of the env's shape; one table:
  mode | run seconds | seconds in evaluations | seconds training waited for them | speed-up of the run

    python benchmarks/sft_eval_overlap.py                                # mlp on PickCube state, CPU
    python benchmarks/sft_eval_overlap.py --steps 200 --eval-interval 50 --set sft.eval_episodes=4

Any `--set KEY=VALUE` is a Hydra override of `python -m rlinf_embodied.sft` (e.g. `policy=...`, `env=...`,
`cluster.simulate_gpus=false` on a GPU machine). The gain is the evaluations' share of a run at most, and less
where the evaluation and training compete for the same cores or GPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_args import positive_int  # noqa: E402

import numpy as np  # noqa: E402

STATE_DIM, ACTION_DIM = 42, 8  # rlinf/ManiSkill-PickCube with obs_mode state, pd_joint_delta_pos


def write_dataset(root: str, episodes: int, length: int) -> str:
    """State-only demonstrations from seeds 100000 on (away from the evaluation's), actions a fixed function of
    the state."""
    from rlinf_embodied.datasets import LeRobotDatasetWriter

    writer = LeRobotDatasetWriter(root, fps=20, state_dim=STATE_DIM, action_dim=ACTION_DIM, camera_shapes={})
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(STATE_DIM, ACTION_DIM)) / STATE_DIM**0.5
    for episode in range(episodes):
        states = rng.uniform(-1, 1, size=(length, STATE_DIM)).astype(np.float32)
        actions = np.tanh(states @ mix).astype(np.float32)
        writer.add_episode("pick the cube", states, actions, {}, np.zeros(length, np.float32), True, 100000 + episode)
    return root


def timed_run(overrides: list[str], output_dir: str, cluster) -> dict[str, float]:
    from rlinf_embodied.config import compose_config
    from rlinf_embodied.runners.sft_runner import SFTRunner, check_sft_config

    cfg = compose_config("sft", overrides + [f"sft.output_dir={output_dir}"])
    check_sft_config(cfg)
    runner = SFTRunner(cfg, cluster, output_dir)
    try:
        start = time.perf_counter()
        history = runner.run()
        seconds = time.perf_counter() - start
    finally:
        runner.shutdown()
    evals = [row for row in history if "eval/success_once" in row]
    # waiting evaluations: all their time; beside training: what training waited at the next one (and the last)
    waited = sum(row.get("time/eval_wait_seconds", row["time/eval_seconds"]) for row in evals)
    return {
        "run": seconds,
        "evals": len(evals),
        "eval_seconds": sum(r["time/eval_seconds"] for r in evals),
        "waited": waited,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=positive_int, default=400)
    parser.add_argument("--eval-interval", type=positive_int, default=100)
    parser.add_argument("--episodes", type=positive_int, default=20, help="demonstration episodes written")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Hydra override (repeatable)")
    args = parser.parse_args(argv)
    from rlinf_embodied.scheduler import Cluster

    with tempfile.TemporaryDirectory() as tmp:
        dataset = write_dataset(os.path.join(tmp, "demos"), args.episodes, length=40)
        overrides = [f"sft.dataset={dataset}", "policy.size=tiny", f"sft.max_steps={args.steps}", "sft.progress=false"]
        overrides += [f"sft.eval_interval={args.eval_interval}", f"sft.save_interval={args.eval_interval}"]
        overrides += ["sft.eval_episodes=8", "env.num_envs=4", "env.max_episode_steps=50", "sft.log_interval=50"]
        overrides += args.set
        cluster = Cluster(num_nodes=1, num_gpus_per_node=1, simulate_gpus="cluster.simulate_gpus=false" not in args.set)
        try:
            results = {
                mode: timed_run(overrides + [f"sft.eval_async={mode == 'beside'}"], os.path.join(tmp, mode), cluster)
                for mode in ("waiting", "beside")
            }
        finally:
            cluster.shutdown()
    print(
        f"\nSFT, {args.steps} steps, an evaluation every {args.eval_interval} (overrides: {' '.join(args.set) or '-'})"
    )
    print(f"{'evaluations':<12} {'run s':>8} {'evals':>6} {'eval s':>8} {'waited s':>9} {'speed-up':>9}")
    for mode, result in results.items():
        speed_up = results["waiting"]["run"] / result["run"]
        print(
            f"{mode:<12} {result['run']:>8.1f} {result['evals']:>6d} {result['eval_seconds']:>8.1f} "
            f"{result['waited']:>9.1f} {speed_up:>8.2f}x"
        )


if __name__ == "__main__":
    main()
