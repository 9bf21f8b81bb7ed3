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


def check_env_id(env_id: str) -> None:
    """Raise, naming the registered ids, where `env_id` is not one: gymnasium's NameNotFound lists none, and it
    comes from inside a worker after the cluster has started."""
    import difflib

    import rlinf_embodied.envs  # noqa: F401  (registers our ids)

    if env_id in gym.registry:
        return
    ours = sorted(name for name in gym.registry if name.startswith("rlinf/"))
    close = difflib.get_close_matches(env_id, ours, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ValueError(f"env.id={env_id!r} is not a registered env; {hint}registered: {ours}")


# Options of the vector entry points (SubprocVectorEnv's): gym.make passes them to the single env, which would
# misread them (ManiSkill: "dict() got multiple values for keyword argument 'num_envs'")
VECTOR_ONLY_OPTIONS = ("num_envs", "num_workers", "step_timeout", "context", "observe_every_row", "ignore_terminations")


def reject_vector_options(env_id: str, kwargs: dict[str, Any]) -> None:
    """Raise where `gym.make(env_id, **kwargs)` (one env) was given options of batched envs."""
    vector_only = [name for name in VECTOR_ONLY_OPTIONS if name in kwargs]
    if vector_only:
        raise TypeError(
            f"{vector_only} configure batched envs, and gym.make({env_id!r}) builds one: use "
            f"gym.make_vec({env_id!r}, num_envs=N, vectorization_mode='vector_entry_point', ...)"
        )
