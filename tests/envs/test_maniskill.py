"""The ManiSkill3 backend on real CPU physics (state obs; rgb only where a Vulkan device exists)."""

import os
import signal

import gymnasium as gym
import numpy as np
import pytest
import torch

import rlinf_embodied  # noqa: F401  (registers the ids)
from rlinf_embodied.envs.maniskill.env import TASKS, ManiSkillSingleEnv
from rlinf_embodied.envs.maniskill.headless import render_device_available

ENV_ID = "rlinf/ManiSkill-PickCube"


@pytest.fixture(scope="module")
def venv():
    env = gym.make_vec(
        ENV_ID, num_envs=2, vectorization_mode="vector_entry_point", max_episode_steps=4, num_workers=2, step_timeout=60
    )
    yield env
    env.close()


def test_ids_registered_for_every_task():
    for task in ("PickCube", "PushCube", "StackCube", "PullCube", "PegInsertionSide", "LiftPegUpright", "PlaceSphere"):
        assert task in TASKS and f"rlinf/ManiSkill-{task}" in gym.registry
        assert gym.registry[f"rlinf/ManiSkill-{task}"].vector_entry_point is not None


def test_time_limits_are_maniskills_and_gym_make_applies_them():
    """Before: the ids registered no limit, so `gym.make` envs never truncated (`spec.max_episode_steps` None)."""
    import mani_skill.envs  # noqa: F401

    for task, spec in TASKS.items():
        assert gym.registry[f"rlinf/ManiSkill-{task}"].max_episode_steps == spec.max_episode_steps, task
        assert gym.registry[spec.maniskill_id].max_episode_steps == spec.max_episode_steps, task
    env = gym.make("rlinf/ManiSkill-PushCube", max_episode_steps=3)  # gymnasium's own override
    env.reset(seed=0)
    ends = [env.step(np.zeros(env.action_space.shape, np.float32))[3] for _ in range(3)]
    assert ends == [False, False, True]
    env.close()


def test_reward_modes_are_maniskills_and_a_task_without_a_dense_one_builds():
    """Before: PlugCharger and StackPyramid failed to build with the default reward (ManiSkill's NotImplementedError
    for normalized_dense, raised in every env worker after the cluster had started)."""
    from mani_skill.utils.registration import REGISTERED_ENVS

    from rlinf_embodied.envs.registration import check_env_options

    for task, spec in TASKS.items():
        assert set(spec.reward_modes) == set(REGISTERED_ENVS[spec.maniskill_id].cls.SUPPORTED_REWARD_MODES), task
    env = gym.make("rlinf/ManiSkill-PlugCharger")  # its default: sparse
    env.reset(seed=0)
    assert env.step(np.zeros(env.action_space.shape, np.float32))[1] == 0.0
    env.close()
    with pytest.raises(ValueError, match=r"reward_mode='dense' is not implemented by ManiSkill's PlugCharger-v1; "):
        gym.make("rlinf/ManiSkill-PlugCharger", reward_mode="dense")
    with pytest.raises(ValueError, match=r"its reward modes: \['sparse', 'none'\] \(env.kwargs.reward_mode=sparse\)"):
        check_env_options("rlinf/ManiSkill-StackPyramid", "state", {"reward_mode": "normalized_dense"})


def test_a_single_env_names_a_bad_action_in_its_own_shape():
    """Before: a (4,) action gave ManiSkill's assertion about its internal (1, 8) batch, and inf was stepped."""
    env = gym.make("rlinf/ManiSkill-PickCube")
    env.reset(seed=0)
    with pytest.raises(
        ValueError, match=r"rlinf/ManiSkill-PickCube takes one action of shape \(8,\), got shape \(4,\)"
    ):
        env.step(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match=r"got shape \(1, 8\)"):
        env.step(np.zeros((1, 8), np.float32))
    with pytest.raises(ValueError, match=r"holds NaN or inf"):
        env.step(np.array([np.inf] + [0.0] * 7, np.float32))
    env.step(np.zeros(8, np.float32))
    env.close()


@pytest.mark.parametrize("row", ["step", "step_without_obs"])
def test_out_of_range_actions_are_clipped_to_the_action_space(row):
    """envs/README.md: actions outside action_space are clipped. Before: ManiSkill's controllers clip only
    normalised actions, so with pd_joint_pos an action of 100 drove the arm's joints to a target of 100 rad."""
    env = ManiSkillSingleEnv("PickCube", control_mode="pd_joint_pos")
    low, high = env.action_space.low, env.action_space.high
    states, targets = [], []
    for action in (high, np.full_like(high, 100.0), low, np.full_like(low, -100.0)):
        env.reset(seed=0)
        getattr(env, row)(action)
        states.append(env.observe()["state"])
        targets.append(env.maniskill_env.agent.controller.controllers["arm"]._target_qpos[0].numpy().copy())
    env.close()
    np.testing.assert_array_equal(targets[1], high[:7])
    np.testing.assert_array_equal(targets[3], low[:7])
    np.testing.assert_array_equal(states[1], states[0])
    np.testing.assert_array_equal(states[3], states[2])


@pytest.fixture(scope="module")
def single_env():
    env = gym.make(ENV_ID)  # one numpy env, as a user makes it
    yield env
    env.close()


def test_a_single_env_reports_actions_outside_the_box_and_warns_once(single_env, caplog):
    """Before: env.step(np.full(8, 10.0)) was clipped with no trace in info. Integer actions are numbers: gymnasium's
    Box envs cast them (Box.contains would refuse int64 only because the cast is not "safe"), and so do ours."""
    single_env.reset(seed=0)
    with caplog.at_level("WARNING", logger="rlinf_embodied.envs.batching"):
        assert single_env.step(np.full(8, 10.0, np.float32))[4]["action_clipped"] == 1.0
        assert single_env.step(np.zeros(8, np.int64))[4]["action_clipped"] == 0.0
        assert single_env.step(np.array([0, 0, 3, 0, 0, 0, 0, -1], np.int64))[4]["action_clipped"] == 1 / 8
        assert single_env.unwrapped.step_without_obs(np.full(8, -2.0))[3]["action_clipped"] == 1.0
    (message,) = [record.getMessage() for record in caplog.records if "outside its action space" in record.getMessage()]
    assert message.startswith("rlinf/ManiSkill-PickCube received actions outside its action space Box(-1.0, 1.0, (8,)")
    assert "(max |value| 10, in action dimension(s) [0, 1, 2, 3, 4, 5, 6, 7] of 1 of 1 envs)" in message


def test_render_without_a_render_mode_warns_and_returns_none_as_gymnasium_does(single_env):
    """Before: a bare NotImplementedError. The envs take render_mode=None only (any other is refused, naming obs_mode
    'rgb' and eval.video), so render() follows gymnasium's convention for it: a warning, and None."""
    single_env.reset(seed=0)
    with pytest.warns(UserWarning, match=r"render\(\) of rlinf/ManiSkill-PickCube returns None: .*obs_mode='rgb'"):
        assert single_env.render() is None


def test_gym_make_names_only_the_options_it_takes():
    """Before: gym.make(ENV_ID, foo=1) listed num_envs, num_workers, ignore_terminations, ... as valid, and gym.make
    refuses each of them (make_single_env's reject_vector_options). The config path still lists them."""
    from rlinf_embodied.envs.registration import VECTOR_ONLY_OPTIONS, check_env_options

    with pytest.raises(ValueError, match=r"env.kwargs \['foo'\]: not an option") as single:
        gym.make(ENV_ID, foo=1)
    valid = set(eval(str(single.value).split("valid: ")[1]))
    assert not valid & set(VECTOR_ONLY_OPTIONS) and {"max_episode_steps", "reward_mode", "obs_mode"} <= valid
    for name in VECTOR_ONLY_OPTIONS:  # what it no longer lists, it refuses
        with pytest.raises(TypeError, match=rf"\['{name}'\] configure batched envs, and gym.make"):
            gym.make(ENV_ID, **{name: 1})
    with pytest.raises(ValueError, match=r"valid: \[.*'ignore_terminations'.*'num_envs', 'num_workers'"):
        check_env_options(ENV_ID, "state", {"foo": 1})


def test_on_off_options_take_only_a_bool():
    """Before: Hydra's `env.kwargs.binarize_gripper=off` arrived as the string 'off', which is true: it binarized."""
    from rlinf_embodied.envs.registration import check_env_options

    with pytest.raises(ValueError, match=r"env.kwargs.binarize_gripper='off' must be true or false"):
        check_env_options("rlinf/ManiSkill-PickCube", "state", {"binarize_gripper": "off"})
    with pytest.raises(ValueError, match=r"env.kwargs.reward_delta='maybe' must be true or false"):
        gym.make("rlinf/ManiSkill-PickCube", reward_delta="maybe")
    check_env_options("rlinf/ManiSkill-PickCube", "state", {"binarize_gripper": False, "reward_delta": True})


def test_an_unknown_robot_is_named_before_any_env_is_built():
    from rlinf_embodied.envs.registration import check_env_options

    with pytest.raises(ValueError, match=r"env.kwargs.robot_uids='foo' is not a ManiSkill robot; valid: \[.*'panda'"):
        check_env_options("rlinf/ManiSkill-PickCube", "state", {"robot_uids": "foo"})
    check_env_options("rlinf/ManiSkill-PickCube", "state", {"robot_uids": "panda"})


def test_single_env_passes_check_env():
    from gymnasium.utils.env_checker import check_env

    env = gym.make("rlinf/ManiSkill-PushCube")
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_batched_shapes_dtypes_and_instruction(venv):
    obs, _ = venv.reset(seed=0)
    state_dim = venv.single_observation_space.spaces["state"].shape[-1]
    assert obs["state"].shape == (2, state_dim) and obs["state"].dtype == torch.float32
    assert venv.single_action_space.shape == (8,)
    assert obs["instruction"] == [TASKS["PickCube"].instruction] * 2
    arrays = {key: value.numpy() for key, value in obs.items() if key != "instruction"}  # docs/DESIGN.md's check
    assert venv.observation_space.contains(arrays) and set(arrays) == set(venv.single_observation_space.spaces)
    obs, rewards, terminated, truncated, info = venv.step(np.zeros((2, 8), np.float32))
    assert rewards.shape == terminated.shape == truncated.shape == info["success"].shape == (2,)
    assert rewards.dtype == torch.float32 and terminated.dtype == torch.bool


def test_chunk_crossing_episode_end_autoresets(venv):
    obs0, _ = venv.reset(seed=3)
    obs, rewards, terminated, truncated, info = venv.step(torch.full((2, 6, 8), 0.5))
    assert rewards.shape == (2, 6) and truncated[:, 3].all() and not truncated[:, 4:].any()
    assert (rewards[:, 4:] == 0).all() and info["_final_obs"].all()
    assert info["episode"]["length"].tolist() == [4, 4]
    assert not torch.allclose(info["final_obs"]["state"], obs["state"])  # obs is the next episode's first
    assert info["elapsed_steps"].tolist() == [0, 0]


def test_seed_determinism(venv):
    actions = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (3, 2, 8)).astype(np.float32))
    traces = []
    for _ in range(2):
        obs, _ = venv.reset(seed=[11, 12])
        trace = [obs["state"]]
        for a in actions:
            obs, rewards, *_ = venv.step(a)
            trace += [obs["state"], rewards]
        traces.append(trace)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*traces))
    assert not torch.allclose(traces[0][0][0], traces[0][0][1])  # different seeds, different scenes


def test_scripted_success_is_reported():
    import sapien

    env = ManiSkillSingleEnv("PushCube")
    env.reset(seed=0)
    ms = env.maniskill_env
    goal_xy = ms.goal_region.pose.p[0, :2]
    ms.obj.set_pose(sapien.Pose(p=[float(goal_xy[0]), float(goal_xy[1]), ms.cube_half_size]))
    _, _, terminated, _, info = env.step(np.zeros(8, np.float32))
    env.close()
    assert info["success"] and terminated


@pytest.mark.parametrize("reward_mode", ["normalized_dense", "sparse"])
def test_step_without_obs_is_step_minus_the_observation(reward_mode):
    """The transition, reward, termination and success of step_without_obs match step's; observe() is step's obs."""
    import sapien

    envs = [ManiSkillSingleEnv("PushCube", reward_mode=reward_mode) for _ in range(2)]
    actions = np.random.default_rng(1).uniform(-1, 1, (6, 8)).astype(np.float32)
    results = []
    for skip, env in zip((False, True), envs):
        env.reset(seed=7)
        trace = []
        for index, action in enumerate(actions):
            if index == len(actions) - 1:  # script a success on the last step, to compare terminations
                ms = env.maniskill_env
                goal_xy = ms.goal_region.pose.p[0, :2]
                ms.obj.set_pose(sapien.Pose(p=[float(goal_xy[0]), float(goal_xy[1]), ms.cube_half_size]))
            if skip:
                reward, terminated, truncated, info = env.step_without_obs(action)
            else:
                _, reward, terminated, truncated, info = env.step(action)
            trace.append((reward, terminated, truncated, info["success"]))
        results.append((trace, env.observe()))
    final_obs = envs[0].step(np.zeros(8, np.float32))[0], envs[1].step(np.zeros(8, np.float32))[0]
    for env in envs:
        env.close()
    (trace_step, obs_step), (trace_skip, obs_skip) = results
    assert trace_step == trace_skip and trace_step[-1][1] and trace_step[-1][3]  # the scripted success terminates
    assert np.array_equal(obs_step["state"], obs_skip["state"])
    assert np.array_equal(final_obs[0]["state"], final_obs[1]["state"])  # the two sims stayed in lockstep


def test_reward_delta_returns_the_change_of_the_reward_and_restarts_at_reset():
    envs = [ManiSkillSingleEnv("PickCube", reward_delta=delta) for delta in (False, True)]
    actions = np.random.default_rng(3).uniform(-1, 1, (5, 8)).astype(np.float32)
    traces = []
    for env in envs:
        trace = []
        for seed in (11, 12):  # two episodes: the second's first delta starts from 0 again
            env.reset(seed=seed)
            trace.append([env.step(actions[0])[1]] + [env.step_without_obs(a)[0] for a in actions[1:]])
        traces.append(np.array(trace))
        env.close()
    raw, delta = traces
    assert np.abs(raw).max() > 0  # the dense reward moved, so the comparison means something
    assert np.allclose(delta[:, 0], raw[:, 0]) and np.allclose(np.diff(raw, axis=1), delta[:, 1:], atol=1e-6)
    assert np.allclose(delta.sum(axis=1), raw[:, -1], atol=1e-5)  # an episode's deltas sum to its last reward
    with pytest.raises(ValueError, match=r"reward_delta=True .*physx_cpu"):
        gym.make_vec(
            ENV_ID, num_envs=1, vectorization_mode="vector_entry_point", sim_backend="physx_cuda", reward_delta=True
        )
    with pytest.raises(ValueError, match=r"reward_delta=True with reward_mode='none'.*'normalized_dense'"):
        ManiSkillSingleEnv("PickCube", reward_mode="none", reward_delta=True)  # before: a reward of 0 throughout


def test_reset_options_it_does_not_read_and_a_closed_env_are_refused():
    """ManiSkill ignores unknown reset options, so a typo reset as if the option were absent."""
    env = ManiSkillSingleEnv("PickCube")
    with pytest.raises(ValueError, match=r"keys \['reconfigur'\]: not read by PickCube-v1; valid: \['reconfigure'\]"):
        env.reset(seed=1, options={"reconfigur": True})
    for options in (["reconfigure"], 5):  # before: the list passed the key check, then AttributeError; 5: TypeError
        with pytest.raises(TypeError, match=r"reset\(options=.*\): pass a dict of option names to values"):
            env.reset(seed=1, options=options)
    first, _ = env.reset(seed=1, options={"reconfigure": True})  # the one key it reads still works
    again, _ = env.reset(seed=1)
    assert np.array_equal(first["state"], again["state"])
    env.close()
    with pytest.raises(RuntimeError, match="PickCube-v1 env is closed; make a new one"):
        env.reset(seed=1)  # before: an AttributeError from inside ManiSkill
    with pytest.raises(RuntimeError, match="is closed"):
        env.step(np.zeros(8, np.float32))


def test_binarize_gripper_steps_with_the_sign_of_the_gripper_action_only():
    """A gripper action of -0.3 must drive the fingers exactly as -1 does (fully closed), and +0.2 as +1; the arm
    columns and the caller's action stay as given."""
    binarized, plain = ManiSkillSingleEnv("PickCube", binarize_gripper=True), ManiSkillSingleEnv("PickCube")
    arm = np.random.default_rng(5).uniform(-0.5, 0.5, (6, 7)).astype(np.float32)
    grip = np.array([-0.3, -0.3, -0.01, 0.2, 0.0, -0.7], np.float32)
    given = np.concatenate([arm, grip[:, None]], axis=1)  # (6, 8): panda pd_joint_delta_pos, gripper last
    states = {}
    for name, env, actions in (
        ("binarized", binarized, given),
        ("plain, +-1", plain, np.concatenate([arm, np.where(grip >= 0, 1.0, -1.0)[:, None]], axis=1)),
        ("plain, as given", plain, given),
    ):
        env.reset(seed=21)
        sent = actions.copy()
        states[name] = np.stack([env.step(a)[0]["state"] for a in sent[:3]] + [env.observe()["state"]])
        for a in sent[3:]:
            env.step_without_obs(a)
        states[name] = np.concatenate([states[name], env.observe()["state"][None]])
        assert np.array_equal(sent, actions)  # the env binarized a copy
    assert np.array_equal(states["binarized"], states["plain, +-1"])
    assert not np.allclose(states["binarized"], states["plain, as given"])  # -0.3 alone closes less far
    binarized.close(), plain.close()
    with pytest.raises(ValueError, match=r"binarize_gripper=True is implemented .*physx_cpu"):
        gym.make_vec(
            ENV_ID, num_envs=1, vectorization_mode="vector_entry_point", sim_backend="physx_cuda", binarize_gripper=True
        )


def test_binarize_gripper_needs_a_gripper_controller():
    from types import SimpleNamespace

    from rlinf_embodied.envs.maniskill.env import gripper_columns

    def env_with(controller_fields):
        return SimpleNamespace(
            unwrapped=SimpleNamespace(agent=SimpleNamespace(controller=SimpleNamespace(**controller_fields)))
        )

    assert gripper_columns(env_with({"action_mapping": {"arm": (0, 7), "gripper": (7, 8)}})) == slice(7, 8)
    with pytest.raises(ValueError, match=r"no gripper \(its controllers: \['arm'\]\); leave binarize_gripper False"):
        gripper_columns(env_with({"action_mapping": {"arm": (0, 7)}}))
    with pytest.raises(ValueError, match=r"no gripper \(its controllers: SimpleNamespace\)"):  # a single controller
        gripper_columns(env_with({}))


def test_reward_delta_without_a_reward_is_refused_before_the_env_builds():
    from rlinf_embodied.config import EnvConfig
    from rlinf_embodied.envs.registration import check_env

    env = EnvConfig(id=ENV_ID, num_envs=2, kwargs={"reward_mode": "none", "reward_delta": True})
    with pytest.raises(ValueError, match=r"reward_delta=True with reward_mode='none'"):
        check_env(env)


def test_killed_worker_truncates_its_env_and_run_goes_on(venv):
    venv.reset(seed=5)
    venv.step(torch.zeros(2, 8))
    os.kill(venv.worker_pids()[1], signal.SIGKILL)
    _, _, terminated, truncated, info = venv.step(torch.zeros(2, 8))
    assert truncated.tolist() == [False, True] and info["_episode"].tolist() == [False, True]
    restarts = venv.num_restarts
    obs, _, terminated, truncated, info = venv.step(torch.zeros(2, 8))
    assert obs["state"].shape[0] == 2 and info["elapsed_steps"][0] == 3 and venv.num_restarts == restarts
    # The restarted worker reset env 1 without a seed: about 1 in 500 such PickCube starts already has the
    # cube at the goal, and that episode ends, rightly, as a success on its first step.
    first_step_success = bool(terminated[1]) and not bool(truncated[1])
    assert info["elapsed_steps"][1] == 1 or first_step_success


def test_bad_options_raise_clear_errors():
    with pytest.raises(ValueError, match=r"obs_mode='depth'.*\['state', 'rgb'\]"):
        gym.make_vec(ENV_ID, num_envs=1, vectorization_mode="vector_entry_point", obs_mode="depth")
    with pytest.raises(ValueError, match=r"sim_backend='bullet'"):
        gym.make_vec(ENV_ID, num_envs=1, vectorization_mode="vector_entry_point", sim_backend="bullet")
    with pytest.raises(ValueError, match=r"num_envs must be an int >= 1, got 0"):
        gym.make_vec(ENV_ID, num_envs=0, vectorization_mode="vector_entry_point")
    with pytest.raises(ValueError, match=r"control_mode='fly'"):
        ManiSkillSingleEnv("PickCube", control_mode="fly")
    with pytest.raises(KeyError, match=r"unknown ManiSkill task 'Juggle'"):
        ManiSkillSingleEnv("Juggle")
    with pytest.raises(gym.error.Error, match="ManiSkill-Juggle"):
        gym.make("rlinf/ManiSkill-Juggle")


@pytest.mark.skipif(not render_device_available(), reason="no Vulkan render device for SAPIEN")
def test_rgb_observations_where_a_renderer_exists():
    env = gym.make_vec(
        ENV_ID, num_envs=1, vectorization_mode="vector_entry_point", obs_mode="rgb", camera_size=(32, 48), num_workers=1
    )
    obs, _ = env.reset(seed=0)
    env.close()
    assert obs["rgb"].shape == (1, 32, 48, 3) and obs["rgb"].dtype == torch.uint8 and obs["rgb"].float().std() > 0


def test_env_spec_reads_dims_and_observation_keys(venv):
    """What the runner sizes the policy by and checks its cameras against (envs/spec.py)."""
    from rlinf_embodied.envs.spec import env_spec

    spec = env_spec(venv)
    assert spec["obs_keys"] == ["state"]
    assert spec["action_dim"] == venv.single_action_space.shape[-1]
    assert spec["state_dim"] == venv.single_observation_space["state"].shape[-1] > 0


def test_a_bad_camera_size_fails_before_any_env_is_built():
    from rlinf_embodied.envs.registration import check_env_options

    check_env_options("rlinf/ManiSkill-PickCube", "rgb", {"camera_size": [96, 128]})
    with pytest.raises(ValueError, match=r"camera_size=-3 must be an int >= 1 or \[H, W\] of ints >= 1"):
        check_env_options("rlinf/ManiSkill-PickCube", "rgb", {"camera_size": -3})
    with pytest.raises(ValueError, match=r"camera_size=96 with obs_mode='state'.*~env.kwargs.camera_size"):
        check_env_options("rlinf/ManiSkill-PickCube", "state", {"camera_size": 96})


@pytest.mark.parametrize(
    "camera_size, shown",
    [
        ("64", "'64'"),
        ("big", "'big'"),
        (True, "True"),
        ([96.9, 96.9], r"\[96.9, 96.9\]"),
        (64.0, "64.0"),
        ([64, True], r"\[64, True\]"),
    ],
)
def test_camera_size_refuses_strings_floats_and_bools(camera_size, shown):
    """Before: the string '64' (a quoted YAML value) was iterated into a 6x4 camera, True became 1x1, [96.9, 96.9]
    was truncated to 96 and 'big' failed in the env worker with `invalid literal for int()`."""
    from rlinf_embodied.envs.maniskill.env import _camera_hw
    from rlinf_embodied.envs.registration import check_env_options

    message = rf"camera_size={shown} must be an int >= 1 or \[H, W\] of ints >= 1 \(pixels\)"
    with pytest.raises(ValueError, match=message):  # the check train runs before Ray
        check_env_options(ENV_ID, "rgb", {"camera_size": camera_size})
    with pytest.raises(ValueError, match=message):  # what build_maniskill_env turns into ManiSkill's sensor size
        _camera_hw(camera_size)
    with pytest.raises(ValueError, match=message):
        gym.make(ENV_ID, obs_mode="rgb", camera_size=camera_size)
    assert _camera_hw(64) == (64, 64) and _camera_hw([96, np.int64(128)]) == (96, 128)


def test_a_quoted_camera_size_in_the_config_is_refused_before_ray_starts():
    from rlinf_embodied.config import compose_config
    from rlinf_embodied.envs.registration import check_env

    cfg = compose_config("config", ["env=maniskill_pickcube_rgb", "env.kwargs.camera_size='64'"])
    assert cfg.env.kwargs["camera_size"] == "64"  # a string, as Hydra reads a quoted value
    with pytest.raises(ValueError, match=r"camera_size='64' must be .*write camera_size=64, not '64'"):
        check_env(cfg.env)


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("context", "spawnx", r"env.kwargs.context='spawnx' is not a multiprocessing start method.*valid: \[.*'spawn'"),
        ("context", 1, r"env.kwargs.context=1 is not a multiprocessing start method"),
        (
            "render_backend",
            "foo",
            r"env.kwargs.render_backend='foo' is not a ManiSkill render backend; valid: \['none'\]",
        ),
        ("render_backend", "cuda:x", r"env.kwargs.render_backend='cuda:x' is not a ManiSkill render backend"),
        ("render_backend", "cpu:0", r"env.kwargs.render_backend='cpu:0' is not a ManiSkill render backend"),
    ],
)
def test_context_and_render_backend_are_checked_before_any_env_worker(option, value, message):
    """Before: both passed the options check; the env workers then failed with `cannot find context for 'spawnx'`
    or SAPIEN's `failed to find device "foo"`, naming no setting. The check creates no SAPIEN device."""
    from rlinf_embodied.envs.registration import check_env_options

    with pytest.raises(ValueError, match=message):
        check_env_options(ENV_ID, "state", {option: value})


def test_context_and_render_backend_pass_in_their_valid_forms_and_gym_make_refuses_bad_ones():
    from rlinf_embodied.envs.registration import check_env_options

    for render_backend in ("none", "cpu", "sapien_cpu", "cuda", "gpu", "sapien_cuda", "cuda:1", "sapien_cuda:0"):
        check_env_options(ENV_ID, "state", {"render_backend": render_backend})
    for context in ("spawn", "forkserver"):
        check_env_options(ENV_ID, "state", {"context": context})
    with pytest.raises(ValueError, match=r"render_backend='foo' is not a ManiSkill render backend"):
        gym.make(ENV_ID, render_backend="foo")
    with pytest.raises(ValueError, match=r"^context='spawnx' is not a multiprocessing start method"):
        gym.make_vec(ENV_ID, num_envs=1, vectorization_mode="vector_entry_point", context="spawnx")


@pytest.mark.parametrize("vector", [False, True])
def test_gym_make_refuses_camera_size_with_state_obs(vector):
    """Before: only the config path (check_env) refused it; gym.make and gym.make_vec built the env, and the camera
    size changed nothing."""
    with pytest.raises(ValueError, match=r"camera_size=64 with obs_mode='state': .*or set obs_mode='rgb'"):
        if vector:
            gym.make_vec(ENV_ID, num_envs=1, vectorization_mode="vector_entry_point", camera_size=64)
        else:
            gym.make(ENV_ID, camera_size=64)
    with pytest.raises(ValueError, match=r"camera_size=64 with obs_mode='state'"):
        ManiSkillSingleEnv("PickCube", camera_size=64)


@pytest.mark.parametrize("make", ["check_env", "gym.make", "gym.make_vec"])
def test_render_mode_is_refused_naming_how_to_get_frames(make):
    """Before: gym.make(..., render_mode="rgb_array") built, then render() raised a bare NotImplementedError."""
    from rlinf_embodied.config import EnvConfig
    from rlinf_embodied.envs.registration import check_env

    message = r"render_mode='rgb_array': rlinf's ManiSkill envs do not render\(\); .*obs_mode='rgb'.*eval.video=true"
    with pytest.raises(ValueError, match=message):
        if make == "check_env":
            check_env(EnvConfig(kwargs={"render_mode": "rgb_array"}))
        elif make == "gym.make":
            gym.make(ENV_ID, render_mode="rgb_array")
        else:
            gym.make_vec(ENV_ID, num_envs=1, vectorization_mode="vector_entry_point", render_mode="rgb_array")


def test_a_control_mode_typo_fails_before_any_env_is_built():
    from rlinf_embodied.envs.registration import check_env_options

    check_env_options("rlinf/ManiSkill-PickCube", "state", {"control_mode": "pd_ee_delta_pose"})
    with pytest.raises(
        ValueError, match=r"control_mode='pd_ee_delta_pos3' .*PickCube-v1's robot 'panda'.*'pd_ee_pose'"
    ):
        check_env_options("rlinf/ManiSkill-PickCube", "state", {"control_mode": "pd_ee_delta_pos3"})
    other_robot = {"control_mode": "pd_ee_delta_pose", "robot_uids": "widowxai"}  # joint control modes only
    with pytest.raises(
        ValueError, match=r"control_mode='pd_ee_delta_pose' .*robot 'widowxai'; .*\['pd_joint_delta_pos'"
    ):
        check_env_options("rlinf/ManiSkill-PickCube", "state", other_robot)


@pytest.mark.parametrize(
    "make",
    [
        lambda: gym.make(ENV_ID, control_mode=5),
        lambda: gym.make_vec(ENV_ID, num_envs=1, vectorization_mode="vector_entry_point", control_mode=5),
        lambda: ManiSkillSingleEnv("PickCube", control_mode=["pd_ee_delta_pos"]),
    ],
    ids=["gym.make", "gym.make_vec", "single_env_list"],
)
def test_a_non_string_control_mode_names_the_valid_modes_before_any_env_is_built(make):
    """Before: build_maniskill_env's own except handler tested `control_mode in str(error)`, which raised
    `TypeError: 'in <string>' requires string as left operand, not int`, hiding ManiSkill's list of modes; only the
    config path (check_options) checked the mode. Now every entry point checks it (validate_options)."""
    with pytest.raises(ValueError, match=r"control_mode=.* is not supported by PickCube-v1's robot 'panda'; valid "):
        make()


def test_build_maniskill_env_names_a_non_string_control_mode_that_maniskill_refuses(monkeypatch):
    """The fallback where ManiSkill checks the mode (robots whose modes are not listed without a scene)."""
    from rlinf_embodied.envs.maniskill import env as maniskill_env

    def refuse(*args, **kwargs):
        raise AssertionError((5, ["pd_joint_delta_pos"]))

    monkeypatch.setattr(maniskill_env.gym, "make", refuse)
    with pytest.raises(ValueError, match=r"control_mode=5 is not supported by PickCube-v1: \(5, \['pd_joint_delta"):
        maniskill_env.build_maniskill_env("PickCube-v1", 1, "physx_cpu", "state", 5, None, None, None, None, {})


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("sim_config", 5, r"env.kwargs.sim_config=5 must be a dict of ManiSkill SimConfig fields .*'sim_freq'"),
        ("sim_config", {"sim_freq": "a"}, r"env.kwargs.sim_config=.*field \"sim_freq\" - should be \"int\""),
        ("sim_config", {"sim_frq": 100}, r"env.kwargs.sim_config=.*\"sim_frq\".* \(its fields: \[.*'sim_freq'"),
        ("sim_config", {"control_freq": 30}, r"sim_freq=100 and control_freq=30 must be ints > 0, sim_freq a mult"),
        ("robot_uids", 5, r"env.kwargs.robot_uids=5 is not a ManiSkill robot; valid: \[.*'panda'"),
        ("robot_uids", ("panda", "foo"), r"env.kwargs.robot_uids=\('panda', 'foo'\) is not a ManiSkill robot"),
        ("robot_uids", ["panda"], r"env.kwargs.robot_uids=\['panda'\] is not a ManiSkill robot; .*or a tuple of"),
        ("robot_init_qpos_noise", "abc", r"env.kwargs.robot_init_qpos_noise='abc' must be a number >= 0"),
        ("robot_init_qpos_noise", -0.1, r"env.kwargs.robot_init_qpos_noise=-0.1 must be a number >= 0"),
        ("robot_init_qpos_noise", True, r"env.kwargs.robot_init_qpos_noise=True must be a number >= 0"),
        ("reconfiguration_freq", -1, r"env.kwargs.reconfiguration_freq=-1 must be an int >= 0 .* or null"),
        ("reconfiguration_freq", 1.5, r"env.kwargs.reconfiguration_freq=1.5 must be an int >= 0"),
        ("enable_shadow", "off", r"env.kwargs.enable_shadow='off' must be true or false"),
        ("sensor_configs", 3, r"env.kwargs.sensor_configs=3 must be a dict of ManiSkill CameraConfig fields"),
    ],
)
def test_maniskill_pass_through_values_are_checked_by_type_before_any_env_worker(option, value, message):
    """Before: only their names were checked; `sim_config=5` (dict_merge's AttributeError), `robot_uids=5`,
    `robot_init_qpos_noise=abc` (numpy's ValueError) failed in every env worker after Ray had started, and
    `reconfiguration_freq=-1` silently meant "never reconfigure"."""
    from rlinf_embodied.envs.registration import check_env_options

    with pytest.raises(ValueError, match=message):
        check_env_options(ENV_ID, "state", {option: value})


def test_gym_make_checks_the_robot_and_pass_through_values_as_the_config_path_does():
    """Before: gym.make / make_vec never called check_robot: ManiSkill's RuntimeError, with no list of robots."""
    with pytest.raises(ValueError, match=r"env.kwargs.robot_uids='pandax' is not a ManiSkill robot; valid: \[.*'pan"):
        gym.make(ENV_ID, robot_uids="pandax")
    with pytest.raises(ValueError, match=r"env.kwargs.sim_config=5 must be a dict"):
        gym.make_vec(ENV_ID, num_envs=1, vectorization_mode="vector_entry_point", sim_config=5)
    with pytest.raises(ValueError, match=r"env.kwargs.robot_init_qpos_noise='abc' must be a number"):
        gym.make(ENV_ID, robot_init_qpos_noise="abc")


def test_maniskill_pass_through_values_maniskill_takes_stay_accepted():
    from mani_skill.agents.registration import REGISTERED_AGENTS
    from mani_skill.utils.structs.types import SimConfig

    from rlinf_embodied.envs.registration import check_env_options

    for option, value in [
        ("sim_config", {"sim_freq": 200, "control_freq": 20, "scene_config": {"solver_position_iterations": 25}}),
        ("sim_config", SimConfig(sim_freq=200)),
        ("robot_uids", ("panda",)),
        ("robot_uids", REGISTERED_AGENTS["panda"].agent_cls),
        ("robot_init_qpos_noise", 0),
        ("robot_init_qpos_noise", 0.05),
        ("reconfiguration_freq", 0),
        ("reconfiguration_freq", None),
        ("enable_shadow", True),
        ("sensor_configs", {"fov": 1.2}),
    ]:
        check_env_options(ENV_ID, "state", {option: value})
    check_env_options(ENV_ID, "state", {"robot_uids": ("panda",), "control_mode": "pd_ee_delta_pos"})


def test_camera_size_joins_sensor_configs_instead_of_replacing_them():
    """Before, camera_size replaced env.kwargs.sensor_configs whole: a field of view set there was dropped silently."""
    from rlinf_embodied.envs.maniskill.env import sized_sensor_configs, validate_options

    assert sized_sensor_configs(None, {"fov": 1.2}) == {"fov": 1.2}
    assert sized_sensor_configs(96, None) == {"height": 96, "width": 96}
    assert sized_sensor_configs([64, 96], {"fov": 1.2, "base_camera": {"near": 0.05}}) == {
        "fov": 1.2,
        "base_camera": {"near": 0.05},
        "height": 64,
        "width": 96,
    }
    for both in ({"height": 128}, {"base_camera": {"width": 128}}):
        with pytest.raises(
            ValueError, match=r"sets a camera size .* and env\.kwargs\.camera_size=96 sets it too: give the size once"
        ):
            validate_options("PickCube", "rgb", "physx_cpu", None, 96, maniskill_kwargs={"sensor_configs": both})
