"""Actions outside the action space are clipped, never silently: info["action_clipped"] holds each env's fraction of
action elements outside the box, and the first such action logs a warning naming the largest |value| and the bounds.
Before, the envs clipped them with no trace (the policy's own scaling bugs stayed invisible). SubprocVectorEnv's
test is in test_vector.py (its module's env), ManiSkill's and LIBERO's single envs' in their modules."""

import logging

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlinf_embodied.envs.batched import BatchedVectorEnv
from rlinf_embodied.envs.batching import ActionBounds
from rlinf_embodied.envs.testing import BatchedToyReach

NUM_ENVS, ACT_DIM = 3, 2
LOGGER = "rlinf_embodied.envs.batching"


def clip_warnings(caplog):
    return [record.getMessage() for record in caplog.records if "outside its action space" in record.getMessage()]


def chunk_with_two_outside() -> np.ndarray:
    """(3, 2, 2): env 0 in the box; env 1 one element of its four at 5.0; env 2 one at -3.0 and one at 1.5."""
    actions = np.zeros((NUM_ENVS, 2, ACT_DIM), np.float32)
    actions[1, 0, 1] = 5.0
    actions[2, 1, 0], actions[2, 0, 1] = -3.0, 1.5
    return actions


def test_action_bounds_count_per_env_tolerate_rounding_and_warn_once(caplog):
    bounds = ActionBounds(gym.spaces.Box(-1.0, 1.0, (ACT_DIM,), np.float32), "toy")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert bounds.fraction(np.full((2, ACT_DIM), np.nextafter(np.float32(1), np.float32(2)))).tolist() == [0, 0]
        assert not clip_warnings(caplog)  # an ulp over a bound is rounding (a policy mapping [-1, 1] onto the box)
        assert bounds.fraction(chunk_with_two_outside()).tolist() == [0.0, 0.25, 0.5]
        assert torch.equal(bounds.fraction(torch.from_numpy(chunk_with_two_outside())), torch.tensor([0.0, 0.25, 0.5]))
    messages = clip_warnings(caplog)
    assert len(messages) == 1  # once per env object
    assert "toy received actions outside its action space Box(-1.0, 1.0, (2,), float32) (max |value| 5," in messages[0]
    assert "dimension(s) [0, 1] of 2 of 3 envs" in messages[0] and "info['action_clipped']" in messages[0]
    unbounded = ActionBounds(gym.spaces.Box(-np.inf, np.inf, (ACT_DIM,), np.float32), "free")
    assert unbounded.fraction(np.full((1, ACT_DIM), 1e30, np.float32)).tolist() == [0.0]


def test_batched_vector_env_reports_the_clipped_fraction_on_its_device(caplog):
    env = BatchedVectorEnv(BatchedToyReach(NUM_ENVS, act_dim=ACT_DIM), lambda raw: raw)
    env.reset(seed=0)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        info = env.step(torch.from_numpy(chunk_with_two_outside()))[4]
        assert info["action_clipped"].device == env.device and info["action_clipped"].tolist() == [0.0, 0.25, 0.5]
        assert env.step(np.full((NUM_ENVS, ACT_DIM), 0.5))[4]["action_clipped"].tolist() == [0.0] * 3
        env.step(np.full((NUM_ENVS, ACT_DIM), 7, np.int64))
    (message,) = clip_warnings(caplog)
    assert message.startswith("the batched env of BatchedToyReach (3 envs) received") and "max |value| 5," in message


@pytest.mark.parametrize("scale", [1.0, 5.0])
def test_the_clipped_fraction_is_zero_exactly_when_every_action_is_in_the_box(scale):
    env = BatchedVectorEnv(BatchedToyReach(NUM_ENVS, act_dim=ACT_DIM), lambda raw: raw)
    env.reset(seed=0)
    actions = scale * np.random.default_rng(0).uniform(-1, 1, (NUM_ENVS, 4, ACT_DIM)).astype(np.float32)
    expected = (np.abs(actions) > 1).reshape(NUM_ENVS, -1).mean(axis=1)
    clipped = env.step(actions)[4]["action_clipped"].numpy()
    np.testing.assert_allclose(clipped, expected)
    assert (clipped.sum() == 0) == (scale == 1.0)


@pytest.mark.parametrize(
    "value, cause",
    [(1.0078125, "within 10% of their dimension's range"), (1.25, "action scaling bug"), (5.0, "action scaling bug")],
)
def test_the_warning_tells_a_small_overshoot_from_a_scaling_bug(caplog, value, cause):
    """A bf16 Gaussian head's mean just past the gripper's +1 (stop 62's OpenVLA-OFT, 1.0078) is sampling near the
    bound, not a bug; an action a quarter of the range out or more points at the action normalisation."""
    bounds = ActionBounds(gym.spaces.Box(-1.0, 1.0, (ACT_DIM,), np.float32), "toy")
    actions = np.zeros((2, 3, ACT_DIM), np.float32)
    actions[1, 2, 1] = value
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        np.testing.assert_allclose(bounds.fraction(actions), [0.0, 1 / 6])
    (message,) = clip_warnings(caplog)
    assert cause in message and message.endswith("Warned once per env.")
    other = "action scaling bug" if "within" in cause else "within 10%"
    assert other not in message
