"""benchmarks/sft_throughput.py --flops-only on CPU: the FLOP count of an SFT step, and its --override parsing."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "sft_throughput.py"


def run(*args: str) -> str:
    command = [sys.executable, str(SCRIPT), "--policy", "pi0", "--size", "tiny", "--frames", "100", *args]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_flops_only_counts_a_step_that_grows_with_the_batch():
    output = run("--flops-only", "--batch-sizes", "4", "8", "--override", "vlm_mlp_dim=256")
    rows = [line.split("|") for line in output.splitlines()]
    per_step = {int(r[1]): float(r[2]) for r in rows if len(r) > 3 and r[1].strip().isdigit()}
    per_sample = float(output.split("counted at batch 4: ")[1].split()[0])
    assert set(per_step) == {4, 8} and per_step[4] > 0 and abs(per_step[8] - 2 * per_step[4]) <= 1e-3 * per_step[8]
    assert abs(per_step[4] / 4 - per_sample) <= 0.01 * per_sample  # the table scales the counted step


def test_override_must_be_key_equals_value():
    command = [sys.executable, str(SCRIPT), "--size", "tiny", "--flops-only", "--override", "vlm_depth"]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode != 0 and "expected KEY=VALUE" in result.stderr
