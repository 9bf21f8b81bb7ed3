"""A saved policy records the env settings that give its actions their meaning; eval, collect and RL compare."""

import logging

import pytest

from rlinf_embodied.config import EnvConfig, EvalConfig, PolicyConfig
from rlinf_embodied.envs.action_settings import (
    ACTION_SETTINGS_FILE,
    check_action_settings,
    read_action_settings,
    write_action_settings,
)

PICKCUBE = "rlinf/ManiSkill-PickCube"


def saved_policy(tmp_path, **env_kwargs):
    directory = tmp_path / "policy"
    directory.mkdir()
    write_action_settings(str(directory), PICKCUBE, env_kwargs)
    return str(directory)


def test_the_record_round_trips_with_defaults_for_unset_keys(tmp_path):
    directory = saved_policy(tmp_path, control_mode="pd_ee_delta_pos", reward_mode="sparse")
    assert read_action_settings(directory) == {
        "env_id": PICKCUBE,
        "control_mode": "pd_ee_delta_pos",
        "binarize_gripper": False,
    }
    assert read_action_settings(str(tmp_path)) is None and read_action_settings(None) is None


def test_another_control_mode_is_refused_naming_the_trained_one(tmp_path):
    directory = saved_policy(tmp_path, control_mode="pd_ee_delta_pos")
    with pytest.raises(
        ValueError, match=r"control_mode='pd_ee_delta_pos', but this env has .*'pd_ee_target_delta_pos'"
    ):
        check_action_settings(directory, PICKCUBE, {"control_mode": "pd_ee_target_delta_pos"})
    check_action_settings(directory, PICKCUBE, {"control_mode": "pd_ee_delta_pos", "reward_mode": "dense"})


def test_another_env_warns_naming_the_trained_one_and_its_env_groups(tmp_path, caplog):
    directory = saved_policy(tmp_path, control_mode="pd_ee_delta_pos")
    with caplog.at_level(logging.WARNING, logger="rlinf_embodied.envs.action_settings"):
        check_action_settings(directory, "rlinf/ManiSkill-PushCube", {})  # a new task, not necessarily a mistake
    assert "trained on rlinf/ManiSkill-PickCube, and this env is rlinf/ManiSkill-PushCube" in caplog.text
    assert "maniskill_pickcube, maniskill_pickcube_rgb" in caplog.text


def test_an_action_width_unlike_the_envs_is_refused_naming_where_it_was_trained(tmp_path):
    """The README's SFT recipe ends in PickCube (8-D joint deltas); the default train env is PushCube (4-D)."""
    from rlinf_embodied.workers.policy_loading import check_checkpoint_action_dim

    directory = saved_policy(tmp_path, control_mode="pd_joint_delta_pos")
    with pytest.raises(
        ValueError,
        match=r"predicts action_dim=8 but the env expects action_dim=4 \(it was trained on rlinf/ManiSkill-PickCube "
        r"with control_mode='pd_joint_delta_pos', .*env=maniskill_pickcube or env=maniskill_pickcube_rgb\)",
    ):
        check_checkpoint_action_dim(directory, 8, 4)
    check_checkpoint_action_dim(directory, 8, 8)
    with pytest.raises(ValueError, match=r"expects action_dim=4$"):  # no record: the widths alone
        check_checkpoint_action_dim(str(tmp_path), 8, 4)


def test_another_gripper_setting_warns_but_plays(tmp_path, caplog):
    directory = saved_policy(tmp_path, control_mode="pd_ee_delta_pos", binarize_gripper=True)
    with caplog.at_level(logging.WARNING, logger="rlinf_embodied.envs.action_settings"):
        check_action_settings(directory, PICKCUBE, {"control_mode": "pd_ee_delta_pos"})
    assert "env.kwargs.binarize_gripper=True, but this env has env.kwargs.binarize_gripper=False" in caplog.text


def test_eval_and_rl_refuse_before_building_anything(tmp_path):
    from rlinf_embodied.config import compose_config
    from rlinf_embodied.runners.evaluator import evaluate_policy
    from rlinf_embodied.train import check_train_config

    directory = saved_policy(tmp_path, control_mode="pd_ee_delta_pos")
    policy = PolicyConfig(name="mlp", checkpoint=directory)
    env = EnvConfig(id=PICKCUBE, kwargs={"control_mode": "pd_joint_delta_pos"})
    with pytest.raises(ValueError, match=r"set env.kwargs.control_mode=pd_ee_delta_pos"):
        evaluate_policy(env, policy, EvalConfig(num_envs=2, num_episodes=2), str(tmp_path / "out"))
    (tmp_path / "policy" / "config.json").write_text('{"policy": "mlp"}')  # check_policy_config reads its name
    cfg = compose_config("config", ["env=maniskill_pickcube", f"policy.checkpoint={directory}"])
    with pytest.raises(ValueError, match=r"trained on rlinf/ManiSkill-PickCube with env.kwargs.control_mode"):
        check_train_config(cfg)


def test_resuming_in_another_control_mode_is_refused_before_ray_starts(tmp_path):
    from rlinf_embodied.config import compose_config
    from rlinf_embodied.train import check_train_config

    run = tmp_path / "iteration_000003"
    (run / "policy").mkdir(parents=True)
    (run / "actor.pt").write_bytes(b"")  # check_resume_directory looks for the file only
    write_action_settings(str(run / "policy"), PICKCUBE, {"control_mode": "pd_ee_delta_pos"})
    cfg = compose_config("config", ["env=maniskill_pickcube", f"runner.resume={run}"])  # pd_joint_delta_pos
    # names the setting the user gave (before: "policy.checkpoint=.../policy")
    with pytest.raises(
        ValueError,
        match=r"^runner.resume='.*iteration_000003' was trained on rlinf/ManiSkill-PickCube "
        r"with env.kwargs.control_mode='pd_ee",
    ):
        check_train_config(cfg)


def test_a_saved_rl_policy_records_its_env(tmp_path):
    """The actor's save writes the record beside the weights (the runner tests train and save for real)."""
    from types import SimpleNamespace

    from rlinf_embodied.policies import make_policy
    from rlinf_embodied.workers.actor_worker import ActorWorker

    policy = make_policy("mlp", size="tiny", action_dim=4, state_dim=6)
    env = EnvConfig(id=PICKCUBE, kwargs={"control_mode": "pd_ee_delta_pos", "binarize_gripper": True})
    worker = SimpleNamespace(policy=policy, cfg=SimpleNamespace(env=env, policy=PolicyConfig(name="mlp")))
    ActorWorker._save_policy(worker, policy.state_dict(), str(tmp_path / "saved"))
    assert (tmp_path / "saved" / ACTION_SETTINGS_FILE).is_file()
    assert read_action_settings(str(tmp_path / "saved"))["binarize_gripper"] is True
