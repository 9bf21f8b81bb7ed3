"""ActorWorker checks that need no Ray worker."""
from __future__ import annotations

import pytest

from rlinf_embodied.config import TrainConfig
from rlinf_embodied.workers.actor_worker import check_minibatch_split


def test_fewer_samples_than_minibatches_names_the_settings():
    cfg = TrainConfig()
    cfg.env.num_envs, cfg.runner.rollout_steps, cfg.algorithm.num_minibatches = 2, 10, 32
    with pytest.raises(ValueError, match=r"20 samples .*num_minibatches=32: .*\(now 2 x 10"):
        check_minibatch_split(20, cfg, rank=0, world_size=1)
    check_minibatch_split(32, cfg, rank=0, world_size=1)  # one sample per minibatch is enough
