"""gymnasium registration of our env ids: string entry points only, so registering imports neither
torch nor a simulator and `import rlinf_embodied` stays cheap (Ray worker processes import it too)."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Optional

import gymnasium as gym


# ids whose envs take a `task_id` (suites of tasks, e.g. LIBERO's): what eval.task_ids can pick from
TASK_SUITES: set[str] = set()
# id -> "module:callable" that checks the options of a `gym.make_vec` call without building an env (check_env_options)
OPTION_CHECKS: dict[str, str] = {}
# every id register_env registered (the env workers take these, and ids under "rlinf")
REGISTERED: set[str] = set()
# id -> the spec kwargs that make the id the env it is (ManiSkill's task, LIBERO's suite): a user's kwarg may not
# change them (before: gym.make_vec("rlinf/ManiSkill-PickCube", task="StackCube") quietly built StackCube)
FIXED_KWARGS: dict[str, dict[str, Any]] = {}
# id -> the backend's (entry_point, vector_entry_point) of an id with FIXED_KWARGS, whose spec points at
# make_single / make_vector below (they check the kwargs, then call these)
BACKEND_ENTRY_POINTS: dict[str, tuple[str, str]] = {}
# the spec kwarg that tells make_single / make_vector which id gymnasium is making
ENV_ID_KWARG = "_rlinf_env_id"


def register_env(
    env_id: str,
    entry_point: str,
    vector_entry_point: str,
    task_suite: bool = False,
    options_check: str | None = None,
    max_episode_steps: int | None = None,
    fixed: dict[str, Any] | None = None,
    **kwargs: Any,
) -> None:
    """Register `env_id` with gymnasium with both a single-env and a vector entry point.

    Entry points are "module:callable" strings, so registering imports no simulator.
    `task_suite`: the env is one of several tasks, chosen by a `task_id` keyword.
    `options_check`: "module:callable" taking the env's options as keywords and raising on a bad value.
    `max_episode_steps`: the task's default time limit: `gym.make` wraps the single env in gymnasium's TimeLimit
    (`gym.make(id, max_episode_steps=N)` overrides it), `gym.make_vec` passes it to the vector entry point.
    `fixed`: spec kwargs that make the id what it is (e.g. the backend task name): a kwarg of gym.make / make_vec
    or env.kwargs with another value is refused, naming the id to use instead (check_fixed_kwargs).
    `kwargs` become the spec's default kwargs, which a caller may override (e.g. the reward mode).
    """
    if task_suite:
        TASK_SUITES.add(env_id)
    if options_check is not None:
        OPTION_CHECKS[env_id] = options_check
    REGISTERED.add(env_id)
    if fixed:
        FIXED_KWARGS[env_id] = dict(fixed)
        BACKEND_ENTRY_POINTS[env_id] = (entry_point, vector_entry_point)
        entry_point, vector_entry_point = f"{__name__}:make_single", f"{__name__}:make_vector"
        kwargs = {**kwargs, **fixed, ENV_ID_KWARG: env_id}
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


def time_limit(env_id: str, max_episode_steps: Optional[int]) -> Optional[int]:
    """The steps after which `env_id`'s episodes are cut: env.max_episode_steps, or where that is None (null) the
    id's registered limit, which gym.make / make_vec then apply (e.g. a LIBERO suite's own)."""
    if max_episode_steps is not None or env_id not in gym.registry:
        return max_episode_steps
    return gym.registry[env_id].max_episode_steps


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


def check_env(env_cfg: Any, local: bool = True) -> None:
    """An EnvConfig's id (check_env_id) and options (check_env_options), before any env is built. `local`: the envs
    will run on this machine (no cluster.address), so GPU physics needs a GPU here."""
    check_env_id(env_cfg.id)
    check_env_options(env_cfg.id, env_cfg.obs_mode, dict(env_cfg.kwargs))
    if local and dict(env_cfg.kwargs).get("sim_backend") == "physx_cuda":  # ManiSkill's GPU physics
        from .maniskill.gpu_physics import require_physx_gpu

        try:  # before: every env worker's error, once Ray and the worker groups had started
            require_physx_gpu()
        except RuntimeError as error:
            raise ValueError(f"env.kwargs.sim_backend=physx_cuda: {error}") from None


def check_env_options(env_id: str, obs_mode: str, kwargs: dict[str, Any]) -> None:
    """Run `env_id`'s registered options check on what the env workers will pass to `gym.make_vec` (env.obs_mode
    and env.kwargs, over the vector entry point's own defaults and the spec's kwargs), so a bad value fails before
    the cluster starts rather than in every env worker."""
    import inspect

    check_fixed_kwargs(env_id, kwargs, config=True)
    reject_gym_parameters(env_id, kwargs)
    check = OPTION_CHECKS.get(env_id)
    if check is None:
        return
    spec, vector_entry_point = gym.registry[env_id], backend_vector_entry_point(env_id)
    defaults = {  # the entry point's keyword defaults: the values an unset option takes there
        name: parameter.default
        for name, parameter in inspect.signature(vector_entry_point).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    spec_kwargs = {name: value for name, value in spec.kwargs.items() if name != ENV_ID_KWARG}
    _load(check)(**{**defaults, **spec_kwargs, "obs_mode": obs_mode, **kwargs})


def check_fixed_kwargs(env_id: str, kwargs: dict[str, Any], config: bool = False) -> None:
    """Raise where `kwargs` give one of `env_id`'s FIXED_KWARGS another value (the same value is harmless), naming
    the id that has it. `config`: the kwargs are env.kwargs (the message names settings, not gym.make's ids)."""
    for key, fixed in FIXED_KWARGS.get(env_id, {}).items():
        if key in kwargs and kwargs[key] != fixed:
            setting = f"env.kwargs.{key}={kwargs[key]!r}" if config else f"{key}={kwargs[key]!r}"
            raise ValueError(
                f"{setting} would build a different {key} than {'env.id' if config else 'the id'} {env_id!r} "
                f"({key}={fixed!r}); {_id_with(key, kwargs[key], config)}"
            )


def _id_with(key: str, value: Any, config: bool) -> str:
    """What to do instead of passing `key=value`: use the id registered with it, or one of the ids with a `key`."""
    matches = sorted(env_id for env_id, fixed in FIXED_KWARGS.items() if fixed.get(key) == value)
    if not matches:
        ids = sorted(env_id for env_id, fixed in FIXED_KWARGS.items() if key in fixed)
        return f"no registered id has {key}={value!r}; drop it, or pick an id of {ids}"
    return f"use env.id={matches[0]}" if config else f"make {matches[0]!r} instead"


def backend_vector_entry_point(env_id: str) -> Callable[..., Any]:
    """`env_id`'s vector entry point: the backend's, behind make_vector for ids registered with `fixed` kwargs."""
    if env_id in BACKEND_ENTRY_POINTS:
        return _load(BACKEND_ENTRY_POINTS[env_id][1])
    return _load(gym.registry[env_id].vector_entry_point)


def reject_gym_parameters(env_id: str, kwargs: dict[str, Any]) -> None:
    """Raise where env.kwargs hold a parameter of gymnasium's make / make_vec themselves (before: `id` or
    `disable_env_checker` passed the options check, then every env worker failed with "got multiple values")."""
    given = keyword_names(gym.make, gym.make_vec) & set(kwargs)
    if given:  # num_envs, max_episode_steps: also the entry point's own (and settings of EnvConfig)
        given -= keyword_names(backend_vector_entry_point(env_id))
    if given:
        raise ValueError(
            f"env.kwargs {sorted(given)}: parameters of gymnasium's make / make_vec, which the env workers set "
            f"themselves (gym.make_vec(env.id, vectorization_mode='vector_entry_point', ...)); drop them"
        )


def make_single(**kwargs: Any) -> gym.Env:
    """`gym.make` entry point of the ids registered with `fixed` kwargs: check_fixed_kwargs, then the backend's."""
    env_id = kwargs.pop(ENV_ID_KWARG)
    check_fixed_kwargs(env_id, kwargs)
    return _load(BACKEND_ENTRY_POINTS[env_id][0])(**kwargs)


def make_vector(**kwargs: Any) -> gym.vector.VectorEnv:
    """`gym.make_vec` entry point of the ids registered with `fixed` kwargs: check_fixed_kwargs, then the backend's."""
    env_id = kwargs.pop(ENV_ID_KWARG)
    check_fixed_kwargs(env_id, kwargs)
    return _load(BACKEND_ENTRY_POINTS[env_id][1])(**kwargs)


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


def reject_unknown_options(
    env_id: str, options: Iterable[str], *accepting: Callable[..., Any], exclude: Iterable[str] = ()
) -> None:
    """For an options check: raise, naming the valid ones, where an option is a keyword of none of `accepting`
    (the entry point, env classes and make functions the options pass through) or is in `exclude` (keywords
    refused elsewhere, left out of the valid ones). Before, a typo in env.kwargs (`reward_mod=sparse`) failed with
    a TypeError in every env worker after the cluster had started."""
    valid = keyword_names(*accepting) - set(exclude)
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ValueError(f"env.kwargs {unknown}: not an option of {env_id}; valid: {sorted(valid)}")


def check_reset_options(options: Any) -> Optional[Mapping[str, Any]]:
    """`reset(options=...)` must be None or a mapping of option names to values. Before, a list or string passed the
    unknown-key check (its items read as keys: options=["reconfigure"] was accepted) and then failed inside the env
    (AttributeError: 'list' object has no attribute 'get'), and options=5 crashed the env workers."""
    if options is not None and not isinstance(options, Mapping):
        raise TypeError(
            f"reset(options={options!r}): pass a dict of option names to values (e.g. {{'reconfigure': True}}) or None"
        )
    return options


def reject_unknown_reset_options(env_name: str, options: Optional[dict], valid: Iterable[str]) -> None:
    """Raise, naming the valid keys, where reset(options=...) holds a key the env does not read. The simulators
    below ignore unknown keys, so a typo (`options={"reconfigur": True}`) used to reset as if it were absent."""
    check_reset_options(options)
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
