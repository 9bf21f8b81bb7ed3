"""IsaacLab adapter against a small stand-in with IsaacLab's documented ManagerBasedRLEnv API (no Isaac Sim here)."""

from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

import rlinf_embodied  # noqa: F401  (registers the ids)
from rlinf_embodied.envs.isaaclab.adapter import IsaacLabVectorEnv
from rlinf_embodied.envs.isaaclab.launch import IsaacLabNotInstalledError, require_isaaclab
from rlinf_embodied.envs.isaaclab.tasks import ISAACLAB_TASKS
from rlinf_embodied.envs.metrics import episodes_from_info


class FakeTerminationManager:
    """IsaacLab's TerminationManager surface: `active_terms`, `get_term(name)` of the last compute()."""

    def __init__(self, num_envs):
        self.active_terms = ["time_out", "success"]
        self.terms = {name: torch.zeros(num_envs, dtype=torch.bool) for name in self.active_terms}

    def get_term(self, name):
        return self.terms[name]


class FakeManagerBasedRLEnv:
    """A 1-D reach task batched like IsaacLab: x += 0.1 * action[0]; success (terminated) when x >= 0.25;
    time-out after `max_episode_length` steps; ended envs are reset *inside* step() before the obs is computed,
    and `extras["log"]` carries episode statistics, as in IsaacLab."""

    def __init__(self, num_envs=3, act_dim=2, max_episode_length=6, image_size=4):
        self.num_envs, self.device, self.max_episode_length = num_envs, "cpu", max_episode_length
        self.single_observation_space = gym.spaces.Dict({"policy": gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)})
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (act_dim,), np.float32)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self.termination_manager = FakeTerminationManager(num_envs)
        self.episode_length_buf = torch.zeros(num_envs, dtype=torch.int64)
        self.x = torch.zeros(num_envs)
        camera = SimpleNamespace(
            data=SimpleNamespace(output={"rgb": torch.zeros(num_envs, image_size, image_size, 3, dtype=torch.uint8)})
        )
        self.scene = SimpleNamespace(sensors={"front_cam": camera})
        self.cfg = SimpleNamespace(episode_length_s=1.0, decimation=2, sim=SimpleNamespace(dt=0.1))
        self.step_calls, self.closed, self.last_actions = 0, False, None

    @property
    def unwrapped(self):
        return self

    def _obs(self):
        self.scene.sensors["front_cam"].data.output["rgb"][:] = (
            (self.x * 100).clamp(0, 255).to(torch.uint8)[:, None, None, None]
        )
        return {"policy": torch.stack([self.x, self.episode_length_buf.float(), torch.ones(self.num_envs)], dim=-1)}

    def reset(self, seed=None, options=None):
        self.x.zero_()
        self.episode_length_buf.zero_()
        return self._obs(), {}

    def step(self, actions):
        assert actions.shape == (self.num_envs, self.single_action_space.shape[0])
        self.step_calls += 1
        self.last_actions = actions.clone()
        self.x += 0.1 * actions[:, 0]
        self.episode_length_buf += 1
        success = self.x >= 0.25 - 1e-6
        time_out = self.episode_length_buf >= self.max_episode_length
        if self.termination_manager is not None:
            self.termination_manager.terms.update(success=success.clone(), time_out=time_out.clone())
        reward = self.x.clone()
        extras = {"time_outs": time_out, "log": {}}
        done = success | time_out
        if done.any():  # IsaacLab: _reset_idx on the ended envs, then observations
            extras["log"] = {
                "Episode_Termination/success": int(success.sum()),
                "Episode_Termination/time_out": int(time_out.sum()),
            }
            self.x[done] = 0.0
            self.episode_length_buf[done] = 0
        return self._obs(), reward, success & ~time_out, time_out, extras

    def close(self):
        self.closed = True


@pytest.fixture()
def fake():
    return FakeManagerBasedRLEnv()


@pytest.fixture()
def env(fake):
    return IsaacLabVectorEnv(fake, instruction="reach", rgb_sensor="front_cam")


def test_spaces_and_shapes(env):
    assert env.single_observation_space["state"].shape == (3,) and env.single_observation_space["rgb"].shape == (
        4,
        4,
        3,
    )
    assert env.single_action_space.shape == (2,) and env.num_envs == 3
    obs, _ = env.reset(seed=0)
    assert obs["state"].shape == (3, 3) and obs["state"].dtype == torch.float32
    assert obs["rgb"].shape == (3, 4, 4, 3) and obs["rgb"].dtype == torch.uint8
    assert obs["instruction"] == ["reach"] * 3
    obs, rewards, terminated, truncated, info = env.step(torch.zeros(3, 2))
    assert rewards.shape == terminated.shape == truncated.shape == info["success"].shape == (3,)
    with pytest.raises(ValueError, match=r"act_dim=2"):
        env.step(torch.zeros(3, 5))


def test_chunk_runs_rows_in_order_and_reports_per_step(env, fake):
    env.reset()
    actions = torch.zeros(3, 2, 2)
    actions[:, :, 0] = 1.0  # x: 0.1, 0.2
    obs, rewards, terminated, truncated, info = env.step(actions)
    assert rewards.shape == (3, 2) and fake.step_calls == 2
    assert torch.allclose(rewards, torch.tensor([[0.1, 0.2]] * 3))
    assert not terminated.any() and not truncated.any() and info["elapsed_steps"].tolist() == [2, 2, 2]
    assert torch.allclose(obs["state"][:, 0], torch.full((3,), 0.2))


def test_success_from_termination_term_and_masked_rest_of_chunk(env, fake):
    env.reset()
    actions = torch.zeros(3, 5, 2)
    actions[0, :, 0] = 1.0  # env 0 reaches x = 0.3 >= 0.25 at row 2
    obs, rewards, terminated, truncated, info = env.step(actions)
    assert terminated[0].tolist() == [False, False, True, False, False] and not terminated[1:].any()
    assert (rewards[0, 3:] == 0).all(), "rows after the end are masked"
    assert fake.step_calls == 5 and (fake.last_actions[0] == 0).all(), "an ended env gets the idle action"
    assert info["_episode"].tolist() == [True, False, False] and info["episode"]["success"][0]
    assert info["episode"]["length"][0] == 3 and torch.isclose(info["episode"]["return"][0], torch.tensor(0.6))
    assert info["success"][0] and info["_final_info"][0] and "final_obs" not in info
    # SAME_STEP: env 0's obs is from its new episode (x back to 0, then 2 idle steps of zero action)
    assert obs["state"][0, 0] == 0.0 and info["elapsed_steps"][0] == 0
    assert episodes_from_info(info)[0]["success_once"]


def test_time_out_maps_to_truncated_with_episode_stats(env):
    env.reset()
    _, _, terminated, truncated, info = env.step(torch.zeros(3, 8, 2))  # time-out after 6 steps
    assert truncated[:, 5].all() and not truncated[:, [0, 1, 2, 3, 4, 6, 7]].any() and not terminated.any()
    assert info["episode"]["length"].tolist() == [6, 6, 6] and not info["episode"]["success_once"].any()
    assert info["log"]["Episode_Termination/time_out"] == 3


def test_auto_reset_continues_counting_from_new_episode(env):
    env.reset()
    actions = torch.zeros(3, 3, 2)
    actions[:, :, 0] = 1.0
    env.step(actions)  # all succeed at row 2 (the last row)
    _, rewards, _, _, info = env.step(torch.zeros(3, 2))
    assert info["elapsed_steps"].tolist() == [1, 1, 1] and not info["_episode"].any()
    assert torch.allclose(rewards, torch.zeros(3))


def test_success_from_extras_for_direct_envs(fake):
    fake.termination_manager = None  # DirectRLEnv has no termination manager
    original_step = fake.step

    def step(actions):
        obs, reward, terminated, time_out, extras = original_step(actions)
        extras["success"] = torch.tensor([True, False, False])
        return obs, reward, terminated, time_out, extras

    fake.step = step
    env = IsaacLabVectorEnv(fake)
    env.reset()
    _, _, _, _, info = env.step(torch.zeros(3, 2))
    assert info["success"].tolist() == [True, False, False]


def test_errors_name_valid_choices(fake):
    with pytest.raises(KeyError, match="front_cam"):
        IsaacLabVectorEnv(fake, rgb_sensor="nope")
    with pytest.raises(ValueError, match="ignore_terminations"):
        IsaacLabVectorEnv(fake, ignore_terminations=True)
    env = IsaacLabVectorEnv(fake)
    env.close()
    assert fake.closed


def test_ids_registered_and_missing_isaaclab_is_a_clear_error():
    assert set(ISAACLAB_TASKS) <= set(gym.registry)
    try:
        require_isaaclab()
    except IsaacLabNotInstalledError:
        with pytest.raises(IsaacLabNotInstalledError, match=r"Isaac Sim.*isaaclab.*3\.1[01].*NVIDIA.*installation"):
            gym.make_vec(
                "rlinf/IsaacLab-Lift-Cube-Franka",
                num_envs=2,
                vectorization_mode="vector_entry_point",
                obs_mode="state",
                max_episode_steps=10,
                ignore_terminations=False,
            )
    else:
        pytest.skip("IsaacLab is installed here")
    with pytest.raises(TypeError, match="make_vec"):
        gym.make("rlinf/IsaacLab-Lift-Cube-Franka")
