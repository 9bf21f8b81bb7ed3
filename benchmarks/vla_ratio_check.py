"""PPO ratio health of real-size VLAs through the runner: train/initial_approx_kl and friends, per iteration.

`train/initial_approx_kl` is the KL between the rollout's and the actor's log-probs on the first
minibatch, before any optimizer step: with both on the same weights it must stay below 1e-3.
Runs `python -m rlinf_embodied.train` once per policy (a subprocess each, so one failure leaves the
others' rows) and prints one table.

    python benchmarks/vla_ratio_check.py --policies pi0:pi0-3b gr00t:gr00t-n1.5-3b --iterations 2
    python benchmarks/vla_ratio_check.py --policies pi0:tiny --env libero --extra runner.rollout_steps=2

A second table gives each iteration's time breakdown (the runner's `time/*`) and its env steps per second for
the whole iteration (rollout + train + swaps): at real size, the end-to-end throughput of a collocated VLA.

`--variants` runs every policy once per group of overrides and labels its rows, so two settings sit side by side
in one table, e.g. what keeping both models resident saves against offloading them:

    python benchmarks/vla_ratio_check.py --policies pi0:pi0-3b --variants runner.offload=true runner.offload=false
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_args import positive_float, positive_int  # noqa: E402

COLUMNS = (
    "initial_approx_kl",
    "initial_ratio_max_abs_dev",
    "rollout_actor_approx_kl",
    "approx_kl",
    "ratio_mean",
    "clip_fraction",
    "optimizer_steps",
    "lr",
    "lr_value",
    "loss",
)
TIME_PHASES = ("rollout", "train", "sync", "offload", "onload", "other")


def run_one(
    policy: str, size: str, args: argparse.Namespace, output_dir: str, variant: str = ""
) -> tuple[list[dict], float, str]:
    command = [
        sys.executable,
        "-m",
        "rlinf_embodied.train",
        f"env={args.env}",
        f"policy={policy}",
        f"policy.size={size}",
        "policy.require_checkpoint=false",
        f"policy.precision={args.precision}",
        f"cluster.simulate_gpus={str(args.simulate_gpus).lower()}",
        f"runner.max_iterations={args.iterations}",
        f"env.num_envs={args.num_envs}",
        f"runner.rollout_steps={args.rollout_steps}",
        # a few steps per iteration measure the ratio and the time breakdown; episodes run on across iterations
        "runner.reset_each_iteration=false",
        "runner.progress=false",
        "runner.save_final=false",  # only the metrics are read (pi0-3b's checkpoint is 47 GB)
        f"runner.output_dir={output_dir}",
        f"hydra.run.dir={output_dir}",
        *args.extra,
        *variant.split(),
    ]
    start = time.perf_counter()
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
        error = "" if result.returncode == 0 else (result.stderr or result.stdout)[-600:]
    except subprocess.TimeoutExpired:  # keep the iterations it finished
        error = f"timed out after {args.timeout:.0f} s"
    seconds = time.perf_counter() - start
    metrics_path = os.path.join(output_dir, "metrics.jsonl")
    rows = []
    if os.path.isfile(metrics_path):
        with open(metrics_path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    return rows, seconds, error


def check_policies(parser: argparse.ArgumentParser, specs: list[str]) -> None:
    """Every --policies name:size names a registered policy and one of its presets (no size: tiny), so a typo is an
    argparse error at once instead of a failed training subprocess."""
    from rlinf_embodied.policies import policy_class
    from rlinf_embodied.policies.registry import available_policies

    for spec in specs:
        policy, _, size = spec.partition(":")
        if policy not in available_policies():
            parser.error(f"--policies {spec}: unknown policy {policy!r}; available: {available_policies()}")
        presets = list(policy_class(policy).presets)
        if (size or "tiny") not in presets:
            parser.error(f"--policies {spec}: {policy} has no size {size or 'tiny'!r}; valid: {presets}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", nargs="+", default=["pi0:pi0-3b"], help="name:size pairs")
    parser.add_argument("--env", default="maniskill_pickcube_rgb")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--iterations", type=positive_int, default=2)
    parser.add_argument("--num-envs", type=positive_int, default=16)
    parser.add_argument("--rollout-steps", type=positive_int, default=10)
    parser.add_argument("--simulate-gpus", action="store_true", help="CPU machines: simulated GPUs")
    parser.add_argument("--timeout", type=positive_float, default=600)
    parser.add_argument("--output", default=None, help="directory for the runs (default: a temp dir)")
    parser.add_argument("--extra", nargs="*", default=[], help="more Hydra overrides for every run")
    parser.add_argument(
        "--variants", nargs="+", default=[""], help="groups of overrides (space-separated in one argument): a run each"
    )
    args = parser.parse_args(argv)
    check_policies(parser, args.policies)
    root = args.output or tempfile.mkdtemp(prefix="vla_ratio_")
    table, timing, failed, runs = [], [], [], 0
    for spec in args.policies:
        policy, _, size = spec.partition(":")
        for index, variant in enumerate(args.variants):
            name = f"{policy}:{size}" + (f" [{variant}]" if variant else "")
            output_dir = os.path.join(root, f"{policy}_{size}" + (f"_v{index}" if variant else ""))
            rows, seconds, error = run_one(policy, size or "tiny", args, output_dir, variant)
            runs += 1
            if error:
                failed.append(name)
            print(
                f"{name}: {len(rows)} iterations in {seconds:.0f} s" + (f"; FAILED: {error}" if error else ""),
                flush=True,
            )
            named_rows = [table_row(name, row) for row in rows]
            print_table(named_rows)  # now, so a run cut short still shows the runs it finished
            table += named_rows
            timing += timing_rows(name, rows)
    print_table(table)
    print_timing(timing)
    if failed and len(failed) == runs:
        raise SystemExit(f"every run failed ({runs} of {runs}: {', '.join(failed)}); see the FAILED lines above")
    if failed:
        print(f"\n{len(failed)} of {runs} runs failed: {', '.join(failed)}", file=sys.stderr)


def table_row(name: str, metrics: dict) -> tuple:
    return (name, metrics.get("iteration"), *[metrics.get(f"train/{column}", float("nan")) for column in COLUMNS])


def timing_rows(name: str, rows: list[dict]) -> list[tuple]:
    """(name, iteration, startup s, iteration s, env steps/s of the whole iteration, phase seconds...)."""
    out, previous_steps = [], 0
    startup = next((row["time/startup_seconds"] for row in rows if "time/startup_seconds" in row), float("nan"))
    for row in rows:
        if "time/iteration_seconds" not in row:
            continue
        steps = row.get("time/env_steps", previous_steps) - previous_steps
        previous_steps = row.get("time/env_steps", previous_steps)
        seconds = row["time/iteration_seconds"]
        phases = [row.get(f"time/{phase}_seconds", float("nan")) for phase in TIME_PHASES]
        out.append(
            (name, row.get("iteration"), startup, seconds, steps / seconds if seconds else float("nan"), *phases)
        )
    return out


def print_timing(rows: list[tuple]) -> None:
    header = ("policy", "iter", "startup s", "iteration s", "env steps/s", *(f"{phase} s" for phase in TIME_PHASES))
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, iteration, *values in rows:
        print(f"| {name} | {iteration} | " + " | ".join(f"{value:.3g}" for value in values) + " |", flush=True)


def print_table(table: list[tuple]) -> None:
    header = ("policy", "iter", *COLUMNS)
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for policy, iteration, *values in table:
        cells = [f"{value:.3g}" if isinstance(value, float) else str(value) for value in values]
        print(f"| {policy} | {iteration} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
