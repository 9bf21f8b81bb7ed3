"""python -m rlinf_embodied.collect: planner and policy sources into a LeRobot dataset (CPU, state obs)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from rlinf_embodied.collect import collect, unread_settings
from rlinf_embodied.config import CollectRunConfig, compose_config
from rlinf_embodied.datasets import DemoDataset
from rlinf_embodied.unread_settings import reject_unread_settings


def compose_cfg(*overrides: str) -> CollectRunConfig:
    return compose_config("collect", list(overrides))


def test_motion_planner_pickcube_and_resume(tmp_path, capsys):
    out = str(tmp_path / "pickcube")
    cfg = compose_cfg(f"collect.output_dir={out}", "collect.num_episodes=2", "collect.seed=3", "collect.progress=false")
    summary = collect(cfg)
    assert summary["attempted"] == 2 and summary["kept"] == 2 and summary["total_episodes"] == 2
    assert out in capsys.readouterr().out
    times = summary["seconds"]  # where the time went: the env inside a worker's episode, and the writing
    assert 0 < times["env_per_episode"] < times["episode_per_episode"] < times["wall"]
    assert 0 < times["write_per_episode"] < times["wall"]

    ds = DemoDataset(out)
    assert ds.num_episodes == 2 and ds.camera_keys == []
    assert ds.successes() == [True, True] and ds.seeds() == [3, 4]
    assert ds.control_mode == "pd_joint_delta_pos" and ds.env_id == "rlinf/ManiSkill-PickCube"
    assert ds.state_dim == 42 and ds.action_dim == 8
    lengths = [end - start for start, end in ds.episode_bounds()]
    assert all(30 <= n <= 200 for n in lengths) and sum(lengths) == ds.num_frames
    assert ds.instructions() == ["pick up the red cube and move it to the goal"] * 2
    obs, actions, is_pad = ds.sample([0], action_chunk=4)
    assert obs["state"].shape == (1, 42) and actions.shape == (1, 4, 8) and not is_pad.any()
    # Actions are in the env's (normalized delta) action space; the gripper closes during the episode.
    all_actions = ds.sample(np.arange(ds.num_frames), 1)[1][:, 0].numpy()
    assert np.abs(all_actions).max() <= 1.0 + 1e-6
    assert all_actions[:, -1].max() == 1.0 and all_actions[:, -1].min() == -1.0

    # Replaying the recorded actions in the env reaches success too (actions are in the env's units).
    import gymnasium as gym

    env = gym.make("rlinf/ManiSkill-PickCube", control_mode="pd_joint_delta_pos")
    first_obs, _ = env.reset(seed=3)
    start, end = ds.episode_bounds()[0]
    np.testing.assert_allclose(first_obs["state"], ds.sample([start], 1)[0]["state"][0].numpy(), atol=1e-5)
    success = False
    for t in range(start, end):
        _, _, terminated, _, info = env.step(all_actions[t])
        success = success or info["success"]
    env.close()
    assert success

    # Re-running with more episodes skips the seeds already written.
    summary = collect(
        compose_cfg(f"collect.output_dir={out}", "collect.num_episodes=3", "collect.seed=3", "collect.progress=false")
    )
    assert summary["skipped"] == 2 and summary["attempted"] == 1 and summary["total_episodes"] == 3
    assert DemoDataset(out).seeds() == [3, 4, 5]
    info = json.load(open(os.path.join(out, "meta", "info.json")))
    assert info["total_episodes"] == 3 and info["total_frames"] == DemoDataset(out).num_frames


def write_pickcube_dataset(root: str, seeds: list[int]) -> str:
    """A dataset as collect writes one for PickCube (state, pd_joint_delta_pos, 20 fps), with 3-step episodes."""
    from rlinf_embodied.datasets import LeRobotDatasetWriter

    writer = LeRobotDatasetWriter(
        root, fps=20, state_dim=42, action_dim=8, control_mode="pd_joint_delta_pos", env_id="rlinf/ManiSkill-PickCube"
    )
    for seed in seeds:
        states, actions = np.zeros((3, 42), np.float32), np.zeros((3, 8), np.float32)
        writer.add_episode("pick up the cube", states, actions, {}, np.zeros(3, np.float32), True, seed)
    return root


@pytest.mark.parametrize(
    "source, override, message",
    [
        (
            "motion_planner",
            "env.kwargs.control_mode=pd_joint_pos",
            r"has control_mode='pd_joint_delta_pos' but this writer was asked for control_mode='pd_joint_pos'",
        ),
        ("motion_planner", "collect.fps=10", r"has fps=20 but this writer was asked for fps=10"),
        ("policy", "collect.fps=10", r"has fps=20 but this writer was asked for fps=10"),
    ],
)
def test_a_rerun_with_other_settings_is_refused_whether_or_not_a_seed_is_new(
    tmp_path, capsys, source, override, message
):
    """Before: with every seed already in the dataset, a re-run with another control mode or fps reported
    "collected 0 of 0 attempted episodes (... 2 seeds already present)"; with a new seed it was refused."""
    out = write_pickcube_dataset(str(tmp_path / "ds"), [0, 1])
    settings = [f"collect.output_dir={out}", "collect.seed=0", "collect.progress=false"]
    if source == "policy":
        from rlinf_embodied.policies import make_policy

        make_policy("mlp", size="tiny", action_dim=8, state_dim=42).save_pretrained(tmp_path / "mlp")
        settings += ["collect.source=policy", f"policy.checkpoint={tmp_path / 'mlp'}"]
    for num_episodes in (2, 3):  # every seed present; one new seed
        with pytest.raises(ValueError, match=message):
            collect(compose_cfg(*settings, f"collect.num_episodes={num_episodes}", override))
    assert DemoDataset(out).seeds() == [0, 1]
    summary = collect(compose_cfg(*settings, "collect.num_episodes=2"))  # the dataset's settings: nothing to do
    assert summary["attempted"] == 0 and summary["skipped"] == 2 and summary["total_episodes"] == 2
    assert "collected 0 of 0 attempted episodes" in capsys.readouterr().out


@pytest.mark.parametrize("mode,action_dim", [("pd_ee_delta_pos", 4), ("pd_ee_delta_pose", 7)])
def test_motion_planner_ee_modes_replay(tmp_path, mode, action_dim):
    """Joint targets converted into normalized end-effector deltas (root frame): replayed open loop in the env
    with that control mode, the recorded actions reach success."""
    import gymnasium as gym

    out = str(tmp_path / mode)
    summary = collect(
        compose_cfg(
            f"collect.output_dir={out}",
            "collect.num_episodes=2",
            "collect.seed=3",
            "collect.progress=false",
            f"env.kwargs.control_mode={mode}",
        )
    )
    assert summary["kept"] == 2 and summary["clipped_steps"] == 0 and summary["planned_steps"] > 60
    ds = DemoDataset(out)
    assert ds.control_mode == mode and ds.action_dim == action_dim
    all_actions = ds.sample(np.arange(ds.num_frames), 1)[1][:, 0].numpy()
    assert np.abs(all_actions).max() <= 1.0 + 1e-6
    assert all_actions[:, -1].max() == 1.0 and all_actions[:, -1].min() == -1.0  # gripper: absolute, last dim
    assert np.abs(all_actions[:, 2]).max() > 0.1  # the TCP moves down and up (root-frame z)
    env = gym.make("rlinf/ManiSkill-PickCube", control_mode=mode)
    for seed, (start, end) in zip(ds.seeds(), ds.episode_bounds()):
        env.reset(seed=seed)
        success = False
        for t in range(start, end):
            _, _, _, _, info = env.step(all_actions[t])
            success = success or bool(info["success"])
        assert success, seed
    env.close()


def test_motion_planner_worker_pool(tmp_path):
    out = str(tmp_path / "pool")
    summary = collect(
        compose_cfg(
            f"collect.output_dir={out}",
            "collect.num_episodes=2",
            "collect.num_workers=2",
            "collect.progress=false",
            "env=maniskill_pushcube",
        )
    )
    assert summary["kept"] == 2
    ds = DemoDataset(out)
    assert sorted(ds.seeds()) == [0, 1] and all(ds.successes())


def test_policy_source_refuses_a_policy_reading_cameras_the_env_lacks(tmp_path):
    """Before: a pi0 checkpoint collecting on the state env failed with KeyError: 'rgb' at its first act."""
    from rlinf_embodied.policies import make_policy

    checkpoint = str(tmp_path / "pi0")
    make_policy("pi0", size="tiny", action_dim=8, state_dim=42).save_pretrained(checkpoint)
    overrides = [f"collect.output_dir={tmp_path / 'ds'}", "collect.source=policy", "policy=pi0"]
    with pytest.raises(ValueError, match=r"reads cameras \['rgb'\] but env 'rlinf/ManiSkill-PickCube' observes"):
        collect(compose_cfg(*overrides, f"policy.checkpoint={checkpoint}", "collect.progress=false"))


def test_policy_source(tmp_path):
    from rlinf_embodied.policies import make_policy

    checkpoint = str(tmp_path / "mlp")
    make_policy("mlp", size="tiny", action_dim=8, state_dim=42).save_pretrained(checkpoint)
    out = str(tmp_path / "policy_ds")
    summary = collect(
        compose_cfg(
            f"collect.output_dir={out}",
            "collect.source=policy",
            f"policy.checkpoint={checkpoint}",
            "collect.num_episodes=2",
            "collect.num_workers=2",
            "collect.only_success=false",
            "env.max_episode_steps=6",
            "collect.progress=false",
            "collect.seed=7",
        )
    )
    assert summary["attempted"] == 2 and summary["kept"] == 2
    ds = DemoDataset(out)
    assert ds.num_episodes == 2 and sorted(ds.seeds()) == [7, 8]
    # An episode ends at max_episode_steps (6) or earlier on success (PickCube seed 8 starts solved).
    by_seed = dict(zip(ds.seeds(), zip([end - start for start, end in ds.episode_bounds()], ds.successes())))
    assert by_seed[7] == (6, False) and by_seed[8] == (1, True)
    assert ds.control_mode == "pd_joint_delta_pos"
    # The deterministic policy's actions are what the dataset holds.
    from rlinf_embodied.policies import policy_class

    policy = policy_class("mlp").from_pretrained(checkpoint).eval()
    obs, actions, _ = ds.sample([0, 1, 2], 1)
    import torch

    with torch.no_grad():
        expected = policy.act({"state": obs["state"], "instruction": obs["instruction"]}, deterministic=True).actions
    np.testing.assert_allclose(actions[:, 0].numpy(), expected[:, 0].numpy(), atol=1e-5)


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="collect.output_dir is required"):
        collect(compose_cfg())
    with pytest.raises(ValueError, match=r"valid sources: \['motion_planner', 'policy'\]"):
        collect(compose_cfg(f"collect.output_dir={tmp_path}", "collect.source=teleop"))
    with pytest.raises(ValueError, match=r"no solution for env 'rlinf/ManiSkill-PokeCube'.*ManiSkill-PickCube"):
        collect(compose_cfg(f"collect.output_dir={tmp_path}", "env.id=rlinf/ManiSkill-PokeCube"))
    with pytest.raises(ValueError, match=r"pd_ee_pose.*collect.source=policy"):
        collect(compose_cfg(f"collect.output_dir={tmp_path}", "env.kwargs.control_mode=pd_ee_pose"))
    with pytest.raises(ValueError, match="policy.checkpoint"):
        collect(compose_cfg(f"collect.output_dir={tmp_path}", "collect.source=policy"))


def test_collecting_from_the_default_evaluation_seeds_warns_before_it_starts(caplog):
    """Stop 29 collected 1,600 demonstrations from seed 0 for 9 minutes; SFT's evaluation (from seed 1000) then
    refused them. The collection now says so at its start."""
    from rlinf_embodied.collect import warn_if_default_eval_seed

    with caplog.at_level("WARNING", logger="rlinf_embodied.collect"):
        warn_if_default_eval_seed(list(range(0, 1600)))
    assert "seeds 0-1599 include 1000" in caplog.text and "collect.seed" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="rlinf_embodied.collect"):
        warn_if_default_eval_seed(list(range(0, 1000)))
        warn_if_default_eval_seed(list(range(100_000, 101_600)))
        warn_if_default_eval_seed([])
    assert caplog.text == ""


def test_collect_output_dir_that_is_a_file_is_an_error_before_any_worker_starts(tmp_path):
    """Before: the collection started its workers and progress bar, then died with NotADirectoryError."""
    path = tmp_path / "notes.txt"
    path.write_text("")
    with pytest.raises(ValueError, match=r"collect.output_dir=.*notes.txt' is a file; give a directory"):
        collect(compose_cfg(f"collect.output_dir={path}"))


def test_a_negative_seed_is_named_before_anything_runs(tmp_path):
    """Before: gymnasium's 'Seed must be greater or equal to zero' from inside the first reset."""
    with pytest.raises(ValueError, match=r"collect.seed=-1 must be >= 0"):
        collect(compose_cfg(f"collect.output_dir={tmp_path}/data", "collect.seed=-1"))


def test_a_step_cap_below_one_is_named_before_anything_runs(tmp_path):
    """Before: accepted, and every planner solution was dropped as failed ("collected 0 of 10")."""
    with pytest.raises(ValueError, match=r"collect.max_episode_steps=0 must be >= 1.*or null for no cap"):
        collect(compose_cfg(f"collect.output_dir={tmp_path}/data", "collect.max_episode_steps=0"))
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "source, override, reason",
    [
        ("motion_planner", "policy=pi0", "reads no policy settings"),
        ("motion_planner", "policy.checkpoint=/ckpt", "reads no policy settings"),
        ("motion_planner", "collect.deterministic=false", "reads no policy settings"),
        ("policy", "collect.max_episode_steps=100", "episodes end at env.max_episode_steps"),
        ("policy", "env.num_envs=8", "set collect.num_workers instead"),
        ("motion_planner", "env.num_envs=8", "set collect.num_workers instead"),
        ("motion_planner", "env.ignore_terminations=true", "end with its solution"),  # before: ignored
        ("motion_planner", "env.kwargs.num_workers=1", "one env per process"),  # before: ManiSkill's TypeError
        ("motion_planner", "+env.kwargs.step_timeout=5", "one env per process"),
    ],
)
def test_settings_the_source_never_reads_are_named(source, override, reason):
    """Before: `collect policy=pi0` (motion planner) or `env.num_envs=8` collected as if they were not given."""
    with pytest.raises(ValueError, match=reason):
        reject_unread_settings([override], unread_settings(source))


def test_collect_reads_every_setting_of_its_source():
    reject_unread_settings(
        ["collect.max_episode_steps=100", "env.max_episode_steps=120"], unread_settings("motion_planner")
    )
    reject_unread_settings(["policy.checkpoint=/ckpt", "collect.deterministic=false"], unread_settings("policy"))


def test_collect_entry_point_rejects_an_unread_setting(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlinf_embodied.collect",
            "policy=pi0",
            f"collect.output_dir={tmp_path}/data",
            f"hydra.run.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "policy=pi0: collect.source=motion_planner records ManiSkill's scripted solutions" in result.stderr
    assert not os.path.exists(tmp_path / "data")
