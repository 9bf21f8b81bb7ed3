"""python -m rlinf_embodied.collect: planner and policy sources into a LeRobot dataset (CPU, state obs)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import rlinf_embodied.collect as collect_module
from rlinf_embodied.collect import CollectStop, collect, unread_settings
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
    assert info["fps"] == 20 and info["reward_settings"] == PICKCUBE_REWARD  # the env's control rate, its rewards'


PICKCUBE_REWARD = {"reward_mode": "normalized_dense", "reward_delta": False}  # the config's defaults


def write_pickcube_dataset(root: str, seeds: list[int]) -> str:
    """A dataset as collect writes one for PickCube (state, pd_joint_delta_pos, 20 fps, the default reward
    settings), with 3-step episodes."""
    from rlinf_embodied.datasets import LeRobotDatasetWriter

    writer = LeRobotDatasetWriter(
        root,
        fps=20,
        state_dim=42,
        action_dim=8,
        control_mode="pd_joint_delta_pos",
        env_id="rlinf/ManiSkill-PickCube",
        reward_settings=PICKCUBE_REWARD,
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
        # the env's rate is the dataset's fps (before: collect.fps, whatever the env stepped at)
        (
            "motion_planner",
            "env.kwargs.sim_config={control_freq:10}",
            r"has fps=20 but this writer was asked for fps=10",
        ),
        ("policy", "env.kwargs.sim_config={control_freq:10}", r"has fps=20 but this writer was asked for fps=10"),
        # before: accepted, and next.reward meant different things in different episodes
        (
            "motion_planner",
            "env.kwargs.reward_mode=sparse",
            r"computed with reward_mode='normalized_dense' but this writer was asked for reward_mode='sparse'.*"
            r"env.kwargs.reward_mode=normalized_dense",
        ),
        (
            "policy",
            "+env.kwargs.reward_delta=true",
            r"computed with reward_delta=False but this writer was asked for reward_delta=True.*"
            r"env.kwargs.reward_delta=false",
        ),
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
    assert ds.seeds() == [0, 1] and all(ds.successes())  # in seed order (before: in the order they finished)


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


def test_a_stochastic_policy_source_records_the_same_actions_for_the_same_seed(tmp_path):
    """Probe 63 #7: before, collect.deterministic=false sampled from torch's unseeded stream, so two runs of one
    command (same collect.seed) recorded different actions."""
    import torch

    from rlinf_embodied.policies import make_policy

    checkpoint = str(tmp_path / "mlp")
    make_policy("mlp", size="tiny", action_dim=8, state_dim=42).save_pretrained(checkpoint)
    recorded = []
    for run in ("a", "b"):
        torch.manual_seed(len(recorded))  # the global stream differs between the runs
        out = str(tmp_path / run)
        settings = [f"collect.output_dir={out}", "collect.source=policy", f"policy.checkpoint={checkpoint}"]
        settings += ["collect.num_episodes=1", "collect.num_workers=1", "collect.only_success=false"]
        settings += ["env.max_episode_steps=4", "collect.progress=false", "collect.seed=5000"]
        collect(compose_cfg(*settings, "collect.deterministic=false"))
        recorded.append(DemoDataset(out).sample([0, 1, 2], 1)[1])
    torch.testing.assert_close(recorded[0], recorded[1])


def test_more_workers_than_episodes_is_refused_and_a_resume_says_how_many_run(tmp_path, caplog):
    """Probe 63 #15: before, collect.num_workers=8 with collect.num_episodes=2 ran 2 workers without a word."""
    with pytest.raises(ValueError, match=r"collect.num_workers=8 > collect.num_episodes=2: .* <= 2"):
        collect(compose_cfg(f"collect.output_dir={tmp_path / 'ds'}", "collect.num_episodes=2", "collect.num_workers=8"))
    assert not (tmp_path / "ds").exists()
    out = tmp_path / "resumed"
    common = [f"collect.output_dir={out}", "collect.seed=3", "collect.progress=false", "collect.only_success=false"]
    collect(compose_cfg(*common, "collect.num_episodes=2"))
    with caplog.at_level("INFO", logger="rlinf_embodied.collect"):
        collect(compose_cfg(*common, "collect.num_episodes=3", "collect.num_workers=3"))
    assert "1 of 3 seeds left to collect" in caplog.text and "instead of collect.num_workers=3" in caplog.text


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


def test_seeds_beyond_the_simulators_range_are_named_before_anything_runs(tmp_path):
    """Before: seed 4294967295 was written, then seed 4294967296 failed inside ManiSkill with numpy's "Seed must be
    between 0 and 2**32 - 1", naming neither collect.seed nor collect.num_episodes."""
    from rlinf_embodied.collect import check_seed_range
    from rlinf_embodied.envs.batching import MAX_SEED

    check_seed_range(MAX_SEED, 1)  # the last seed alone
    check_seed_range(MAX_SEED - 9, 10)
    with pytest.raises(
        ValueError,
        match=rf"collect.seed={MAX_SEED}: .* collect.seed \+ collect.num_episodes - 1 = {MAX_SEED + 1}, above the "
        rf"largest seed {MAX_SEED}; valid with collect.num_episodes=2: 0 <= collect.seed <= {MAX_SEED - 1}",
    ):
        collect(
            compose_cfg(f"collect.output_dir={tmp_path}/data", f"collect.seed={MAX_SEED}", "collect.num_episodes=2")
        )
    assert not (tmp_path / "data").exists()
    with pytest.raises(ValueError, match=rf"collect.num_episodes={MAX_SEED + 2}: there are only {MAX_SEED + 1}"):
        check_seed_range(0, MAX_SEED + 2)


@pytest.mark.parametrize("source", ["motion_planner", "policy"])
def test_collect_fps_is_refused_the_env_rate_is_the_datasets_fps(tmp_path, source):
    """Before: collect.fps=7 was written as the dataset's fps and timestamps (0, 0.143, ...) while the env stepped at
    20 Hz. The fps is the env's rate now; the setting is refused on the command line and through the Python API."""
    with pytest.raises(ValueError, match=r"collect.fps=7: a dataset's fps is the rate its env steps at.*drop collect"):
        reject_unread_settings(["collect.fps=7"], unread_settings(source))
    with pytest.raises(ValueError, match=r"collect.fps=7: a dataset's fps is the rate its env steps at"):
        collect(compose_cfg(f"collect.output_dir={tmp_path}/data", "collect.fps=7"))
    assert not (tmp_path / "data").exists()


def test_the_datasets_fps_is_read_from_the_env():
    """The policy source's vector envs: ManiSkill on GPU physics (its sim's control_freq), IsaacLab (1 / step_dt),
    LIBERO (its single envs' metadata render_fps); a rate that is no whole number, or none, is named."""
    from types import SimpleNamespace

    from rlinf_embodied.collect import env_fps, vector_env_rate
    from rlinf_embodied.config import EnvConfig

    libero = EnvConfig(id="rlinf/LIBERO-Spatial")
    batched = SimpleNamespace(sim=SimpleNamespace(unwrapped=SimpleNamespace(control_freq=25)))
    assert vector_env_rate(batched, EnvConfig(id="rlinf/ManiSkill-PickCube")) == 25
    # ManiSkill's CPU envs live in their workers: the task's SimConfig with env.kwargs.sim_config over it
    assert vector_env_rate(SimpleNamespace(), EnvConfig(id="rlinf/ManiSkill-PickCube")) == 20
    slower = {"sim_config": {"control_freq": 10, "sim_freq": 100}}
    assert vector_env_rate(SimpleNamespace(), EnvConfig(id="rlinf/ManiSkill-PickCube", kwargs=slower)) == 10
    isaaclab = SimpleNamespace(base=SimpleNamespace(step_dt=1 / 120 * 4))
    assert env_fps(vector_env_rate(isaaclab, EnvConfig(id="rlinf/IsaacLab-Reach-Franka")), "") == 30
    subproc = SimpleNamespace(call=lambda name: ({"render_fps": 20, "render_modes": []},) if name == "metadata" else 0)
    assert vector_env_rate(subproc, libero) == 20
    with pytest.raises(ValueError, match=r"env 'rlinf/X' steps at 7.5 Hz: a LeRobot dataset's fps is a whole number"):
        env_fps(7.5, "rlinf/X")
    with pytest.raises(ValueError, match=r"env 'rlinf/X' declares no control rate"):
        env_fps(vector_env_rate(SimpleNamespace(call=lambda name: ({},)), libero), "rlinf/X")
    # the dataset module's fps check (before: True was 1 fps, inf an OverflowError, "20" read as 20)
    for rate, shown in ((0, "0"), (float("inf"), "inf"), (float("nan"), "nan"), (True, "True"), ("20", "'20'")):
        with pytest.raises(ValueError, match=rf"env 'rlinf/X' steps at {shown} Hz: .* whole number >= 1"):
            env_fps(rate, "rlinf/X")
    assert env_fps(1 / (1 / 60), "") == 60 and type(env_fps(20.0, "")) is int


def test_the_reward_settings_recorded_are_the_envs():
    """What next.reward means (recorded in meta/info.json, compared on a resume): env.kwargs over the id's defaults."""
    from rlinf_embodied.collect import configured_reward_settings

    assert configured_reward_settings(compose_cfg().env) == {"reward_mode": "normalized_dense", "reward_delta": False}
    pushcube = compose_cfg("env=maniskill_pushcube", "env.kwargs.reward_mode=sparse", "+env.kwargs.reward_delta=true")
    assert configured_reward_settings(pushcube.env) == {"reward_mode": "sparse", "reward_delta": True}
    assert configured_reward_settings(compose_cfg("env=libero").env) == {"reward_mode": None, "reward_delta": False}


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


# ---- stopping, seed order and the drop summary (stub planner episodes; the pool's processes are real) ----------
def stub_episode(seed: int, status: str = "ok", success: bool = True, length: int = 3) -> dict:
    """What collect's planner stream yields for a seed (motion_planning.plan_episode's keys), PickCube-shaped."""
    return {
        "seed": seed,
        "status": status,
        "success": success,
        "instruction": "pick up the cube",
        "obs": {"state": np.full((length, 42), seed, np.float32)} if length else {},
        "actions": np.zeros((length, 8), np.float32) if length else np.zeros((0, 0), np.float32),
        "rewards": np.zeros(length, np.float32),
        "clipped_steps": 0,
        "seconds": {"episode": 0.0, "env": 0.0},
    }


def stub_planner(monkeypatch, plan) -> None:
    """collect's in-process planner (collect.num_workers=1) runs `plan(seed)` instead of ManiSkill's solution."""
    monkeypatch.setattr(collect_module, "_init_planner", lambda env_cfg, max_steps: None)
    monkeypatch.setattr(collect_module, "_plan", plan)


def test_pool_episodes_are_written_in_seed_order_while_later_seeds_run_ahead(tmp_path, monkeypatch):
    """Before: written as they finished (seeds 0,1,3,4,2,5), so two collections of the same seeds differed, and
    sft.val_episodes' "last N episodes" with them. Seed 0 is slow: the other workers plan seeds 1-5 meanwhile."""
    from concurrent.futures import ThreadPoolExecutor

    finished: dict[int, float] = {}

    def plan(seed: int) -> dict:
        time.sleep(1.0 if seed == 0 else 0.05)
        finished[seed] = time.monotonic()
        return stub_episode(seed)

    monkeypatch.setattr(collect_module, "_planner_pool", lambda cfg, workers: ThreadPoolExecutor(workers))
    monkeypatch.setattr(collect_module, "_plan", plan)
    out = str(tmp_path / "ordered")
    summary = collect(
        compose_cfg(
            f"collect.output_dir={out}", "collect.num_episodes=6", "collect.num_workers=3", "collect.progress=false"
        )
    )
    assert summary["kept"] == 6 and DemoDataset(out).seeds() == [0, 1, 2, 3, 4, 5]
    assert max(finished[seed] for seed in range(1, 6)) < finished[0]  # no worker waited for seed 0


def stub_pool_init(marker_dir: str) -> None:
    os.environ["STUB_MARKERS"] = marker_dir


def stub_long_plan(seed: int) -> tuple[int, int]:
    """Seed 0 at once, every other seed 'plans' for 5 minutes; each start leaves a marker file."""
    open(os.path.join(os.environ["STUB_MARKERS"], str(seed)), "w").close()
    time.sleep(0 if seed == 0 else 300)
    return seed, os.getpid()


def test_closing_the_seed_ordered_stream_cancels_queued_seeds_and_ends_the_workers(tmp_path):
    """Before: a stopped collection's pool planned every queued seed before the process could exit (~98 s after a
    Ctrl-C), its workers failed their episodes with KeyboardInterrupt, and a SIGTERM left them running."""
    from rlinf_embodied.collect import _in_seed_order, _process_pool

    pool = _process_pool(2, stub_pool_init, (str(tmp_path),))
    stream = _in_seed_order(pool, stub_long_plan, list(range(8)))
    assert next(stream)[0] == 0
    processes = list(pool._processes.values())
    assert len(processes) == 2
    deadline = time.monotonic() + 60
    while len(os.listdir(tmp_path)) < 3 and time.monotonic() < deadline:  # both workers in a long seed
        time.sleep(0.05)
    assert sorted(os.listdir(tmp_path)) == ["0", "1", "2"]
    for process in processes:  # a Ctrl-C reaches the whole process group: the workers leave it to the collector
        os.kill(process.pid, signal.SIGINT)
    time.sleep(1.0)
    assert all(process.is_alive() for process in processes)
    assert sorted(os.listdir(tmp_path)) == ["0", "1", "2"]  # no seed given up for the next one
    start = time.monotonic()
    stream.close()  # what a stop (or an error) in collect does
    assert time.monotonic() - start < 10
    assert not any(process.is_alive() for process in processes)
    time.sleep(0.5)
    assert sorted(os.listdir(tmp_path)) == ["0", "1", "2"]  # seeds 3-7 cancelled, never planned


def test_a_stop_request_ends_the_collection_after_the_episode_in_hand(tmp_path, monkeypatch, capfd):
    """The entry point's first SIGINT / SIGTERM: the episode being planned is written, then the collection stops
    with the dataset complete; the same command resumes it. Before: KeyboardInterrupt, or killed by SIGTERM."""
    stop = CollectStop()

    def plan(seed: int) -> dict:
        if seed == 2:
            stop.request(signal.SIGTERM)  # arrives while seed 2 is planned
        return stub_episode(seed)

    stub_planner(monkeypatch, plan)
    out = str(tmp_path / "stopped")
    settings = [f"collect.output_dir={out}", "collect.num_episodes=6", "collect.progress=false"]
    summary = collect(compose_cfg(*settings), stop=stop)
    assert summary["stopped_by"] == "SIGTERM" and summary["attempted"] == 3 and stop.exit_code == 143
    assert DemoDataset(out).seeds() == [0, 1, 2]
    printed = capfd.readouterr()  # the signal handler's message goes straight to file descriptor 2
    assert f"stopped by SIGTERM: 3 episodes kept in {out}; re-run the same command to resume" in printed.out
    assert "SIGTERM received: finishing the current episode, then stopping" in printed.err
    summary = collect(compose_cfg(*settings))
    assert "stopped_by" not in summary and summary["skipped"] == 3 and DemoDataset(out).seeds() == list(range(6))


def test_dropped_planner_episodes_tell_cut_solutions_from_failures(tmp_path, monkeypatch, capsys):
    """Before: "collected 1 of 5 attempted episodes (motion_planner, 4 failed dropped ...)", solutions cut by
    collect.max_episode_steps among them, without saying that a re-run plans them again."""
    from rlinf_embodied.envs.maniskill.motion_planning import STATUS_CUT, STATUS_FAILED

    outcomes = {
        0: stub_episode(0),
        1: stub_episode(1, STATUS_CUT, False),
        2: stub_episode(2, STATUS_FAILED, False, length=0),  # the planner gave up before its first step
        3: stub_episode(3, STATUS_CUT, False),
        4: stub_episode(4, success=False),  # the solution ran to its end without success
    }
    stub_planner(monkeypatch, outcomes.__getitem__)
    settings = ["collect.num_episodes=5", "collect.max_episode_steps=60", "collect.progress=false"]
    summary = collect(compose_cfg(f"collect.output_dir={tmp_path / 'a'}", *settings))
    assert summary["kept"] == 1 and summary["dropped"] == {"failed": 2, "cut": 2}
    assert (
        "collected 1 of 5 attempted episodes (motion_planner, 4 dropped: 2 failed, 2 cut by "
        "collect.max_episode_steps=60 (solution longer); a re-run attempts dropped seeds again; 0 seeds already present)"
    ) in capsys.readouterr().out
    # Keeping failures too: the cut solutions are kept unfinished; an episode without a frame cannot be written
    # (before: ValueError "an episode needs at least one frame" ended the collection).
    summary = collect(compose_cfg(f"collect.output_dir={tmp_path / 'b'}", *settings, "collect.only_success=false"))
    assert summary["kept"] == 4 and summary["dropped"] == {"failed": 1, "cut": 0} and summary["cut_kept"] == 2
    assert DemoDataset(str(tmp_path / "b")).seeds() == [0, 1, 3, 4]
    assert "1 dropped: 1 failed; a re-run attempts dropped seeds again; 2 kept unfinished, cut by" in (
        capsys.readouterr().out
    )


def test_planner_solutions_longer_than_the_cap_are_counted_as_cut(tmp_path, capsys):
    """ManiSkill's PickCube solutions take more than 20 steps: each is cut, and said so (before: "failed dropped")."""
    out = str(tmp_path / "cut")
    summary = collect(
        compose_cfg(
            f"collect.output_dir={out}",
            "collect.num_episodes=2",
            "collect.seed=3",
            "collect.max_episode_steps=20",
            "collect.progress=false",
        )
    )
    assert summary["attempted"] == 2 and summary["kept"] == 0 and summary["dropped"] == {"failed": 0, "cut": 2}
    assert "2 dropped: 2 cut by collect.max_episode_steps=20 (solution longer)" in capsys.readouterr().out


def process_group(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group `pgid`."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        state, _, group = stat[stat.rindex(")") + 2 :].split()[:3]
        if int(group) == pgid and state != "Z":
            members.append(int(entry))
    return members


@pytest.mark.slow
def test_ctrl_c_stops_a_pool_collection_at_an_episode_boundary(tmp_path):
    """A Ctrl-C (SIGINT to the terminal's whole process group, workers included): the episodes written are kept, the
    process exits with 130, and no worker or fork server is left behind (SIGTERM takes the same path, 143: the
    stop-request test above). Before: exit ~98 s after the Ctrl-C, with a KeyboardInterrupt traceback; a SIGTERM
    left the workers and the fork server running."""
    out = tmp_path / "data"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rlinf_embodied.collect",
            f"collect.output_dir={out}",
            "collect.num_episodes=400",
            "collect.num_workers=2",
            "collect.progress=false",
            f"hydra.run.dir={tmp_path / 'hydra'}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if json.loads((out / "meta" / "info.json").read_text())["total_episodes"] >= 1:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        assert process.poll() is None, process.communicate()
        os.killpg(process.pid, signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    kept = DemoDataset(str(out)).seeds()
    assert 1 <= len(kept) < 400 and kept == list(range(len(kept)))
    assert f"{len(kept)} episodes kept in {out}; re-run the same command to resume" in stdout
    deadline = time.monotonic() + 10
    while process_group(process.pid) and time.monotonic() < deadline:  # the fork server leaves once it sees EOF
        time.sleep(0.1)
    assert process_group(process.pid) == []
