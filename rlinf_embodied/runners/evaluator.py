"""Evaluation: N episodes per task with the deterministic policy, a success table, results.json, videos."""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import gymnasium as gym
import torch
from tqdm.auto import tqdm

from ..config import EnvConfig, EvalConfig, PolicyConfig
from ..datasets.demo_seeds import check_checkpoint_held_out
from ..envs.action_settings import check_action_settings
from ..envs.metrics import ended_env_indices, episodes_from_info
from ..envs.spec import env_spec
from ..workers.policy_loading import build_policy, check_policy_cameras

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

    @property
    def success_rate(self) -> float:
        return self.successes / max(self.episodes, 1)


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
            check_policy_cameras(policy_cfg, spec, env_cfg.id)
            policy = build_policy(policy_cfg, spec["action_dim"], spec["state_dim"], device).eval()
        results.append(_run_task(env, policy, eval_cfg, task_id, env_cfg.id, device))
        if env_cache is None:
            env.close()
        else:
            env_cache[task_id] = env
    write_results(results, output_dir, {"seed": eval_cfg.seed, "num_envs": eval_cfg.num_envs})
    return results


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


@torch.no_grad()
def _run_task(env, policy, eval_cfg: EvalConfig, task_id, env_id: str, device) -> TaskResult:
    """Step until every env has played its share of `num_episodes` (episode_quotas); count its episodes in order."""
    obs, _ = env.reset(seed=eval_cfg.seed)
    quotas = episode_quotas(eval_cfg.num_episodes, env.num_envs)
    played = [0] * env.num_envs
    returns, lengths, successes, successes_at_end = [], [], [], []
    progress = tqdm(total=eval_cfg.num_episodes, desc=f"eval {env_id} task={task_id}", leave=False)
    instruction = obs.get("instruction", [""])[0] if isinstance(obs, dict) else ""
    while len(returns) < eval_cfg.num_episodes:
        obs_device = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in obs.items()}
        actions = policy.act(obs_device, deterministic=eval_cfg.deterministic).actions.float().cpu()
        obs, _, _, _, info = env.step(actions)
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
    name = env_id if task_id is None else f"{env_id}[task {task_id}]"
    return TaskResult(
        task=name,
        episodes=len(returns),
        successes=sum(successes),
        mean_return=float(sum(returns) / len(returns)),
        mean_length=float(sum(lengths) / len(lengths)),
        video=video,
        instruction=str(instruction),
        successes_at_end=sum(successes_at_end),
    )


def write_results(results: list[TaskResult], output_dir: str, episodes_from: dict[str, int] | None = None) -> str:
    """results.json; `episodes_from`: what picked the episodes (eval.seed and eval.num_envs)."""
    os.makedirs(output_dir, exist_ok=True)
    total_episodes = sum(r.episodes for r in results)
    payload = {
        "tasks": [
            {
                "task": r.task,
                "instruction": r.instruction,
                "episodes": r.episodes,
                "successes": r.successes,
                "successes_at_end": r.successes_at_end,
                "success_rate": r.success_rate,
                "mean_return": r.mean_return,
                "mean_length": r.mean_length,
                "video": r.video,
            }
            for r in results
        ],
        "overall_success_rate": sum(r.successes for r in results) / max(total_episodes, 1),
        "episodes": total_episodes,
        **({"episodes_from": episodes_from} if episodes_from else {}),
    }
    path = os.path.join(output_dir, "results.json")
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
    return path


def print_success_table(results: list[TaskResult]) -> None:
    """The success table on stdout, every task name in full: escaped, since rich read "[task 0]" of
    "rlinf/LIBERO-Spatial[task 0]" as markup and dropped it, and as wide as it needs where stdout is no terminal
    (a pipe or a log file), where rich's 80 columns cut "rlinf/ManiSkill-PushCube" to "rlinf/ManiSkill-PushC…"."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="Evaluation")
    table.add_column("task", overflow="fold")  # a terminal narrower than a name wraps it instead of cutting it
    for column in ("episodes", "success rate", "mean return", "mean length"):
        table.add_column(column)
    for r in results:
        table.add_row(
            escape(r.task), str(r.episodes), f"{r.success_rate:.1%}", f"{r.mean_return:.2f}", f"{r.mean_length:.1f}"
        )
    overall = sum(r.successes for r in results) / max(sum(r.episodes for r in results), 1)
    table.add_row("all", str(sum(r.episodes for r in results)), f"{overall:.1%}", "", "")
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
