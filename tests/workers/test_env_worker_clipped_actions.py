"""The env worker reports the fraction of action elements its envs got outside their action space (and clipped):
`clipped_action_fraction` beside the episode metrics of interact and evaluate. Before, nothing recorded it, so an
action scaling bug in a policy looked like a policy that could not learn."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rlinf_embodied.envs.batched import BatchedVectorEnv
from rlinf_embodied.envs.metrics import ClippedActionMetrics
from rlinf_embodied.envs.testing import BatchedToyReach
from rlinf_embodied.workers import env_worker
from rlinf_embodied.workers.env_worker import EnvWorker

NUM_ENVS, CHUNK, ACT_DIM = 2, 2, 2


class FakeChannel:
    """A channel of one stage: `get` answers every request with the same actions; `put` keeps what was sent."""

    def __init__(self, actions: torch.Tensor | None = None):
        self.actions, self.sent = actions, []

    def put(self, item, key):
        self.sent.append(item)

    def get(self, key):
        return self.actions


@pytest.fixture
def worker(monkeypatch):
    """An EnvWorker outside Ray (rank 0 of 1) with one stage: BatchedToyReach envs behind BatchedVectorEnv."""
    cfg = SimpleNamespace(
        env=SimpleNamespace(num_envs=NUM_ENVS),
        runner=SimpleNamespace(pipeline_stage_num=1, rollout_steps=3, reset_each_iteration=True, seed=0, eval_rounds=1),
        algorithm=SimpleNamespace(env_group_size=1),
    )

    def make_toy_env(cfg, num_envs, first_env=0):
        return BatchedVectorEnv(
            BatchedToyReach(num_envs, act_dim=ACT_DIM, goal_radius=0.0), lambda raw: raw, max_episode_steps=4
        )

    monkeypatch.setattr(env_worker, "make_vector_env", make_toy_env)
    worker = EnvWorker(cfg)
    worker.init_worker()
    yield worker
    worker.close()


def actions_with_one_element_outside() -> torch.Tensor:
    """(N, chunk, A): env 0 has one element of its 4 at 5.0 (a fraction of 0.25), env 1 none: 0.125 in all."""
    actions = torch.zeros(NUM_ENVS, CHUNK, ACT_DIM)
    actions[0, 1, 0] = 5.0
    return actions


def test_interact_and_evaluate_report_the_clipped_action_fraction(worker):
    metrics = worker.interact(0, FakeChannel(), FakeChannel(actions_with_one_element_outside()))
    assert metrics["clipped_action_fraction"] == pytest.approx(0.125)
    assert metrics["env_steps"] == 3 * NUM_ENVS * CHUNK  # the weight to merge workers by
    assert (
        worker.interact(1, FakeChannel(), FakeChannel(torch.zeros(NUM_ENVS, CHUNK, ACT_DIM)))["clipped_action_fraction"]
        == 0.0
    )  # cleared between iterations
    evaluation = worker.evaluate(0, FakeChannel(), FakeChannel(actions_with_one_element_outside()))
    assert evaluation["clipped_action_fraction"] == pytest.approx(0.125) and evaluation["num_episodes"] == NUM_ENVS
    assert evaluation["env_steps"] == 2 * NUM_ENVS * CHUNK  # two chunks of 2 reach the 4-step limit


def test_clipped_action_metrics_weigh_by_chunk_rows_and_skip_envs_that_do_not_report():
    metrics = ClippedActionMetrics()
    assert metrics.summary() == {}  # e.g. IsaacLab's adapter, which clips nothing itself
    metrics.update({"success": torch.zeros(2)})
    metrics.update({"action_clipped": torch.tensor([0.5, 0.0])}, rows=3)
    metrics.update({"action_clipped": np.array([1.0, 1.0], np.float32)}, rows=1)
    assert metrics.summary() == {"clipped_action_fraction": pytest.approx((0.5 * 3 + 2 * 1.0) / (2 * 3 + 2))}
    metrics.clear()
    assert metrics.summary() == {}
