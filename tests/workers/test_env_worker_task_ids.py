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


def test_one_task_id_or_a_per_env_list_is_decided_once_for_the_env_workers_and_libero():
    """envs/batching.is_one_task_id is the one test of both: LIBERO's vector env takes one id (an int, numpy ints
    too, not a bool) for every env; the env workers slice any other iterable but a string, and pass the rest on as
    given for the env to refuse."""
    import numpy as np
    from omegaconf import OmegaConf

    from rlinf_embodied.envs.batching import is_one_task_id
    from rlinf_embodied.envs.libero import vector_env

    assert vector_env.is_one_task_id is is_one_task_id
    listed = OmegaConf.create({"task_id": [4, 2]}).task_id  # a ListConfig, as Hydra gives env.kwargs.task_id
    cases = [  # (task_id, one task id, what per_env_task_ids gives)
        (3, True, None),
        (np.int64(3), True, None),
        (True, False, None),
        ("3", False, None),
        (None, False, None),
        (1.0, False, None),
        ([4, 2], False, [4, 2]),
        ((4, 2), False, [4, 2]),
        (listed, False, [4, 2]),
    ]
    for task_id, one, per_env in cases:
        assert is_one_task_id(task_id) is one, task_id
        assert env_worker.per_env_task_ids({"task_id": task_id}) == per_env, task_id
        assert type(env_worker.per_env_task_ids({"task_id": task_id})) is type(per_env)
    assert env_worker.per_env_task_ids({}) is None
