"""Evaluation: N episodes per task with the deterministic policy, a success table, results.json, videos.

Two success numbers per task, as training's metrics name them: `success_once_rate` (the episode succeeded at some
step: training's `success_once`) and `success_at_end_rate` (it succeeded at its final step: training's
`success_rate`). results.json keeps the key `success_rate` (and `overall_success_rate`) for the success at any step,
as before, for the scripts that read it; the table labels its columns "success (any step)" and "success at end".
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import EnvConfig, EvalConfig, PolicyConfig
from ..datasets.demo_seeds import check_checkpoint_held_out
from ..envs.action_settings import check_action_settings, trained_env_note
from ..envs.batching import MAX_SEED, is_int
from ..envs.metrics import ClippedActionMetrics, action_rows, ended_env_indices, episodes_from_info
from ..envs.spec import env_spec
from ..paths import RESULTS_FILE
from ..policies.registry import plain_config_value
from ..workers.policy_loading import build_policy, check_policy_cameras, resolved_policy_config

logger = logging.getLogger(__name__)


@dataclass
class TaskResult:
    """`successes`: episodes that succeeded at any step (success_once); `successes_at_end`: those that succeeded at
    their final step (info's "success", training's success_rate)."""

    task: str
    episodes: int
    successes: int
    mean_return: float
    mean_length: float
    video: Optional[str] = None
    instruction: str = ""
    successes_at_end: int = 0
    clipped_action_fraction: Optional[float] = None  # None: the env does not report info["action_clipped"]

    @property
    def success_once_rate(self) -> float:
        """Episodes that succeeded at any step (training's `success_once`)."""
        return self.successes / max(self.episodes, 1)

    @property
    def success_at_end_rate(self) -> float:
        """Episodes that succeeded at their final step (training's `success_rate`)."""
        return self.successes_at_end / max(self.episodes, 1)

    @property
    def success_rate(self) -> float:
        """success_once_rate, under the name results.json has always given it (training's `success_rate` is
        success_at_end_rate: use the explicit names)."""
        return self.success_once_rate


def evaluate_policy(
    env_cfg: EnvConfig,
    policy_cfg: PolicyConfig,
    eval_cfg: EvalConfig,
    output_dir: str,
    env_cache: dict[Optional[int], Any] | None = None,
    video_settings: Sequence[str] = (),
) -> list[TaskResult]:
    """`env_cache`: task id -> the vector env of an earlier call, reused and left open (the caller closes them),
    so repeated evaluations (SFT's, every sft.eval_interval steps) build their envs once. Each task's episodes
    start from `env.reset(seed=eval.seed)`, so a reused env plays the episodes a new one would.
    `video_settings`: the video settings the user gave ("eval.video_envs=2"), refused where no video can be
    written (make_eval_env)."""
    check_eval_seed(eval_cfg)
    check_eval_workers(
        env_cfg,
        eval_cfg.num_envs,
        f"eval.num_envs={eval_cfg.num_envs}",
        tasks_from_env=eval_cfg.task_ids is None,  # eval.task_ids replaces env.kwargs.task_id (make_eval_env)
    )
    # the first episode of each env is seeded eval.seed + env index; later ones come from the env's own RNG
    check_checkpoint_held_out(
        policy_cfg.checkpoint,
        range(eval_cfg.seed, eval_cfg.seed + eval_cfg.num_envs),
        env_cfg.id,
        fix="set eval.seed beyond them",
    )
    check_action_settings(policy_cfg.checkpoint, env_cfg.id, env_cfg.kwargs)
    device = pick_device(eval_cfg.device, "eval.device")
    tasks = eval_tasks(eval_cfg, env_cfg)
    results: list[TaskResult] = []
    policy = None
    for task_id in tasks:
        if env_cache is not None and task_id in env_cache:
            env = env_cache[task_id]
        else:
            env = make_eval_env(env_cfg, eval_cfg, task_id, output_dir, video_settings)
        if policy is None:
            spec = env_spec(env)
            try:
                check_policy_cameras(policy_cfg, spec, env_cfg.id)
                check_policy_fits_env(policy_cfg, env, spec, env_cfg.id)
            except ValueError:
                if env_cache is None:
                    env.close()
                raise
            policy = build_policy(policy_cfg, spec["action_dim"], spec["state_dim"], device).eval()
        results.append(_run_task(env, policy, eval_cfg, shown_task_id(env_cfg, task_id), env_cfg.id, device))
        if env_cache is None:
            env.close()
        else:
            env_cache[task_id] = env
    write_results(
        results,
        output_dir,
        {"seed": eval_cfg.seed, "num_envs": eval_cfg.num_envs},
        deterministic=eval_cfg.deterministic,
    )
    return results


def check_eval_seed(eval_cfg: EvalConfig) -> None:
    """env i's first episode is seeded eval.seed + i, and the simulators take seeds up to MAX_SEED (2**32 - 1):
    checked before any env or policy is built (before: reset's error, naming reset(seed=...), after both were)."""
    last = eval_cfg.seed + eval_cfg.num_envs - 1
    if last > MAX_SEED:
        raise ValueError(
            f"eval.seed={eval_cfg.seed}: env i's first episode is seeded eval.seed + i, up to eval.seed + "
            f"eval.num_envs - 1 = {last}, above the largest seed {MAX_SEED}; valid with eval.num_envs="
            f"{eval_cfg.num_envs}: 0 <= eval.seed <= {MAX_SEED - eval_cfg.num_envs + 1}"
        )


def check_eval_workers(env_cfg: EnvConfig, num_envs: int, source: str, tasks_from_env: bool = True) -> None:
    """A per-env env.kwargs.task_id list of another length than the evaluation's envs, and env.kwargs.num_workers
    beyond them (`source`: the settings that set `num_envs`), refused before any env is built (before: the vector
    env's own error, naming neither setting). `tasks_from_env=False`: eval.task_ids picks the tasks instead."""
    from ..workers.env_worker import per_env_task_ids

    task_ids = per_env_task_ids(env_cfg.kwargs) if tasks_from_env else None
    if task_ids is not None and len(task_ids) != num_envs:  # before: the vector env's error, naming neither setting
        raise ValueError(
            f"env.kwargs.task_id={task_ids} gives one task per env, {len(task_ids)} for the {num_envs} envs of the "
            f"evaluation ({source}): give {num_envs} task ids, or one id for all envs (or eval.task_ids: one "
            "evaluation per task)"
        )
    workers = env_cfg.kwargs.get("num_workers")
    if is_int(workers) and workers > num_envs:
        raise ValueError(
            f"env.kwargs.num_workers={workers} > the {num_envs} envs of the evaluation ({source}): each worker "
            f"process steps at least one env; set env.kwargs.num_workers <= {num_envs}, or leave it unset "
            f"(min(envs, CPU cores))"
        )


def check_policy_fits_env(policy_cfg: PolicyConfig, env, spec: dict, env_id: str) -> None:
    """Before the policy is built and any episode played: a checkpoint that reads state observations of another
    width than the env gives (before: the policy's shape error in the first act, after the envs had started), and
    Gaussian action bounds wider than the env's action space (the env would clip the difference)."""
    config = resolved_policy_config(policy_cfg, spec["action_dim"], spec["state_dim"])
    if config is None:  # an upstream layout, converted (and checked) at load
        return
    reads_state = config.state_dim > 0 and getattr(config, "use_proprio", True)
    if policy_cfg.checkpoint is not None and reads_state and config.state_dim != spec["state_dim"]:
        gives = f"state_dim={spec['state_dim']}" if spec["state_dim"] else "no state observation (state_dim=0)"
        raise ValueError(
            f"policy.checkpoint={policy_cfg.checkpoint!r} reads state observations of width state_dim="
            f"{config.state_dim} (its config.json), but env {env_id!r} gives {gives}"
            f"{trained_env_note(policy_cfg.checkpoint)}; evaluate it on an env with the observations it was trained on"
        )
    check_bounds = getattr(config, "check_within_action_space", None)
    space = getattr(env, "single_action_space", None)
    if check_bounds is not None and hasattr(space, "low") and hasattr(space, "high"):
        width = spec["action_dim"]
        low = np.broadcast_to(np.asarray(space.low, np.float64), space.shape).reshape(-1, width).max(axis=0)
        high = np.broadcast_to(np.asarray(space.high, np.float64), space.shape).reshape(-1, width).min(axis=0)
        check_bounds(low, high, f"env {env_id!r}")


def eval_tasks(eval_cfg: EvalConfig, env_cfg: EnvConfig) -> list[Optional[int]]:
    """The task ids an evaluation plays, one env each (None: the env's own task); env_cache is keyed by them.
    Each is checked with the env's options before any is played (a bad last id once failed after the others)."""
    from ..envs.registration import TASK_SUITES, check_env_options

    env_id = env_cfg.id

    if eval_cfg.task_ids is not None and env_id not in TASK_SUITES:
        raise ValueError(
            f"eval.task_ids={list(eval_cfg.task_ids)} picks tasks of a suite ({sorted(TASK_SUITES)}), but {env_id} "
            f"is a single task: leave eval.task_ids unset"
        )
    if eval_cfg.task_ids is None:
        return [None]
    for task_id in eval_cfg.task_ids:
        try:
            check_env_options(env_id, env_cfg.obs_mode, {**env_cfg.kwargs, "task_id": task_id})
        except ValueError as error:
            raise ValueError(f"eval.task_ids={list(eval_cfg.task_ids)}: {error}") from error
    return list(eval_cfg.task_ids)


def make_eval_env(
    env_cfg: EnvConfig,
    eval_cfg: EvalConfig,
    task_id: Optional[int],
    output_dir: str,
    video_settings: Sequence[str] = (),
):
    """The vector env an evaluation of `task_id` plays in (eval.num_envs envs; videos under output_dir/videos).

    An env that renders no rgb frames writes no video: a warning where eval.video is on by default, an error naming
    `video_settings` (the video settings the user gave, e.g. "eval.video_envs=2") where they would change nothing."""
    kwargs: dict[str, Any] = dict(env_cfg.kwargs)
    if task_id is not None:
        kwargs["task_id"] = task_id
    env = gym.make_vec(
        env_cfg.id,
        num_envs=eval_cfg.num_envs,
        vectorization_mode="vector_entry_point",
        obs_mode=env_cfg.obs_mode,
        max_episode_steps=env_cfg.max_episode_steps,
        ignore_terminations=env_cfg.ignore_terminations,
        **kwargs,
    )
    if eval_cfg.video and "rgb" not in getattr(env.single_observation_space, "spaces", {}):
        if video_settings:  # before: only the warning below, for a setting given to get a video
            env.close()
            given = ", ".join(video_settings)
            raise ValueError(
                f"{given} would change nothing: {env_cfg.id} with obs_mode={env_cfg.obs_mode!r} renders no rgb "
                f"frames, so no video is written; use env.obs_mode=rgb on a machine with a renderer, or leave {given} out"
            )
        logger.warning(
            "eval.video=true but %s with obs_mode=%r renders no rgb frames; no video is written "
            "(use env.obs_mode=rgb on a machine with a renderer, or eval.video=false)",
            env_cfg.id,
            env_cfg.obs_mode,
        )
    elif eval_cfg.video:
        from ..envs.wrappers.video import VideoRecorder

        name = env_cfg.id.split("/")[-1] + ("" if task_id is None else f"-task{task_id}")
        env = VideoRecorder(
            env, os.path.join(output_dir, "videos"), name_prefix=name, num_envs_to_record=eval_cfg.video_envs
        )
    return env


def episode_quotas(num_episodes: int, num_envs: int) -> list[int]:
    """How many episodes each env plays: equal shares, the first `num_episodes % num_envs` envs one more.

    Fixed shares, not the first `num_episodes` to end: where episodes end at success, the first to end are the
    successes, so counting them would bias the rate upwards (and 64 envs for 8 episodes would count only the 8
    fastest)."""
    share, extra = divmod(num_episodes, num_envs)
    return [share + (env_index < extra) for env_index in range(num_envs)]


@contextlib.contextmanager
def seeded_sampling(seed: int, device) -> Any:
    """torch's global RNG (which the policies sample from) seeded with `seed` inside, restored after: a stochastic
    evaluation (eval.deterministic=false) plays the same actions for the same eval.seed (before: only the envs
    followed eval.seed, and two runs of one command differed), and SFT's evaluations leave its training's random
    stream as it was."""
    device = torch.device(device)
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    )
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def _run_task(env, policy, eval_cfg: EvalConfig, task_id, env_id: str, device) -> TaskResult:
    """Step until every env has played its share of `num_episodes` (episode_quotas); count its episodes in order.
    The policy samples from eval.seed (seeded_sampling); eval.progress=false hides the
    progress bar, whose carriage-return updates fill a piped log."""
    obs, _ = env.reset(seed=eval_cfg.seed)
    quotas = episode_quotas(eval_cfg.num_episodes, env.num_envs)
    played = [0] * env.num_envs
    returns, lengths, successes, successes_at_end = [], [], [], []
    progress = tqdm(
        total=eval_cfg.num_episodes,
        desc=f"eval {env_id} task={task_id}",
        leave=False,
        disable=not eval_cfg.progress,
    )
    instruction = obs.get("instruction", [""])[0] if isinstance(obs, dict) else ""
    clipped = ClippedActionMetrics()  # the action elements the env clipped, as training's eval/ metric
    with seeded_sampling(eval_cfg.seed, device):
        while len(returns) < eval_cfg.num_episodes:
            obs_device = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in obs.items()}
            actions = policy.act(obs_device, deterministic=eval_cfg.deterministic).actions.float().cpu()
            obs, _, _, _, info = env.step(actions)
            clipped.update(info, rows=action_rows(actions))
            for env_index, episode in zip(ended_env_indices(info), episodes_from_info(info)):
                if played[env_index] < quotas[env_index]:
                    played[env_index] += 1
                    returns.append(episode["episode_return"])
                    lengths.append(episode["episode_length"])
                    successes.append(bool(episode["success_once"]))
                    successes_at_end.append(bool(episode["success"]))
                    progress.update(1)
    progress.close()
    video = getattr(env, "last_video_path", None)
    return TaskResult(
        task=task_label(env_id, task_id),
        episodes=len(returns),
        successes=sum(successes),
        mean_return=float(sum(returns) / len(returns)),
        mean_length=float(sum(lengths) / len(lengths)),
        video=video,
        instruction=str(instruction),
        successes_at_end=sum(successes_at_end),
        clipped_action_fraction=clipped.summary().get(ClippedActionMetrics.KEY),
    )


def shown_task_id(env_cfg: EnvConfig, task_id: Optional[int]) -> Any:
    """The task id(s) to name a task by: eval.task_ids' `task_id`, else a suite's env.kwargs.task_id where given
    (before: a sweep over env.kwargs.task_id wrote tables and results.json that all read "rlinf/LIBERO-Spatial")."""
    from ..envs.registration import TASK_SUITES

    if task_id is not None or env_cfg.id not in TASK_SUITES or "task_id" not in env_cfg.kwargs:
        return task_id
    return plain_config_value(env_cfg.kwargs["task_id"])


def task_label(env_id: str, task_id: Any) -> str:
    """The task's name in the table and results.json: the env id, with the task id(s) of a suite ("[task 3]", or
    "[tasks 0,1]" for one task per env)."""
    if task_id is None:
        return env_id
    if isinstance(task_id, (list, tuple)):
        return f"{env_id}[tasks {','.join(str(t) for t in task_id)}]"
    return f"{env_id}[task {task_id}]"


def overall_success_rates(results: list[TaskResult]) -> tuple[float, float]:
    """(success at any step, success at the final step) over every task's episodes."""
    episodes = max(sum(r.episodes for r in results), 1)
    return sum(r.successes for r in results) / episodes, sum(r.successes_at_end for r in results) / episodes


def overall_clipped_fraction(results: list[TaskResult]) -> Optional[float]:
    """The episode-weighted mean of the tasks' clipped-action fractions (None where no task's env reported one)."""
    reported = [r for r in results if r.clipped_action_fraction is not None]
    episodes = sum(r.episodes for r in reported)
    return sum(r.clipped_action_fraction * r.episodes for r in reported) / episodes if episodes else None


def _clipped_entry(fraction: Optional[float]) -> dict[str, float]:
    return {} if fraction is None else {ClippedActionMetrics.KEY: fraction}


def write_results(
    results: list[TaskResult],
    output_dir: str,
    episodes_from: dict[str, int] | None = None,
    deterministic: bool | None = None,
) -> str:
    """results.json; `episodes_from`: what picked the episodes (eval.seed and eval.num_envs); `deterministic`:
    eval.deterministic (the policy's mean action, or actions sampled from eval.seed).

    Per task and overall: `success_once_rate` (success at any step, training's `success_once`) and
    `success_at_end_rate` (success at the final step, training's `success_rate`). `success_rate` and
    `overall_success_rate` are kept, meaning success at any step as before, for scripts that read them.
    `clipped_action_fraction` (per task and overall, where the env reports it): the fraction of the action
    elements the env got outside its action space and clipped, as training's eval/clipped_action_fraction."""
    os.makedirs(output_dir, exist_ok=True)
    total_episodes = sum(r.episodes for r in results)
    overall_once, overall_at_end = overall_success_rates(results)
    payload = {
        "tasks": [
            {
                "task": r.task,
                "instruction": r.instruction,
                "episodes": r.episodes,
                "successes": r.successes,
                "successes_at_end": r.successes_at_end,
                "success_once_rate": r.success_once_rate,
                "success_at_end_rate": r.success_at_end_rate,
                "success_rate": r.success_rate,
                "mean_return": r.mean_return,
                "mean_length": r.mean_length,
                "video": r.video,
                **_clipped_entry(r.clipped_action_fraction),
            }
            for r in results
        ],
        "overall_success_once_rate": overall_once,
        "overall_success_at_end_rate": overall_at_end,
        "overall_success_rate": overall_once,
        "success_rate_means": "success_once_rate: success at any step (kept under this name for compatibility; "
        "training's success_rate is success_at_end_rate)",
        "episodes": total_episodes,
        **_clipped_entry(overall_clipped_fraction(results)),
        **({"episodes_from": episodes_from} if episodes_from else {}),
        **({"deterministic": deterministic} if deterministic is not None else {}),
    }
    path = os.path.join(output_dir, RESULTS_FILE)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
    return path


SUCCESS_COLUMNS = ("success (any step)", "success at end")
CLIPPED_COLUMN = "clipped actions"  # shown where an env reports info["action_clipped"]


def _percent(fraction: Optional[float]) -> str:
    return "-" if fraction is None else f"{fraction:.2%}"


def print_success_table(results: list[TaskResult]) -> None:
    """The success table on stdout, every task name in full: escaped, since rich read "[task 0]" of
    "rlinf/LIBERO-Spatial[task 0]" as markup and dropped it, and as wide as it needs where stdout is no terminal
    (a pipe or a log file), where rich's 80 columns cut "rlinf/ManiSkill-PushCube" to "rlinf/ManiSkill-PushC…".
    Both success numbers, named apart (before: one "success rate" column, success at any step, while training's
    success_rate is success at the final step)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="Evaluation")
    table.add_column("task", overflow="fold")  # a terminal narrower than a name wraps it instead of cutting it
    overall_clipped = overall_clipped_fraction(results)
    clipped_column = (CLIPPED_COLUMN,) if overall_clipped is not None else ()
    for column in ("episodes", *SUCCESS_COLUMNS, "mean return", "mean length", *clipped_column):
        table.add_column(column)
    for r in results:
        table.add_row(
            escape(r.task),
            str(r.episodes),
            f"{r.success_once_rate:.1%}",
            f"{r.success_at_end_rate:.1%}",
            f"{r.mean_return:.2f}",
            f"{r.mean_length:.1f}",
            *([_percent(r.clipped_action_fraction)] if clipped_column else []),
        )
    once, at_end = overall_success_rates(results)
    overall_row = ["all", str(sum(r.episodes for r in results)), f"{once:.1%}", f"{at_end:.1%}", "", ""]
    table.add_row(*overall_row, *([_percent(overall_clipped)] if clipped_column else []))
    console = Console()
    if not console.is_terminal:
        natural = console.measure(table, options=console.options.update_width(sys.maxsize)).maximum
        console = Console(width=max(console.width, natural))
    console.print(table)


def pick_device(name: str, setting: str) -> torch.device:
    """The torch device `setting` (e.g. "eval.device") names: "auto" (a GPU if there is one), "cpu", "cuda" or
    "cuda:N" of a GPU this machine has; anything else is refused, naming the setting."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    valid = "'auto', 'cpu', 'cuda' or 'cuda:N'"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"{setting}={name!r} is not a device; valid: {valid}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"{setting}={name!r} is not a device this package runs on; valid: {valid}")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{setting}={name!r}, but PyTorch sees no CUDA GPU here: use {setting}=auto or cpu")
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"{setting}={name!r}, but this machine has {count} CUDA GPU(s): cuda:0 to cuda:{count - 1}"
            )
    return device
