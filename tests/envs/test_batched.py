"""BatchedVectorEnv (one batched simulator) against the same contract as SubprocVectorEnv.

The simulator is `BatchedToyReach`: ToyReach envs behind ManiSkill's batched API, so the two vector
envs run identical dynamics and their first episodes must agree row for row.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlinf_embodied.envs.batched import BatchedVectorEnv
from rlinf_embodied.envs.testing import BatchedToyReach, ToyReachFactory
from rlinf_embodied.envs.vector import SubprocVectorEnv

NUM_ENVS, ACT_DIM = 4, 2


def make_batched(max_episode_steps=12, ignore_terminations=False, goal_radius=0.35):
    sim = BatchedToyReach(NUM_ENVS, act_dim=ACT_DIM, goal_radius=goal_radius)
    return BatchedVectorEnv(
        sim,
        lambda raw: raw,
        instruction="reach",
        max_episode_steps=max_episode_steps,
        ignore_terminations=ignore_terminations,
    )


def random_chunks(count, chunk, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, (NUM_ENVS, chunk, ACT_DIM)).astype(np.float32) for _ in range(count)]


def test_first_episodes_match_the_subprocess_vector_env():
    batched = make_batched()
    subproc = SubprocVectorEnv(
        [ToyReachFactory(act_dim=ACT_DIM, goal_radius=0.35)] * NUM_ENVS,
        num_workers=2,
        max_episode_steps=12,
        context="spawn",
    )
    try:
        obs_b, _ = batched.reset(seed=7)
        obs_s, _ = subproc.reset(seed=7)
        assert torch.equal(obs_b["state"], obs_s["state"])
        first_episode = torch.ones(NUM_ENVS, dtype=torch.bool)
        endings = 0
        for actions in random_chunks(6, chunk=5):
            out_b, out_s = batched.step(actions), subproc.step(actions)
            for index in range(1, 4):  # rewards, terminated, truncated, rows of first episodes only
                assert torch.equal(out_b[index][first_episode], out_s[index][first_episode])
            info_b, info_s = out_b[4], out_s[4]
            ended = info_s["_episode"] & first_episode
            assert torch.equal(info_b["_episode"][first_episode], info_s["_episode"][first_episode])
            for key in ("return", "length", "success_once", "success"):
                assert torch.allclose(info_b["episode"][key][ended].float(), info_s["episode"][key][ended].float())
            if ended.any():
                assert torch.equal(info_b["final_obs"]["state"][ended], info_s["final_obs"]["state"][ended])
            still = first_episode & ~ended
            assert torch.equal(out_b[0]["state"][still], out_s[0]["state"][still])
            endings += int(ended.sum())
            first_episode &= ~ended
        assert endings >= 2, "the actions should end some first episodes inside the 6 chunks"
    finally:
        batched.close()
        subproc.close()


def test_end_inside_a_chunk_masks_the_rest_and_returns_the_next_episodes_first_obs():
    env = make_batched(max_episode_steps=3)
    env.reset(seed=0)
    sim = env.sim
    resets_before = list(sim.num_resets)
    obs, rewards, terminated, truncated, info = env.step(np.zeros((NUM_ENVS, 5, ACT_DIM), np.float32))
    assert rewards.shape == terminated.shape == truncated.shape == (NUM_ENVS, 5)
    assert truncated[:, 2].all() and not truncated[:, 3:].any() and not terminated.any()
    assert (rewards[:, 3:] == 0).all() and (rewards[:, :3] != 0).all()
    assert [after - before for after, before in zip(sim.num_resets, resets_before)] == [1] * NUM_ENVS
    fresh = torch.from_numpy(np.stack([toy._obs()["state"] for toy in sim.envs]))
    assert torch.equal(obs["state"], fresh)  # SAME_STEP: the new episode's first obs, untouched by rows 3..4
    assert (info["elapsed_steps"] == 0).all() and (info["episode"]["length"] == 3).all()
    assert info["_final_obs"].all() and not torch.equal(info["final_obs"]["state"], obs["state"])
    assert obs["instruction"] == ["reach"] * NUM_ENVS == info["final_obs"]["instruction"]


def test_single_step_actions_return_flat_results_and_count_elapsed_steps():
    env = make_batched(max_episode_steps=50, goal_radius=0.0)
    env.reset(seed=1)
    for step in range(1, 4):
        obs, rewards, terminated, truncated, info = env.step(torch.zeros(NUM_ENVS, ACT_DIM))
        assert rewards.shape == terminated.shape == truncated.shape == (NUM_ENVS,)
        assert (info["elapsed_steps"] == step).all()


def test_same_seed_and_actions_give_the_same_trajectories_across_auto_resets():
    runs = []
    for _ in range(2):
        env = make_batched(max_episode_steps=4)
        obs, _ = env.reset(seed=3)
        trace = [obs["state"]]
        for actions in random_chunks(5, chunk=3, seed=1):
            obs, rewards, *_ = env.step(actions)
            trace += [obs["state"], rewards]
        runs.append(torch.cat([t.flatten() for t in trace]))
    assert torch.equal(runs[0], runs[1])
    other = make_batched(max_episode_steps=4)
    assert not torch.equal(other.reset(seed=4)[0]["state"], make_batched().reset(seed=3)[0]["state"])


def test_auto_resets_draw_different_episodes():
    env = make_batched(max_episode_steps=1)
    env.reset(seed=0)
    starts = [env.step(np.zeros((NUM_ENVS, ACT_DIM), np.float32))[0]["state"] for _ in range(3)]
    assert not torch.equal(starts[0], starts[1]) and not torch.equal(starts[1], starts[2])


def test_ignore_terminations_runs_episodes_to_the_time_limit():
    env = make_batched(max_episode_steps=6, ignore_terminations=True, goal_radius=10.0)  # success every step
    env.reset(seed=0)
    _, _, terminated, truncated, info = env.step(np.zeros((NUM_ENVS, 6, ACT_DIM), np.float32))
    assert not terminated.any() and truncated[:, 5].all()
    assert info["episode"]["success_once"].all() and (info["episode"]["length"] == 6).all()


def test_bad_actions_and_seeds_raise_clear_errors():
    env = make_batched()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"act_dim=2.*got \(4, 3\)"):
        env.step(np.zeros((NUM_ENVS, 3), np.float32))
    actions = np.zeros((NUM_ENVS, 2), np.float32)
    actions[[0, 3], 1] = np.inf
    with pytest.raises(ValueError, match=r"the actions of env\(s\) 0, 3 hold NaN or inf \(2 of 4 envs\)"):
        env.step(actions)
    with pytest.raises(ValueError, match="got 2 seeds for 4 envs"):
        env.reset(seed=[1, 2])
    with pytest.raises(ValueError, match="all envs with seeds or all without"):
        env.reset(seed=[1, None, 3, 4])


class RecordingToyReach(BatchedToyReach):
    """Records the actions the simulator steps with; its action space is [-0.5, 0.5]."""

    def __init__(self, num_envs):
        super().__init__(num_envs, act_dim=ACT_DIM)
        self.single_action_space = gym.spaces.Box(-0.5, 0.5, (ACT_DIM,), np.float32)
        self.stepped = []

    def step(self, actions):
        self.stepped.append(actions.clone())
        return super().step(actions)


def test_out_of_range_actions_are_clipped_to_the_action_space():
    """As envs/README.md documents (before: passed on as they were, e.g. a pd_joint_pos target of 100)."""
    sim = RecordingToyReach(2)
    env = BatchedVectorEnv(sim, lambda raw: raw)
    env.reset(seed=0)
    env.step(torch.tensor([[2.0, -3.0], [0.2, 100.0]]))
    assert sim.stepped[-1].tolist() == [[0.5, -0.5], [pytest.approx(0.2), 0.5]]
    env.step(torch.full((2, 3, ACT_DIM), -7.0))
    assert all((rows == -0.5).all() for rows in sim.stepped[-3:])


def test_reset_options_it_does_not_read_are_refused():
    """Before: {"foo": 1} and the typo {"reconfigur": True} reset as if absent; a list failed inside the simulator."""
    env = make_batched()
    with pytest.raises(
        ValueError, match=r"keys \['reconfigur'\]: not read by the batched env of BatchedToyReach; valid"
    ):
        env.reset(options={"reconfigur": True})
    with pytest.raises(TypeError, match=r"reset\(options=\['reconfigure'\]\): pass a dict"):
        env.reset(options=["reconfigure"])
    for env_idx in ([4], [0, 0], "0", []):
        with pytest.raises(ValueError, match=r"'env_idx': .*distinct env indices in \[0, 4\)"):
            env.reset(options={"env_idx": env_idx})
    env.reset(seed=0, options={"reconfigure": False})


def test_a_partial_reset_restarts_only_those_envs_statistics():
    """Before: reset(options={"env_idx": [1]}) reset env 1 only, but zeroed every env's episode statistics."""
    env = make_batched(max_episode_steps=4, goal_radius=0.0)
    env.reset(seed=0)
    for _ in range(2):
        env.step(np.zeros((NUM_ENVS, ACT_DIM), np.float32))
    resets = list(env.sim.num_resets)
    env.reset(options={"env_idx": [1]})
    assert [after - before for after, before in zip(env.sim.num_resets, resets)] == [0, 1, 0, 0]
    _, _, _, truncated, info = env.step(np.zeros((NUM_ENVS, 2, ACT_DIM), np.float32))
    assert truncated[:, 1].tolist() == [True, False, True, True]
    assert info["episode"]["length"].tolist() == [4, 0, 4, 4] and info["elapsed_steps"].tolist() == [0, 2, 0, 0]


def test_a_closed_env_says_so_when_reset_or_stepped():
    env = make_batched()
    env.reset(seed=0)
    env.close()
    for use in (lambda: env.reset(seed=0), lambda: env.step(np.zeros((NUM_ENVS, ACT_DIM), np.float32))):
        with pytest.raises(RuntimeError, match="vector env of 4 envs is closed; make a new one"):
            use()  # before: the closed simulator stepped on (ManiSkill: AttributeError on None)
    env.close()


@pytest.mark.parametrize("max_episode_steps", [True, 2.5, 0])
def test_a_max_episode_steps_that_is_no_count_is_refused(max_episode_steps):
    with pytest.raises(ValueError, match=rf"max_episode_steps must be None or an int >= 1, got {max_episode_steps}"):
        make_batched(max_episode_steps=max_episode_steps)  # before: True and 2.5 were accepted
