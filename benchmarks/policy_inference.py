"""Policy inference speed: actions/s and latency of `policy.act` next to the weight-reading and compute floors.

Real-size, randomly initialised policies in bf16 on one GPU (built directly on the device). For each
batch size the table shows the CUDA-synchronised latency of one `act` call (after warm-up), actions/s
(batch * chunk / latency), and the floor that reading the weights from HBM once per forward pass sets:
bytes read per `act` / measured bandwidth, the bandwidth coming from a large device-to-device copy
(read + write) in this same process. Forward passes per `act`:

* openvla: the whole model once for the prompt, then the Llama decoder once per further action token;
* openvla_oft: one pass (parallel decoding);
* pi0: the VLM prefix once, the action expert once per denoising step;
* gr00t: the backbone once, the DiT once per denoising step.

At large batches the weights are read once for many samples and the floor that matters is compute: the FLOPs
of one eager `act` (counted by torch's FlopCounterMode, matmuls and attention) over the throughput of a large
matmul in the same dtype, measured in this same process. `best / floor` compares the best latency with the larger
of the two floors, so a goal below it cannot be met by removing overheads alone.

`--cuda-graphs` also times pi0, gr00t, openvla and openvla_oft with `act_cuda_graphs` (parts of `act` replayed from
captured CUDA graphs, policies/common/cuda_graph.py) and prints both columns side by side. `--compile` adds a
third: the same graphs over parts compiled with torch.compile first (`act_compile`), and the seconds its
warm-up took (compiling and capturing), which a runner pays once per batch bucket.

    python benchmarks/policy_inference.py                                     # H100: openvla-7b + pi0-3b
    python benchmarks/policy_inference.py --policies pi0 gr00t openvla --cuda-graphs --batch-sizes 1 8 64
    python benchmarks/policy_inference.py --policies pi0 --cuda-graphs --compile --batch-sizes 1 8 64
    python benchmarks/policy_inference.py --device cpu --sizes tiny --batch-sizes 1 4   # CPU smoke run
    python benchmarks/policy_inference.py --policies pi0 --cuda-graphs --compile --batch-sizes 1 --profile 20
                      # and, per batch size, the 20 ops with the most device time in the fastest variant's act
    python benchmarks/policy_inference.py --device cpu --policies pi0 --flops-only --peak-tflops 989
                      # FLOPs per act of the real preset, counted on any machine, and the compute floor at a
                      # given peak (989: an H100/H200's dense bf16 figure); no timing
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_args import non_negative_int, positive_int  # noqa: E402

import torch  # noqa: E402

from rlinf_embodied.policies import Policy, make_policy  # noqa: E402

REAL_SIZES = {"openvla": "openvla-7b", "openvla_oft": "openvla-oft-7b", "pi0": "pi0-3b", "gr00t": "gr00t-n1.5-3b"}
GRAPHED_POLICIES = ("pi0", "gr00t", "openvla", "openvla_oft")  # configs with act_cuda_graphs


def module_bytes(module: torch.nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() * p.element_size() for p in module.parameters())


def openvla_bytes_per_act(policy: Policy) -> int:
    return module_bytes(policy) + (policy.config.action_dim - 1) * module_bytes(policy.language_model.model)


def pi0_bytes_per_act(policy: Policy) -> int:
    expert = module_bytes(policy.action_expert)
    return module_bytes(policy) + (policy.config.num_denoise_steps - 1) * expert


def gr00t_bytes_per_act(policy: Policy) -> int:
    return module_bytes(policy) + (policy.config.num_denoise_steps - 1) * module_bytes(policy.dit)


# policy name -> bytes of weights one `act` reads at least once per forward pass
BYTES_PER_ACT: dict[str, Callable[[Policy], int]] = {
    "openvla": openvla_bytes_per_act,
    "openvla_oft": module_bytes,
    "pi0": pi0_bytes_per_act,
    "gr00t": gr00t_bytes_per_act,
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Mean synchronised seconds of `fn` over `repeats` calls, after one warm-up call."""
    fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / repeats


def measure_bandwidth(device: torch.device, megabytes: int, repeats: int = 10) -> float:
    """Bytes/s of a device-to-device copy (each byte read once and written once)."""
    source = torch.empty(megabytes * 2**20, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    return 2 * megabytes * 2**20 / seconds_per_call(lambda: target.copy_(source), device, repeats)


def measure_matmul_flops(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 10) -> float:
    """FLOP/s of a (size x size) @ (size x size) matmul in `dtype`: what this device sustains on dense work."""
    left = torch.randn(size, size, device=device, dtype=dtype)
    right = torch.randn(size, size, device=device, dtype=dtype)
    return 2 * size**3 / seconds_per_call(lambda: left @ right, device, repeats)


def count_act_flops(policy: Policy, batch: int) -> int:
    """FLOPs of one eager `act` on `batch` example observations (matmuls, convolutions and attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    obs = policy.example_obs(batch)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        policy.act(obs)
    return counter.get_total_flops()


@contextmanager
def build_context(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Create parameters directly on `device` in `dtype` (a 7B model fits and random init is fast)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def time_act(policy: Policy, batch: int, device: torch.device, warmup: int, iters: int) -> list[float]:
    obs = policy.example_obs(batch)
    with torch.inference_mode():
        for _ in range(warmup):
            policy.act(obs)
        synchronize(device)
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            policy.act(obs)
            synchronize(device)
            times.append(time.perf_counter() - start)
    return times


# Random-init models have no Llama tokenizer to load, so prompts go through the byte-level fallback:
# "In: What action should the robot take to pick up the red cube?\nOut:" is 68 byte tokens (about 20
# Llama tokens). Room for it; the 256 image tokens dominate the prefix either way.
PROMPT_OVERRIDES = {"openvla": {"max_token_len": 96}, "openvla_oft": {"max_token_len": 96}}


def build_policy(name: str, size: str, device: torch.device, dtype: torch.dtype) -> Policy:
    with build_context(device, dtype):
        policy = make_policy(name, size=size, **PROMPT_OVERRIDES.get(name, {}))
    return policy.to(device=device, dtype=dtype).eval()


def time_graphed_act(
    policy: Policy, name: str, batch: int, args, device: torch.device, compile_parts: bool
) -> tuple[float, float]:
    """Median `act` latency with act_cuda_graphs (and act_compile when compile_parts), and the seconds its
    warm-up took (capture, and compilation). A failure is printed and gives NaN, keeping the other rows."""
    policy.config.act_cuda_graphs, policy.config.act_compile = True, compile_parts
    policy._graph_cache = None  # a fresh cache, so the graphs are captured with or without compilation
    start = time.perf_counter()
    try:
        times = time_act(policy, batch, device, args.warmup, args.iters)
        return statistics.median(times), time.perf_counter() - start - sum(times)
    except RuntimeError as error:  # a failed capture or compilation
        label = "compiled CUDA graphs" if compile_parts else "CUDA graphs"
        print(f"# {name} batch {batch}: {label} failed: {error}", flush=True)
        return float("nan"), float("nan")
    finally:
        policy.config.act_cuda_graphs = policy.config.act_compile = False
        policy._graph_cache = None


def profile_act(policy: Policy, name: str, batch: int, variant: str, args, device: torch.device) -> None:
    """Print the `args.profile` ops with the most self device time (CPU time on a CPU) over 3 `act` calls of
    `variant` ("eager", "graphs" or "compiled"), captured and compiled before the profile starts."""
    from torch.profiler import ProfilerActivity, profile

    policy.config.act_cuda_graphs, policy.config.act_compile = variant != "eager", variant == "compiled"
    policy._graph_cache = None
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    obs = policy.example_obs(batch)
    try:
        with torch.inference_mode():
            for _ in range(max(args.warmup, 1)):
                policy.act(obs)
            synchronize(device)
            with profile(activities=activities) as prof:
                for _ in range(3):
                    policy.act(obs)
                synchronize(device)
    finally:
        policy.config.act_cuda_graphs = policy.config.act_compile = False
        policy._graph_cache = None
    sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"# {name} batch {batch}: top ops of 3 act calls ({variant})", flush=True)
    print(prof.key_averages().table(sort_by=sort_by, row_limit=args.profile), flush=True)


def benchmark_policy(
    name: str, size: str, args, device: torch.device, dtype: torch.dtype, bandwidth: float, matmul_flops: float
) -> list[dict]:
    build_start = time.perf_counter()
    policy = build_policy(name, size, device, dtype)
    build_s = time.perf_counter() - build_start
    params = sum(p.numel() for p in policy.parameters())
    floor_s = BYTES_PER_ACT[name](policy) / bandwidth
    chunk = policy.config.action_chunk
    print(
        f"# {name} ({size}): {params / 1e9:.3f}B parameters, {module_bytes(policy) / 2**30:.2f} GiB, "
        f"built in {build_s:.1f}s",
        flush=True,
    )
    rows = []
    for batch in args.batch_sizes:
        try:
            times = time_act(policy, batch, device, args.warmup, args.iters)
        except torch.OutOfMemoryError:
            print(f"# {name} batch {batch}: out of memory", flush=True)
            torch.cuda.empty_cache()
            break
        latency = statistics.median(times)
        graph_latency = compiled_latency = compile_s = float("nan")
        if args.cuda_graphs and name in GRAPHED_POLICIES and device.type == "cuda":
            graph_latency, _ = time_graphed_act(policy, name, batch, args, device, compile_parts=False)
            if args.compile:
                compiled_latency, compile_s = time_graphed_act(policy, name, batch, args, device, compile_parts=True)
        measured = [t for t in (latency, graph_latency, compiled_latency) if t == t]
        best = min(measured)
        flops = count_act_flops(policy, batch)
        compute_floor_s = flops / matmul_flops
        rows.append(
            {
                "policy": name,
                "size": size,
                "batch": batch,
                "chunk": chunk,
                "latency_ms": latency * 1e3,
                "graph_latency_ms": graph_latency * 1e3,
                "graph_speedup": latency / graph_latency,
                "compiled_latency_ms": compiled_latency * 1e3,
                "compiled_speedup": latency / compiled_latency,
                "compile_setup_s": compile_s,
                "actions_per_s": batch * chunk / best,
                "floor_ms": floor_s * 1e3,
                "gflop_per_act": flops / 1e9,
                "compute_floor_ms": compute_floor_s * 1e3,
                "latency_over_floor": best / max(floor_s, compute_floor_s),
            }
        )
        print(format_row(rows[-1]), flush=True)
        if args.profile:
            variants = dict(zip(("eager", "graphs", "compiled"), (latency, graph_latency, compiled_latency)))
            profile_act(policy, name, batch, min((t, v) for v, t in variants.items() if t == t)[1], args, device)
    del policy
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


HEADER = (
    f"{'policy':<12} {'size':<15} {'batch':>5} {'chunk':>5} {'eager ms':>9} {'graphs ms':>9} {'speed-up':>8} "
    f"{'compiled ms':>11} {'speed-up':>8} {'compile s':>9} {'actions/s':>10} {'floor ms':>9} {'GFLOP':>9} {'compute ms':>10} "
    f"{'best / floor':>12}"
)


def format_row(row: dict) -> str:
    return (
        f"{row['policy']:<12} {row['size']:<15} {row['batch']:>5} {row['chunk']:>5} {row['latency_ms']:>9.2f} "
        f"{row['graph_latency_ms']:>9.2f} {row['graph_speedup']:>7.2f}x {row['compiled_latency_ms']:>11.2f} "
        f"{row['compiled_speedup']:>7.2f}x {row['compile_setup_s']:>9.1f} {row['actions_per_s']:>10.1f} "
        f"{row['floor_ms']:>9.3f} {row['gflop_per_act']:>9.4g} {row['compute_floor_ms']:>10.3f} "
        f"{row['latency_over_floor']:>12.2f}"
    )


def print_flops(name: str, size: str, args, device: torch.device, dtype: torch.dtype, matmul_flops: float) -> None:
    """FLOPs of one `act` per batch size, and the compute floor at this device's matmul rate and at --peak-tflops."""
    policy = build_policy(name, size, device, dtype)
    for batch in args.batch_sizes:
        flops = count_act_flops(policy, batch)
        at_peak = f"{flops / (args.peak_tflops * 1e12) * 1e3:>10.4g}" if args.peak_tflops else f"{'-':>10}"
        print(f"{name:<12} {size:<15} {batch:>5} {flops / 1e9:>10.4g} {flops / matmul_flops * 1e3:>12.4g} {at_peak}")
    del policy
    gc.collect()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", nargs="+", default=["openvla", "pi0"], choices=sorted(BYTES_PER_ACT))
    parser.add_argument("--batch-sizes", nargs="+", type=positive_int, default=[1, 8, 32, 64])
    parser.add_argument(
        "--sizes",
        nargs="+",
        default=None,
        help="one size per policy, or one for all (e.g. tiny); default: the real-size presets",
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--cuda-graphs", action="store_true", help="also time the VLAs with act_cuda_graphs")
    parser.add_argument(
        "--compile", action="store_true", help="with --cuda-graphs: also time graphs of compiled parts (act_compile)"
    )
    parser.add_argument(
        "--dtype", default=None, choices=["bf16", "float32"], help="default: bf16 on GPU, float32 on CPU"
    )
    parser.add_argument("--warmup", type=non_negative_int, default=2)
    parser.add_argument("--iters", type=positive_int, default=5)
    parser.add_argument(
        "--bandwidth-mb", type=positive_int, default=None, help="size of the copy that measures bandwidth"
    )
    parser.add_argument(
        "--matmul-size", type=positive_int, default=None, help="side of the matmul that measures FLOP/s"
    )
    parser.add_argument("--flops-only", action="store_true", help="count FLOPs per act and print the compute floors")
    parser.add_argument("--peak-tflops", type=float, default=None, help="with --flops-only: a peak to divide by")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    parser.add_argument(
        "--profile", type=non_negative_int, default=0, metavar="N", help="print the fastest act's N top ops"
    )
    args = parser.parse_args(argv)
    if args.peak_tflops is not None and not args.flops_only:
        parser.error("--peak-tflops is used by --flops-only only (timed runs compare with the measured matmul rate)")
    if args.compile and not args.cuda_graphs:
        parser.error("--compile times compiled CUDA graphs; add --cuda-graphs")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no GPU is visible; use --device cpu --sizes tiny for a smoke run")
    dtype = {"bf16": torch.bfloat16, "float32": torch.float32}[
        args.dtype or ("bf16" if device.type == "cuda" else "float32")
    ]
    sizes = args.sizes or [REAL_SIZES[name] for name in args.policies]
    if len(sizes) == 1:
        sizes = sizes * len(args.policies)
    if len(sizes) != len(args.policies):
        parser.error(f"--sizes needs one size or one per policy ({len(args.policies)}), got {sizes}")
    torch.manual_seed(0)
    megabytes = args.bandwidth_mb or (4096 if device.type == "cuda" else 256)
    bandwidth = measure_bandwidth(device, megabytes)
    matmul_flops = measure_matmul_flops(device, dtype, args.matmul_size or (8192 if device.type == "cuda" else 1024))
    print(
        f"# device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, dtype {dtype}, "
        f"copy bandwidth {bandwidth / 1e9:.0f} GB/s, matmul {matmul_flops / 1e12:.1f} TFLOP/s",
        flush=True,
    )
    if args.flops_only:
        print(f"{'policy':<12} {'size':<15} {'batch':>5} {'GFLOP':>10} {'compute ms':>12} {'at peak ms':>10}")
        for name, size in zip(args.policies, sizes):
            print_flops(name, size, args, device, dtype, matmul_flops)
        return
    print(HEADER, flush=True)
    rows = []
    for name, size in zip(args.policies, sizes):
        rows += benchmark_policy(name, size, args, device, dtype, bandwidth, matmul_flops)
    print("\n" + HEADER)
    for row in rows:
        print(format_row(row))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"bandwidth_bytes_per_s": bandwidth, "matmul_flops_per_s": matmul_flops, "rows": rows}, f, indent=2
            )


if __name__ == "__main__":
    main()
