"""benchmarks/policy_inference.py's floors: the compute floor must count what `act` really computes."""

import subprocess
import sys
from pathlib import Path

import torch

from rlinf_embodied.policies import make_policy

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "policy_inference.py"


def test_act_flops_grow_with_the_batch_and_cover_every_denoising_step(benchmark_script):
    benchmark = benchmark_script("policy_inference")
    torch.manual_seed(0)
    policy = make_policy("pi0", size="tiny").eval()
    one, four = benchmark.count_act_flops(policy, 1), benchmark.count_act_flops(policy, 4)
    assert one > 0 and 3.5 * one <= four <= 4.5 * one
    # the action expert runs once per denoising step: FLOPs grow by the same amount for each added step
    steps = policy.config.num_denoise_steps
    by_steps = []
    for extra in (0, 2, 4):
        policy.config.num_denoise_steps = steps + extra
        by_steps.append(benchmark.count_act_flops(policy, 1))
    assert by_steps[0] == one and by_steps[1] > one and by_steps[2] - by_steps[1] == by_steps[1] - by_steps[0]


def test_matmul_throughput_is_measured_from_a_real_matmul(benchmark_script):
    flops = benchmark_script("policy_inference").measure_matmul_flops(
        torch.device("cpu"), torch.float32, size=128, repeats=3
    )
    assert 1e6 < flops < 1e15


def test_cpu_smoke_run_prints_both_floors():
    command = [sys.executable, str(SCRIPT), "--device", "cpu", "--sizes", "tiny", "--policies", "pi0"]
    command += ["--batch-sizes", "2", "--warmup", "1", "--iters", "1", "--bandwidth-mb", "16", "--matmul-size", "128"]
    result = subprocess.run(command + ["--profile", "5"], capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "# pi0 batch 2: top ops of 3 act calls (eager)" in result.stdout and "aten::" in result.stdout
    header = next(line for line in result.stdout.splitlines() if line.startswith("policy"))
    assert "GFLOP" in header and "compute ms" in header
    row = result.stdout.splitlines()[-1].split()
    assert row[:4] == ["pi0", "tiny", "2", str(make_policy("pi0", size="tiny").config.action_chunk)]
    assert float(row[-2]) > 0  # the compute floor in ms


def test_flops_only_prints_the_floor_at_a_given_peak_and_rejects_a_peak_it_would_not_use():
    command = [sys.executable, str(SCRIPT), "--device", "cpu", "--sizes", "tiny", "--policies", "pi0", "--flops-only"]
    command += ["--batch-sizes", "1", "--bandwidth-mb", "16", "--matmul-size", "128", "--peak-tflops", "1e-3"]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    row = result.stdout.splitlines()[-1].split()
    gflop, at_peak_ms = float(row[3]), float(row[5])
    assert gflop > 0 and abs(at_peak_ms - gflop * 1e3) <= 0.01 * at_peak_ms  # at 1 GFLOP/s, ms = GFLOP x 1000
    rejected = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--peak-tflops", "900"], capture_output=True, text=True
    )
    assert rejected.returncode == 2 and "--peak-tflops" in rejected.stderr
