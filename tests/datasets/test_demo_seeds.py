"""Evaluations stay off the demonstrations' seeds: the record in checkpoints and the checks that read it."""

import json

import pytest

from rlinf_embodied.config import EnvConfig, EvalConfig, PolicyConfig
from rlinf_embodied.datasets.demo_seeds import (
    SEEDS_FILE,
    carry_demo_seeds,
    check_held_out,
    read_demo_seeds,
    write_demo_seeds,
)


def fake_dataset(root, seeds, env_id="rlinf/ManiSkill-PickCube"):
    (root / "meta").mkdir(parents=True)
    rows = [{"episode_index": i, "seed": seed} for i, seed in enumerate(seeds)] + [{"episode_index": 9, "seed": None}]
    (root / "meta" / "info.json").write_text(json.dumps({"env_id": env_id, "total_episodes": len(rows)}))
    (root / "meta" / "episodes.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(root)


def test_overlap_is_an_error_that_names_the_seeds_and_the_fix():
    with pytest.raises(ValueError, match=r"seeds 1000-1007 of rlinf/X include 2 seeds .*\[1000, 1001\].*do this"):
        check_held_out(range(1000, 1008), [5, 1000, 1001], "rlinf/X", "rlinf/X", fix="do this")
    check_held_out(range(1002, 1008), [5, 1000, 1001], "rlinf/X", "rlinf/X", fix="")  # disjoint
    check_held_out(range(1000, 1008), [1000], "rlinf/X", "rlinf/Y", fix="")  # another env's seeds
    with pytest.raises(ValueError):
        check_held_out(range(1000, 1008), [1000], "rlinf/X", None, fix="")  # env unknown: assume the same


def test_record_round_trips_and_is_carried_to_a_later_checkpoint(tmp_path):
    dataset = fake_dataset(tmp_path / "demos", [3, 1, 2, 2])
    sft_dir, rl_dir, other = tmp_path / "sft", tmp_path / "rl", tmp_path / "plain"
    for directory in (sft_dir, rl_dir, other):
        directory.mkdir()
    write_demo_seeds(str(sft_dir), dataset)
    record = read_demo_seeds(str(sft_dir))
    assert record["seeds"] == [1, 2, 3] and record["env_id"] == "rlinf/ManiSkill-PickCube"
    carry_demo_seeds(str(sft_dir), str(rl_dir))
    assert read_demo_seeds(str(rl_dir)) == record
    write_demo_seeds(str(rl_dir), fake_dataset(tmp_path / "more", [7, 8]))  # SFT continued on more demos
    assert read_demo_seeds(str(rl_dir))["seeds"] == [1, 2, 3, 7, 8]
    assert len(read_demo_seeds(str(rl_dir))["datasets"]) == 2
    carry_demo_seeds(str(other), str(tmp_path))  # nothing recorded, nothing carried
    assert read_demo_seeds(str(other)) is None and not (tmp_path / SEEDS_FILE).exists()
    assert read_demo_seeds(None) is None


def test_eval_refuses_a_checkpoints_demonstration_seeds_before_building_anything(tmp_path):
    from rlinf_embodied.runners.evaluator import evaluate_policy

    checkpoint = tmp_path / "policy"
    checkpoint.mkdir()
    write_demo_seeds(str(checkpoint), fake_dataset(tmp_path / "demos", list(range(1000, 1025))))
    env = EnvConfig()  # rlinf/ManiSkill-PickCube
    policy = PolicyConfig(name="mlp", checkpoint=str(checkpoint))
    with pytest.raises(ValueError, match=r"seeds 1000-1003 .* include 4 seeds.*eval.seed"):
        evaluate_policy(env, policy, EvalConfig(num_envs=4, seed=1000), str(tmp_path / "out"))
