"""`gym.make_vec("rlinf/LIBERO-...", vectorization_mode="vector_entry_point", ...)`: LIBERO in subprocesses.

Each env is a `LiberoEnv` built inside a `SubprocVectorEnv` worker process (MuJoCo and its GL
context never live in the caller's process); batching, chunks, SAME_STEP auto-reset, episode
stats, seeding and crash recovery are the shared vector env's (see `envs/vector.py`).
"""

from __future__ import annotations

import functools
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Optional, Sequence, Union

import gymnasium as gym
import numpy as np

from ..batching import is_one_task_id
from ..registration import reject_unknown_options
from ..vector import SubprocVectorEnv, validate_common_options
from .env import (
    ACTION_DIM,
    OBS_MODES,
    PROPRIO_DIM,
    LiberoEnv,
    LiberoEnvFactory,
    validate_camera_size,
    validate_num_settle_steps,
    validate_obs_mode,
)
from .runtime import named_gl_backend, resolve_gl_backend
from .suites import LiberoSuite, get_suite

DEFAULT_STEP_TIMEOUT_S = 300.0  # a chunk of CPU-rendered steps for several envs per worker can take a while


def check_options(
    suite: str,
    obs_mode: str,
    camera_size: int,
    task_id: Union[int, Sequence[int]] = 0,
    num_workers: Optional[int] = None,
    step_timeout: Optional[float] = None,
    num_settle_steps: int = 10,
    gl_backend: Optional[str] = None,
    **other_options: Any,
) -> None:
    """register_env's options_check: make_libero_vector_env's task ids, obs mode, camera size, settle steps, GL
    backend (by name: $RLINF_LIBERO_GL / $MUJOCO_GL where unset; no probe), render mode (refused) and subprocess
    options (check_env_options fills in its defaults), checked without importing LIBERO. A task-id list's length
    against the envs is checked where the env is built (the env workers split env.num_envs)."""
    validated_task_ids(get_suite(suite), task_id, obs_mode)
    validate_camera_size(camera_size)
    validate_num_settle_steps(num_settle_steps)
    # before: gl_backend=foo and render_mode=human failed in every env worker after the cluster had started, and
    # render_mode=rgb_array was accepted and had no effect
    named_gl_backend(gl_backend, "env.kwargs.gl_backend")
    reject_vector_render_mode(other_options.get("render_mode"), "env.kwargs.render_mode")
    validate_common_options(None, num_workers, None, step_timeout)  # num_envs (split), max_episode_steps: apart
    reject_unknown_options(suite, other_options, make_libero_vector_env, LiberoEnv.__init__, exclude=("render_mode",))


def reject_vector_render_mode(render_mode: Any, setting: str = "render_mode") -> None:
    """The vector env never calls render() (its render_mode is None): a render mode would only make every env build
    an offscreen renderer for frames nobody reads. One env (gym.make) takes render_mode='rgb_array'."""
    if render_mode is not None:
        raise ValueError(
            f"{setting}={render_mode!r}: LIBERO's vector env does not render(); for camera frames use "
            "obs_mode='rgb' (obs['rgb'] and obs['wrist_rgb'], sized by camera_size), and for evaluation videos "
            "eval.video=true (envs/wrappers/video.py's VideoRecorder records the rgb observations). Only one env, "
            "gym.make(<LIBERO id>, render_mode='rgb_array'), renders"
        )


def make_libero_vector_env(
    num_envs: int,
    suite: str,
    task_id: Union[int, Sequence[int]] = 0,
    obs_mode: str = "rgb",
    camera_size: int = 224,
    max_episode_steps: Optional[int] = None,
    ignore_terminations: bool = False,
    num_workers: Optional[int] = None,
    step_timeout: float = DEFAULT_STEP_TIMEOUT_S,
    gl_backend: Optional[str] = None,
    num_settle_steps: int = 10,
    **env_kwargs: Any,
) -> SubprocVectorEnv:
    """A torch `VectorEnv` of `num_envs` LIBERO envs of `suite`.

    `task_id` is one task for all envs or a list with one task per env (multi-task batches need
    obs_mode="rgb", whose observation shapes do not depend on the task). `max_episode_steps=None`
    uses the suite's budget (OpenVLA's: Spatial 220, Object 280, Goal 300, 10: 520, 90: 400).
    """
    validate_common_options(num_envs)  # before: num_envs=True built one env
    spec = get_suite(suite)
    task_ids = _task_ids(spec, task_id, num_envs, obs_mode)
    validate_camera_size(camera_size)
    validate_num_settle_steps(num_settle_steps)  # here, not first in each worker's LiberoEnv
    reject_vector_render_mode(env_kwargs.get("render_mode"))
    # before: an unknown keyword was passed on to every LiberoEnv and failed in the env workers (or at the first reset)
    reject_unknown_options(
        spec.env_id, env_kwargs, make_libero_vector_env, LiberoEnv.__init__, exclude=("render_mode",)
    )
    backend = resolve_gl_backend(gl_backend)
    factories = [
        LiberoEnvFactory(
            suite=spec.env_id,
            task_id=task,
            obs_mode=obs_mode,
            camera_size=camera_size,
            gl_backend=backend,
            num_settle_steps=num_settle_steps,
            **env_kwargs,
        )
        for task in task_ids
    ]
    observation_space, action_space = single_spaces(spec.env_id, task_ids[0], obs_mode, camera_size, backend)
    return SubprocVectorEnv(
        factories,
        num_workers=num_workers,
        max_episode_steps=spec.max_episode_steps if max_episode_steps is None else max_episode_steps,
        ignore_terminations=ignore_terminations,
        step_timeout=step_timeout,
        observation_space=observation_space,
        action_space=action_space,
    )


def _task_ids(spec: LiberoSuite, task_id: Union[int, Sequence[int]], num_envs: int, obs_mode: str) -> list[int]:
    task_ids = validated_task_ids(spec, task_id, obs_mode)
    if is_one_task_id(task_id):
        return task_ids * num_envs
    if len(task_ids) != num_envs:
        raise ValueError(f"task_id got {len(task_ids)} entries for num_envs={num_envs}; pass one int or one per env")
    return task_ids


def validated_task_ids(spec: LiberoSuite, task_id: Union[int, Sequence[int]], obs_mode: str) -> list[int]:
    """`task_id` (one id or one per env) as a list of ids of `spec`'s tasks; raises on an id out of range, a value
    that is neither, or different tasks where `obs_mode`'s observations differ in size between them."""
    validate_obs_mode(obs_mode)
    if is_one_task_id(task_id):
        return [spec.validate_task_id(int(task_id))]
    if isinstance(task_id, (str, bytes)) or not isinstance(task_id, Sequence) or not task_id:
        raise ValueError(  # a string is a Sequence: 'abc' was read as the task ids 'a', 'b', 'c'
            f"task_id={task_id!r}: pass one task id of {spec.env_id} (an int in 0..{spec.num_tasks - 1}) or a "
            "non-empty list with one per env"
        )
    task_ids = [spec.validate_task_id(int(task) if isinstance(task, np.integer) else task) for task in task_id]
    if len(set(task_ids)) > 1 and OBS_MODES[obs_mode]["object_state"]:
        raise ValueError(
            f"different task ids per env need obs_mode='rgb' (the object state of obs_mode="
            f"{obs_mode!r} differs in size between tasks); got task ids {sorted(set(task_ids))}"
        )
    return task_ids


def single_spaces(
    suite: str, task_id: int, obs_mode: str, camera_size: int, gl_backend: str
) -> tuple[gym.spaces.Dict, gym.spaces.Box]:
    """The single env's spaces: static for "rgb"; for "state" (task-dependent size) probed in a child process."""
    if not OBS_MODES[obs_mode]["object_state"]:
        spaces: dict[str, gym.spaces.Space] = {"state": gym.spaces.Box(-np.inf, np.inf, (PROPRIO_DIM,), np.float32)}
        for key in OBS_MODES[obs_mode]["images"]:
            spaces[key] = gym.spaces.Box(0, 255, (camera_size, camera_size, 3), np.uint8)
        return gym.spaces.Dict(spaces), gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
    return _probed_spaces(suite, task_id, obs_mode, camera_size, gl_backend)


@functools.lru_cache(maxsize=32)
def _probed_spaces(
    suite: str, task_id: int, obs_mode: str, camera_size: int, gl_backend: str
) -> tuple[gym.spaces.Dict, gym.spaces.Box]:
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(_spaces_of, suite, task_id, obs_mode, camera_size, gl_backend).result()


def _spaces_of(
    suite: str, task_id: int, obs_mode: str, camera_size: int, gl_backend: str
) -> tuple[gym.spaces.Dict, gym.spaces.Box]:
    env = LiberoEnv(suite=suite, task_id=task_id, obs_mode=obs_mode, camera_size=camera_size, gl_backend=gl_backend)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()
