"""SFT throughput of a VLA: samples/s of the SFT worker's training loop, and where a step's host time goes.

A synthetic demonstration dataset (random frames at the preset's image size, one instruction) is written
to a temporary directory; an SFTWorker runs in this process on the GPU when there is one (else the CPU).
Two tables, one run:
  1. host-side pieces of a step: gathering a batch from host vs device memory, the random image
     shift, tokenizing the batch's instructions uncached vs cached;
  2. whole steps (after warm-up) for each batch size, with the dataset on the host vs on the device.

    python benchmarks/sft_throughput.py                                   # pi0-small, batches 64 and 256
    python benchmarks/sft_throughput.py --policy pi0 --size tiny --batch-sizes 8 --steps 5 --frames 200

`--compile` prints instead eager vs `sft.compile` steps side by side (dataset on the device), with the seconds
the compiled run's warm-up took more than the eager one's (the compilation). `--profile N` adds, for each run, the
N ops with the most device time (self time) over the timed steps: where a step goes.

    python benchmarks/sft_throughput.py --compile --profile 12 --batch-sizes 512 --override vision_patch_size=8

`--blocking-copies` prints instead, eager and compiled, the steps with every `host_to_device` call made a plain
blocking `.to` (as before stop 39) beside the steps as they are: what the non-blocking copies buy (GPU only).

`--flops-only --peak-tflops P` counts the FLOPs of one training step (forward and backward, torch's FlopCounterMode
on a batch of 4, scaled to each batch size) and prints the compute floor at P TFLOP/s; no timing, any machine.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_args import non_negative_int, positive_int  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from rlinf_embodied.config import SFTRunConfig  # noqa: E402
from rlinf_embodied.datasets import DemoDataset, LeRobotDatasetWriter  # noqa: E402
from rlinf_embodied.datasets.augmentation import random_shift  # noqa: E402
from rlinf_embodied.policies import policy_class  # noqa: E402
from rlinf_embodied.policies.flow import processing  # noqa: E402
from rlinf_embodied.workers.sft_worker import SFTWorker  # noqa: E402

INSTRUCTION = "pick up the red cube and move it to the goal"
STATE_DIM, ACTION_DIM = 29, 4  # PickCube rgb, pd_ee_delta_pos


def write_dataset(root: str, frames: int, image_size: int, episode_length: int = 90) -> str:
    writer = LeRobotDatasetWriter(
        root, fps=20, state_dim=STATE_DIM, action_dim=ACTION_DIM, camera_shapes={"rgb": (image_size, image_size, 3)}
    )
    rng = np.random.default_rng(0)
    for episode in range(max(1, frames // episode_length)):
        states = rng.normal(size=(episode_length, STATE_DIM)).astype(np.float32)
        actions = rng.uniform(-1, 1, size=(episode_length, ACTION_DIM)).astype(np.float32)
        images = {"rgb": rng.integers(0, 256, (episode_length, image_size, image_size, 3), dtype=np.uint8)}
        writer.add_episode(INSTRUCTION, states, actions, images, np.zeros(episode_length, np.float32), True, episode)
    return root


def milliseconds(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats * 1e3


def host_pieces(root: str, batch: int, device: torch.device, tokenizer, max_len: int) -> list[tuple[str, float]]:
    host, on_device = DemoDataset(root), DemoDataset(root).to(device)
    index = torch.randint(0, host.num_frames, (batch,))
    generator = torch.Generator().manual_seed(0)
    images_host = host.sample(index, 8)[0]["rgb"]
    images_device = images_host.to(device)
    texts = [INSTRUCTION] * batch
    cleaned = [processing.clean_instruction(text) + "\n" for text in texts]
    return [
        (
            "gather a batch from host memory (+ copy to device)",
            milliseconds(
                lambda: {k: v.to(device) if torch.is_tensor(v) else v for k, v in host.sample(index, 8)[0].items()},
                20,
                device,
            ),
        ),
        ("gather a batch from device memory", milliseconds(lambda: on_device.sample(index, 8), 20, device)),
        ("random shift 4 px, host", milliseconds(lambda: random_shift(images_host, 4, generator), 20, device)),
        ("random shift 4 px, device", milliseconds(lambda: random_shift(images_device, 4, generator), 20, device)),
        (
            "tokenize the batch's instructions, uncached",
            milliseconds(lambda: processing._tokenize(tokenizer, cleaned, max_len), 20, device),
        ),
        (
            "tokenize the batch's instructions, cached",
            milliseconds(lambda: processing.tokenize_instructions(tokenizer, texts, max_len, device), 20, device),
        ),
    ]


def step_rate(
    args, root: str, batch: int, on_device: bool, device: torch.device, compiled: bool = False
) -> tuple[float, float, float]:
    """(s/step, samples/s, warm-up seconds) of an in-process SFTWorker; with --profile, prints its top ops."""
    cfg = worker_config(args, root, batch)
    cfg.policy.precision, cfg.sft.image_shift = args.precision, 4
    cfg.sft.data_on_device, cfg.sft.warmup_steps, cfg.sft.max_steps = on_device, 0, 10**6
    cfg.sft.compile = compiled
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    worker = SFTWorker(cfg)
    worker.device = device  # in-process: the worker's device is ours
    worker.init_worker()
    start = time.perf_counter()
    worker.train_steps(0, args.warmup)
    warmup_seconds = time.perf_counter() - start
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            worker.train_steps(args.warmup, args.steps)  # timed again below, without the profiler's overhead
        label = "compiled" if compiled else "eager"
        # on the GPU both: the kernels' time, and the host's (stop 39: the compiled step kept the H200 busy 39%)
        sorts = ["self_cuda_time_total", "self_cpu_time_total"] if device.type == "cuda" else ["self_cpu_time_total"]
        for sort_by in sorts:
            print(f"\ntop ops of the {label} steps by {sort_by}, batch {batch} (profiled: s/step is from another run)")
            print(prof.key_averages().table(sort_by=sort_by, row_limit=args.profile))
    seconds = worker.train_steps(args.warmup, args.steps)["time/step"]
    del worker
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return seconds, batch / seconds, warmup_seconds


def flops_table(args, root: str) -> None:
    """FLOPs of one SFT step (the loss's forward and backward) per batch size, and the floor at --peak-tflops."""
    from torch.utils.flop_counter import FlopCounterMode

    worker = SFTWorker(worker_config(args, root, 4))
    worker.device = torch.device("cpu")
    worker.init_worker()
    obs, actions, is_pad = worker._batch(torch.arange(4), worker.policy.config.action_chunk, augment=False)
    counter = FlopCounterMode(display=False)
    with counter:
        worker.policy.sft_loss(obs, actions, is_pad).backward()
    per_sample = counter.get_total_flops() / 4
    print(f"\nFLOPs of one SFT step (forward + backward), counted at batch 4: {per_sample / 1e9:.4g} GFLOP per sample")
    print(f"| batch | GFLOP per step | floor at {args.peak_tflops:g} TFLOP/s, ms |\n|---:|---:|---:|")
    for batch in args.batch_sizes:
        flops = per_sample * batch
        print(f"| {batch} | {flops / 1e9:.5g} | {flops / (args.peak_tflops * 1e12) * 1e3:.4g} |")


def worker_config(args, root: str, batch: int) -> SFTRunConfig:
    """The benchmark's SFT run: --policy/--size/--override on the synthetic dataset at `root`, batch `batch`."""
    cfg = SFTRunConfig()
    cfg.policy.name, cfg.policy.size = args.policy, args.size
    cfg.policy.overrides = dict(args.overrides)
    cfg.sft.dataset, cfg.sft.batch_size = root, batch
    return cfg


def parse_override(item: str) -> tuple[str, object]:
    """KEY=VALUE -> (key, value) with the value read as JSON where it parses (numbers, lists, booleans)."""
    import json

    key, sep, value = item.partition("=")
    if not sep or not key:
        raise SystemExit(f"--override {item!r}: expected KEY=VALUE, e.g. vision_patch_size=8")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def compile_table(args, root: str, device: torch.device) -> None:
    print(
        f"\nwhole SFT steps, eager vs sft.compile ({args.steps} timed after {args.warmup} warm-up), dataset on "
        f"the {device.type}, image_shift 4"
    )
    print(
        "| batch | eager s/step | compiled s/step | speed-up | compiled warm-up extra s | peak GiB eager / compiled |"
        "\n|---:|---:|---:|---:|---:|---:|"
    )
    for batch in args.batch_sizes:
        eager_seconds, _, eager_warmup = step_rate(args, root, batch, True, device)
        eager_peak = peak_gib(device)
        compiled_seconds, _, compiled_warmup = step_rate(args, root, batch, True, device, compiled=True)
        print(
            f"| {batch} | {eager_seconds:.4f} | {compiled_seconds:.4f} | {eager_seconds / compiled_seconds:.2f}x | "
            f"{compiled_warmup - eager_warmup:.1f} | {eager_peak} / {peak_gib(device)} |",
            flush=True,
        )


def peak_gib(device: torch.device) -> str:
    """The device memory the last step_rate run peaked at (what a second run beside it would have to fit in)."""
    return f"{torch.cuda.max_memory_allocated() / 2**30:.1f}" if device.type == "cuda" else "-"


# every module that calls rlinf_embodied.transfer.host_to_device in an SFT step (a test keeps the list whole)
COPY_MODULES = (
    "rlinf_embodied.datasets.augmentation",
    "rlinf_embodied.datasets.lerobot_format",
    "rlinf_embodied.policies.flow.losses",
    "rlinf_embodied.policies.flow.policy",
    "rlinf_embodied.policies.flow.processing",
)


@contextlib.contextmanager
def blocking_copies():
    """host_to_device as it was before stop 39, a plain `.to` (blocking from pageable memory), in COPY_MODULES."""
    modules = [importlib.import_module(name) for name in COPY_MODULES]
    saved = [module.host_to_device for module in modules]
    for module in modules:
        module.host_to_device = lambda tensor, device: tensor.to(device)
    try:
        yield
    finally:
        for module, function in zip(modules, saved):
            module.host_to_device = function


def blocking_copies_table(args, root: str, device: torch.device) -> None:
    print(f"\nwhole SFT steps ({args.steps} timed after {args.warmup} warm-up), blocking vs non-blocking copies")
    print("| batch | layers | blocking copies s/step | non-blocking s/step | speed-up |\n|---:|---|---:|---:|---:|")
    for batch in args.batch_sizes:
        for compiled in (False, True):
            with blocking_copies():
                blocking = step_rate(args, root, batch, True, device, compiled=compiled)[0]
            now = step_rate(args, root, batch, True, device, compiled=compiled)[0]
            label = "compiled" if compiled else "eager"
            print(f"| {batch} | {label} | {blocking:.4f} | {now:.4f} | {blocking / now:.2f}x |", flush=True)


BENCH_PRESET_KEYS = ("image_size", "max_token_len")  # what the synthetic dataset and the host-pieces table read


def benchmark_sizes(policy: str) -> list[str]:
    """`policy`'s presets this benchmark can build from scratch, in the presets' order (smallest first): those with an
    image size and a token length that spell out every key of the first (tiny) preset. A preset holding only a few
    keys (pi0-3b, gr00t-n1.5-3b) is completed from a checkpoint's config."""
    presets = list(policy_class(policy).presets.items())
    full = set(presets[0][1]) if presets else set()
    return [size for size, preset in presets if all(key in preset for key in BENCH_PRESET_KEYS) and full <= set(preset)]


def resolve_size(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Checks --policy and --size against the policy's presets (parser.error with the valid ones); no --size: the
    policy's largest preset built from scratch (pi0: pi0-small)."""
    try:
        presets = policy_class(args.policy).presets
    except (KeyError, ValueError) as error:
        parser.error(f"--policy {args.policy}: {error.args[0] if error.args else error}")
    usable = benchmark_sizes(args.policy)
    if not usable:
        parser.error(
            f"--policy {args.policy}: none of its presets {list(presets)} has an image size and a token length "
            "(this benchmark times image + instruction SFT: use a VLA such as pi0)"
        )
    if args.size is None:
        args.size = usable[-1]
    elif args.size not in presets:
        parser.error(f"--size {args.size}: not a preset of {args.policy}; valid: {usable}")
    elif args.size not in usable:
        parser.error(
            f"--size {args.size}: {args.policy}'s preset is completed from a checkpoint, not built from scratch; "
            f"sizes this benchmark can build: {usable}"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", default="pi0")
    parser.add_argument(
        "--size", default=None, help="a preset of --policy (default: its largest built from scratch, pi0: pi0-small)"
    )
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--batch-sizes", type=positive_int, nargs="+", default=[64, 256])
    parser.add_argument("--frames", type=positive_int, default=9000)
    parser.add_argument("--steps", type=positive_int, default=30)
    parser.add_argument("--warmup", type=non_negative_int, default=5)
    parser.add_argument("--override", action="append", default=[], help="policy override KEY=VALUE (repeatable)")
    parser.add_argument("--compile", action="store_true", help="eager vs sft.compile steps instead of the tables")
    parser.add_argument("--blocking-copies", action="store_true", help="blocking vs non-blocking copies instead")
    parser.add_argument("--profile", type=non_negative_int, default=0, metavar="N", help="print each run's N top ops")
    parser.add_argument("--flops-only", action="store_true", help="count one step's FLOPs; no timing")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="with --flops-only: the peak to divide by")
    args = parser.parse_args(argv)
    resolve_size(parser, args)
    args.overrides = dict(parse_override(item) for item in args.override)  # bad input fails before any work
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    preset = policy_class(args.policy).presets[args.size]
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(f"{args.policy}/{args.size}, {args.precision}, {preset['image_size']} px frames, device: {name}")
    with tempfile.TemporaryDirectory() as scratch:
        root = write_dataset(os.path.join(scratch, "ds"), args.frames, preset["image_size"])
        if args.flops_only:
            flops_table(args, root)
            return
        if args.compile:
            compile_table(args, root, device)
            return
        if args.blocking_copies:
            blocking_copies_table(args, root, device)
            return
        tokenizer = policy_class(args.policy).from_preset(args.size, action_dim=ACTION_DIM).tokenizer
        print(f"\nhost-side pieces of one step, batch {args.batch_sizes[0]}")
        print(f"| {'piece':<52} | {'ms':>8} |\n|{'-' * 54}|{'-' * 10}|")
        for piece, ms in host_pieces(root, args.batch_sizes[0], device, tokenizer, preset["max_token_len"]):
            print(f"| {piece:<52} | {ms:>8.2f} |")
        print(f"\nwhole SFT steps ({args.steps} timed after {args.warmup} warm-up), image_shift 4")
        print(f"| {'batch':>5} | {'dataset on':<10} | {'s/step':>8} | {'samples/s':>10} | {'vs host':>7} |")
        print(f"|{'-' * 7}|{'-' * 12}|{'-' * 10}|{'-' * 12}|{'-' * 9}|")
        for batch in args.batch_sizes:
            host_seconds, host_rate, _ = step_rate(args, root, batch, False, device)
            device_seconds, device_rate, _ = step_rate(args, root, batch, True, device)
            print(f"| {batch:>5} | {'host':<10} | {host_seconds:>8.4f} | {host_rate:>10.0f} | {1.0:>6.2f}x |")
            print(
                f"| {batch:>5} | {device.type:<10} | {device_seconds:>8.4f} | {device_rate:>10.0f} | "
                f"{device_rate / host_rate:>6.2f}x |"
            )


if __name__ == "__main__":
    main()
