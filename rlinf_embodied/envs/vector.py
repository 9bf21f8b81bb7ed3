"""Shared batched env: single envs in subprocesses, stepped as one torch `gymnasium.vector.VectorEnv`.

A backend supplies picklable factories of *single* envs following the `SingleEnv` protocol below;
`SubprocVectorEnv` does everything else: batching into torch tensors, action chunks, SAME_STEP
auto-reset, episode statistics, `max_episode_steps` / `ignore_terminations`, seeding, packing
several envs per worker process, and restarting crashed or hung workers.

Single-env protocol (`SingleEnv`)
---------------------------------
- `observation_space`: `gymnasium.spaces.Dict` with a float32 `"state"` Box `(D,)` and optionally
  uint8 `"rgb"` / `"wrist_rgb"` Boxes `(H, W, 3)`. `reset`/`step` return numpy obs with these keys.
- `action_space`: a float32 Box `(act_dim,)`.
- `instruction: str` -- the task's language instruction, read after every reset.
- `reset(seed=None, options=None) -> (obs, info)`; `step(action) -> (obs, reward, terminated,
  truncated, info)` with `info["success"]` (bool) each step; `close()`.
- Optional, for envs whose observation is expensive (rendered cameras): `step_without_obs(action)
  -> (reward, terminated, truncated, info)`, the same transition without building the obs, and
  `observe() -> obs` for the current state. The vector env then renders only the obs somebody reads:
  after a chunk's last row, and where an episode ends inside a chunk (its final obs).
The single env does not need its own time limit: pass `max_episode_steps` to the vector env.

Vector-env semantics (see also envs/README.md)
----------------------------------------------
- `step(actions)`: torch or numpy, `(N, act_dim)` or a chunk `(N, chunk, act_dim)`; the rows of a
  chunk are executed in order. Rewards / terminations / truncations come back as `(N,)` for 2-D
  actions and `(N, chunk)` for chunks (float32 / bool). Once env i ends at row t of its chunk,
  rows t+1.. are NOT applied (reward 0, terminated/truncated False there) and env i is reset.
- Auto-reset is gymnasium's SAME_STEP: the returned obs of an env that ended is the first obs of
  its next episode. `info["final_obs"]` (dict of `(N, ...)` tensors, valid where
  `info["_final_obs"]` is True) is the obs it ended in; `info["final_info"]` holds
  `{"success": (N,), "episode": {...}}` with mask `info["_final_info"]`.
- `info["success"]`: `(N,)` bool, success at the last step applied this call (for an env that
  ended: at its final step). `info["elapsed_steps"]`: `(N,)` int64 steps into the current episode.
- `info["action_clipped"]`: `(N,)` float32, each env's fraction of the action elements given this call
  (all rows of its chunk) outside `single_action_space`, which the single envs clip to it; the first
  such action logs a warning (`batching.ActionBounds`). Integer actions are cast to float32; bool, complex, object
  and string dtypes are a ValueError.
- At episode end `info["episode"] = {"return": float32, "length": int64, "success_once": bool,
  "success": bool}` (each `(N,)`; "success" is success at the final step, "success_once" whether
  any step succeeded) with mask `info["_episode"]` `(N,)` bool. `metrics.EpisodeMetrics` reads it.
- `obs["instruction"]` is a `list[str]` of length N (not part of `observation_space`).
- Seeds: `reset(seed=int)` seeds env i with `seed + i`; `reset(seed=[...])` gives one per env.
  Later auto-resets pass no seed, so each env continues its own RNG stream: same seeds + same
  actions -> same trajectories.
- A worker that dies or does not answer within `step_timeout` seconds is killed and restarted
  (logged with `logging.warning`); its envs come back reset, reported truncated at the last row of
  the chunk with reward 0, `final_obs` = their last observation, and the run goes on (their reset takes no seed:
  a restart ends the envs' seeded streams). A worker whose last 3 steps all failed raises a RuntimeError instead.
- An error the envs raise in `reset` or `call` (an option or attribute they do not know, wrong arguments) is the
  caller's: it is raised in the caller as its builtin type (ValueError, TypeError, AttributeError, ...) once every
  worker has answered, and the workers live on. `reset(options=...)` takes a dict (or None).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Callable, Iterator, Optional, Protocol, Sequence, Union, runtime_checkable

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector.utils import batch_space

from .batching import (
    ActionBounds,
    SeedLike,
    check_open,
    is_int,
    per_env_seeds,
    real_actions,
    reject_non_finite_actions,
)
from .registration import check_reset_options

logger = logging.getLogger(__name__)

IMAGE_KEYS = ("rgb", "wrist_rgb")
OBS_KEYS = ("state",) + IMAGE_KEYS
# a worker restarted after this many failed steps in a row (crash or step_timeout) is an error, not restarted again
MAX_STEP_FAILURES_IN_A_ROW = 3
ArrayLike = Union[np.ndarray, torch.Tensor, Sequence[float]]


@runtime_checkable
class SingleEnv(Protocol):
    """One non-batched env as a backend provides it (see the module docstring)."""

    observation_space: gym.spaces.Dict
    action_space: gym.spaces.Box
    instruction: str

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None) -> tuple[dict, dict]: ...

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]: ...

    def close(self) -> None: ...


EnvFactory = Callable[[], SingleEnv]


@dataclass(frozen=True)
class _StepRules:
    """How a worker applies a chunk: time limit, terminations, and which rows build an obs."""

    max_episode_steps: Optional[int]
    ignore_terminations: bool
    observe_every_row: bool  # False: rows nobody reads skip the obs (envs with step_without_obs)


# ---- shared-memory observation buffers -----------------------------------------------------------
@dataclass(frozen=True)
class _BufferSpec:
    """Layout of one obs key in shared memory: a `(num_envs, *shape)` array of `dtype`."""

    key: str
    shape: tuple[int, ...]
    dtype: str


class _SharedObs:
    """Two `(N, ...)` arrays per obs key in shared memory: current obs and final (pre-reset) obs."""

    def __init__(self, ctx: Any, specs: list[_BufferSpec], num_envs: int):
        self.specs, self.num_envs = specs, num_envs
        self.raw = {
            (which, s.key): ctx.RawArray("b", max(1, num_envs * _nbytes(s)))
            for s in specs
            for which in ("obs", "final")
        }

    def views(self) -> dict[tuple[str, str], np.ndarray]:
        return _views(self.raw, self.specs, self.num_envs)


def _nbytes(spec: _BufferSpec) -> int:
    return int(np.prod(spec.shape, dtype=np.int64)) * np.dtype(spec.dtype).itemsize


def _views(raw: dict, specs: list[_BufferSpec], num_envs: int) -> dict[tuple[str, str], np.ndarray]:
    views = {}
    for spec in specs:
        for which in ("obs", "final"):
            flat = np.frombuffer(raw[(which, spec.key)], dtype=np.uint8)[: num_envs * _nbytes(spec)]
            views[(which, spec.key)] = flat.view(spec.dtype).reshape(num_envs, *spec.shape)
    return views


def buffer_specs(observation_space: gym.spaces.Dict) -> list[_BufferSpec]:
    """The shared-memory layout for a single env's Dict observation space."""
    if not isinstance(observation_space, gym.spaces.Dict) or "state" not in observation_space.spaces:
        raise TypeError(f"a single env's observation_space must be a Dict with a 'state' Box, got {observation_space}")
    unknown = set(observation_space.spaces) - set(OBS_KEYS)
    if unknown:
        raise KeyError(f"unsupported observation keys {sorted(unknown)}; valid keys: {list(OBS_KEYS)}")
    return [
        _BufferSpec(key, tuple(space.shape), np.dtype(space.dtype).str)
        for key, space in observation_space.spaces.items()
    ]


# ---- the worker process --------------------------------------------------------------------------
class _EnvSlot:
    """One env inside a worker plus the bookkeeping the vector env's semantics need."""

    def __init__(self, env: SingleEnv, index: int):
        self.env, self.index, self.elapsed = env, index, 0


def _write_obs(views: dict, which: str, index: int, obs: dict[str, np.ndarray]) -> None:
    for (kind, key), array in views.items():
        if kind == which:
            array[index] = obs[key]


def _step_slot(slot: _EnvSlot, actions: np.ndarray, views: dict, rules: _StepRules) -> dict[str, Any]:
    """Apply one env's chunk `(chunk, act_dim)`; stop at the episode end and auto-reset."""
    chunk = actions.shape[0]
    rewards = np.zeros(chunk, np.float32)
    terminated, truncated, success = (np.zeros(chunk, bool) for _ in range(3))
    step_without_obs = None if rules.observe_every_row else getattr(slot.env, "step_without_obs", None)
    ended_at, obs = -1, None
    for t in range(chunk):
        if step_without_obs is not None and t < chunk - 1:
            obs = None
            reward, term, trunc, info = step_without_obs(actions[t])
        else:
            obs, reward, term, trunc, info = slot.env.step(actions[t])
        slot.elapsed += 1
        rewards[t], success[t] = float(reward), bool(info.get("success", False))
        terminated[t] = bool(term) and not rules.ignore_terminations
        truncated[t] = bool(trunc) or (rules.max_episode_steps is not None and slot.elapsed >= rules.max_episode_steps)
        if terminated[t] or truncated[t]:
            ended_at = t
            _write_obs(views, "final", slot.index, obs if obs is not None else slot.env.observe())
            obs, _ = slot.env.reset()
            slot.elapsed = 0
            break
    _write_obs(views, "obs", slot.index, obs)
    return {
        "rewards": rewards,
        "terminated": terminated,
        "truncated": truncated,
        "success": success,
        "ended_at": ended_at,
        "instruction": str(getattr(slot.env, "instruction", "")),
    }


def _pack(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack per-env step results into one small message: arrays `(k, chunk)` / `(k,)`."""
    packed = {key: np.stack([r[key] for r in results]) for key in ("rewards", "terminated", "truncated", "success")}
    packed["ended_at"] = np.array([r["ended_at"] for r in results], np.int64)
    packed["instruction"] = [r["instruction"] for r in results]
    return packed


def _worker_main(
    conn: Connection,
    env_fns: list[EnvFactory],
    indices: list[int],
    raw: dict,
    specs: list[_BufferSpec],
    num_envs: int,
    rules: _StepRules,
) -> None:
    """Subprocess loop: build the envs, then serve reset/step/call/close commands over the pipe."""
    try:
        # What this process imported (torch, the simulator) is never garbage, but every gc.collect() scans it:
        # ManiSkill runs two per env it builds, 0.25 s each, 88% of building an env (benchmarks/env_startup.py).
        # Frozen, those collections scan only the envs' own objects.
        gc.freeze()
        slots = [_EnvSlot(fn(), index) for fn, index in zip(env_fns, indices)]
        views = _views(raw, specs, num_envs)
        conn.send(("ok", time.time()))  # when its envs were built (wall clock: comparable across processes)
        _serve(conn, slots, views, rules)
    except (KeyboardInterrupt, EOFError):
        return
    except BaseException as error:  # report to the parent, which decides what to do
        import traceback

        try:
            conn.send(("error", f"{type(error).__name__}: {error}\n{traceback.format_exc()}"))
        except (BrokenPipeError, OSError):
            pass


# The errors of a command that come from the caller's input (an option or attribute name the env does not know,
# wrong arguments): the worker answers "refused" and serves on. Any other error (in "step", or a simulator's failure
# in "reset") is the env's own: the worker exits and is restarted, its envs reset.
_REFUSED_ERRORS: dict[str, tuple[type[Exception], ...]] = {"reset": (ValueError, TypeError), "call": (Exception,)}


def _serve(conn: Connection, slots: list[_EnvSlot], views: dict, rules: _StepRules) -> None:
    while True:
        command, payload = conn.recv()
        if command == "close":
            for slot in slots:
                slot.env.close()
            conn.send(("ok", None))
            return
        try:
            answer = _run_command(command, payload, slots, views, rules)
        except Exception as error:  # before: only a ValueError in reset was refused; a call's error killed the worker
            if not isinstance(error, _REFUSED_ERRORS.get(command, ())):
                raise
            conn.send(("refused", _refusal(error)))
            continue
        conn.send(("ok", answer))


def _run_command(command: str, payload: Any, slots: list[_EnvSlot], views: dict, rules: _StepRules) -> Any:
    if command == "reset":
        return _reset_slots(slots, views, *payload)
    if command == "step":
        return _pack([_step_slot(slot, actions, views, rules) for slot, actions in zip(slots, payload)])
    if command == "call":
        return _call_slots(slots, *payload)
    if command == "pid":
        return os.getpid()
    raise RuntimeError(f"unknown worker command {command!r}")


def _reset_slots(slots: list[_EnvSlot], views: dict, seeds: list[Optional[int]], options: Optional[dict]) -> list[str]:
    instructions = []
    for slot, seed in zip(slots, seeds):
        obs, _ = slot.env.reset(seed=seed, options=options)
        slot.elapsed = 0
        _write_obs(views, "obs", slot.index, obs)
        instructions.append(str(getattr(slot.env, "instruction", "")))
    return instructions


def _call_slots(slots: list[_EnvSlot], name: str, args: tuple, kwargs: dict) -> list[Any]:
    results = []
    for slot in slots:
        if name not in dir(slot.env):  # before: getattr's AttributeError killed the worker
            public = sorted(attribute for attribute in dir(slot.env) if not attribute.startswith("_"))
            raise AttributeError(
                f"call({name!r}): {type(slot.env).__name__} has no attribute {name!r}; it has {public}"
            )
        attribute = getattr(slot.env, name)
        results.append(attribute(*args, **kwargs) if callable(attribute) else attribute)
    return results


# The error types a refused command is raised as in the caller (the nearest one an env's error derives from)
_PUBLIC_ERRORS: dict[str, type[Exception]] = {
    error.__name__: error
    for error in (ValueError, TypeError, AttributeError, KeyError, IndexError, NotImplementedError, RuntimeError)
}


def _refusal(error: Exception) -> tuple[str, str]:
    """(the builtin error type to raise in the caller, the message): a subclass keeps its own name in the message."""
    kind = next((base.__name__ for base in type(error).__mro__ if _PUBLIC_ERRORS.get(base.__name__) is base), None)
    message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    if kind != type(error).__name__:
        message = f"{type(error).__name__}: {message}"
    return kind or "RuntimeError", message


class _WorkerDied(RuntimeError):
    pass


class _InputRefused(Exception):
    """An env in a worker refused a command's input; the worker lives on. `public()`: the error to raise."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind, self.message = kind, message

    def public(self) -> Exception:
        """The env's error as the builtin type it derives from (ValueError, TypeError, AttributeError, ...)."""
        return _PUBLIC_ERRORS.get(self.kind, RuntimeError)(self.message)


class _Worker:
    """Parent-side handle of one subprocess holding the envs `indices`."""

    def __init__(
        self,
        ctx: Any,
        env_fns: list[EnvFactory],
        indices: list[int],
        shared: _SharedObs,
        rules: _StepRules,
    ):
        self.ctx, self.env_fns, self.indices, self.shared, self.rules = ctx, env_fns, indices, shared, rules
        self.process: Optional[mp.process.BaseProcess] = None
        self.conn: Optional[Connection] = None

    def start(self) -> None:
        parent_conn, child_conn = self.ctx.Pipe()
        self.process = self.ctx.Process(
            target=_worker_main,
            daemon=True,
            name=f"env-worker-{self.indices[0]}",
            args=(
                child_conn,
                self.env_fns,
                self.indices,
                self.shared.raw,
                self.shared.specs,
                self.shared.num_envs,
                self.rules,
            ),
        )
        with _main_without_unreadable_file():
            self.process.start()
        child_conn.close()
        self.conn = parent_conn

    def send(self, command: str, payload: Any = None) -> None:
        if self.conn is None:  # killed after it failed to answer a call: the next step or reset restarts it
            raise _WorkerDied(f"worker of envs {self.indices} is not running")
        try:
            self.conn.send((command, payload))
        except (BrokenPipeError, OSError) as error:
            raise _WorkerDied(f"worker of envs {self.indices} is gone ({error})") from error

    def receive(self, timeout: Optional[float]) -> Any:
        if not self.conn.poll(timeout):
            raise _WorkerDied(f"worker of envs {self.indices} did not answer within {timeout}s")
        try:
            status, payload = self.conn.recv()
        except (EOFError, OSError) as error:
            raise _WorkerDied(
                f"worker of envs {self.indices} died (exit code {self.process.exitcode if self.process else None})"
            ) from error
        if status == "error":
            raise _WorkerDied(f"worker of envs {self.indices} raised: {payload}")
        if status == "refused":
            raise _InputRefused(*payload)
        return payload

    def kill(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        if self.conn is not None:
            self.conn.close()
        self.process, self.conn = None, None


@contextlib.contextmanager
def _main_without_unreadable_file() -> Iterator[None]:
    """forkserver/spawn children re-run the parent's main script from `__main__.__file__`. A script read
    from stdin (`python - < script.py`, as notebooks and REPLs feed code) has `__file__ == "<stdin>"`,
    which the child cannot open, and dies before it starts. The workers need nothing from such a main
    (the env factories live in importable modules), so hide that name while a worker starts, as an
    interactive session without `__file__` (Jupyter) already has it. A factory defined in that main
    cannot reach the worker either way; define it in a module."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    original_dir = mp.process.ORIGINAL_DIR or ""
    if (
        main is None
        or path is None
        or getattr(main, "__spec__", None) is not None
        or os.path.isfile(os.path.join(original_dir, path))
    ):
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


def split_evenly(num_envs: int, num_workers: int) -> list[list[int]]:
    """Contiguous env indices per worker, sizes differing by at most one."""
    base, extra = divmod(num_envs, num_workers)
    groups, start = [], 0
    for worker in range(num_workers):
        size = base + (worker < extra)
        groups.append(list(range(start, start + size)))
        start += size
    return groups


# ---- the vector env ------------------------------------------------------------------------------
class SubprocVectorEnv(gym.vector.VectorEnv):
    """`num_envs` single envs in `num_workers` subprocesses, batched into torch tensors on CPU.

    Args:
        env_fns: one picklable factory per env, each returning a `SingleEnv`.
        num_workers: subprocesses; default `min(num_envs, os.cpu_count())`. Each worker steps its
            envs sequentially.
        max_episode_steps: truncate episodes after this many steps (None: only the env's own).
        ignore_terminations: never report terminated (success does not end the episode).
        observe_every_row: build every row's obs of a chunk. By default envs that offer
            `step_without_obs` skip the obs of rows nobody reads (all but a chunk's last and an
            episode's final obs), which for rendered cameras is most of a step's cost.
        step_timeout: seconds a worker may take for one `step` before it is restarted.
        start_timeout: seconds a worker may take to build its envs or reset them.
        context: multiprocessing start method ("forkserver" or "spawn"; "fork" is unsafe with
            simulators that start threads).
        observation_space / action_space: the single env's spaces; read from a probe env built in
            the parent when omitted (that imports the simulator in this process).
        preload_modules: modules the forkserver imports once, before it forks the workers (the
            simulator): each worker then starts without importing it again. Only the first vector
            env of a process sets them (there is one forkserver per process); ignored with "spawn".
    """

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}

    def __init__(
        self,
        env_fns: Sequence[EnvFactory],
        num_workers: Optional[int] = None,
        max_episode_steps: Optional[int] = None,
        ignore_terminations: bool = False,
        observe_every_row: bool = False,
        step_timeout: float = 60.0,
        start_timeout: float = 300.0,
        context: str = "forkserver",
        observation_space: Optional[gym.spaces.Dict] = None,
        action_space: Optional[gym.spaces.Box] = None,
        preload_modules: Sequence[str] = (),
    ):
        env_fns = list(env_fns)
        if not env_fns:
            raise ValueError("num_envs must be >= 1, got 0 env factories")
        validate_common_options(len(env_fns), num_workers, max_episode_steps, step_timeout)
        validate_context(context)
        check_bool_options(ignore_terminations=ignore_terminations, observe_every_row=observe_every_row)
        self.num_envs = len(env_fns)
        self.num_workers = num_workers or min(self.num_envs, os.cpu_count() or 1)
        self.max_episode_steps, self.ignore_terminations = max_episode_steps, ignore_terminations
        self.step_timeout, self.start_timeout = float(step_timeout), float(start_timeout)
        if observation_space is None or action_space is None:
            observation_space, action_space = _probe_spaces(env_fns[0])
        self.single_observation_space, self.single_action_space = observation_space, action_space
        self.observation_space = batch_space(observation_space, self.num_envs)
        self.action_space = batch_space(action_space, self.num_envs)
        self.act_dim = int(action_space.shape[-1])
        self._action_bounds = ActionBounds(action_space, self._name)
        self.render_mode, self.closed = None, False
        self.device = torch.device("cpu")
        ctx = mp.get_context(context)
        if context == "forkserver":
            # '__main__' stays first: children of a script still re-import it (the forkserver default)
            ctx.set_forkserver_preload(["__main__", __name__, *preload_modules])
        self._shared = _SharedObs(ctx, buffer_specs(observation_space), self.num_envs)
        rules = _StepRules(max_episode_steps, ignore_terminations, observe_every_row)
        self._views = self._shared.views()
        self._workers = [
            _Worker(ctx, [env_fns[i] for i in group], group, self._shared, rules)
            for group in split_evenly(self.num_envs, self.num_workers)
        ]
        self._instructions = [""] * self.num_envs
        self._episode_return = np.zeros(self.num_envs, np.float64)
        self._episode_length = np.zeros(self.num_envs, np.int64)
        self._success_once = np.zeros(self.num_envs, bool)
        self._elapsed = np.zeros(self.num_envs, np.int64)
        self._restarts = 0
        self._step_failures: dict[_Worker, int] = {}  # a worker's failed steps in a row (a good step resets it)
        self._start_workers(self._workers)

    # -- lifecycle ---------------------------------------------------------------------------------
    def _start_workers(self, workers: list[_Worker]) -> None:
        """Launch the workers and return while they build their envs: the first reset, step or call
        waits for them (`wait_until_ready`), so a caller can build a policy meanwhile."""
        for worker in workers:
            worker.start()
        self._starting = list(workers)
        self.launch_time = time.time()  # the workers were launched (start-up phases: benchmarks/env_startup.py)
        self.ready_time: Optional[float] = None  # time.time() when the last worker had built its envs
        self.worker_ready_times: list[float] = []  # time.time() when each worker had built its envs

    def wait_until_ready(self) -> None:
        """Block until every worker has built its envs; raise (and close) if one failed or timed out."""
        check_open(self.closed, self.num_envs)  # before: AttributeError 'NoneType' object has no attribute 'send'
        starting, self._starting = self._starting, []
        try:
            for worker in starting:
                built_at = worker.receive(self.start_timeout)
                self.worker_ready_times.append(built_at)
                self.ready_time = max(self.ready_time or 0.0, built_at)
        except _WorkerDied:
            for worker in self._workers:
                worker.kill()
            self.closed = True
            raise

    def close_extras(self, **kwargs: Any) -> None:
        try:
            self.wait_until_ready()  # a worker answers "close" only once its envs are built
        except _WorkerDied:
            return
        for worker in self._workers:
            if worker.conn is None:
                continue
            try:
                worker.send("close")
                worker.receive(timeout=10.0)
            except _WorkerDied:
                pass
            worker.kill()

    def __del__(self) -> None:
        if not getattr(self, "closed", True):
            try:
                self.close()
            except Exception:  # interpreter shutdown
                pass

    # -- reset -------------------------------------------------------------------------------------
    def reset(self, *, seed: SeedLike = None, options: Optional[dict] = None) -> tuple[dict[str, Any], dict[str, Any]]:
        seeds = per_env_seeds(seed, self.num_envs)
        check_reset_options(options)  # in the caller: before, options=5 crashed every worker
        self.wait_until_ready()
        send_errors = self._send_all("reset", lambda worker: ([seeds[i] for i in worker.indices], options))
        refused: Optional[_InputRefused] = None
        for worker in self._workers:  # every worker answers before any error is raised: the pipes stay in step
            try:
                instructions = self._reset_answer(worker, send_errors.get(worker), seeds, options)
            except _InputRefused as error:
                refused = refused or error
                continue
            for index, text in zip(worker.indices, instructions):
                self._instructions[index] = text
        if refused is not None:
            raise refused.public() from None
        self._episode_return[:] = 0
        self._episode_length[:] = 0
        self._success_once[:] = False
        self._elapsed[:] = 0
        return self._obs("obs", self._instructions), {}

    def _reset_answer(
        self, worker: _Worker, send_error: Optional[_WorkerDied], seeds: list[Optional[int]], options: Optional[dict]
    ) -> list[str]:
        """One worker's answer to "reset" (its envs' instructions); a dead worker is restarted and reset again."""
        try:
            if send_error is not None:
                raise send_error
            return worker.receive(self.start_timeout)
        except _WorkerDied as error:
            self._restart(worker, error)
            return self._reset_worker(worker, [seeds[i] for i in worker.indices], options)

    def _send_all(self, command: str, payload_of: Callable[[_Worker], Any]) -> dict[_Worker, _WorkerDied]:
        """Send one command to every worker; a worker that is already gone is returned, not raised,
        so the caller restarts it where it collects the answers."""
        errors: dict[_Worker, _WorkerDied] = {}
        for worker in self._workers:
            try:
                worker.send(command, payload_of(worker))
            except _WorkerDied as error:
                errors[worker] = error
        return errors

    def _reset_worker(self, worker: _Worker, seeds: list[Optional[int]], options: Optional[dict]) -> list[str]:
        worker.send("reset", (seeds, options))
        return worker.receive(self.start_timeout)

    def _restart(self, worker: _Worker, error: Exception) -> None:
        """Kill and restart one worker; raise if it cannot be brought back."""
        self._restarts += 1
        logger.warning(
            "env worker of envs %s failed (%s); restarting it and truncating its episodes",
            worker.indices,
            str(error).splitlines()[0],
        )
        worker.kill()
        worker.start()
        worker.receive(self.start_timeout)

    @property
    def num_restarts(self) -> int:
        """How many times a worker process was restarted after a crash or hang."""
        return self._restarts

    # -- step --------------------------------------------------------------------------------------
    def step(self, actions: ArrayLike) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        chunk_actions, is_chunk = self._as_chunk(actions)  # (N, chunk, act_dim)
        chunk = chunk_actions.shape[1]
        self.wait_until_ready()
        action_clipped = torch.from_numpy(self._action_bounds.fraction(chunk_actions))  # the envs clip them
        send_errors = self._send_all("step", lambda worker: chunk_actions[worker.indices])
        rewards = np.zeros((self.num_envs, chunk), np.float32)
        terminated, truncated, success = (np.zeros((self.num_envs, chunk), bool) for _ in range(3))
        ended = np.zeros(self.num_envs, bool)
        final_success = np.zeros(self.num_envs, bool)
        last_success = np.zeros(self.num_envs, bool)
        applied = np.zeros(self.num_envs, np.int64)
        deadline = time.monotonic() + self.step_timeout
        ended_instructions = list(self._instructions)  # the episodes stepped now (an auto-reset may change them)
        for worker in self._workers:
            try:
                if worker in send_errors:  # died before it got this chunk
                    raise send_errors[worker]
                results = worker.receive(max(0.0, deadline - time.monotonic()))
            except _WorkerDied as error:
                self._recover(worker, error, truncated, ended, applied, chunk)
                continue
            self._step_failures.pop(worker, None)
            idx, ended_at = worker.indices, results["ended_at"]  # envs of this worker; (k,)
            rewards[idx], success[idx] = results["rewards"], results["success"]
            terminated[idx], truncated[idx] = results["terminated"], results["truncated"]
            last_row = np.where(ended_at >= 0, ended_at, chunk - 1)  # (k,)
            applied[idx], last_success[idx] = last_row + 1, results["success"][np.arange(len(idx)), last_row]
            ended[idx] = ended_at >= 0
            final_success[idx] = ended[idx] & last_success[idx]
            for index, text in zip(idx, results["instruction"]):
                self._instructions[index] = text
        info = self._episode_info(rewards, success, ended, applied, last_success, final_success, ended_instructions)
        info["action_clipped"] = action_clipped
        obs = self._obs("obs", self._instructions)
        if not is_chunk:
            return (
                obs,
                torch.from_numpy(rewards[:, 0]),
                torch.from_numpy(terminated[:, 0]),
                torch.from_numpy(truncated[:, 0]),
                info,
            )
        return obs, torch.from_numpy(rewards), torch.from_numpy(terminated), torch.from_numpy(truncated), info

    def _recover(
        self,
        worker: _Worker,
        error: Exception,
        truncated: np.ndarray,
        ended: np.ndarray,
        applied: np.ndarray,
        chunk: int,
    ) -> None:
        """Restart a dead/hung worker; its envs end truncated at the chunk's last row. A worker whose last
        MAX_STEP_FAILURES_IN_A_ROW steps all failed is an error (before: restarted forever, the run training on
        empty truncated episodes, e.g. with a step_timeout shorter than one step)."""
        failures = self._step_failures.get(worker, 0) + 1
        self._step_failures[worker] = failures
        if failures >= MAX_STEP_FAILURES_IN_A_ROW:
            worker.kill()
            raise RuntimeError(
                f"the env worker of envs {worker.indices} failed {failures} steps in a row, restarted after each "
                f"(last: {str(error).splitlines()[0]}); with step_timeout={self.step_timeout:g} s (the seconds a "
                "worker may take for one step) its envs cannot step: raise step_timeout if steps are slow, or see "
                "the worker's error above"
            ) from error
        for which in ("final",):  # the last obs we hold for those envs becomes their final obs
            for spec in self._shared.specs:
                self._views[(which, spec.key)][worker.indices] = self._views[("obs", spec.key)][worker.indices]
        self._restart(worker, error)
        # seed None: the envs' seeded streams (reset(seed) + their auto-resets) live in the killed process and cannot
        # be continued; reseeding from the first seeds would replay episodes already played, so a restarted env draws
        # fresh randomness (a restart is not reproducible anyway: it follows a crash or a timeout)
        instructions = self._reset_worker(worker, [None] * len(worker.indices), None)
        for index, text in zip(worker.indices, instructions):
            self._instructions[index] = text
            truncated[index, chunk - 1] = True
            ended[index] = True
            applied[index] = 0

    def _episode_info(
        self,
        rewards: np.ndarray,
        success: np.ndarray,
        ended: np.ndarray,
        applied: np.ndarray,
        last_success: np.ndarray,
        final_success: np.ndarray,
        ended_instructions: list[str],
    ) -> dict[str, Any]:
        """Update running episode stats; build `info` with episode stats for envs that ended.

        The same bookkeeping as `batching.EpisodeStats`, in numpy on purpose: it runs in every step of a
        CPU vector env, and EpisodeStats' small torch ops cost about twice as much on CPU
        (benchmarks/vector_overhead.py). With them, a 1-env step took 270 instead of 190 us."""
        self._episode_return += rewards.sum(axis=1)
        self._episode_length += applied
        self._elapsed += applied
        self._success_once |= success.any(axis=1)
        episode = {
            "return": torch.from_numpy(np.where(ended, self._episode_return, 0.0).astype(np.float32)),
            "length": torch.from_numpy(np.where(ended, self._episode_length, 0)),
            "success_once": torch.from_numpy(ended & self._success_once),
            "success": torch.from_numpy(final_success.copy()),
        }
        ended_mask = torch.from_numpy(ended.copy())
        info: dict[str, Any] = {
            "success": torch.from_numpy(last_success),
            "elapsed_steps": torch.from_numpy(np.where(ended, 0, self._elapsed)),
            "episode": episode,
            "_episode": ended_mask,
        }
        if ended.any():
            info["final_obs"] = self._obs("final", ended_instructions)  # policies that read text need it too
            info["_final_obs"] = ended_mask.clone()
            info["final_info"] = {
                "success": episode["success"].clone(),
                "episode": dict(episode),
                "_success": ended_mask.clone(),
                "_episode": ended_mask.clone(),
            }
            info["_final_info"] = ended_mask.clone()
        self._episode_return[ended] = 0
        self._episode_length[ended] = 0
        self._success_once[ended] = False
        self._elapsed[ended] = 0
        return info

    def _as_chunk(self, actions: ArrayLike) -> tuple[np.ndarray, bool]:
        """Validate actions and return them as a float32 numpy chunk `(N, chunk, act_dim)`."""
        actions = real_actions(actions)
        if isinstance(actions, torch.Tensor):
            array = actions.detach().to("cpu", torch.float32).numpy()
        else:
            array = actions.astype(np.float32, copy=False)
        if array.ndim not in (2, 3) or array.shape[0] != self.num_envs or array.shape[-1] != self.act_dim:
            raise ValueError(
                f"actions must have shape (num_envs={self.num_envs}, act_dim={self.act_dim}) or "
                f"(num_envs, chunk, act_dim), got {tuple(array.shape)}"
            )
        if array.ndim == 3 and array.shape[1] < 1:
            raise ValueError(f"an action chunk needs at least one step, got shape {tuple(array.shape)}")
        reject_non_finite_actions(array)
        return (array[:, None, :] if array.ndim == 2 else array), array.ndim == 3

    def _obs(self, which: str, instructions: list[str]) -> dict[str, Any]:
        obs: dict[str, Any] = {
            spec.key: torch.from_numpy(self._views[(which, spec.key)].copy()) for spec in self._shared.specs
        }
        obs["instruction"] = list(instructions)
        return obs

    def _name(self) -> str:
        """This vector env in messages: its gymnasium id where gym.make_vec built it."""
        spec = getattr(self, "spec", None)
        return f"the vector env of {spec.id if spec is not None else 'single envs'} ({self.num_envs} envs)"

    # -- helpers for tests and wrappers ------------------------------------------------------------
    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Call method `name` (or read attribute `name`) on every single env; results in env order.

        An error in the envs (an unknown name, wrong arguments) is raised here as its builtin type once every worker
        has answered; the workers live on. A worker that dies or does not answer is stopped, and the next step
        restarts it (its envs are reported truncated there)."""
        if not isinstance(name, str):
            raise TypeError(f"call(name={name!r}): pass the name of an env's method or attribute as a str")
        self.wait_until_ready()
        send_errors = self._send_all("call", lambda worker: (name, args, kwargs))
        results: list[Any] = [None] * self.num_envs
        failure: Optional[Exception] = None
        for worker in self._workers:  # every worker answers before any error is raised: the pipes stay in step
            try:
                if worker in send_errors:
                    raise send_errors[worker]
                answers = worker.receive(self.step_timeout)
            except _InputRefused as error:
                failure = failure or error.public()
                continue
            except _WorkerDied as error:
                worker.kill()  # a late answer must not be read as the next command's
                failure = failure or RuntimeError(f"call({name!r}): {error}; the next step or reset restarts it")
                continue
            for index, value in zip(worker.indices, answers):
                results[index] = value
        if failure is not None:
            raise failure
        return tuple(results)

    def worker_pids(self) -> list[int]:
        """The process id of each worker (index = worker number)."""
        return [worker.process.pid for worker in self._workers]

    def worker_of_env(self, env_index: int) -> int:
        """The worker number holding env `env_index`."""
        for number, worker in enumerate(self._workers):
            if env_index in worker.indices:
                return number
        raise IndexError(f"env index {env_index} out of range [0, {self.num_envs})")


def start_forkserver(preload_modules: Sequence[str] = ()) -> None:
    """Start this process's forkserver now, so that it imports `preload_modules` (the simulator) while this
    process goes on (e.g. builds a probe env) rather than after. A `SubprocVectorEnv` with the same modules
    then forks its workers from it; a forkserver already running is left as it is."""
    from multiprocessing import forkserver

    mp.get_context("forkserver").set_forkserver_preload(["__main__", __name__, *preload_modules])
    with _main_without_unreadable_file():
        forkserver.ensure_running()


def _probe_spaces(env_fn: EnvFactory) -> tuple[gym.spaces.Dict, gym.spaces.Box]:
    env = env_fn()
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def check_bool_options(**options: Any) -> None:
    """On/off options must be bools (before: ignore_terminations="false" was truthy, so it switched terminations
    off, silently)."""
    for name, value in options.items():
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{name}={value!r} must be True or False")


def validate_common_options(
    num_envs: Optional[int],
    num_workers: Optional[int] = None,
    max_episode_steps: Optional[int] = None,
    step_timeout: Optional[float] = None,
) -> None:
    """Raise a clear error for bad vector-env options shared by all backends (None: not given; num_envs None:
    not known yet, as in the options checks before the env workers split env.num_envs). A bool is no count: before,
    num_envs=True built one env and max_episode_steps=True gave one-step episodes."""
    if num_envs is not None and not _is_count(num_envs):
        raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
    if num_workers is not None and not _is_count(num_workers):
        raise ValueError(f"num_workers must be None (auto) or an int >= 1, got {num_workers!r}")
    if num_workers is not None and num_envs is not None and num_workers > num_envs:
        raise ValueError(  # before: num_envs worker processes started, silently
            f"num_workers={num_workers} > num_envs={num_envs}: each worker process steps at least one env; set "
            f"num_workers <= {num_envs} or leave it unset (min(num_envs, CPU cores))"
        )
    if max_episode_steps is not None and not _is_count(max_episode_steps):
        raise ValueError(f"max_episode_steps must be None or an int >= 1, got {max_episode_steps!r}")
    if step_timeout is not None and not (_is_number(step_timeout) and step_timeout > 0):
        raise ValueError(f"step_timeout must be a positive number of seconds, got {step_timeout!r}")


def validate_context(context: Any, setting: str = "context") -> None:
    """A multiprocessing start method of this platform (before: mp.get_context's bare `cannot find context for
    'spawnx'`, raised in the env workers after the cluster had started). `setting` names the option in the error."""
    valid = mp.get_all_start_methods()
    if not isinstance(context, str) or context not in valid:
        raise ValueError(
            f"{setting}={context!r} is not a multiprocessing start method on this platform; valid: {valid} "
            "('forkserver', the default, or 'spawn': 'fork' is unsafe with simulators that start threads)"
        )


def _is_count(value: Any) -> bool:
    return is_int(value) and value >= 1


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
