"""benchmarks/sft_throughput.py: the FLOP count of an SFT step and the eager vs compiled table, on CPU."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "sft_throughput.py"


def run(*args: str) -> str:
    command = [sys.executable, str(SCRIPT), "--policy", "pi0", "--size", "tiny", "--frames", "100", *args]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_flops_only_counts_a_step_that_grows_with_the_batch_and_the_model():
    def per_step(*extra: str) -> dict[int, float]:
        rows = [line.split("|") for line in run("--flops-only", "--batch-sizes", "4", "8", *extra).splitlines()]
        return {int(r[1]): float(r[2]) for r in rows if len(r) > 3 and r[1].strip().isdigit()}

    base = per_step()
    assert set(base) == {4, 8} and base[4] > 0 and abs(base[8] - 2 * base[4]) <= 1e-3 * base[8]  # GFLOP
    assert per_step("--override", "vlm_mlp_dim=4096")[8] > base[8]  # a wider MLP costs more: the count is real


def test_override_must_be_key_equals_value():
    command = [sys.executable, str(SCRIPT), "--size", "tiny", "--flops-only", "--override", "vlm_depth"]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode != 0 and "expected KEY=VALUE" in result.stderr
