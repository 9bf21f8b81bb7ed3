"""Demonstrations longer than an env's time limit: one warning, with the same words for collect and SFT."""

import logging

import numpy as np

from rlinf_embodied.datasets import LeRobotDatasetWriter
from rlinf_embodied.datasets.time_limit import longest_episode, warn_if_time_limit_short

LOG = logging.getLogger("test_time_limit")


def test_longest_episode_reads_the_episode_lengths(tmp_path):
    writer = LeRobotDatasetWriter(str(tmp_path), state_dim=2, action_dim=1)
    for length in (3, 7, 5):
        writer.add_episode("task", np.zeros((length, 2), np.float32), np.zeros((length, 1), np.float32), {}, None)
    assert longest_episode(str(tmp_path)) == 7


def test_a_time_limit_below_the_longest_demonstration_warns_with_the_steps_it_needs(caplog):
    with caplog.at_level("WARNING", logger=LOG.name):
        assert warn_if_time_limit_short(LOG, 96, "were recorded", 50)
    assert caplog.text.rstrip().endswith(
        "episodes of up to 96 steps were recorded, but env.max_episode_steps=50: a policy imitating them needs a "
        "longer time limit in its RL/eval env (env.max_episode_steps=96 or more)"
    )
    caplog.clear()
    with caplog.at_level("WARNING", logger=LOG.name):
        assert warn_if_time_limit_short(LOG, 96, "are in sft.dataset='d'", 50, "SFT's evaluations end them")
    assert "episodes of up to 96 steps are in sft.dataset='d', but env.max_episode_steps=50" in caplog.text
    assert caplog.text.rstrip().endswith("(env.max_episode_steps=96 or more); SFT's evaluations end them")
    caplog.clear()
    with caplog.at_level("WARNING", logger=LOG.name):
        assert not warn_if_time_limit_short(LOG, 50, "were recorded", 50)  # fits
        assert not warn_if_time_limit_short(LOG, 96, "were recorded", None)  # the env's own limit
    assert caplog.text == ""
