"""gymnasium registration of our env ids: string entry points only, so registering imports neither
torch nor a simulator and `import rlinf_embodied` stays cheap (Ray worker processes import it too)."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

import gymnasium as gym


# ids whose envs take a `task_id` (suites of tasks, e.g. LIBERO's): what eval.task_ids can pick from
TASK_SUITES: set[str] = set()
# id -> "module:callable" that checks the options of a `gym.make_vec` call without building an env (check_env_options)
OPTION_CHECKS: dict[str, str] = {}
# every id register_env registered (the env workers take these, and ids under "rlinf")
REGISTERED: set[str] = set()


def register_env(
    env_id: str,
    entry_point: str,
    vector_entry_point: str,
    task_suite: bool = False,
    options_check: str | None = None,
    max_episode_steps: int | None = None,
    **kwargs: Any,
) -> None:
    """Register `env_id` with gymnasium with both a single-env and a vector entry point.

    Entry points are "module:callable" strings, so registering imports no simulator.
    `task_suite`: the env is one of several tasks, chosen by a `task_id` keyword.
    `options_check`: "module:callable" taking the env's options as keywords and raising on a bad value.
    `max_episode_steps`: the task's default time limit: `gym.make` wraps the single env in gymnasium's TimeLimit
    (`gym.make(id, max_episode_steps=N)` overrides it), `gym.make_vec` passes it to the vector entry point.
    `kwargs` become the spec's default kwargs (e.g. the backend task name).
    """
    if task_suite:
        TASK_SUITES.add(env_id)
    if options_check is not None:
        OPTION_CHECKS[env_id] = options_check
    REGISTERED.add(env_id)
    if env_id in gym.registry:
        return
    gym.register(
        id=env_id,
        entry_point=entry_point,
        vector_entry_point=vector_entry_point,
        disable_env_checker=True,
        max_episode_steps=max_episode_steps,
        kwargs=kwargs,
    )


def check_env_id(env_id: str) -> None:
    """Raise, naming the registered ids, where `env_id` is not one: gymnasium's NameNotFound lists none, and it
    comes from inside a worker after the cluster has started."""
    import difflib

    import rlinf_embodied.envs  # noqa: F401  (registers our ids)

    if env_id in gym.registry and (env_id in REGISTERED or env_id.startswith("rlinf")):
        return
    ours = sorted(name for name in gym.registry if name.startswith("rlinf/"))
    if env_id in gym.registry:  # before: accepted, then its vector env failed on obs_mode in every env worker
        raise ValueError(
            f"env.id={env_id!r} is a gymnasium env but not one of ours: the env workers build envs through our "
            f"vector entry points (obs_mode, action chunks, autoreset); register it with "
            f"rlinf_embodied.envs.registration.register_env (docs/DESIGN.md) or pick one of {ours}"
        )
    close = difflib.get_close_matches(env_id, ours, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ValueError(f"env.id={env_id!r} is not a registered env; {hint}registered: {ours}")


def check_env(env_cfg: Any) -> None:
    """An EnvConfig's id (check_env_id) and options (check_env_options), before any env is built."""
    check_env_id(env_cfg.id)
    check_env_options(env_cfg.id, env_cfg.obs_mode, dict(env_cfg.kwargs))


def check_env_options(env_id: str, obs_mode: str, kwargs: dict[str, Any]) -> None:
    """Run `env_id`'s registered options check on what the env workers will pass to `gym.make_vec` (env.obs_mode
    and env.kwargs, over the vector entry point's own defaults and the spec's kwargs), so a bad value fails before
    the cluster starts rather than in every env worker."""
    import inspect

    check = OPTION_CHECKS.get(env_id)
    if check is None:
        return
    spec = gym.registry[env_id]
    defaults = {  # the entry point's keyword defaults: the values an unset option takes there
        name: parameter.default
        for name, parameter in inspect.signature(_load(spec.vector_entry_point)).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    _load(check)(**{**defaults, **spec.kwargs, "obs_mode": obs_mode, **kwargs})


def keyword_names(*functions: Callable[..., Any]) -> set[str]:
    """The parameters of `functions` that can be passed by keyword (`self` aside)."""
    import inspect

    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {
        name
        for function in functions
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.kind in kinds and name != "self"
    }


def reject_unknown_options(env_id: str, options: Iterable[str], *accepting: Callable[..., Any]) -> None:
    """For an options check: raise, naming the valid ones, where an option is a keyword of none of `accepting`
    (the entry point, env classes and make functions the options pass through). Before, a typo in env.kwargs
    (`reward_mod=sparse`) failed with a TypeError in every env worker after the cluster had started."""
    valid = keyword_names(*accepting)
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ValueError(f"env.kwargs {unknown}: not an option of {env_id}; valid: {sorted(valid)}")


def reject_unknown_reset_options(env_name: str, options: Optional[dict], valid: Iterable[str]) -> None:
    """Raise, naming the valid keys, where reset(options=...) holds a key the env does not read. The simulators
    below ignore unknown keys, so a typo (`options={"reconfigur": True}`) used to reset as if it were absent."""
    unknown = sorted(set(options or {}) - set(valid))
    if unknown:
        raise ValueError(f"reset(options=...) keys {unknown}: not read by {env_name}; valid: {sorted(valid)}")


def _load(entry_point: Any) -> Any:
    """A "module:callable" string's callable (a callable as it is)."""
    import importlib

    if not isinstance(entry_point, str):
        return entry_point
    module_name, function_name = entry_point.split(":")
    return getattr(importlib.import_module(module_name), function_name)


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
