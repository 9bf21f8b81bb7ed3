"""A per-env env.kwargs.task_id list over env workers and pipeline stages (workers/env_worker.py)."""

from __future__ import annotations

from rlinf_embodied.config import compose_config
from rlinf_embodied.workers import env_worker


def test_each_vector_env_gets_its_slice_of_a_per_env_task_id_list(monkeypatch):
    """Before: every env worker and pipeline stage got the whole list (4 ids for its 1 env) and failed to build."""
    cfg = compose_config("config", ["env=libero", "env.num_envs=4", "env.kwargs.task_id=[7,3,5,1]"])
    built = []
    monkeypatch.setattr(env_worker.gym, "make_vec", lambda env_id, num_envs, **kwargs: built.append(kwargs))
    for first_env in range(4):  # 2 env workers x 2 stages of 1 env each: global env ids 0..3 in order
        env_worker.make_vector_env(cfg, 1, first_env=first_env)
    assert [kwargs["task_id"] for kwargs in built] == [[7], [3], [5], [1]]
    cfg.env.kwargs["task_id"] = 2  # one task for all envs: passed as given
    env_worker.make_vector_env(cfg, 2, first_env=2)
    assert built[-1]["task_id"] == 2
