"""SFT (behaviour cloning) from LeRobot demonstrations: config errors, tiny VLAs learning in-process,
and demonstrations -> `python -m rlinf_embodied.sft` (Hydra) -> checkpoint -> one RL iteration, on CPU."""

from __future__ import annotations

import dataclasses
import os
import json
import re

import numpy as np
import pytest
import torch

from rlinf_embodied.config import SFTConfig, SFTRunConfig, TrainConfig, compose_config
from rlinf_embodied.datasets import LeRobotDatasetWriter
from rlinf_embodied.runners.embodied_runner import BEST_FILE
from rlinf_embodied.policies import make_policy, policy_class
from rlinf_embodied.runners.sft_runner import check_sft_config
from rlinf_embodied.sft import last_training_line, run_sft
from rlinf_embodied.workers.sft_worker import SFTEvalWorker, SFTWorker, lr_at

MANISKILL_STATE_DIM, MANISKILL_ACTION_DIM = 42, 8  # rlinf/ManiSkill-PickCube, state, pd_joint_delta_pos
EXPERT = torch.Generator().manual_seed(123)
EXPERT_WEIGHTS = torch.randn(MANISKILL_STATE_DIM, MANISKILL_ACTION_DIM, generator=EXPERT) / MANISKILL_STATE_DIM**0.5


def expert_action(states: np.ndarray) -> np.ndarray:
    """A learnable state -> action mapping inside the [-1, 1] action box."""
    return np.tanh(states @ EXPERT_WEIGHTS.numpy()).astype(np.float32)


def write_state_dataset(
    root,
    episodes: int = 6,
    length: int = 20,
    control_mode: str = "pd_joint_delta_pos",
    first_seed: int = 0,
    env_id=None,
) -> str:
    writer = LeRobotDatasetWriter(
        str(root),
        fps=20,
        state_dim=MANISKILL_STATE_DIM,
        action_dim=MANISKILL_ACTION_DIM,
        camera_shapes={},
        control_mode=control_mode,
        env_id=env_id,
    )
    rng = np.random.default_rng(0)
    for episode in range(episodes):
        states = rng.normal(size=(length, MANISKILL_STATE_DIM)).astype(np.float32)
        rewards = np.zeros(length, np.float32)
        writer.add_episode("pick up the cube", states, expert_action(states), {}, rewards, True, first_seed + episode)
    return str(root)


def write_image_dataset(root, state_dim: int, action_dim: int, image_size: int, cameras=("rgb",)) -> str:
    """4 episodes x 10 frames; the action is a function of the state, and the image's colour shows it too."""
    writer = LeRobotDatasetWriter(
        str(root),
        fps=20,
        state_dim=state_dim,
        action_dim=action_dim,
        camera_shapes={c: (image_size, image_size, 3) for c in cameras},
    )
    rng = np.random.default_rng(1)
    mix = rng.normal(size=(state_dim, action_dim)) / state_dim**0.5
    for episode in range(4):
        states = rng.uniform(-1, 1, size=(10, state_dim)).astype(np.float32)
        actions = np.tanh(2 * states @ mix).astype(np.float32)
        colour = ((actions[:, :3] + 1) * 127.5).astype(np.uint8)  # (10, 3)
        frames = np.broadcast_to(colour[:, None, None, :], (10, image_size, image_size, 3)).copy()
        writer.add_episode(
            ["open the drawer", "push the cube"][episode % 2],
            states,
            actions,
            {c: frames for c in cameras},
            np.zeros(10, np.float32),
            True,
            episode,
        )
    return str(root)


# ---- config errors (no workers start) -------------------------------------------------------------
def test_missing_dataset_is_a_clear_error(tmp_path):
    cfg = SFTRunConfig()
    with pytest.raises(ValueError, match=r"sft.dataset is required"):
        check_sft_config(cfg)
    cfg.sft.dataset = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"nowhere.*does not exist"):
        check_sft_config(cfg)
    cfg.sft.dataset = str(tmp_path)  # a directory, but no meta/info.json
    with pytest.raises(FileNotFoundError, match=r"is not a dataset.*meta/info.json"):
        check_sft_config(cfg)


def test_sft_checks_the_env_settings_before_anything_starts(tmp_path):
    """Before: a typo in env.kwargs failed in the SFT worker's env check after Ray started (with evaluations), or
    went unnoticed (without)."""
    cfg = SFTRunConfig()
    cfg.sft.dataset = write_state_dataset(tmp_path / "demos", episodes=1, length=3)
    cfg.env.kwargs["reward_mod"] = "sparse"
    with pytest.raises(ValueError, match=r"env.kwargs \['reward_mod'\]: not an option of rlinf/ManiSkill-PickCube"):
        check_sft_config(cfg)


def test_normalize_from_dataset_off_is_refused_where_no_dataset_statistics_are_read(tmp_path):
    """Before: with policy=mlp (the default) sft.normalize_from_dataset=false trained byte-identical weights."""
    cfg = SFTRunConfig()
    cfg.sft.dataset = write_state_dataset(tmp_path / "demos", episodes=1, length=3)
    check_sft_config(cfg)
    cfg.sft.normalize_from_dataset = False
    with pytest.raises(
        ValueError,
        match=r"sft.normalize_from_dataset=False would change nothing: policy 'mlp' .*"
        r"the policies that do: \[.*'flow_mlp'.*'pi0'",
    ):
        check_sft_config(cfg)
    cfg.policy.name = "flow_mlp"  # reads them: the setting keeps the action convention
    check_sft_config(cfg)


def test_sft_evaluation_seeds_must_not_be_the_demonstrations(tmp_path):
    """Demos collected from seed 1000 and SFT evaluating from sft.seed + 1000: the eval would replay them."""
    root = write_state_dataset(tmp_path / "demos", episodes=3, first_seed=1000, env_id="rlinf/ManiSkill-PickCube")
    cfg = SFTRunConfig()
    cfg.sft.dataset, cfg.sft.eval_interval, cfg.env.num_envs = root, 10, 4
    with pytest.raises(ValueError, match=r"seeds 1000-1003 of rlinf/ManiSkill-PickCube include 3 seeds.*sft.seed"):
        check_sft_config(cfg)
    cfg.sft.seed = 1  # evaluates from 1001: still two of them
    with pytest.raises(ValueError, match=r"include 2 seeds"):
        check_sft_config(cfg)
    cfg.sft.seed = 100
    check_sft_config(cfg)
    cfg.sft.seed, cfg.sft.eval_interval = 0, 0  # no evaluation, nothing to check
    check_sft_config(cfg)


def test_a_dataset_of_another_env_warns_before_training(tmp_path, caplog):
    """Before: a PickCube dataset with env=maniskill_pushcube and no evaluations trained without a word."""
    cfg = SFTRunConfig()
    cfg.sft.dataset = write_state_dataset(tmp_path / "demos", episodes=1, env_id="rlinf/ManiSkill-PickCube")
    cfg.env.id = "rlinf/ManiSkill-PushCube"
    with caplog.at_level("WARNING", logger="rlinf_embodied.runners.sft_runner"):
        check_sft_config(cfg)
    assert "holds episodes of rlinf/ManiSkill-PickCube, but env.id=rlinf/ManiSkill-PushCube" in caplog.text
    caplog.clear()
    cfg.env.id = "rlinf/ManiSkill-PickCube"
    with caplog.at_level("WARNING", logger="rlinf_embodied.runners.sft_runner"):
        check_sft_config(cfg)
    assert "holds episodes of" not in caplog.text


def test_evaluations_shorter_than_the_demonstrations_warn_before_training(tmp_path, caplog, monkeypatch):
    """Before: SFT evaluated with env.max_episode_steps=50 on demonstrations of 70-96 steps (eval/episode_length
    50) without a word; collect warns in that case, and SFT now does too, in its words."""
    from rlinf_embodied.scheduler import Cluster
    from rlinf_embodied.sft import warn_if_eval_time_limit_short

    cfg = SFTRunConfig()
    cfg.sft.dataset = write_state_dataset(tmp_path / "demos", episodes=2, length=60, first_seed=100_000)
    cfg.sft.eval_interval, cfg.sft.eval_episodes = 10, 2
    assert cfg.env.max_episode_steps == 50

    class ClusterStarted(Exception):
        pass

    def no_cluster(*args, **kwargs):
        raise ClusterStarted

    monkeypatch.setattr(Cluster, "from_config", staticmethod(no_cluster))
    with caplog.at_level("WARNING", logger="rlinf_embodied.sft"), pytest.raises(ClusterStarted):
        run_sft(cfg, str(tmp_path / "run"))  # the warning comes before any process starts
    assert (
        f"episodes of up to 60 steps are in sft.dataset={cfg.sft.dataset!r}, but env.max_episode_steps=50: a policy "
        "imitating them needs a longer time limit in its RL/eval env (env.max_episode_steps=60 or more); SFT's "
        "evaluations (sft.eval_interval=10) end their episodes at 50 steps" in caplog.text
    )
    caplog.clear()
    with caplog.at_level("WARNING", logger="rlinf_embodied.sft"):
        cfg.env.max_episode_steps = 60
        assert not warn_if_eval_time_limit_short(cfg)  # long enough
        cfg.env.max_episode_steps, cfg.sft.eval_interval, cfg.sft.eval_episodes = 50, 0, 10
        assert not warn_if_eval_time_limit_short(cfg)  # no evaluation reads the limit
    assert caplog.text == ""
    cfg.env.max_episode_steps, cfg.sft.eval_interval = None, 10  # null: the id's own limit, 50 for PickCube
    assert warn_if_eval_time_limit_short(cfg)  # before: no limit seen, no warning


def test_env_num_envs_is_refused_where_sft_runs_no_evaluation(tmp_path):
    """Before: `python -m rlinf_embodied.sft env.num_envs=32` without sft.eval_interval ran without a word, though
    only the evaluations' envs read it; eval and collect refuse it the same way."""
    import subprocess
    import sys

    from rlinf_embodied.sft import unread_settings
    from rlinf_embodied.unread_settings import reject_unread_settings

    reject_unread_settings(["env.num_envs=8"], unread_settings(SFTConfig(eval_interval=100)))  # sizes the evaluations
    with pytest.raises(ValueError, match=r"^env.num_envs=8: .* sft.eval_interval=0 runs none; set sft.eval_interval"):
        reject_unread_settings(["env.num_envs=8"], unread_settings(SFTConfig()))
    dataset = write_state_dataset(tmp_path / "demos", episodes=1, length=3)
    result = subprocess.run(
        [sys.executable, "-m", "rlinf_embodied.sft", f"sft.dataset={dataset}", "env.num_envs=32"]
        + [f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "env.num_envs=32: python -m rlinf_embodied.sft reads env.num_envs only for its evaluations' envs" in (
        result.stderr
    )
    assert not (tmp_path / "run" / "config.yaml").exists()  # refused before the run directory is written


def test_env_settings_only_evaluations_read_are_refused_without_evaluations():
    """Probe 63 #6: before, `env.max_episode_steps=100 env.ignore_terminations=true env.kwargs.reward_mode=sparse`
    without sft.eval_interval ran without a word, though only the evaluations' envs read them. What SFT reads
    without evaluations stays accepted: the env group and id, env.kwargs.control_mode (checked against the dataset's)
    and env.kwargs.binarize_gripper (recorded with the checkpoint); so do the env group's own kwargs."""
    from rlinf_embodied.sft import reject_unread_overrides

    read = ["env=libero", "env=maniskill_pickcube_rgb", "env.id=rlinf/ManiSkill-PushCube", "sft.max_steps=10"]
    read += ["env.kwargs.control_mode=pd_ee_delta_pos", "+env.kwargs.binarize_gripper=true"]
    read += ["env.kwargs={control_mode:pd_ee_delta_pos,binarize_gripper:true}", "~env.kwargs"]
    reject_unread_overrides(read, SFTConfig())
    unread = ["env.max_episode_steps=100", "env.ignore_terminations=true", "env.obs_mode=rgb", "env.num_envs=4"]
    unread += ["env.kwargs.reward_mode=sparse", "+env.kwargs.camera_size=96", "~env.kwargs.sim_backend"]
    unread += ["env.kwargs.task_id=[0,1]", "env.kwargs={control_mode:pd_joint_delta_pos,reward_mode:sparse}"]
    for override in unread:
        reject_unread_overrides([*read, override], SFTConfig(eval_interval=100))  # the evaluations read them
        with pytest.raises(
            ValueError,
            match=rf"^{re.escape(override)}: python -m rlinf_embodied.sft reads env\.\S+ only for its evaluations' "
            r".*sft.eval_interval=0 runs none.*; set sft.eval_interval > 0, or leave env\.\S+ out$",
        ):
            reject_unread_overrides([*read, override], SFTConfig())
    with pytest.raises(ValueError, match=r"reads env.kwargs.reward_mode only .* leave env.kwargs.reward_mode out$"):
        reject_unread_overrides(["env.kwargs={control_mode:pd_joint_delta_pos,reward_mode:sparse}"], SFTConfig())


def test_sft_refuses_placing_components_it_never_runs(tmp_path):
    """Probe 63 #5: before, `cluster.component_placement.env=1` was accepted and ignored (SFT runs the actor alone;
    its evaluations run in it or on its first GPU). Refused before Ray, naming the key SFT reads; entries that
    place env / rollout on every GPU (configs/cluster/local.yaml's `all`) pass."""
    from rlinf_embodied.runners.sft_runner import actor_placement

    cfg = SFTRunConfig()
    cfg.sft.dataset = write_state_dataset(tmp_path / "ds", episodes=1, length=3)
    cfg.cluster.num_gpus_per_node = 2
    for placement in ({}, {"env": "all", "rollout": "all", "actor": "all"}, {"env,rollout": "0-1", "actor": "1"}):
        cfg.cluster.component_placement = placement
        check_sft_config(cfg)
    assert actor_placement(cfg).gpus("actor") == [1]
    refused = [({"env": 1, "rollout": "all", "actor": "all"}, "env=1", "leave env out")]
    refused += [({"env,rollout": "0", "actor": "all"}, "env,rollout=0", "leave env, rollout out")]
    refused += [({"rollout": "1"}, "rollout=1", "leave rollout out")]
    for placement, setting, fix in refused:
        cfg.cluster.component_placement = placement
        with pytest.raises(
            ValueError,
            match=rf"^cluster.component_placement.{re.escape(setting)}: python -m rlinf_embodied.sft runs one "
            rf"component, the actor .* reads only cluster.component_placement.actor; .*{re.escape(fix)}",
        ):
            check_sft_config(cfg)
    # a training layout's preset (env on GPUs 0-1, rollout on 2-3): refused, naming the plain cluster to use
    with pytest.raises(
        ValueError, match=r"component_placement.env=0-1: .*use cluster=local cluster.num_gpus_per_node=4"
    ):
        actor_placement(compose_sft(["cluster=hybrid_4gpu"]))
    moved = compose_sft(["cluster.num_gpus_per_node=4", "cluster.component_placement.actor=2-3"])
    assert actor_placement(moved).gpus("actor") == [2, 3]


def test_stop_at_success_needs_evaluations_and_a_rate():
    with pytest.raises(ValueError, match=r"sft.stop_at_success=0.3 acts on periodic evaluations.*eval_interval=0"):
        SFTRunConfig(sft=SFTConfig(stop_at_success=0.3))
    with pytest.raises(ValueError, match=r"sft.stop_at_success=30.0 must lie in \[0, 1\]"):
        SFTRunConfig(sft=SFTConfig(stop_at_success=30.0, eval_interval=100))


def test_action_dim_and_control_mode_mismatches_name_both_sides(tmp_path):
    cfg = SFTRunConfig()
    cfg.sft.dataset = write_state_dataset(tmp_path / "ds", episodes=1, length=3)
    checkpoint = tmp_path / "mlp7"
    make_policy("mlp", size="tiny", action_dim=7, state_dim=MANISKILL_STATE_DIM).save_pretrained(checkpoint)
    cfg.policy.checkpoint = str(checkpoint)
    with pytest.raises(ValueError, match=r"action_dim=7 but sft.dataset=.* has action_dim=8"):
        check_sft_config(cfg)
    cfg.policy.checkpoint, cfg.policy.overrides = None, {"action_dim": 5}
    with pytest.raises(ValueError, match=r"action_dim=5 but .*action_dim=8"):
        check_sft_config(cfg)
    cfg.policy.overrides = {}
    check_sft_config(cfg)  # a fresh policy takes the dataset's action_dim
    cfg.env.kwargs = {"control_mode": "pd_ee_delta_pos"}
    with pytest.raises(ValueError, match=r"control_mode='pd_joint_delta_pos'.*control_mode='pd_ee_delta_pos'"):
        check_sft_config(cfg)


def test_a_camera_policy_on_state_only_demonstrations_is_refused_before_training(tmp_path):
    """Before: `sft policy=pi0 policy.size=tiny` on a state-only dataset failed with KeyError: 'rgb' at the first
    step (cnn: "obs has no 'rgb'"), after the workers had built the policy."""
    cfg = SFTRunConfig()
    cfg.sft.dataset = write_state_dataset(tmp_path / "ds", episodes=1, length=3)
    cfg.policy.name, cfg.policy.size = "pi0", "tiny"
    with pytest.raises(
        ValueError, match=r"reads cameras \['rgb'\] but sft.dataset=.* holds \['state'\]: .*state policy"
    ):
        check_sft_config(cfg)
    cfg.sft.dataset = write_image_dataset(tmp_path / "images", MANISKILL_STATE_DIM, 8, 32, ("rgb",))
    cfg.policy.name, cfg.policy.size = "openvla_oft", "tiny"  # two cameras; the dataset has one
    with pytest.raises(ValueError, match=r"missing \['wrist_rgb'\]; set policy.overrides.num_images=1"):
        check_sft_config(cfg)


def test_image_shift_needs_cameras(tmp_path):
    cfg = SFTRunConfig()
    cfg.sft.dataset = write_state_dataset(tmp_path / "ds", episodes=1, length=3)
    cfg.sft.image_shift = 4
    with pytest.raises(ValueError, match=r"sft.image_shift=4 augments camera images, but .* has none"):
        check_sft_config(cfg)
    with pytest.raises(ValueError, match=r"sft.image_shift=-1 must be >= 0"):
        type(cfg.sft)(image_shift=-1)
    cfg.sft.image_shift, cfg.sft.image_probe_interval = 0, 50
    with pytest.raises(ValueError, match=r"sft.image_probe_interval=50 probes .* but .* has none"):
        check_sft_config(cfg)
    cfg.sft.image_probe_interval = None  # the default: off for a state-only dataset
    check_sft_config(cfg)
    with pytest.raises(ValueError, match=r"sft.image_probe_interval=-5 must be >= 0"):
        type(cfg.sft)(image_probe_interval=-5)


def test_lr_schedule_warms_up_then_decays():
    cfg = SFTRunConfig().sft
    cfg.lr, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio = 1.0, 10, 110, 0.1
    assert lr_at(cfg, 0) == pytest.approx(0.1) and lr_at(cfg, 9) == pytest.approx(1.0)
    assert lr_at(cfg, 60) == pytest.approx(0.55)
    assert lr_at(cfg, 110) == pytest.approx(0.1)
    cfg.lr_schedule = "constant"
    assert lr_at(cfg, 100) == 1.0
    with pytest.raises(ValueError, match="lr_schedule"):
        type(cfg)(lr_schedule="linear")


def test_eval_in_an_env_that_cannot_run_here_fails_at_start(tmp_path):
    from rlinf_embodied.envs.maniskill.headless import render_device_available

    if render_device_available():
        pytest.skip("this machine renders: rgb ManiSkill would run")
    cfg = SFTRunConfig()
    cfg.sft.dataset = write_state_dataset(tmp_path / "ds", episodes=1, length=3)
    cfg.sft.eval_interval = 10
    cfg.env.obs_mode, cfg.env.kwargs = "rgb", {"control_mode": "pd_joint_delta_pos"}
    worker = SFTWorker(cfg)  # in-process: the check the runner makes on rank 0 before any step
    worker.init_worker()
    with pytest.raises(RuntimeError, match=r"sft.eval_interval=10 .*cannot run here.*Vulkan.*sft.eval_interval=0"):
        worker.check_eval_env()


def test_the_evaluation_process_checks_the_env_it_builds_against_the_dataset(tmp_path, monkeypatch):
    """sft.eval_async builds no second env for the start's check: the evaluation process checks the env it keeps
    as check_eval_env checks its own, and closes what it built when the env does not fit."""
    from rlinf_embodied.runners import evaluator as evaluator_module

    cfg = SFTRunConfig()
    cfg.sft.dataset = write_state_dataset(tmp_path / "ds", episodes=1, length=3)
    cfg.sft.eval_interval, cfg.sft.eval_episodes, cfg.env.num_envs = 10, 2, 2
    # the evaluation's two envs in one worker process: where this process's forkserver was started without
    # ManiSkill (by an earlier toy-env test), every worker process of a build imports it, seconds of CPU each
    cfg.env.kwargs["num_workers"] = 1
    worker = SFTWorker(cfg)
    worker.init_worker()
    needs = worker.eval_env_needs()
    assert needs.action_dim == MANISKILL_ACTION_DIM and needs.observation_keys == ("state",)
    evaluator = SFTEvalWorker(cfg)
    assert evaluator.build_env(needs) == worker.check_eval_env()  # each built its own env
    assert len(evaluator.envs) == 1
    (env,) = evaluator.envs.values()
    evaluator.envs.clear()
    # Envs that do not fit the dataset: this real env, handed out again by make_eval_env, rather than two more
    # builds of the same settings (worker processes each); what build_env closes is recorded.
    handed_out, closed = [], []

    class BuiltAgain:
        def __getattr__(self, name):
            return getattr(env, name)

        def close(self):
            closed.append(self)

    def build_again(*args, **kwargs):
        handed_out.append(BuiltAgain())
        return handed_out[-1]

    monkeypatch.setattr(evaluator_module, "make_eval_env", build_again)
    try:
        wrong_action = dataclasses.replace(needs, action_dim=3)
        with pytest.raises(
            ValueError, match=rf"has action_dim={MANISKILL_ACTION_DIM} but the dataset .* has action_dim=3"
        ):
            evaluator.build_env(wrong_action)
        assert evaluator.envs == {} and handed_out[-1] in closed  # closed
        with pytest.raises(ValueError, match=r"observes \['instruction', 'state'\]: \['rgb'\] missing"):
            evaluator.build_env(dataclasses.replace(needs, observation_keys=("state", "rgb")))
        assert evaluator.envs == {} and handed_out[-1] in closed and len(handed_out) == 2
    finally:
        env.close()


# ---- tiny VLAs learn on images + state, in-process (the worker outside Ray: one CPU rank) -------------
@pytest.mark.parametrize(
    "name, sft_settings, cameras",
    [
        ("pi0", {}, ("rgb",)),
        ("pi0", {"image_shift": 2}, ("rgb",)),
        ("openvla_oft", {}, ("rgb", "wrist_rgb")),
    ],
)
def test_tiny_vla_sft_loss_goes_down(tmp_path, name, sft_settings, cameras):
    preset = policy_class(name).presets["tiny"]
    cfg = SFTRunConfig()
    cfg.policy.name, cfg.policy.size = name, "tiny"
    for key, value in sft_settings.items():  # image_shift: the frames are uniform, so they stay learnable
        setattr(cfg.sft, key, value)
    cfg.sft.dataset = write_image_dataset(
        tmp_path / "ds", preset["state_dim"], preset["action_dim"], preset["image_size"], cameras
    )
    cfg.sft.batch_size, cfg.sft.lr, cfg.sft.warmup_steps, cfg.sft.max_steps = 8, 3e-3, 3, 40
    worker = SFTWorker(cfg)
    info = worker.init_worker()
    assert info["dataset_stats"][:2] == ["action_high", "action_low"]  # no stats in the preset: the dataset's
    before = held_out_loss(worker)
    losses = [worker.train_steps(step, 10)["sft/loss"] for step in range(0, 40, 10)]
    assert all(np.isfinite(losses))
    after = held_out_loss(worker)
    assert after < 0.8 * before, (before, after, losses)  # flow matching has a floor: the noise it cannot predict
    worker.save_policy(str(tmp_path / "policy"))
    loaded = policy_class(name).from_pretrained(tmp_path / "policy")
    assert loaded.config.action_low == worker.policy.config.action_low  # the statistics travel with it
    obs, _, _ = worker.dataset.sample([0, 1], 1)
    assert loaded.act(obs, deterministic=True).actions.shape == (2, preset["action_chunk"], preset["action_dim"])


def test_compiled_layers_train_like_eager_ones_and_save_the_same_checkpoint(tmp_path, monkeypatch):
    """sft.compile: every layer compiled, no graph break, the same losses and weights as eager steps. The backend
    is aot_eager here (dynamo's capture and AOTAutograd's joint graph, no code generation: seconds, not a minute)."""
    import torch._dynamo

    from rlinf_embodied.workers import sft_worker

    monkeypatch.setattr(sft_worker, "COMPILE_BACKEND", "aot_eager")
    preset = policy_class("pi0").presets["tiny"]
    dataset = write_image_dataset(tmp_path / "ds", preset["state_dim"], preset["action_dim"], preset["image_size"])
    workers, losses = {}, {}
    for compiled in (False, True):
        cfg = SFTRunConfig()
        cfg.policy.name, cfg.policy.size = "pi0", "tiny"
        cfg.policy.overrides = {"vlm_depth": 6}  # 12 Gemma layers: more than dynamo's 8 recompiles of one frame
        cfg.sft.dataset, cfg.sft.batch_size, cfg.sft.warmup_steps, cfg.sft.compile = dataset, 8, 1, compiled
        cfg.sft.ema_decay, cfg.sft.val_episodes = 0.9, 1  # the validation swaps the averages into compiled layers
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        worker = workers[compiled] = SFTWorker(cfg)
        worker.init_worker()
        losses[compiled] = [worker.train_steps(step, 1)["sft/loss"] for step in range(3)]
    layers = workers[True].policy.fsdp_units()
    assert layers and all(layer._compiled_call_impl is not None for layer in layers)
    assert not workers[False].policy.fsdp_units()[0]._compiled_call_impl
    counters = torch._dynamo.utils.counters
    assert not counters["graph_break"] and not counters["unimplemented"], dict(counters["unimplemented"])
    # one graph per layer stack (vision, VLM, expert): no layer specialised on its index
    assert counters["stats"]["unique_graphs"] == 3 and counters["frames"]["ok"] == counters["frames"]["total"]
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-5)
    probes = {}
    for compiled, worker in workers.items():  # the no-grad forwards (image probe) run compiled layers too
        torch.manual_seed(0)  # the same flow noise for both (one process: the global generator is shared)
        probes[compiled] = worker.probe_image_reliance(preset["action_chunk"])
    np.testing.assert_allclose(probes[True], probes[False], rtol=1e-5)
    chunk = preset["action_chunk"]
    assert workers[True].validation_loss(chunk) == pytest.approx(workers[False].validation_loss(chunk), rel=1e-5)
    for compiled, worker in workers.items():
        worker.save_policy(str(tmp_path / f"policy_{compiled}"))
    eager, compiled = (
        policy_class("pi0").from_pretrained(tmp_path / f"policy_{c}").state_dict() for c in (False, True)
    )
    assert eager.keys() == compiled.keys()  # no "_orig_mod." prefixes: checkpoints load anywhere
    for key in eager:
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-4, atol=1e-6)


def test_compile_is_refused_where_it_cannot_apply(tmp_path):
    cfg = SFTRunConfig()
    cfg.sft.dataset, cfg.sft.compile = write_state_dataset(tmp_path / "ds", episodes=1, length=3), True
    with pytest.raises(ValueError, match=r"sft.compile=true compiles .*policy 'mlp' defines none.*pi0"):
        check_sft_config(cfg)  # before any process starts
    with pytest.raises(ValueError, match=r"sft.compile=true compiles .*policy 'mlp' defines none.*pi0"):
        SFTWorker(cfg).init_worker()
    from rlinf_embodied.workers.sft_worker import compile_layers

    with pytest.raises(ValueError, match=r"one actor rank; this run has 2 \(FSDP\)"):
        compile_layers(make_policy("pi0", size="tiny"), world_size=2)
    # gradient checkpointing (pi0-3b's preset) would leave the layers uncompiled: refused before the run
    preset = policy_class("pi0").presets["tiny"]
    cfg.sft.dataset = write_image_dataset(
        tmp_path / "images", preset["state_dim"], preset["action_dim"], preset["image_size"]
    )
    cfg.policy.name, cfg.policy.size, cfg.policy.overrides = "pi0", "tiny", {"gradient_checkpointing": True}
    with pytest.raises(ValueError, match=r"gradient_checkpointing=true: torch.compile stops .*=false"):
        check_sft_config(cfg)
    cfg.policy.overrides = {}
    check_sft_config(cfg)  # without it, accepted
    # the check builds the config at the dataset's dims: a dim hidden beyond the preset's state_dim is accepted
    wide = preset["state_dim"] + 4
    cfg.sft.dataset = write_image_dataset(tmp_path / "wide", wide, preset["action_dim"], preset["image_size"])
    cfg.policy.overrides = {"ignore_state_dims": [0, wide - 1]}
    check_sft_config(cfg)
    cfg.policy.overrides = {"ignore_state_dims": [wide]}
    with pytest.raises(ValueError, match=rf"ignore_state_dims \[{wide}\] are not state dims \(state_dim={wide}"):
        check_sft_config(cfg)


def test_sft_checkpoint_holds_the_average_not_the_last_step(tmp_path):
    preset = policy_class("pi0").presets["tiny"]
    cfg = SFTRunConfig()
    cfg.policy.name, cfg.policy.size = "pi0", "tiny"
    cfg.sft.dataset = write_image_dataset(
        tmp_path / "ds", preset["state_dim"], preset["action_dim"], preset["image_size"], ("rgb",)
    )
    cfg.sft.batch_size, cfg.sft.lr, cfg.sft.warmup_steps, cfg.sft.ema_decay = 8, 3e-3, 1, 0.95
    worker = SFTWorker(cfg)
    worker.init_worker()
    metrics = worker.train_steps(0, 12)
    assert np.isfinite(metrics["sft/loss"]) and worker.ema.updates == 12
    live = {name: p.detach().clone() for name, p in worker.policy.named_parameters() if p.requires_grad}
    worker.save_policy(str(tmp_path / "policy"))
    saved = dict(policy_class("pi0").from_pretrained(tmp_path / "policy").named_parameters())
    averages = dict(zip([n for n, p in worker.policy.named_parameters() if p.requires_grad], worker.ema.averages))
    name = next(n for n in live if n.startswith("action_expert."))
    torch.testing.assert_close(saved[name].detach(), averages[name].to(saved[name].dtype))
    assert not torch.allclose(saved[name].detach(), live[name])
    for key, value in live.items():  # training goes on from the live weights
        torch.testing.assert_close(dict(worker.policy.named_parameters())[key].detach(), value, rtol=0, atol=0)


def tiny_pi0_sft_config(tmp_path) -> SFTRunConfig:
    """pi0 tiny on a two-camera image dataset, with an EMA and image shifts: every random stream SFT has."""
    preset = policy_class("pi0").presets["tiny"]
    cfg = SFTRunConfig()
    cfg.policy.name, cfg.policy.size = "pi0", "tiny"
    cfg.sft.dataset = write_image_dataset(
        tmp_path / "ds", preset["state_dim"], preset["action_dim"], preset["image_size"], ("rgb", "wrist_rgb")
    )
    cfg.sft.batch_size, cfg.sft.lr, cfg.sft.warmup_steps, cfg.sft.ema_decay, cfg.sft.image_shift = 8, 3e-3, 2, 0.9, 2
    return cfg


def test_sft_resumed_from_its_training_state_continues_exactly(tmp_path):
    """6 steps, save, a fresh worker loads and does 6 more == 12 steps in one go: weights, EMA, losses. The data
    order (samplers part-way through an epoch), image shifts and flow noise all continue where they were."""
    cfg = tiny_pi0_sft_config(tmp_path)
    straight = SFTWorker(cfg)
    straight.init_worker()
    first = straight.train_steps(0, 6)
    expected = straight.train_steps(6, 6)

    stopped = SFTWorker(cfg)
    stopped.init_worker()
    assert stopped.train_steps(0, 6)["sft/loss"] == first["sft/loss"]
    stopped.save_training_state(str(tmp_path / "ckpt"), 6)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["actor.pt", "sft_rank0.pt"]
    resumed = SFTWorker(cfg)
    resumed.init_worker()
    assert resumed.load_training_state(str(tmp_path / "ckpt")) == 6
    assert resumed.train_steps(6, 6)["sft/loss"] == expected["sft/loss"]
    for (name, a), b in zip(straight.policy.named_parameters(), resumed.policy.parameters()):
        assert torch.equal(a, b), name
    assert resumed.ema.updates == straight.ema.updates == 12
    for a, b in zip(straight.ema.averages, resumed.ema.averages):
        assert torch.equal(a, b)

    cfg.sft.ema_decay = 0.0  # a run that keeps no average cannot continue one that did
    plain = SFTWorker(cfg)
    plain.init_worker()
    with pytest.raises(ValueError, match=r"saved with an EMA.*sft.ema_decay=0.0"):
        plain.load_training_state(str(tmp_path / "ckpt"))


def test_sft_resume_says_what_a_directory_without_training_state_is(tmp_path):
    """Before: every such directory was called checkpoints/best and sent to <dir>/policy: an empty directory (which
    has no policy/), an RL checkpoint, and an existing file (reported as "does not exist")."""
    cfg = SFTRunConfig()
    cfg.sft.dataset = write_state_dataset(tmp_path / "ds", episodes=1, length=3)
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg.sft.resume = str(empty)
    with pytest.raises(FileNotFoundError, match=r"holds no training state .*; pass a checkpoints/<name>") as error:
        check_sft_config(cfg)
    assert "policy.checkpoint" not in str(error.value) and "checkpoints/best" not in str(error.value)
    rl = tmp_path / "rl" / "checkpoints" / "iteration_000003"
    make_policy("mlp", size="tiny", action_dim=8, state_dim=4).save_pretrained(rl / "policy")
    (rl / "actor.pt").write_bytes(b"")
    cfg.sft.resume = str(rl)
    with pytest.raises(
        FileNotFoundError,
        match=rf"missing sft.json, sft_rank0.pt\); it is an RL checkpoint .*runner.resume={re.escape(str(rl))} .*"
        rf"policy.checkpoint={re.escape(str(rl / 'policy'))}$",
    ):
        check_sft_config(cfg)
    cfg.sft.resume = str(rl.parent.parent)  # the SFT run directory level: its checkpoints are listed
    sft_ckpt = tmp_path / "rl" / "checkpoints" / "step_000010"
    sft_ckpt.mkdir()
    for name in ("sft.json", "actor.pt", "sft_rank0.pt"):
        (sft_ckpt / name).write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"; checkpoints below it: '.*step_000010'$"):
        check_sft_config(cfg)
    saved = tmp_path / "saved"
    make_policy("mlp", size="tiny", action_dim=8, state_dim=4).save_pretrained(saved)
    cfg.sft.resume = str(saved)
    with pytest.raises(
        FileNotFoundError, match=rf"saved by save_pretrained .*policy.checkpoint={re.escape(str(saved))}$"
    ):
        check_sft_config(cfg)
    cfg.sft.resume = str(saved / "config.json")
    with pytest.raises(
        FileNotFoundError,
        match=rf"sft.resume='.*config.json' is a file, not a directory \(the checkpoint is the directory holding it, "
        rf"{re.escape(str(saved))}\)",
    ):
        check_sft_config(cfg)


def test_sft_resume_and_batch_mismatches_are_refused_before_ray(tmp_path):
    """Probe 63 #8, #9: before, an sft.resume of another architecture and an sft.batch_size that does not split over
    the actor GPUs were refused only once Ray and the SFT worker had started (about 30 s on 2 CPU cores)."""
    cfg = SFTRunConfig()
    cfg.sft.dataset = write_state_dataset(tmp_path / "ds", episodes=1, length=3)
    ckpt = tmp_path / "checkpoints" / "step_000010"
    make_policy("mlp", size="tiny", action_dim=8, state_dim=4, hidden_dim=32).save_pretrained(ckpt / "policy")
    (ckpt / "sft.json").write_text(
        json.dumps({"step": 10, "dataset": os.path.abspath(cfg.sft.dataset), "policy": "mlp"})
    )
    for name in ("actor.pt", "sft_rank0.pt"):
        (ckpt / name).write_bytes(b"")
    cfg.sft.resume, cfg.policy.size = str(ckpt), "tiny"
    cfg.policy.overrides = {"hidden_dim": 32}
    check_sft_config(cfg)
    cfg.policy.overrides = {"hidden_dim": 64}
    with pytest.raises(ValueError, match=r"sft.resume=.*hidden_dim"):
        check_sft_config(cfg)
    cfg.sft.resume, cfg.policy.overrides = None, {}
    cfg.cluster.num_gpus_per_node, cfg.sft.batch_size = 2, 63
    with pytest.raises(ValueError, match=r"sft.batch_size=63 does not split evenly over 2 actor GPUs"):
        check_sft_config(cfg)


def test_sft_resume_in_another_env_compares_the_datasets_dims_not_the_envs(tmp_path):
    """SFT's policy takes the dataset's dims, so the pre-Ray resume check compares the checkpoint with them: before,
    it read the dims off this run's env where env.id was not the checkpoint's (as train's check does), and refused a
    PickCube-dataset checkpoint resumed with env.id=PushCube (which SFT allows, warning) as a model of state_dim 35,
    after building a PushCube env."""
    from rlinf_embodied.envs.action_settings import write_action_settings

    cfg = SFTRunConfig()
    cfg.sft.dataset = write_state_dataset(tmp_path / "ds", episodes=1, length=3)
    ckpt = tmp_path / "checkpoints" / "step_000010"
    policy_dir = ckpt / "policy"
    make_policy("mlp", size="tiny", action_dim=MANISKILL_ACTION_DIM, state_dim=MANISKILL_STATE_DIM).save_pretrained(
        policy_dir
    )
    write_action_settings(str(policy_dir), "rlinf/ManiSkill-PickCube", {"control_mode": "pd_joint_delta_pos"})
    (ckpt / "sft.json").write_text(
        json.dumps({"step": 10, "dataset": os.path.abspath(cfg.sft.dataset), "policy": "mlp"})
    )
    for name in ("actor.pt", "sft_rank0.pt"):
        (ckpt / name).write_bytes(b"")
    cfg.sft.resume, cfg.policy.size = str(ckpt), "tiny"
    cfg.env.id, cfg.env.kwargs = "rlinf/ManiSkill-PushCube", {"control_mode": "pd_joint_delta_pos"}
    check_sft_config(cfg)
    cfg.policy.overrides = {"hidden_dim": 64}  # what does differ is still refused
    with pytest.raises(ValueError, match=r"sft.resume=.*different model.*hidden_dim: checkpoint 32, this run 64"):
        check_sft_config(cfg)


def test_sft_resume_names_what_is_wrong_with_the_checkpoint(tmp_path):
    cfg = SFTRunConfig()
    cfg.sft.dataset = write_state_dataset(tmp_path / "ds", episodes=1, length=3)
    cfg.sft.resume = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"sft.resume=.*nowhere.* does not exist.*step_XXXXXX"):
        check_sft_config(cfg)
    best = tmp_path / "checkpoints" / "best"
    (best / "policy").mkdir(parents=True)
    (best / "sft.json").write_text(json.dumps({"step": 50, "dataset": cfg.sft.dataset, "policy": "mlp"}))
    cfg.sft.resume = str(best)
    with pytest.raises(FileNotFoundError, match=r"no training state \(missing actor.pt, sft_rank0.pt\)") as error:
        check_sft_config(cfg)
    assert "policy.checkpoint=" not in str(error.value)  # its policy/ holds no saved policy to point to
    (best / "policy" / "config.json").write_text("{}")
    with pytest.raises(
        FileNotFoundError,
        match=r"no training state \(missing actor.pt, sft_rank0.pt\); it keeps only the policy \(as checkpoints/best "
        r"does\).*policy.checkpoint=.*best/policy$",
    ):
        check_sft_config(cfg)
    for name in ("actor.pt", "sft_rank0.pt"):
        (best / name).write_bytes(b"")
    check_sft_config(cfg)
    cfg.sft.resume = str(best / "policy")  # before: "missing ...", then policy.checkpoint=<it>/policy
    with pytest.raises(
        FileNotFoundError,
        match=rf"missing sft.json, actor.pt, sft_rank0.pt\); it is the policy directory inside the checkpoint "
        rf"'{re.escape(str(best))}' .*: pass the checkpoint itself, sft.resume={re.escape(str(best))}$",
    ):
        check_sft_config(cfg)
    cfg.sft.resume = str(best)
    cfg.sft.max_steps = 50
    with pytest.raises(ValueError, match=r"at step 50 and sft.max_steps=50: nothing is left.*above 50"):
        check_sft_config(cfg)
    cfg.sft.max_steps = 100
    cfg.sft.dataset = write_state_dataset(tmp_path / "other", episodes=1, length=3)
    with pytest.raises(ValueError, match=r"trained on sft.dataset=.*ds.*this run names .*other"):
        check_sft_config(cfg)


def test_sft_worker_shifts_every_camera_of_each_training_batch(tmp_path, monkeypatch):
    import rlinf_embodied.workers.sft_worker as sft_worker

    preset = policy_class("pi0").presets["tiny"]
    cfg = SFTRunConfig()
    cfg.policy.name, cfg.policy.size = "pi0", "tiny"
    cfg.sft.dataset = write_image_dataset(
        tmp_path / "ds", preset["state_dim"], preset["action_dim"], preset["image_size"], ("rgb", "wrist_rgb")
    )
    cfg.sft.batch_size, cfg.sft.image_shift = 4, 3
    calls, original = [], sft_worker.random_shift

    def recording_shift(images, max_shift, generator):
        calls.append((tuple(images.shape), max_shift))
        return original(images, max_shift, generator)

    monkeypatch.setattr(sft_worker, "random_shift", recording_shift)
    worker = SFTWorker(cfg)
    worker.init_worker()
    worker.train_steps(0, 2)
    size = preset["image_size"]
    assert calls == [((4, size, size, 3), 3)] * 4  # 2 steps x 2 cameras


def test_sft_validation_holds_out_the_last_episodes(tmp_path):
    """sft.val_episodes: training draws only earlier episodes' frames; sft/val_loss comes every val_interval steps,
    and for unchanged weights it is the same number (fixed batch, noise and times)."""
    cfg = tiny_pi0_sft_config(tmp_path)  # 4 episodes x 10 frames
    cfg.sft.val_episodes, cfg.sft.val_interval = 1, 4
    worker = SFTWorker(cfg)
    assert worker.init_worker()["train_frames"] == 30
    drawn = torch.cat([worker.sampler.next(8) for _ in range(20)])  # 160 draws: every training frame, 5 epochs
    assert set(drawn.tolist()) == set(range(30))
    assert worker.val_frames.min() >= 30 and len(worker.val_frames) == 8
    chunk = worker.policy.config.action_chunk
    assert worker.validation_loss(chunk) == worker.validation_loss(chunk)
    logged = [worker.train_steps(step, 2) for step in range(0, 8, 2)]  # steps 0-7: val at the ends of 4 and 8
    assert ["sft/val_loss" in metrics for metrics in logged] == [False, True, False, True]
    assert logged[1]["sft/val_loss"] != logged[3]["sft/val_loss"]  # the weights moved


def test_sft_validation_cannot_hold_out_every_episode(tmp_path):
    cfg = tiny_pi0_sft_config(tmp_path)
    cfg.sft.val_episodes = 4
    with pytest.raises(ValueError, match=r"sft.val_episodes=4 holds out every episode.*valid values are 0 .. 3"):
        check_sft_config(cfg)  # before any process starts
    with pytest.raises(ValueError, match=r"sft.val_episodes=4 holds out every episode.*valid values are 0 .. 3"):
        SFTWorker(cfg).init_worker()
    with pytest.raises(ValueError, match=r"sft.val_interval=0 must be >= 1"):
        SFTConfig(val_interval=0)


def held_out_loss(worker: SFTWorker) -> float:
    """The imitation loss on every frame with fixed flow noise and times (the training loss is noisy)."""
    policy, ds = worker.policy, worker.dataset
    obs, actions, is_pad = ds.sample(torch.arange(ds.num_frames), policy.config.action_chunk)
    fixed = {}
    if policy.name == "pi0":
        generator = torch.Generator().manual_seed(0)
        fixed["noise"] = torch.randn(
            ds.num_frames, policy.config.action_chunk, policy.config.max_action_dim, generator=generator
        )
        fixed["tau"] = torch.linspace(0.05, 0.95, ds.num_frames)
    with torch.no_grad():
        return float(policy.sft_loss(obs, actions, is_pad, **fixed))


# ---- demonstrations -> python -m rlinf_embodied.sft -> checkpoint -> RL ------------------------------
@pytest.fixture(scope="module")
def cluster(ray_session):
    from rlinf_embodied.scheduler import Cluster

    return Cluster(num_nodes=1, num_gpus_per_node=1, simulate_gpus=True)  # joins the session's Ray


def compose_sft(overrides: list[str]) -> SFTRunConfig:
    return compose_config("sft", overrides)


@pytest.mark.slow
def test_mlp_bc_then_rl_on_maniskill(cluster, tmp_path):
    dataset = write_state_dataset(tmp_path / "demos")
    out = tmp_path / "sft"
    cfg = compose_sft(
        [
            f"sft.dataset={dataset}",
            "policy.size=tiny",
            "sft.max_steps=150",
            "sft.batch_size=32",
            "sft.lr=3e-3",
            "sft.warmup_steps=5",
            "sft.log_interval=25",
            "sft.save_interval=100",
            "sft.eval_interval=150",
            "sft.eval_episodes=2",
            "env.num_envs=2",
            "env.max_episode_steps=4",
            "sft.progress=false",
            f"sft.output_dir={out}",
        ]
    )
    assert cfg.env.kwargs["control_mode"] == "pd_joint_delta_pos" and cfg.policy.name == "mlp"
    history = run_sft(cfg, str(out), cluster=cluster)
    assert [m["step"] for m in history] == [25, 50, 75, 100, 125, 150]
    assert history[-1]["sft/loss"] < history[0]["sft/loss"] - 0.4  # Gaussian NLL per action dim
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"sft/loss", "sft/grad_norm", "sft/lr", "time/step"} <= set(records[0])
    assert records[-1]["eval/num_episodes"] == 2 and 0.0 <= records[-1]["eval/success_once"] <= 1.0
    # the pauses training waits for: saves (steps 100 and 150) and the evaluation (step 150), timed
    assert [r["step"] for r in records if "time/save_seconds" in r] == [100, 150]
    assert [r["step"] for r in records if "time/eval_seconds" in r] == [150] and records[-1]["time/eval_seconds"] > 0
    for name in ("step_000100", "final", "best"):
        assert (out / "checkpoints" / name / "policy" / "model.safetensors").is_file(), name
    assert not (out / "checkpoints" / "_eval").exists()

    policy = policy_class("mlp").from_pretrained(out / "checkpoints" / "final" / "policy")
    states = torch.randn(64, MANISKILL_STATE_DIM, generator=torch.Generator().manual_seed(5))
    actions = policy.act({"state": states}, deterministic=True).actions
    assert actions.shape == (64, 1, MANISKILL_ACTION_DIM)
    error = (actions[:, 0] - torch.from_numpy(expert_action(states.numpy()))).abs().mean()
    untrained = (torch.from_numpy(expert_action(states.numpy()))).abs().mean()
    assert error < 0.5 * untrained  # it imitates the expert on fresh states

    rl = TrainConfig()
    rl.env.num_envs, rl.env.max_episode_steps = 2, 6
    rl.env.kwargs = {"control_mode": "pd_joint_delta_pos", "reward_mode": "normalized_dense"}
    rl.policy.checkpoint = str(out / "checkpoints" / "final" / "policy")
    rl.runner.rollout_steps, rl.runner.max_iterations, rl.runner.progress = 8, 1, False
    rl.algorithm.update_epochs, rl.algorithm.num_minibatches = 1, 2
    from rlinf_embodied.runners.embodied_runner import EmbodiedRunner

    runner = EmbodiedRunner(rl, cluster, str(tmp_path / "rl"))
    try:
        (metrics,) = runner.run()
    finally:
        runner.shutdown()
    assert np.isfinite(metrics["train/loss"]) and metrics["time/env_steps"] == 16
    # Before any optimizer step the actor reproduces the rollout's log-probs of the SFT weights.
    assert abs(metrics["train/initial_approx_kl"]) < 1e-3


@pytest.mark.slow
def test_sft_stops_at_the_first_evaluation_reaching_its_target(cluster, tmp_path):
    dataset = write_state_dataset(tmp_path / "demos")
    out = tmp_path / "sft"
    overrides = [f"sft.dataset={dataset}", "policy.size=tiny", "sft.max_steps=150", "sft.batch_size=32"]
    overrides += ["sft.log_interval=25", "sft.eval_interval=50", "sft.eval_episodes=2", "env.num_envs=2"]
    overrides += ["env.max_episode_steps=4", "sft.progress=false", f"sft.output_dir={out}"]
    history = run_sft(compose_sft(overrides + ["sft.stop_at_success=0.0"]), str(out), cluster=cluster)
    assert [m["step"] for m in history] == [25, 50]  # any success rate reaches 0.0
    assert json.loads((out / "checkpoints" / "final" / "sft.json").read_text())["step"] == 50
    assert (out / "checkpoints" / "best" / "policy" / "model.safetensors").is_file()


@pytest.mark.slow
def test_evaluations_beside_training_log_what_waiting_ones_do(cluster, tmp_path):
    """sft.eval_async: the evaluation process scores the same weights as the evaluation training waits for, each
    line at the step it evaluated; training's losses are untouched, and no scratch checkpoint is left behind."""
    dataset = write_state_dataset(tmp_path / "demos")
    common = [f"sft.dataset={dataset}", "policy.size=tiny", "sft.max_steps=100", "sft.batch_size=32", "sft.lr=3e-3"]
    common += ["sft.log_interval=25", "sft.eval_interval=50", "sft.eval_episodes=2", "env.num_envs=2"]
    common += ["env.max_episode_steps=4", "sft.progress=false"]
    runs = {}
    for eval_async in (False, True):
        out = tmp_path / f"async_{eval_async}"
        cfg = compose_sft(common + [f"sft.eval_async={eval_async}", f"sft.output_dir={out}"])
        runs[eval_async] = run_sft(cfg, str(out), cluster=cluster)
    waiting, beside = runs[False], runs[True]
    evals = {name: [r for r in rows if "eval/success_once" in r] for name, rows in (("w", waiting), ("b", beside))}
    assert [r["step"] for r in evals["w"]] == [r["step"] for r in evals["b"]] == [50, 100]
    for key in ("eval/success_once", "eval/success_rate", "eval/episode_return", "eval/episode_length"):
        assert [r[key] for r in evals["w"]] == [r[key] for r in evals["b"]], key
    assert all(r["time/eval_seconds"] > 0 and r["time/eval_wait_seconds"] >= 0 for r in evals["b"])
    assert all("sft/loss" not in r for r in evals["b"])  # beside training: lines of their own
    losses = {name: [r["sft/loss"] for r in rows if "sft/loss" in r] for name, rows in runs.items()}
    assert losses[True] == losses[False] and len(losses[True]) == 4
    # the last line is the final evaluation's (no loss): the command's summary reads the last training line
    assert "sft/loss" not in beside[-1] and last_training_line(beside)["step"] == 100
    out = tmp_path / "async_True"
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "eval/success_once" in r] == [50, 100]
    assert (out / "checkpoints" / "best" / "policy" / "model.safetensors").is_file()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best", "final"]  # step 50's scratch: gone
    with pytest.raises(ValueError, match=r"sft.eval_async=true .* sft.eval_interval=0"):
        SFTConfig(eval_async=True)
    # stop_at_success acts when an evaluation beside training ends: at the next line (75) or, at the latest, when the
    # next evaluation is due (100). checkpoints/final is the step it scored (probe 63 #2: before, the step training
    # had reached), as checkpoints/best; a result arriving at the run's last step (max_steps=100) is acted on too,
    # the last step's training state then kept as checkpoints/step_000100
    # With lines only at the evaluations' steps (log_interval=50, max_steps=100) step 50's result is always waited
    # for at the last step (before: never acted on there, final held step 100)
    for max_steps, log_interval in ((200, 25), (100, 50)):
        out = tmp_path / f"async_stop_{max_steps}"
        longer = [o.replace("sft.max_steps=100", f"sft.max_steps={max_steps}") for o in common]
        longer = [o.replace("sft.log_interval=25", f"sft.log_interval={log_interval}") for o in longer]
        cfg = compose_sft(longer + ["sft.eval_async=true", "sft.stop_at_success=0.0", f"sft.output_dir={out}"])
        history = run_sft(cfg, str(out), cluster=cluster)
        assert json.loads((out / "checkpoints" / "final" / "sft.json").read_text())["step"] == 50
        assert not (out / "checkpoints" / "final" / "actor.pt").exists()  # training went on past step 50
        assert json.loads((out / "checkpoints" / "best" / BEST_FILE).read_text())["step"] == 50
        last_step = [r["step"] for r in history if "sft/loss" in r][-1]
        assert last_step in (75, 100) and [r["step"] for r in history if "eval/success_once" in r] == [50]
        if max_steps == 100:
            assert last_step == 100
        if last_step == max_steps:
            assert json.loads((out / "checkpoints" / "step_000100" / "sft.json").read_text())["step"] == 100
            assert (out / "checkpoints" / "step_000100" / "actor.pt").is_file()  # its training state, kept


@pytest.mark.slow
def test_an_eval_env_that_cannot_run_stops_training_beside_it(cluster, tmp_path):
    """sft.eval_async: the start checks no env of its own; the evaluation process's build fails, and the run stops
    at a log line soon after, long before the first evaluation (step 20,000) or the end."""
    from rlinf_embodied.envs.maniskill.headless import render_device_available

    if render_device_available():
        pytest.skip("this machine renders: rgb ManiSkill would run")
    dataset = write_state_dataset(tmp_path / "demos", episodes=1, length=3)
    out = tmp_path / "sft"
    overrides = [f"sft.dataset={dataset}", "policy.size=tiny", "sft.max_steps=40000", "sft.batch_size=4"]
    overrides += ["sft.log_interval=25", "sft.eval_interval=20000", "sft.eval_async=true", "sft.eval_episodes=2"]
    overrides += ["env.num_envs=2", "env.obs_mode=rgb", "sft.progress=false", f"sft.output_dir={out}"]
    with pytest.raises(Exception, match=r"sft.eval_interval=20000 .*cannot run here"):
        run_sft(compose_sft(overrides), str(out), cluster=cluster)
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps and max(steps) < 20000 and not (out / "checkpoints" / "final").exists()


@pytest.mark.slow
def test_sft_stopped_by_a_signal_resumes_to_the_same_weights(cluster, tmp_path, monkeypatch):
    """Ctrl-C arriving as step 50's line is logged: step_000050 is saved and the run stops; `sft.resume=` of it in
    the same directory runs steps 75-100 to the weights and losses of an uninterrupted run, each step logged once."""
    import rlinf_embodied.runners.sft_runner as sft_runner
    from rlinf_embodied.runners.interrupts import StopRequest

    dataset = write_state_dataset(tmp_path / "demos")
    common = [f"sft.dataset={dataset}", "policy.size=tiny", "sft.max_steps=100", "sft.batch_size=32", "sft.lr=3e-3"]
    common += ["sft.warmup_steps=5", "sft.log_interval=25", "sft.progress=false"]
    full = run_sft(
        compose_sft(common + [f"sft.output_dir={tmp_path / 'full'}"]), str(tmp_path / "full"), cluster=cluster
    )

    out, stop = tmp_path / "stopped", StopRequest()

    class SignalAtStep50(sft_runner.MetricsLogger):
        def log(self, iteration, metrics):
            super().log(iteration, metrics)
            if iteration == 50:
                stop.request(2)  # SIGINT

    monkeypatch.setattr(sft_runner, "MetricsLogger", SignalAtStep50)
    stopped = run_sft(compose_sft(common + [f"sft.output_dir={out}"]), str(out), cluster=cluster, stop=stop)
    assert [m["step"] for m in stopped] == [25, 50]
    assert (stop.checkpoint, stop.iteration) == (str(out / "checkpoints" / "step_000050"), 50)
    monkeypatch.undo()

    resumed_cfg = compose_sft(common + [f"sft.output_dir={out}", f"sft.resume={stop.checkpoint}"])
    resumed = run_sft(resumed_cfg, str(out), cluster=cluster)
    assert [m["step"] for m in resumed] == [75, 100]
    assert [m["sft/loss"] for m in resumed] == [m["sft/loss"] for m in full[2:]]
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [25, 50, 75, 100]
    weights = [
        policy_class("mlp").from_pretrained(d / "checkpoints" / "final" / "policy") for d in (tmp_path / "full", out)
    ]
    for (name, a), b in zip(weights[0].state_dict().items(), weights[1].state_dict().values()):
        assert torch.equal(a, b), name


def test_an_sft_step_reads_nothing_back_and_keeps_its_action_bounds_on_the_device(tmp_path):
    """CPU side of the GPU test below: a step's pieces as device scalars (no host float), and the action statistics
    made into tensors once, not per step."""
    cfg = tiny_pi0_sft_config(tmp_path)
    worker = SFTWorker(cfg)
    worker.init_worker()
    trainable = [p for group in worker.optimizer.param_groups for p in group["params"]]
    loss, grad_norm = worker._optimizer_step(1e-3, worker.policy.config.action_chunk, trainable, 1.0)
    assert isinstance(loss, torch.Tensor) and loss.dtype == torch.float32 and loss.ndim == 0 and loss > 0
    assert isinstance(grad_norm, torch.Tensor) and grad_norm > 0
    assert all(group["lr"] == 1e-3 for group in worker.optimizer.param_groups)
    policy = worker.policy
    low, high = policy.action_bounds(torch.device("cpu"), torch.float32)
    assert policy.action_bounds(torch.device("cpu"), torch.float32)[0] is low  # cached
    assert low.tolist() == pytest.approx(policy.config.action_low) and high.tolist() == pytest.approx(
        policy.config.action_high
    )
    policy.config.action_high = [value + 1.0 for value in policy.config.action_high]  # new statistics: new tensors
    assert policy.action_bounds(torch.device("cpu"), torch.float32)[1].tolist() == pytest.approx(
        policy.config.action_high
    )


@pytest.mark.gpu
def test_an_sft_step_queues_its_work_without_waiting_for_the_gpu(tmp_path):
    """Stop 39: blocking host-to-device copies in every step (random shifts, prompt tokens, flow times, action
    statistics) made the host wait for the GPU's queue before launching more kernels, so the compiled pi0-small
    step kept an H200 busy 39% of the time. A whole step, with image shifts and an EMA, must not synchronise."""
    cfg = tiny_pi0_sft_config(tmp_path)
    cfg.policy.precision, cfg.sft.data_on_device = "bf16", True
    worker = SFTWorker(cfg)
    worker.device = torch.device("cuda")
    worker.init_worker()
    worker.train_steps(0, 1)  # first-use work: prompt tokens, action statistics, the optimizer's state
    trainable = [p for group in worker.optimizer.param_groups for p in group["params"]]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            loss, _ = worker._optimizer_step(1e-3, worker.policy.config.action_chunk, trainable, 1.0)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss)


# ---- checks added after the careful-user probe ----------------------------------------------------------------
def test_a_damaged_dataset_is_refused_before_any_process_starts(tmp_path):
    """Before: check_sft_config read only meta/info.json; a missing tasks.jsonl failed as KeyError: 0 in the worker."""
    cfg = SFTRunConfig()
    cfg.sft.dataset = write_state_dataset(tmp_path / "ds", episodes=2, length=3)
    os.remove(os.path.join(cfg.sft.dataset, "meta", "tasks.jsonl"))
    with pytest.raises(FileNotFoundError, match=r"ds/meta/tasks.jsonl is missing"):
        check_sft_config(cfg)


def test_image_shift_needs_a_camera_policy_and_fits_the_images(tmp_path):
    """Before: sft.image_shift=4 trained an mlp (which reads no camera) unchanged, and sft.image_shift=100 on 32 px
    frames trained on images shifted into their border pixels."""
    cfg = SFTRunConfig()
    cfg.sft.dataset = write_image_dataset(tmp_path / "images", MANISKILL_STATE_DIM, MANISKILL_ACTION_DIM, 32)
    cfg.sft.image_shift = 4
    with pytest.raises(ValueError, match=r"sft.image_shift=4 would change nothing: policy 'mlp' reads no camera"):
        check_sft_config(cfg)
    cfg.policy.name = "cnn"
    check_sft_config(cfg)
    cfg.sft.image_shift = 16
    with pytest.raises(ValueError, match=r"sft.image_shift=16 is at least half .*\[32, 32\].*valid values are 0 .. 15"):
        check_sft_config(cfg)
    cfg.sft.image_shift = 15
    check_sft_config(cfg)


def test_image_shift_is_kept_for_an_upstream_checkpoint_whose_cameras_are_known_only_once_built():
    """An upstream OpenVLA folder (converted on load) resolves to no config before it is built: its cameras are
    unknown, so the shift is not refused as unread (the size bound still holds)."""
    from rlinf_embodied.runners.sft_runner import check_image_shift

    cfg = SFTRunConfig()
    cfg.policy.name, cfg.sft.image_shift = "openvla", 4
    check_image_shift(cfg, {"rgb": [32, 32, 3]}, None)
    cfg.sft.image_shift = 16
    with pytest.raises(ValueError, match=r"sft.image_shift=16 is at least half"):
        check_image_shift(cfg, {"rgb": [32, 32, 3]}, None)


class _Done:
    def __init__(self, value=None):
        self.value = value

    def wait(self):
        return [self.value]

    def done(self):
        return True


class _FakeGroup:
    """The SFTWorker group calls SFTRunner.evaluate / _start_eval make, without Ray: save_policy writes a file."""

    def save_policy(self, directory):
        os.makedirs(directory, exist_ok=True)
        open(os.path.join(directory, "model.safetensors"), "w").close()
        return _Done()

    def offload(self):
        return _Done()

    def onload(self):
        return _Done()

    def execute_on(self, rank):
        return self

    def evaluate_checkpoint(self, policy_dir, eval_dir):
        return _Done({"eval/success_once": 0.5})


def _runner_without_workers(tmp_path):
    from rlinf_embodied.runners.sft_runner import SFTRunner

    runner = SFTRunner.__new__(SFTRunner)
    runner.cfg = SFTRunConfig()
    runner.cfg.sft.dataset = write_state_dataset(tmp_path / "ds", episodes=2, length=3, first_seed=7)
    runner.output_dir, runner.best_eval_success = str(tmp_path / "out"), -float("inf")
    runner.group = runner.eval_group = _FakeGroup()
    runner.eval_env_build = None
    return runner


@pytest.mark.parametrize("beside_training", [False, True])
def test_best_checkpoint_from_an_evaluation_between_saves_records_the_demonstrations(tmp_path, beside_training):
    """Before: checkpoints/best moved from the evaluation's scratch folder had no demonstrations.json, so eval
    could score it on its own demonstration seeds."""
    from rlinf_embodied.datasets.demo_seeds import read_demo_seeds

    runner = _runner_without_workers(tmp_path)
    if beside_training:
        runner._start_eval(10, None)
        runner._keep_if_best(10, runner.pending_eval.directory, 0.5, move=True)
    else:
        runner.evaluate(10, None)
    record = read_demo_seeds(os.path.join(runner.output_dir, "checkpoints", "best", "policy"))
    assert record is not None and record["seeds"] == [7, 8]


def test_held_out_episodes_without_frames_are_an_error():
    """A reader that let empty episodes through would hold out no frames: sft/val_loss never came."""
    from types import SimpleNamespace

    from rlinf_embodied.workers.sft_worker import held_out_start

    dataset = SimpleNamespace(num_frames=5, num_episodes=2, episode_bounds=lambda: [(0, 5), (5, 5)])
    with pytest.raises(ValueError, match=r"sft.val_episodes=1: the last 1 episode\(s\) of .* hold no frames"):
        held_out_start(dataset, 1, "ds")


def test_sft_into_a_directory_holding_a_run_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    """As train's (claim_output_dir): before, a second SFT into the same sft.output_dir truncated its metrics.jsonl
    and mixed the two runs' checkpoints."""
    import logging
    import sys

    from rlinf_embodied import sft
    from rlinf_embodied.runners.metrics_logger import MetricsLogger

    run = tmp_path / "sft_run"
    logger = MetricsLogger(str(run))
    logger.log(0, {"sft/loss": 0.5})
    logger.close()
    before = (run / "metrics.jsonl").read_text()
    started = []
    monkeypatch.setattr(sft, "run_sft", lambda cfg, output_dir, stop=None: started.append(cfg) or [])
    handlers = list(logging.getLogger().handlers)
    argv = ["sft", f"sft.output_dir={run}", f"hydra.run.dir={tmp_path / 'hydra'}", "hydra.output_subdir=null"]
    monkeypatch.setattr(sys, "argv", argv)
    try:
        with pytest.raises(SystemExit):
            sft.main()
    finally:
        for handler in set(logging.getLogger().handlers) - set(handlers):
            logging.getLogger().removeHandler(handler)
            handler.close()
    assert f"sft.output_dir='{run}' already holds a run's outputs (metrics.jsonl" in capsys.readouterr().err
    assert not started and (run / "metrics.jsonl").read_text() == before and not (run / "sft.log").exists()
