"""gymnasium registration of our env ids: string entry points only, so registering imports neither
torch nor a simulator and `import rlinf_embodied` stays cheap (Ray worker processes import it too)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym


# ids whose envs take a `task_id` (suites of tasks, e.g. LIBERO's): what eval.task_ids can pick from
TASK_SUITES: set[str] = set()


def register_env(
    env_id: str, entry_point: str, vector_entry_point: str, task_suite: bool = False, **kwargs: Any
) -> None:
    """Register `env_id` with gymnasium with both a single-env and a vector entry point.

    Entry points are "module:callable" strings, so registering imports no simulator.
    `task_suite`: the env is one of several tasks, chosen by a `task_id` keyword.
    `kwargs` become the spec's default kwargs (e.g. the backend task name).
    """
    if task_suite:
        TASK_SUITES.add(env_id)
    if env_id in gym.registry:
        return
    gym.register(
        id=env_id,
        entry_point=entry_point,
        vector_entry_point=vector_entry_point,
        disable_env_checker=True,
        kwargs=kwargs,
    )
