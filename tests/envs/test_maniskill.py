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


def test_killed_worker_truncates_its_env_and_run_goes_on(venv):
    venv.reset(seed=5)
    venv.step(torch.zeros(2, 8))
    os.kill(venv.worker_pids()[1], signal.SIGKILL)
    _, _, terminated, truncated, info = venv.step(torch.zeros(2, 8))
    assert truncated.tolist() == [False, True] and info["_episode"].tolist() == [False, True]
    obs, _, _, truncated, info = venv.step(torch.zeros(2, 8))
    assert obs["state"].shape[0] == 2 and info["elapsed_steps"].tolist() == [3, 1]


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
