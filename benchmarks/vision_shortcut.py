"""Does imitation learn to look? A flow VLA on a task only its camera can solve, with and without a state shortcut.

Synthetic demonstrations: each frame shows a red square at a random place on black, and the action is the
square's position (x, y in [-1, 1]). The state is noise, or (the shortcut) holds the answer, or holds it
with those dims hidden by `ignore_state_dims`. SFT runs in-process through the real SFTWorker; every
`--log-every` steps it prints the worker's image probe: `probe` is the loss of a fresh batch, `shuffled`
the same batch with each sample's image swapped for another's (same noise and flow times). Equal values
mean the policy ignores its camera.

This is the mechanism behind pi0-small's 2-6% on PickCube rgb (benchmarks/RESULTS.md, stop 15): in the
demonstrations the arm's state predicts the action almost as well as the cube does, and a policy that
can fit without looking never starts to look.

    python benchmarks/vision_shortcut.py --steps 1500
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch

from rlinf_embodied.config import SFTRunConfig
from rlinf_embodied.datasets import LeRobotDatasetWriter
from rlinf_embodied.workers.sft_worker import SFTWorker

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_args import positive_int  # noqa: E402

SQUARE = 4  # px
VARIANTS = {
    "noise": "state is noise: only the camera tells the answer",
    "shortcut": "state holds the answer (x, y) beside noise",
    "hidden": "the same state, answer dims hidden (ignore_state_dims=[0, 1])",
}


def write_dataset(root: str, variant: str, episodes: int, frames: int, image_size: int, seed: int) -> None:
    writer = LeRobotDatasetWriter(
        root, fps=10, state_dim=4, action_dim=2, camera_shapes={"rgb": (image_size,) * 2 + (3,)}
    )
    rng = np.random.default_rng(seed)
    for episode in range(episodes):
        images = np.zeros((frames, image_size, image_size, 3), np.uint8)  # (T, H, W, 3)
        actions = np.zeros((frames, 2), np.float32)
        for t in range(frames):
            x, y = rng.integers(0, image_size - SQUARE, size=2)
            images[t, y : y + SQUARE, x : x + SQUARE, 0] = 255
            actions[t] = 2 * np.array([x, y]) / (image_size - SQUARE) - 1
        states = rng.normal(size=(frames, 4)).astype(np.float32)
        if variant != "noise":
            states[:, :2] = actions
        writer.add_episode("point at the red square", states, actions, {"rgb": images}, np.zeros(frames), True, episode)


def run_variant(args, variant: str) -> list[tuple[int, float, float, float]]:
    with tempfile.TemporaryDirectory() as root:
        write_dataset(root, variant, args.episodes, args.frames, args.image_size, args.seed)
        cfg = SFTRunConfig()
        cfg.policy.name, cfg.policy.size, cfg.policy.precision = args.policy, args.size, "float32"
        overrides = {"image_size": args.image_size}
        if variant == "hidden":
            overrides["ignore_state_dims"] = [0, 1]
        cfg.policy.overrides = overrides
        cfg.sft.dataset, cfg.sft.batch_size, cfg.sft.lr, cfg.sft.warmup_steps = root, args.batch, args.lr, 20
        cfg.sft.seed, cfg.sft.image_probe_interval = args.seed, args.log_every  # a probe per printed row
        worker = SFTWorker(cfg)
        worker.init_worker()
        rows = []
        for start in range(0, args.steps, args.log_every):
            metrics = worker.train_steps(start, args.log_every)
            rows.append(
                (
                    start + args.log_every,
                    metrics["sft/loss"],
                    metrics["sft/probe_loss"],
                    metrics["sft/probe_loss_shuffled_images"],
                )
            )
        return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", default="pi0")
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--steps", type=positive_int, default=1500)
    parser.add_argument("--log-every", type=positive_int, default=150)
    parser.add_argument("--batch", type=positive_int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--image-size", type=positive_int, default=32)
    parser.add_argument("--episodes", type=positive_int, default=40)
    parser.add_argument("--frames", type=positive_int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {list(VARIANTS)}")
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; valid: {list(VARIANTS)}")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = {}
    for variant in variants:
        start = time.perf_counter()
        results[variant] = run_variant(args, variant)
        print(f"{variant}: {VARIANTS[variant]} ({time.perf_counter() - start:.0f} s)", flush=True)
    print(
        f"\n{args.policy}/{args.size}, {args.image_size} px, {args.episodes} x {args.frames} frames, batch {args.batch}, lr {args.lr}"
    )
    print("probe / shuffled-image loss (same batch, noise and flow times); equal = the camera is ignored")
    header = "| step | " + " | ".join(f"{v}: probe / shuffled" for v in variants) + " |"
    print(header)
    print("|" + "---|" * (len(variants) + 1))
    for i, step in enumerate(row[0] for row in results[variants[0]]):
        cells = [f"{results[v][i][2]:.3f} / {results[v][i][3]:.3f}" for v in variants]
        print(f"| {step} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
