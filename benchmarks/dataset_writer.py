"""What writing demonstrations costs the collecting process: `LeRobotDatasetWriter.add_episode` as a dataset grows.

`python -m rlinf_embodied.collect` plans episodes in worker processes, but one process writes them all (PNG
frames, a parquet file and the meta files per episode), so its cost per episode bounds the collection rate:
with W workers each taking t seconds per episode, the writer must stay under t / W. Synthetic episodes of the
PickCube rgb recipe's shape (92 frames, one 96 px camera, 29 state dims, 4 action dims; the frames are smooth
like renders, so PNG sizes are realistic) are written to a temporary directory. Two tables, one run:
  1. the pieces of one episode's write (PNG encoding, parquet, image stats), measured alone;
  2. milliseconds per `add_episode` in windows of the dataset's growth: a cost that grows with the number of
     episodes already written shows up as later windows costing more than the first.

    python benchmarks/dataset_writer.py                        # 1,200 episodes, windows of 300
    python benchmarks/dataset_writer.py --episodes 40 --window 10
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_args import positive_int  # noqa: E402

import numpy as np  # noqa: E402

from rlinf_embodied.datasets import LeRobotDatasetWriter  # noqa: E402
from rlinf_embodied.datasets.lerobot_format import encode_png  # noqa: E402

INSTRUCTION = "pick up the red cube and move it to the goal"


def synthetic_episode(rng: np.random.Generator, frames: int, image_size: int, state_dim: int, action_dim: int):
    """A smooth background and a moving square, like a render (random pixels would not compress)."""
    ramp = np.linspace(0, 255, image_size, dtype=np.float32)
    gradient = np.add.outer(ramp, ramp) / 2  # (H, W)
    background = np.stack([gradient, gradient[::-1], np.full_like(gradient, 90.0)], -1)  # (H, W, 3)
    images = np.repeat(background[None].astype(np.uint8), frames, axis=0)  # (T, H, W, 3)
    side = image_size // 8
    for t in range(frames):
        row = col = int((image_size - side) * t / max(frames - 1, 1))
        images[t, row : row + side, col : col + side] = (200, 30, 30)
    states = rng.normal(size=(frames, state_dim)).astype(np.float32)
    actions = rng.uniform(-1, 1, size=(frames, action_dim)).astype(np.float32)
    return states, actions, images


def piece_table(args: argparse.Namespace, states, actions, images) -> list[tuple[str, float]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rlinf_embodied.datasets.lerobot_format import _image_stats

    def ms(fn, repeats: int = 5) -> float:
        fn()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - start) / repeats * 1e3

    pngs = [encode_png(frame) for frame in images]
    table = pa.table({"image": pa.array(pngs, pa.binary()), "state": pa.array(list(states))})
    return [
        (
            f"PNG-encode {len(images)} frames ({np.mean([len(p) for p in pngs]) / 1024:.1f} KiB each)",
            ms(lambda: [encode_png(frame) for frame in images]),
        ),
        ("parquet of the episode, in memory", ms(lambda: pq.write_table(table, io.BytesIO()))),
        ("image stats (LeRobot's per-channel min/max/mean/std)", ms(lambda: _image_stats(images))),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=positive_int, default=1200)
    parser.add_argument("--window", type=positive_int, default=300, help="episodes per row of the growth table")
    parser.add_argument("--frames", type=positive_int, default=92, help="frames per episode")
    parser.add_argument("--image-size", type=positive_int, default=96)
    parser.add_argument("--state-dim", type=positive_int, default=29)
    parser.add_argument("--action-dim", type=positive_int, default=4)
    args = parser.parse_args(argv)
    if args.episodes < 1 or not 1 <= args.window <= args.episodes:
        parser.error(f"--episodes {args.episodes} and --window {args.window}: need 1 <= window <= episodes")

    rng = np.random.default_rng(0)
    states, actions, images = synthetic_episode(rng, args.frames, args.image_size, args.state_dim, args.action_dim)
    print(
        f"one episode: {args.frames} frames, {args.image_size} px camera, state {args.state_dim}, action "
        f"{args.action_dim}\n"
    )
    print("| piece of one episode's write | ms |\n|---|---:|")
    for name, value in piece_table(args, states, actions, images):
        print(f"| {name} | {value:.1f} |")

    rows = []
    with tempfile.TemporaryDirectory() as root:
        writer = LeRobotDatasetWriter(
            root,
            fps=20,
            state_dim=args.state_dim,
            action_dim=args.action_dim,
            camera_shapes={"rgb": (args.image_size, args.image_size, 3)},
        )
        window_start = time.perf_counter()
        for episode in range(args.episodes):
            writer.add_episode(INSTRUCTION, states, actions, {"rgb": images}, None, True, episode)
            if (episode + 1) % args.window == 0 or episode + 1 == args.episodes:
                done = episode + 1
                count = done - (rows[-1][0] if rows else 0)
                rows.append((done, (time.perf_counter() - window_start) / count * 1e3))
                window_start = time.perf_counter()
        meta_bytes = sum(
            os.path.getsize(os.path.join(root, "meta", name)) for name in os.listdir(os.path.join(root, "meta"))
        )
    first = rows[0][1]
    print("\n| episodes written | ms per add_episode in the window | vs first window |\n|---:|---:|---:|")
    previous = 0
    for done, value in rows:
        print(f"| {previous + 1}-{done} | {value:.1f} | {value / first:.2f}x |")
        previous = done
    print(f"\nmeta files at the end: {meta_bytes / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
