"""Collect demonstrations into a LeRobot v2.1 dataset (rlinf_embodied/datasets).

    python -m rlinf_embodied.collect collect.output_dir=data/pickcube collect.num_episodes=100 collect.num_workers=8
    python -m rlinf_embodied.collect env=maniskill_pickcube_rgb collect.output_dir=data/pickcube_rgb   # GPU machine
    python -m rlinf_embodied.collect collect.source=policy policy.checkpoint=<dir> collect.output_dir=<dir>

Sources: `motion_planner` (ManiSkill's scripted solutions, envs/maniskill/motion_planning.py; actions
recorded in the env's control mode: pd_joint_pos, pd_joint_delta_pos, pd_joint_target_delta_pos,
pd_ee_delta_pos or pd_ee_delta_pose) and `policy` (any checkpoint of ours, acting deterministically in
our vector env). Episode seeds are collect.seed, seed+1, ...; re-running with the same output_dir
skips the seeds already in the dataset. The dataset's info.json records the env id, the control mode and the
reward settings (env.kwargs.reward_mode / reward_delta: what next.reward means); a re-run with others is refused.
Its fps (and each frame's timestamp) is the rate the env steps at, read from the env: ManiSkill's control_freq
(20 Hz, unless env.kwargs.sim_config sets another), LIBERO's 20 Hz; it is no setting (collect.fps is refused).

Episodes are written in seed order whatever collect.num_workers (the planner's pool plans ahead and its results
wait for the earlier seeds), so two collections of the same seeds are the same dataset. Dropped seeds (failed, or
cut by collect.max_episode_steps) are not recorded anywhere: a re-run attempts them again (with a larger
collect.max_episode_steps, a cut solution may then be kept). Ctrl-C (SIGINT) or SIGTERM stops at the next
episode boundary: the episodes written are kept (each is complete), queued seeds are cancelled, the planner's
worker processes are ended, and the process exits with 130 / 143; re-running the same command resumes. A
second signal stops at once (the episode in hand is not written).
"""

from __future__ import annotations

import collections
import logging
import numbers
import os
import signal
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterator, Optional

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig

from .config import CollectRunConfig, EnvConfig, EvalConfig, register_configs, typed_config
from .datasets.time_limit import warn_if_time_limit_short
from .envs.batching import MAX_SEED
from .envs.maniskill.motion_planning import STATUS_CUT as PLANNER_CUT
from .envs.registration import check_env, time_limit
from .paths import CONFIG_DIR
from .runners.interrupts import Interrupted, StopRequest
from .unread_settings import reject_unread_settings

logger = logging.getLogger(__name__)
register_configs()

SOURCES = ("motion_planner", "policy")
CAMERA_KEYS = ("rgb", "wrist_rgb")
FPS_IS_THE_ENV_RATE = (
    "a dataset's fps is the rate its env steps at, read from the env and written to meta/info.json's fps and every "
    "frame's timestamp (ManiSkill tasks: their control_freq, 20 Hz unless env.kwargs.sim_config={control_freq: N} "
    "sets another; LIBERO: 20 Hz). Another value would only mislabel the time base of the recorded steps; drop "
    "collect.fps"
)


def check_collect_config(cfg: CollectRunConfig) -> None:
    c = cfg.collect
    check_env(cfg.env)
    if c.source not in SOURCES:
        raise ValueError(f"collect.source={c.source!r} is not a source; valid sources: {list(SOURCES)}")
    if not c.output_dir:
        raise ValueError(
            "collect.output_dir is required: the dataset directory to write (an existing dataset "
            "there is resumed), e.g. collect.output_dir=data/pickcube"
        )
    if os.path.exists(c.output_dir) and not os.path.isdir(c.output_dir):
        raise ValueError(
            f"collect.output_dir={c.output_dir!r} is a file; give a directory (new, or a dataset to resume)"
        )
    for name in ("num_episodes", "num_workers"):
        if getattr(c, name) < 1:
            raise ValueError(f"collect.{name}={getattr(c, name)} must be >= 1")
    if c.num_workers > c.num_episodes:  # before: silently fewer workers, as many as episodes
        raise ValueError(
            f"collect.num_workers={c.num_workers} > collect.num_episodes={c.num_episodes}: each worker plays at least "
            f"one episode; set collect.num_workers <= {c.num_episodes}"
        )
    reject_fps_setting(c)
    if c.max_episode_steps is not None and c.max_episode_steps < 1:  # before: every solution dropped as failed
        raise ValueError(
            f"collect.max_episode_steps={c.max_episode_steps} must be >= 1 (the longest planner solution to keep), "
            "or null for no cap"
        )
    if c.seed < 0:  # episode seeds go to env.reset(seed=...), which takes none below 0
        raise ValueError(f"collect.seed={c.seed} must be >= 0 (episode seeds are collect.seed, collect.seed + 1, ...)")
    check_seed_range(c.seed, c.num_episodes)
    if c.source == "motion_planner":
        from .envs.maniskill.motion_planning import check_plannable

        check_plannable(cfg.env.id, cfg.env.kwargs.get("control_mode"))
    else:
        if cfg.policy.checkpoint is None:
            raise ValueError("collect.source=policy needs policy.checkpoint=<a save_pretrained directory>")
        from .envs.action_settings import check_action_settings
        from .eval import reject_sampling_overrides
        from .runners.evaluator import pick_device
        from .workers.policy_loading import check_policy_config

        check_policy_config(cfg.policy)
        reject_sampling_overrides(dict(cfg.policy.overrides), c.deterministic, "collect.deterministic")
        check_action_settings(cfg.policy.checkpoint, cfg.env.id, cfg.env.kwargs)
        pick_device(c.device, "collect.device")


def check_seed_range(seed: int, num_episodes: int) -> None:
    """Episode seeds run collect.seed .. collect.seed + collect.num_episodes - 1, and the simulators take seeds up to
    MAX_SEED (2**32 - 1): checked before anything is built (before: numpy's "Seed must be between 0 and 2**32 - 1"
    from inside ManiSkill, in a pool worker, after the episodes of the seeds below the limit were written)."""
    last = seed + num_episodes - 1
    if last <= MAX_SEED:
        return
    if num_episodes > MAX_SEED + 1:
        raise ValueError(
            f"collect.num_episodes={num_episodes}: there are only {MAX_SEED + 1} episode seeds (0 .. {MAX_SEED}); "
            f"valid: 1 <= collect.num_episodes <= {MAX_SEED + 1 - seed} with collect.seed={seed}"
        )
    raise ValueError(
        f"collect.seed={seed}: the episode seeds are collect.seed .. collect.seed + collect.num_episodes - 1 = "
        f"{last}, above the largest seed {MAX_SEED}; valid with collect.num_episodes={num_episodes}: "
        f"0 <= collect.seed <= {MAX_SEED - num_episodes + 1}"
    )


def reject_fps_setting(c: Any) -> None:
    """collect.fps away from its default (through the Python API; on the command line any collect.fps is refused,
    unread_settings): the dataset's fps is the env's rate, read from the env (before: any value was written as the
    dataset's fps and timestamps, the steps being taken at the env's 20 Hz all the same)."""
    default = getattr(type(c), "fps", None)
    value = getattr(c, "fps", default)
    if value != default:
        raise ValueError(f"collect.fps={value}: {FPS_IS_THE_ENV_RATE}")


def unread_settings(source: str) -> dict[str, str]:
    """The env/policy/collect settings that `source` never reads (unread_settings.py), with what to set instead."""
    unread = {
        "env.num_envs": "python -m rlinf_embodied.collect runs collect.num_workers envs (env.num_envs sizes "
        "training's vector env); set collect.num_workers instead",
        "collect.fps": FPS_IS_THE_ENV_RATE,
    }
    if source == "motion_planner":
        for key in ("policy", "collect.deterministic", "collect.device"):
            unread[key] = (
                "collect.source=motion_planner records ManiSkill's scripted solutions and reads no policy settings; "
                "collect.source=policy collects with policy.checkpoint"
            )
        unread["env.ignore_terminations"] = (
            "the motion planner's episodes end with its solution (collect.max_episode_steps caps it); it reads no "
            "env.ignore_terminations"
        )
        for name in ("num_workers", "step_timeout", "context", "observe_every_row"):  # before: a TypeError in ManiSkill
            unread[f"env.kwargs.{name}"] = (
                f"env.kwargs.{name} configures training's vector env; the motion planner runs one env per process "
                "(collect.num_workers processes)"
            )
    else:
        unread["collect.max_episode_steps"] = (
            "collect.max_episode_steps caps the motion planner's solutions; with collect.source=policy the "
            "episodes end at env.max_episode_steps"
        )
    return unread


def warn_if_default_eval_seed(seeds: list[int]) -> None:
    """Evaluations start at seed 1000 by default (eval.seed, and SFT's sft.seed + 1000 with sft.seed 0) and refuse
    a policy trained on a demonstration from their seeds; say so now rather than after the collection."""
    first_eval_seed = EvalConfig.seed
    if seeds and seeds[0] <= first_eval_seed <= seeds[-1]:
        logger.warning(
            "collect: seeds %d-%d include %d, where evaluations start by default (eval.seed, sft.seed + 1000); "
            "they will refuse policies trained on these demonstrations unless given other seeds. A collect.seed "
            "above %d (e.g. 100000) avoids that.",
            seeds[0],
            seeds[-1],
            first_eval_seed,
            first_eval_seed,
        )


class CollectStop(StopRequest):
    """The first SIGINT / SIGTERM stops the collection at the next episode boundary (runners/interrupts.py's
    StopRequest, with collect's words: there is no checkpoint, the dataset is what a re-run resumes)."""

    def __init__(self) -> None:
        super().__init__(
            work="episode",
            then="then stopping; the episodes written are kept (send it again to stop at once)",
        )


def collect(cfg: CollectRunConfig, stop: Optional[StopRequest] = None) -> dict[str, Any]:
    """Collect `collect.num_episodes` seeds into `collect.output_dir`; returns a summary dict.

    With `stop` (the entry point's signal handler), a requested stop ends the collection after the episode in hand:
    the summary's `stopped_by` names the signal, and the episodes written so far stay in the dataset."""
    check_collect_config(cfg)
    c = cfg.collect
    seeds = list(range(c.seed, c.seed + c.num_episodes))
    warn_if_default_eval_seed(seeds)
    episodes = _planner_episodes if c.source == "motion_planner" else _policy_episodes
    attempted = kept = longest = clipped = steps = 0
    cut = {"kept": 0, "dropped": 0}  # planner solutions longer than collect.max_episode_steps
    stopped = False
    seconds = {"episode": 0.0, "env": 0.0, "write": 0.0}  # workers' time per part, and this process's writing
    started = time.perf_counter()
    if os.path.isfile(os.path.join(c.output_dir, "meta", "info.json")):
        from .datasets import load_info

        info = load_info(c.output_dir)
        if info.get("env_id") not in (None, cfg.env.id):
            raise ValueError(
                f"{c.output_dir} holds episodes of {info['env_id']}, not {cfg.env.id}; use another collect.output_dir"
            )
        done = {int(row["seed"]) for row in _episode_rows(c.output_dir, info)}
        seeds = [s for s in seeds if s not in done]
        skipped = c.num_episodes - len(seeds)
        if 0 < len(seeds) < c.num_workers:
            logger.info(
                "collect: %d of %d seeds left to collect (the rest are in %s): %d worker(s) instead of "
                "collect.num_workers=%d",
                len(seeds),
                c.num_episodes,
                c.output_dir,
                len(seeds),
                c.num_workers,
            )
    else:
        skipped = 0
    from tqdm.auto import tqdm

    progress = tqdm(total=len(seeds), desc=f"collect {cfg.env.id} ({c.source})", disable=not c.progress)
    # the stream's first item: the dataset layout, from a probe env. The writer is opened even with every seed
    # present: it refuses an existing dataset of other settings (fps, control_mode, dims, cameras) either way
    # (before: a re-run whose seeds were all present reported success whatever the settings)
    stream = episodes(cfg, seeds)
    try:
        layout = next(stream)
        writer = _open_writer(cfg, layout)
        if writer.num_episodes and writer.reward_settings is None and layout["reward_settings"] is not None:
            logger.warning(
                "collect: %s records no reward settings (written before they were recorded): the episodes appended "
                "now have next.reward from %s, which cannot be checked against the earlier ones'",
                c.output_dir,
                ", ".join(f"env.kwargs.{key}={value}" for key, value in layout["reward_settings"].items()),
            )
        while True:
            if stop is not None and stop.requested:  # between two episodes: the ones written are complete
                stopped = attempted < len(seeds)
                break
            try:
                episode = next(stream, None)
            except BrokenProcessPool:  # a SIGTERM to the whole process group also ended the planner's workers
                if stop is None or not stop.requested:
                    raise
                stopped = True
                break
            if episode is None:
                break
            attempted += 1
            clipped += int(episode.get("clipped_steps", 0))
            steps += len(episode["actions"])
            for part, value in episode.get("seconds", {}).items():
                seconds[part] += value
            # an episode without a frame (the planner failed before its first step) cannot be written either way
            keep = (episode["success"] or not c.only_success) and len(episode["actions"]) > 0
            if episode.get("status") == PLANNER_CUT:
                cut["kept" if keep else "dropped"] += 1
            if keep:
                write_start = time.perf_counter()
                writer.add_episode(
                    episode["instruction"],
                    episode["obs"]["state"],
                    episode["actions"],
                    {k: episode["obs"][k] for k in layout["cameras"]},
                    episode["rewards"],
                    episode["success"],
                    episode["seed"],
                )
                seconds["write"] += time.perf_counter() - write_start
                kept += 1
                longest = max(longest, len(episode["actions"]))
            progress.update(1)
            progress.set_postfix(kept=kept)
    finally:  # on a stop or an error too: the probe env, or the planner's pool (queued seeds cancelled, workers ended)
        stream.close()
        progress.close()
    total = writer.num_episodes
    warn_if_time_limit_short(logger, longest, "were recorded", time_limit(cfg.env.id, cfg.env.max_episode_steps))
    dropped = attempted - kept
    summary = {
        "attempted": attempted,
        "kept": kept,
        "skipped": skipped,
        "dropped": {"failed": dropped - cut["dropped"], "cut": cut["dropped"]},
        "total_episodes": total,
        "output_dir": os.path.abspath(c.output_dir),
    }
    if c.source == "motion_planner":
        summary["clipped_steps"], summary["planned_steps"] = clipped, steps
        summary["cut_kept"] = cut["kept"]
        if attempted:
            summary["seconds"] = _time_report(seconds, attempted, kept, time.perf_counter() - started, c.num_workers)
        if clipped:
            logger.warning(
                "%d of %d planned steps (%.1f%%) asked for more than the %s action space allows and were clipped",
                clipped,
                steps,
                100.0 * clipped / max(steps, 1),
                cfg.env.kwargs.get("control_mode"),
            )
    print(
        f"collected {kept} of {attempted} attempted episodes ({c.source}{_dropped_note(summary, c)}; {skipped} seeds "
        f"already present): {total} episodes in {summary['output_dir']}"
    )
    if stopped:
        summary["stopped_by"] = stop.signal_name
        print(
            f"stopped by {stop.signal_name}: {total} episodes kept in {summary['output_dir']}; re-run the same command "
            "to resume",
            flush=True,
        )
    return summary


def _dropped_note(summary: dict[str, Any], c: Any) -> str:
    """The summary line's account of the episodes not kept: planner failures apart from solutions cut by
    collect.max_episode_steps (before: all "failed dropped"), and what a re-run does with them."""
    cap = f"collect.max_episode_steps={c.max_episode_steps}"
    failed, cut = summary["dropped"]["failed"], summary["dropped"]["cut"]
    if failed + cut:
        reasons = ([f"{failed} failed"] if failed else []) + ([f"{cut} cut by {cap} (solution longer)"] if cut else [])
        note = f", {failed + cut} dropped: {', '.join(reasons)}; a re-run attempts dropped seeds again"
    else:
        note = ", 0 dropped"
    if summary.get("cut_kept"):
        note += f"; {summary['cut_kept']} kept unfinished, cut by {cap} (solution longer)"
    return note


def _time_report(seconds: dict[str, float], attempted: int, kept: int, wall: float, num_workers: int) -> dict:
    """Log where a collection's time went; the slower of the workers and the writing process sets its pace."""
    per_episode = {part: value / max(attempted if part != "write" else kept, 1) for part, value in seconds.items()}
    logger.info(
        "collect time per episode: %.2f s in a worker (the env's steps, cameras included, %.2f s; planning and "
        "action conversion %.2f s) over up to %d workers, %.3f s writing it in this process; %.1f s in all",
        per_episode["episode"],
        per_episode["env"],
        per_episode["episode"] - per_episode["env"],
        num_workers,
        per_episode["write"],
        wall,
    )
    return {"wall": wall, **{f"{part}_per_episode": value for part, value in per_episode.items()}}


def _written(root: str) -> int:
    """The episodes committed to the dataset at `root` (info.json is replaced last, after an episode's files)."""
    from .datasets import load_info

    return int(load_info(root)["total_episodes"]) if os.path.isfile(os.path.join(root, "meta", "info.json")) else 0


def _episode_rows(root: str, info: dict) -> list[dict]:
    from .datasets.lerobot_format import read_meta_rows

    rows = read_meta_rows(root, "episodes.jsonl", int(info["total_episodes"]))
    return [row for row in rows if row.get("seed") is not None]


def _open_writer(cfg: CollectRunConfig, layout: dict[str, Any]):
    from .datasets import LeRobotDatasetWriter

    return LeRobotDatasetWriter(
        cfg.collect.output_dir,
        fps=layout["fps"],
        robot_type=str(cfg.env.kwargs.get("robot_uids") or "panda"),
        state_dim=layout["state_dim"],
        action_dim=layout["action_dim"],
        camera_shapes=layout["cameras"],
        control_mode=layout["control_mode"],
        env_id=cfg.env.id,
        reward_settings=layout["reward_settings"],
    )


def env_fps(rate: Any, env_id: str) -> int:
    """The dataset's fps: `rate`, the steps per second `env_id` runs at, as a whole number (LeRobot's info.json
    fps is an int; a rate computed as 1 / step_dt may be off by rounding): the dataset module's fps check."""
    from .datasets.lerobot_format import fps_value

    if rate is None:
        raise ValueError(
            f"env {env_id!r} declares no control rate (ManiSkill's control_freq, IsaacLab's step_dt, or "
            "metadata['render_fps']): a LeRobot dataset's fps and timestamps need it"
        )
    fps = fps_value(rate, rel_tol=1e-6)
    if fps is None:
        shown = f"{rate:g}" if isinstance(rate, numbers.Real) and not isinstance(rate, bool) else repr(rate)
        raise ValueError(
            f"env {env_id!r} steps at {shown} Hz: a LeRobot dataset's fps is a whole number >= 1 of frames per "
            "second; give the env a whole control rate (ManiSkill: env.kwargs.sim_config={control_freq: N})"
        )
    return fps


def configured_reward_settings(env_cfg: EnvConfig) -> dict[str, Any]:
    """The reward settings env.kwargs give the vector env (over its entry point's defaults and the id's registered
    kwargs, as check_env_options fills them in): what next.reward means. reward_mode None: the env's own (e.g.
    LIBERO's); reward_delta: the change of the reward since the previous step (ManiSkill)."""
    import inspect

    import gymnasium as gym

    from .envs.registration import ENV_ID_KWARG, backend_vector_entry_point

    parameters = inspect.signature(backend_vector_entry_point(env_cfg.id)).parameters.items()
    defaults = {name: p.default for name, p in parameters if p.default is not inspect.Parameter.empty}
    spec_kwargs = {name: value for name, value in gym.registry[env_cfg.id].kwargs.items() if name != ENV_ID_KWARG}
    options = {**defaults, **spec_kwargs, **dict(env_cfg.kwargs)}
    return {"reward_mode": options.get("reward_mode"), "reward_delta": bool(options.get("reward_delta", False))}


# ---- motion planner -------------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _planner_env_kwargs(env_cfg: EnvConfig) -> dict[str, Any]:
    kwargs = dict(env_cfg.kwargs)
    kwargs["sim_backend"] = "physx_cpu"  # one planned episode per process; physics backend does not change actions
    return dict(obs_mode=env_cfg.obs_mode, **kwargs)


def _init_planner(env_cfg: EnvConfig, max_steps: Optional[int]) -> None:
    import torch

    from .envs.maniskill.env import ManiSkillSingleEnv
    from .envs.maniskill.motion_planning import PlannerEnv, solution, task_of

    torch.set_num_threads(1)  # one core per planner process, as in the env workers: its tensors are tiny
    task = task_of(env_cfg.id)
    single = ManiSkillSingleEnv(task, **_planner_env_kwargs(env_cfg))
    _WORKER.update(env=PlannerEnv(single, single.maniskill_env.control_mode, max_steps), solve=solution(task))


def _init_pool_worker(init: Callable[..., None], *args: Any) -> None:
    """A pool worker ignores SIGINT, then runs `init(*args)`: a Ctrl-C reaches the whole foreground process group,
    and the collecting process decides (it finishes the episode in hand, then ends the workers). Before: the
    workers' episodes in progress failed with KeyboardInterrupt, and their queued ones were planned all the same."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    init(*args)


def _plan(seed: int) -> dict[str, Any]:
    from .envs.maniskill.motion_planning import plan_episode

    return plan_episode(_WORKER["env"], _WORKER["solve"], seed)


def _process_pool(workers: int, init: Callable[..., None], initargs: tuple = ()) -> ProcessPoolExecutor:
    """`workers` processes forked from a fork server, each set up by `init(*initargs)`. (The fork server imports
    nothing ahead: the planner workers render with SAPIEN on the device, which stop 60 could not check with
    torch and mani_skill preloaded in the server.)"""
    import multiprocessing as mp

    context = mp.get_context("forkserver")
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_pool_worker, initargs=(init, *initargs)
    )


def _planner_pool(cfg: CollectRunConfig, workers: int) -> Executor:
    return _process_pool(workers, _init_planner, (cfg.env, cfg.collect.max_episode_steps))


def _planner_episodes(cfg: CollectRunConfig, seeds: list[int]) -> Iterator[dict[str, Any]]:
    from .envs.maniskill.env import ManiSkillSingleEnv
    from .envs.maniskill.motion_planning import task_of

    probe = ManiSkillSingleEnv(task_of(cfg.env.id), **_planner_env_kwargs(cfg.env))
    try:
        maniskill_env = probe.maniskill_env
        yield _layout(
            probe.observation_space,
            probe.action_space,
            maniskill_env.control_mode,
            env_fps(maniskill_env.control_freq, cfg.env.id),
            {"reward_mode": maniskill_env.reward_mode, "reward_delta": bool(probe.reward_delta)},
        )
    finally:  # also where the dataset's settings refuse the layout (the stream is closed then)
        probe.close()
    if not seeds:  # every seed already in the dataset: the layout was wanted, to check it against the dataset's
        return
    workers = min(cfg.collect.num_workers, len(seeds))
    if workers <= 1:
        _init_planner(cfg.env, cfg.collect.max_episode_steps)
        for seed in seeds:
            yield _plan(seed)
        return
    yield from _in_seed_order(_planner_pool(cfg, workers), _plan, seeds)


def _in_seed_order(pool: Executor, plan: Callable[[int], Any], seeds: list[int]) -> Iterator[Any]:
    """`plan(seed)` for every seed on `pool`, yielded in seed order (before: in completion order, so two collections
    of the same seeds wrote differently ordered datasets). Every seed is submitted at once, so no worker waits for an
    earlier seed or for the writing: a result that comes before an earlier seed's waits in its future, which is let go
    once yielded.

    Closing the generator (a stop, an error, or the end) cancels the seeds not started and ends the pool's worker
    processes (the episodes they had in hand are not written: only whole prefixes of the seeds are, so a resumed
    dataset stays in seed order)."""
    try:
        futures = collections.deque(pool.submit(plan, seed) for seed in seeds)
        while futures:
            yield futures.popleft().result()
    finally:
        _stop_pool(pool)


def _stop_pool(pool: Executor, grace: float = 5.0) -> None:
    """Cancel `pool`'s queued work and end its worker processes now (SIGTERM, then SIGKILL after `grace` seconds).
    Before: a stopped collection's pool planned every queued seed first, and a SIGTERM left its workers (and the fork
    server their pipes kept alive) running."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # ProcessPoolExecutor's workers
    manager = getattr(pool, "_executor_manager_thread", None)  # it sees the workers end, then cleans up
    try:
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        deadline = time.monotonic() + grace
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
    finally:  # also when a second signal interrupts the above
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(1.0)
    if manager is not None:
        manager.join(grace)
    pool.shutdown(wait=True)  # a thread pool's threads (tests); a process pool's are already ended


def _layout(
    observation_space: Any,
    action_space: Any,
    control_mode: Optional[str],
    fps: int,
    reward_settings: Optional[dict[str, Any]],
) -> dict[str, Any]:
    """The dataset's settings from the env: dims, cameras, control mode, fps (the env's rate) and reward settings."""
    spaces = getattr(observation_space, "spaces", {})
    return {
        "state_dim": int(spaces["state"].shape[-1]),
        "action_dim": int(action_space.shape[-1]),
        "cameras": {k: tuple(int(s) for s in spaces[k].shape[-3:]) for k in CAMERA_KEYS if k in spaces},
        "control_mode": control_mode,
        "fps": fps,
        "reward_settings": reward_settings,
    }


# ---- policy ---------------------------------------------------------------------------------------
def _policy_episodes(cfg: CollectRunConfig, seeds: list[int]) -> Iterator[dict[str, Any]]:
    """Rounds of `num_workers` envs, each reset with the next pending seeds; one episode per env per round.

    The policy's action chunks are executed row by row (open loop, as the vector env would run them)
    so every executed action is recorded with the observation it was taken in. An env that ended has
    its episode; the rest of its round (it auto-resets) is not recorded.
    """
    import gymnasium as gym

    from .envs.spec import env_spec
    from .runners.evaluator import pick_device, seeded_sampling
    from .workers.policy_loading import build_policy, check_policy_cameras

    c = cfg.collect
    num_envs = max(1, min(c.num_workers, len(seeds)))  # no seed left: one env gives the layout to check
    env = gym.make_vec(
        cfg.env.id,
        num_envs=num_envs,
        vectorization_mode="vector_entry_point",
        obs_mode=cfg.env.obs_mode,
        max_episode_steps=cfg.env.max_episode_steps,
        ignore_terminations=cfg.env.ignore_terminations,
        num_workers=num_envs,
        **dict(cfg.env.kwargs),
    )
    try:
        yield _layout(
            env.single_observation_space,
            env.single_action_space,
            cfg.env.kwargs.get("control_mode"),
            env_fps(vector_env_rate(env, cfg.env), cfg.env.id),
            configured_reward_settings(cfg.env),
        )
        if not seeds:  # every seed already in the dataset: the layout was wanted, to check it against the dataset's
            return
        device = pick_device(c.device, "collect.device")
        spec = env_spec(env)
        check_policy_cameras(cfg.policy, spec, cfg.env.id)  # before: KeyError 'rgb' at the first act
        policy = build_policy(cfg.policy, spec["action_dim"], spec["state_dim"], device).eval()
        for start in range(0, len(seeds), num_envs):
            round_seeds = seeds[start : start + num_envs]
            round_seeds = round_seeds + [round_seeds[-1]] * (num_envs - len(round_seeds))  # pad the last round
            # a stochastic policy samples from the round's first seed (before: torch's unseeded stream, so the same
            # command and collect.seed recorded other actions), as eval's from eval.seed
            with seeded_sampling(round_seeds[0], device):
                episodes = _policy_round(env, policy, device, round_seeds, c.deterministic)
            yield from episodes[: len(seeds[start : start + num_envs])]
    finally:
        env.close()


def vector_env_rate(env: Any, env_cfg: EnvConfig) -> Optional[float]:
    """The steps per second of the policy source's vector env (None where it declares none): ManiSkill on GPU
    physics (its batched sim's control_freq), ManiSkill's CPU envs (their task's SimConfig: their workers keep
    their ManiSkill envs), IsaacLab (1 / step_dt), else the single envs' metadata['render_fps'] (LIBERO's 20)."""
    sim = getattr(env, "sim", None)  # BatchedVectorEnv
    rate = getattr(getattr(sim, "unwrapped", sim), "control_freq", None)
    if rate is None and env_cfg.id.startswith(MANISKILL_PREFIX):
        rate = _maniskill_control_freq(env_cfg)
    base = getattr(env, "base", None)  # IsaacLabVectorEnv: the unwrapped IsaacLab env
    if rate is None and getattr(base, "step_dt", None):
        rate = 1.0 / float(base.step_dt)
    if rate is None and hasattr(env, "call"):
        metadata = env.call("metadata")[0]
        rate = metadata.get("render_fps") if isinstance(metadata, dict) else None
    return rate


MANISKILL_PREFIX = "rlinf/ManiSkill-"


def _maniskill_control_freq(env_cfg: EnvConfig) -> int:
    """ManiSkill's control_freq for env_cfg: the task's default merged with env.kwargs.sim_config, as the env would
    read it (check_sim_config; no env is built: the env workers keep theirs)."""
    from .envs.maniskill.env import check_sim_config

    task = env_cfg.id[len(MANISKILL_PREFIX) :]
    return int(check_sim_config(task, env_cfg.kwargs.get("sim_config") or {}).control_freq)


def _policy_round(env: Any, policy: Any, device: Any, seeds: list[int], deterministic: bool) -> list[dict[str, Any]]:
    import torch

    n = len(seeds)
    obs, _ = env.reset(seed=list(seeds))
    records: list[dict[str, list]] = [{"obs": [], "actions": [], "rewards": []} for _ in range(n)]
    results: list[Optional[dict[str, Any]]] = [None] * n
    instructions = list(obs.get("instruction", [""] * n))
    queue: Optional[torch.Tensor] = None
    row = 0
    while any(r is None for r in results):
        if queue is None or row >= queue.shape[1]:
            with torch.no_grad():
                obs_device = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in obs.items()}
                queue = policy.act(obs_device, deterministic=deterministic).actions.float().cpu()
            row = 0
        actions = queue[:, row]
        row += 1
        frame = {k: v.cpu().numpy() for k, v in obs.items() if isinstance(v, torch.Tensor)}
        obs, reward, terminated, truncated, info = env.step(actions)
        ended = (torch.as_tensor(terminated) | torch.as_tensor(truncated)).numpy().reshape(-1)
        success = torch.as_tensor(info["success"]).numpy().reshape(-1)
        for i in range(n):
            if results[i] is not None:
                continue
            records[i]["obs"].append({k: v[i] for k, v in frame.items()})
            records[i]["actions"].append(actions[i].numpy())
            records[i]["rewards"].append(float(torch.as_tensor(reward).reshape(-1)[i]))
            if ended[i]:
                frames = records[i]["obs"]
                results[i] = {
                    "seed": seeds[i],
                    "success": bool(success[i]),
                    "instruction": instructions[i],
                    "obs": {k: np.stack([f[k] for f in frames]) for k in frames[0]},
                    "actions": np.stack(records[i]["actions"]).astype(np.float32),
                    "rewards": np.asarray(records[i]["rewards"], np.float32),
                }
    return results  # type: ignore[return-value]


@hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="collect")
def main(cfg) -> None:
    typed: CollectRunConfig = typed_config(cfg)
    reject_unread_settings(list(HydraConfig.get().overrides.task), unread_settings(typed.collect.source))
    stop = CollectStop()
    try:
        with stop.handling():
            summary = collect(typed, stop=stop)
    except Interrupted as interrupted:  # a second signal: the episode in hand is not written
        output_dir = os.path.abspath(typed.collect.output_dir)
        print(
            f"stopped by {stop.signal_name} twice, without writing the episode in hand: {_written(output_dir)} "
            f"episodes kept in {output_dir}; re-run the same command to resume",
            flush=True,
        )
        raise SystemExit(interrupted.exit_code) from None
    if summary.get("stopped_by"):
        raise SystemExit(stop.exit_code)  # 130 (SIGINT) or 143 (SIGTERM), as train and sft


if __name__ == "__main__":
    main()
