"""ExplorationGap: the noisy rollouts' success since the last evaluation against the deterministic policy's."""

import logging
import math

import pytest

from rlinf_embodied.runners.exploration_gap import ExplorationGap


def rollout(success: float, episodes: int = 128) -> dict[str, float]:
    return {"rollout/success_once": success, "rollout/num_episodes": episodes}


def test_stop_43s_gap_is_reported_and_warned_about(caplog):
    """Stop 43 (pi0-small, noise 0.5): rollouts at 55-66% over iterations 12-15, the evaluation at 68.75%."""
    gap = ExplorationGap()
    for success in (0.5625, 0.4453, 0.4688, 0.6562):
        gap.add_rollout(rollout(success))
    with caplog.at_level(logging.WARNING, logger="rlinf_embodied.runners.exploration_gap"):
        metrics = gap.compare(0.6875)
    assert metrics["eval/rollout_success_ratio"] == pytest.approx((0.5625 + 0.4453 + 0.4688 + 0.6562) / 4 / 0.6875)
    assert metrics["eval/rollout_success_ratio"] < 0.8
    assert "ratio 0.78 < 0.8" in caplog.text and "noise_level" in caplog.text


def test_the_window_is_episode_weighted_and_restarts_at_each_evaluation(caplog):
    gap = ExplorationGap()
    gap.add_rollout(rollout(1.0, episodes=30))
    gap.add_rollout(rollout(0.0, episodes=10))
    gap.add_rollout(rollout(math.nan, episodes=0))  # an iteration where no episode ended
    with caplog.at_level(logging.WARNING):
        assert gap.compare(0.8)["eval/rollout_success_ratio"] == pytest.approx(0.75 / 0.8)  # 0.94: no warning
    assert caplog.text == ""
    assert gap.compare(0.8) == {}  # no rollout since the last evaluation
    gap.add_rollout(rollout(0.5))
    assert gap.compare(0.0) == {}  # an evaluation that succeeded nowhere has no ratio


def test_too_few_episodes_or_too_little_success_give_the_ratio_without_a_warning(caplog):
    gap = ExplorationGap()
    with caplog.at_level(logging.WARNING):
        gap.add_rollout(rollout(0.1, episodes=16))  # under MIN_EPISODES
        assert gap.compare(0.5)["eval/rollout_success_ratio"] == pytest.approx(0.2)
        gap.add_rollout(rollout(0.0))
        assert gap.compare(0.05)["eval/rollout_success_ratio"] == 0.0  # under MIN_EVAL_SUCCESS
    assert caplog.text == ""


def test_from_scratch_there_is_no_warning(caplog):
    """Without a checkpoint (warn=False) the noise is the exploration a fresh policy needs: the ratio, no warning."""
    gap = ExplorationGap(warn=False)
    gap.add_rollout(rollout(0.2))
    with caplog.at_level(logging.WARNING):
        assert gap.compare(0.5)["eval/rollout_success_ratio"] == pytest.approx(0.4)
    assert caplog.text == ""
