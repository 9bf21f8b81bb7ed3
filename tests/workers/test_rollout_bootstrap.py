"""Time-limit truncations are bootstrapped with V(final obs) only when the advantage estimator reads a critic."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from rlinf_embodied.algorithms import AlgorithmConfig
from rlinf_embodied.policies import make_policy
from rlinf_embodied.workers.messages import EnvOutput
from rlinf_embodied.workers.rollout_worker import RolloutWorker
from rlinf_embodied.workers.trajectory_buffer import TrajectoryBuffer


def rollout_worker(adv_type: str) -> RolloutWorker:
    """A RolloutWorker's state for _final_values alone (no Ray actor): its config and a policy with a critic."""
    worker = RolloutWorker.__new__(RolloutWorker)
    worker.cfg = SimpleNamespace(
        algorithm=AlgorithmConfig(adv_type=adv_type), runner=SimpleNamespace(deterministic_rollout=True)
    )
    worker.policy = make_policy("mlp", size="tiny", action_dim=2, state_dim=3)
    worker.device = torch.device("cpu")
    assert worker.policy.has_critic
    return worker


def truncated_step(num_envs: int = 4) -> EnvOutput:
    obs = {"state": torch.randn(num_envs, 3)}
    truncated = torch.tensor([[True], [False], [True], [False]])  # (N, chunk 1)
    return EnvOutput(
        obs=obs,
        rewards=torch.ones(num_envs, 1),
        terminations=torch.zeros(num_envs, 1, dtype=torch.bool),
        truncations=truncated,
        final_obs={"state": torch.randn(num_envs, 3)},
        final_obs_mask=truncated[:, 0],
    )


def rewards_after_bootstrap(adv_type: str) -> torch.Tensor:
    worker, step = rollout_worker(adv_type), truncated_step()
    buffer = TrajectoryBuffer()
    buffer.add_step(step.obs, worker.policy.act(step.obs))
    buffer.add_outcome(step, worker._final_values(step))
    return buffer.finish(gamma=worker.cfg.algorithm.gamma).rewards[0, :, 0]  # (N,)


def test_gae_bootstraps_the_truncated_envs_with_the_critic():
    rewards = rewards_after_bootstrap("gae")
    assert rewards[1] == 1.0 and rewards[3] == 1.0  # still running: reward only
    assert rewards[0] != 1.0 and rewards[2] != 1.0  # truncated: 1 + gamma * V(final obs)


@pytest.mark.parametrize("adv_type", ["grpo", "reinforce_pp"])
def test_critic_free_estimators_keep_the_rewards_alone(adv_type):
    # the value head is untrained under them: folded into GRPO's outcomes it made equal outcomes differ
    assert rollout_worker(adv_type)._final_values(truncated_step()) is None
    assert torch.equal(rewards_after_bootstrap(adv_type), torch.ones(4))
