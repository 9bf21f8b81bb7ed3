"""benchmarks/failure_stages.py: how failed episodes ended, from real PickCube episodes and from hand-made ones."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "failure_stages.py"


def episode(success, grasped_ever, grasped_last, distance, goal_height):
    reached = {"success": success, "is_grasped": grasped_ever}
    return {"reached": reached, "last": {"success": success, "is_grasped": grasped_last}, "distance": distance,
            "goal_height": goal_height}  # fmt: skip


def test_failures_are_sorted_by_how_they_ended(benchmark_script):
    breakdown = benchmark_script("failure_stages").failure_breakdown(
        [
            episode(True, True, True, 0.01, 0.05),
            episode(True, True, True, 0.02, 0.10),
            episode(False, False, False, 0.20, 0.30),  # never grasped
            episode(False, True, False, 0.15, 0.25),  # grasped, then dropped
            episode(False, True, True, 0.04, 0.28),  # held to the end, missed by 4 cm
        ]
    )
    assert breakdown["success"] == pytest.approx(0.4)
    assert breakdown["never grasped"] == breakdown["grasped, then lost"] == breakdown["held at the end"] == 0.2
    assert breakdown["failures' median final distance (m)"] == pytest.approx(0.15)
    # heights 0.05 0.10 0.25 (median, in the lower half) | 0.28 0.30: the failures sit high
    assert breakdown["success, lower half of goal heights"] == pytest.approx(2 / 3)
    assert breakdown["success, upper half of goal heights"] == 0.0


def test_a_run_on_pickcube_prints_both_tables(tmp_path):
    from rlinf_embodied.policies import make_policy

    make_policy("mlp", size="tiny", action_dim=4, state_dim=42).save_pretrained(tmp_path / "policy")
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "policy"), "--episodes", "2", "--max-steps", "6"]
        + ["--binarize-gripper", "both"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    assert "| is_grasped |" in out and "share of episodes that ever reached" in out
    ended = out[out.index("How the episodes ended") :]
    assert "within 0.025 m" in ended and "| never grasped | grasped, then lost | held at the end |" in ended
    plain, binarized = ended.strip().splitlines()[-2:]  # the same checkpoint and seeds, one row per gripper mode
    assert plain.startswith(f"| {tmp_path / 'policy'} | 0% |")  # 6 random steps do not solve PickCube
    assert binarized.startswith(f"| {tmp_path / 'policy'} (binarized gripper) | 0% |")


def test_no_episodes_is_refused_by_name():
    out = subprocess.run([sys.executable, str(SCRIPT), "ckpt", "--episodes", "0"], capture_output=True, text=True)
    assert out.returncode == 2 and "argument --episodes: must be an integer >= 1, got '0'" in out.stderr
