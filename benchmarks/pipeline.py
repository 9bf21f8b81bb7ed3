"""Rollout throughput of the pipelined runner: collocated vs disaggregated vs hybrid, 1 vs 2 stages.

Runs the real EmbodiedRunner (Ray workers, the real ManiSkill simulator, a real policy on GPU) for a few
rollouts per layout and prints one table. It first measures, in the same processes' setting, the time
the simulator takes for one stage's step (t_sim) and the policy for one stage's batch (t_infer), so the
table can show throughput next to the ideal 1 / max(t_sim, t_infer) per env-stage step; the goals are
stage 2 >= 1.8x stage 1 (when t_sim ~ t_infer) and throughput >= 0.9 of that ideal.

    python benchmarks/pipeline.py --gpus 2 --num-envs 16 --rollout-steps 30 --timeline $OUT/timeline.png
    python benchmarks/pipeline.py --gpus 1 ...        # one GPU: collocated, stage 1 vs stage 2
    python benchmarks/pipeline.py --gpus 2 --simulate-gpus --num-envs 4 --rollout-steps 5   # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_args import positive_int  # noqa: E402

import torch  # noqa: E402

from rlinf_embodied.config import TrainConfig  # noqa: E402
from rlinf_embodied.runners.embodied_runner import EmbodiedRunner  # noqa: E402
from rlinf_embodied.runners.timeline_plot import plot_timeline  # noqa: E402
from rlinf_embodied.scheduler import Cluster, ComponentPlacement  # noqa: E402

LAYOUTS = {
    # name: (component_placement, pipeline stages); layouts naming GPU 1 need 2 GPUs
    "collocated, stage 1": ({"env,rollout,actor": "all"}, 1),
    "collocated, stage 2": ({"env,rollout,actor": "all"}, 2),
    "disaggregated, stage 1": ({"env,rollout": "0", "actor": "1"}, 1),
    "hybrid, stage 1": ({"env": "0", "rollout": "1", "actor": "all"}, 1),
    "hybrid, stage 2": ({"env": "0", "rollout": "1", "actor": "all"}, 2),
}


def make_config(args, placement: dict, stages: int) -> TrainConfig:
    cfg = TrainConfig()
    cfg.env.id = args.env_id
    cfg.env.num_envs = args.num_envs
    cfg.env.obs_mode = args.obs_mode
    cfg.env.max_episode_steps = args.max_episode_steps
    cfg.env.kwargs = {"control_mode": args.control_mode}
    cfg.policy.name = args.policy
    cfg.policy.size = args.policy_size
    cfg.policy.precision = "bf16" if args.bf16 else "float32"
    cfg.policy.overrides = json.loads(args.policy_overrides)
    cfg.cluster.num_gpus_per_node = args.gpus
    cfg.cluster.simulate_gpus = args.simulate_gpus
    cfg.cluster.component_placement = placement
    cfg.runner.rollout_steps = args.rollout_steps
    cfg.runner.reset_each_iteration = False  # throughput only: a rollout may end mid-episode
    cfg.runner.pipeline_stage_num = stages
    cfg.runner.progress = False
    return cfg


def measure_layout(args, cluster: Cluster, name: str, placement: dict, stages: int, out_dir: str) -> dict:
    cfg = make_config(args, placement, stages)
    start = time.perf_counter()
    runner = EmbodiedRunner(cfg, cluster, os.path.join(out_dir, name.replace(", ", "_").replace(" ", "_")))
    print(f"[{name}] workers up in {time.perf_counter() - start:.0f}s", flush=True)  # a cut-off run still shows where
    try:
        runner.sync_weights()
        runner.rollout(iteration=0)  # warm-up: process start, CUDA context, first kernels
        _drain(runner, cfg)
        runner.collect_timeline()
        print(f"[{name}] warm-up rollout done at {time.perf_counter() - start:.0f}s", flush=True)
        throughputs, timelines, phase = [], None, {}
        for iteration in range(1, args.iterations + 1):
            metrics = runner.rollout(iteration)
            throughputs.append(metrics["time/throughput"])
            steps = metrics["time/throughput"] * metrics["time/rollout_seconds"]
            chunk = round(steps / (args.num_envs * args.rollout_steps))  # env steps per policy call
            print(f"[{name}] rollout {iteration}: {metrics['time/throughput']:.1f} env-steps/s", flush=True)
            _drain(runner, cfg)
            rows = runner.collect_timeline()
            breakdown = span_breakdown(rows)
            phase = {
                "t_sim_ms": breakdown.get("env/sim", float("nan")),  # per env-stage step
                "t_infer_ms": breakdown.get("rollout/infer", float("nan")),
                "breakdown": breakdown,
            }
            timelines = rows
        return {
            "layout": name,
            "mode": runner.placement.mode,
            "stages": stages,
            "chunk": chunk,
            "throughput": statistics.median(throughputs),
            "timeline": timelines,
            **phase,
        }
    finally:
        runner.shutdown()


def _drain(runner: EmbodiedRunner, cfg: TrainConfig) -> None:
    """Take the trajectories out of the actor channel (this benchmark measures rollouts only)."""
    pieces = runner.env_group.world_size * cfg.runner.pipeline_stage_num
    for rank in range(runner.actor_group.world_size):
        for _ in range(pieces):
            runner.actor_channel.get(key=f"actor{rank}")


def span_breakdown(rows: dict) -> dict[str, float]:
    """Mean ms per span kind ("env/sim", "rollout/infer", "env/wait", ...) over one rollout: where a
    step's time goes. Stage and shard suffixes are dropped."""
    durations: dict[str, list[float]] = {}
    for row, spans in rows.items():
        for label, start, end in spans:
            durations.setdefault(f"{row.split()[0]}/{label.split()[0]}", []).append(end - start)
    return {kind: 1e3 * statistics.mean(values) for kind, values in sorted(durations.items())}


def fits(placement: dict, num_gpus: int) -> bool:
    try:
        ComponentPlacement(placement, num_gpus=num_gpus)
    except ValueError:
        return False
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="rlinf/ManiSkill-PickCube")
    parser.add_argument("--obs-mode", default="state")
    parser.add_argument("--num-envs", type=positive_int, default=16)
    parser.add_argument("--control-mode", default="pd_joint_delta_pos")
    parser.add_argument("--max-episode-steps", type=positive_int, default=50)
    parser.add_argument("--rollout-steps", type=positive_int, default=30)
    parser.add_argument("--iterations", type=positive_int, default=2)
    parser.add_argument("--policy", default="mlp")
    parser.add_argument("--policy-size", default="default")
    parser.add_argument("--policy-overrides", default="{}", help="JSON dict of policy config fields")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--gpus", type=positive_int, default=2)
    parser.add_argument("--simulate-gpus", action="store_true", help="CPU smoke run on simulated GPUs")
    parser.add_argument(
        "--layouts", nargs="*", default=None, help=f"any of {list(LAYOUTS)}; default: all that fit on --gpus"
    )
    parser.add_argument("--timeline", default=None, help="PNG path for the hybrid stage-2 timeline")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.layouts is None:
        args.layouts = [name for name, (placement, _) in LAYOUTS.items() if fits(placement, args.gpus)]
    unknown = [name for name in args.layouts if name not in LAYOUTS]
    if unknown:
        sys.exit(f"unknown layouts {unknown}; valid: {list(LAYOUTS)}")
    if not args.simulate_gpus and torch.cuda.device_count() < args.gpus:
        sys.exit(
            f"--gpus {args.gpus} but found {torch.cuda.device_count()} CUDA GPUs; use --simulate-gpus for a CPU run"
        )

    cluster = Cluster(num_nodes=1, num_gpus_per_node=args.gpus, simulate_gpus=args.simulate_gpus)
    results = []
    with tempfile.TemporaryDirectory() as out_dir:
        for name in args.layouts:
            placement, stages = LAYOUTS[name]
            start = time.perf_counter()
            results.append(measure_layout(args, cluster, name, placement, stages, out_dir))
            print(f"[{name}] measured in {time.perf_counter() - start:.0f}s", flush=True)
    cluster.shutdown()
    report(results, args)


def report(results: list[dict], args) -> None:
    by_name = {r["layout"]: r for r in results}
    print(
        f"\nrollout throughput, {args.num_envs} envs, {args.rollout_steps} steps, policy {args.policy}"
        f"/{args.policy_size}, {args.env_id} ({args.obs_mode})"
    )
    header = f"{'layout':<24}{'mode':<15}{'env-steps/s':>12}{'t_sim ms':>10}{'t_inf ms':>10}{'ideal/s':>10}{'of ideal':>9}{'vs stage 1':>11}"
    print(header)
    print("-" * len(header))
    for r in results:
        base = by_name.get(r["layout"].replace("stage 2", "stage 1"), r)  # the same layout without overlap
        envs_per_stage = args.num_envs / r["stages"] * r["chunk"]  # env steps per stage and policy call
        bottleneck = max(r["t_sim_ms"], r["t_infer_ms"]) / 1e3
        ideal = (
            envs_per_stage / bottleneck
            if r["stages"] > 1
            else envs_per_stage / ((r["t_sim_ms"] + r["t_infer_ms"]) / 1e3)
        )
        r["ideal"] = ideal
        print(
            f"{r['layout']:<24}{r['mode']:<15}{r['throughput']:>12.1f}{r['t_sim_ms']:>10.2f}{r['t_infer_ms']:>10.2f}"
            f"{ideal:>10.1f}{r['throughput'] / ideal:>9.2f}{r['throughput'] / base['throughput']:>10.2f}x"
        )
    kinds = sorted({kind for r in results for kind in r.get("breakdown", {})})
    if kinds:
        print("\nmean ms per span (one env-stage step), last rollout")
        print(f"{'layout':<24}" + "".join(f"{kind:>15}" for kind in kinds))
        for r in results:
            print(f"{r['layout']:<24}" + "".join(f"{r['breakdown'].get(kind, float('nan')):>15.2f}" for kind in kinds))
    staged = [r for r in results if r["stages"] == 2]
    if args.timeline and staged:
        plot_timeline(
            staged[-1]["timeline"],
            args.timeline,
            title=f"{staged[-1]['layout']}: one rollout ({args.rollout_steps} steps)",
        )
        print(f"timeline: {args.timeline}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{k: v for k, v in r.items() if k != "timeline"} for r in results], f, indent=2)


if __name__ == "__main__":
    main()
