"""The GPU recipe's shell stages that choose between SFT runs (benchmarks/sft_then_rl_gpu.sh), on fake metrics.

A wrong choice here costs a whole device session, so `pick` and `reached` are checked on CPU."""

import json
import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "sft_then_rl_gpu.sh"


def write_run(work: Path, name: str, evals: dict[int, float]) -> None:
    run = work / name
    for step in evals:
        (run / "checkpoints" / f"step_{step:06d}" / "policy").mkdir(parents=True)
    rows = [{"step": step, "sft/loss": 0.1} for step in evals]
    rows += [{"step": step, "eval/success_once": success} for step, success in evals.items()]
    (run / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def stage(work: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WORK": str(work)}
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, check=False)


def test_pick_takes_the_best_in_range_across_seeds(tmp_path):
    write_run(tmp_path, "sft_0", {1000: 0.05, 2000: 0.25})
    write_run(tmp_path, "sft_1", {1000: 0.45, 2000: 0.80})  # 0.80 is above the few-shot range
    write_run(tmp_path, "sft_2", {1000: 0.10})
    result = stage(tmp_path, "pick")
    assert result.returncode == 0, result.stderr
    path, success = result.stdout.split()
    assert path == f"{tmp_path}/sft_1/checkpoints/step_001000/policy" and float(success) == 0.45


def test_reached_is_true_once_any_run_evaluates_at_the_bar(tmp_path):
    write_run(tmp_path, "sft_0", {1000: 0.05})
    write_run(tmp_path, "sft_1", {1000: 0.20})
    assert stage(tmp_path, "reached", "0.3").returncode == 1
    write_run(tmp_path, "sft_2", {1000: 0.31})
    assert stage(tmp_path, "reached", "0.3").returncode == 0


def test_unknown_stage_names_the_valid_ones(tmp_path):
    result = stage(tmp_path, "pik")
    assert result.returncode == 2 and "pick | reached | pipeline" in result.stdout
