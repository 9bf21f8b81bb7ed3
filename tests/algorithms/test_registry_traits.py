"""Algorithm questions (env groups, advantage normalisation) are answered by the estimator's registration."""

from __future__ import annotations

import pytest
import torch

from rlinf_embodied.algorithms import AlgorithmConfig, advantage_names, policy_loss, register_advantage
from rlinf_embodied.algorithms.registry import advantage_traits
from rlinf_embodied.workers.messages import Trajectory
from rlinf_embodied.workers.rollout_worker import split_envs


@pytest.fixture
def grouped_estimator():
    """A new grouped estimator, registered for one test only (other tests list the valid names)."""
    from rlinf_embodied.algorithms import registry

    @register_advantage("test_grouped_outcomes", grouped=True, normalized=True, settings=("group_size",))
    def _grouped(*, rewards, dones, values, cfg, env_ids=None):
        raise NotImplementedError

    yield "test_grouped_outcomes"
    registry._ADVANTAGES.pop("test_grouped_outcomes")
    registry._TRAITS.pop("test_grouped_outcomes")


def test_builtin_traits():
    assert advantage_traits("grpo").grouped and advantage_traits("grpo").normalized
    assert not advantage_traits("gae").grouped and not advantage_traits("gae").normalized
    assert advantage_traits("reinforce_pp").normalized and not advantage_traits("reinforce_pp").grouped
    assert AlgorithmConfig(adv_type="grpo", group_size=4).env_group_size == 4
    assert AlgorithmConfig(adv_type="gae").env_group_size == 1
    with pytest.raises(ValueError, match=r"group_size=4: adv_type='gae' reads only gamma / gae_lambda"):
        AlgorithmConfig(adv_type="gae", group_size=4)  # it would not group the envs
    assert AlgorithmConfig(adv_type="gae").normalize_in_loss
    assert not AlgorithmConfig(adv_type="grpo").normalize_in_loss


def test_a_new_grouped_estimator_needs_only_its_registration(grouped_estimator):
    assert grouped_estimator in advantage_names()
    cfg = AlgorithmConfig(adv_type="test_grouped_outcomes", group_size=2, dynamic_sampling=True)
    assert cfg.env_group_size == 2 and not cfg.normalize_in_loss
    # the rollout workers keep its groups whole on one actor rank
    n, t = 8, 2
    trajectory = Trajectory(
        obs={"state": torch.zeros(t, n, 3)},
        actions=torch.zeros(t, n, 1, 2),
        log_probs=torch.zeros(t, n, 1, 2),
        values=torch.zeros(t + 1, n),
        rewards=torch.zeros(t, n, 1),
        dones=torch.zeros(t, n, 1, dtype=torch.bool),
        env_ids=torch.arange(n),
    )
    pieces = split_envs(trajectory, 2, cfg, n)
    assert [p.env_ids.tolist() for p in pieces] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    # and the loss leaves its advantages as they are
    advantages = torch.tensor([3.0, 5.0])
    zeros = torch.zeros(2, 1, 1)
    _, metrics = policy_loss(
        new_log_probs=zeros.clone().requires_grad_(),
        old_log_probs=zeros,
        advantages=advantages,
        entropy=None,
        new_values=None,
        old_values=None,
        returns=torch.zeros(2),
        cfg=cfg,
    )
    assert float(metrics["policy_loss"]) == -4.0  # mean of -A * ratio with ratio 1, not normalised


def test_only_an_estimator_with_a_critic_trains_one():
    assert AlgorithmConfig(adv_type="gae").uses_critic and AlgorithmConfig(adv_type="gae").vf_coef == 0.5
    for adv_type in ("grpo", "reinforce_pp"):
        cfg = AlgorithmConfig(adv_type=adv_type)
        assert not cfg.uses_critic and cfg.vf_coef == 0.0
    values = torch.tensor([5.0, -3.0], requires_grad=True)  # far from the returns: a large value loss
    zeros = torch.zeros(2, 1, 1)
    losses = {}
    for adv_type in ("gae", "grpo"):
        loss, metrics = policy_loss(
            new_log_probs=zeros.clone().requires_grad_(),
            old_log_probs=zeros,
            advantages=torch.tensor([1.0, -1.0]),
            entropy=None,
            new_values=values,
            old_values=torch.zeros(2),
            returns=torch.zeros(2),
            # GRPO normalises in its estimator (normalize_advantages=False is refused there as doing nothing)
            cfg=AlgorithmConfig(adv_type=adv_type, normalize_advantages=adv_type != "gae"),
        )
        losses[adv_type] = float(loss.detach())
        assert ("value_loss" in metrics) == (adv_type == "gae")
    assert losses["grpo"] == 0.0 and losses["gae"] == pytest.approx(0.5 * 0.5 * (25 + 9) / 2)
