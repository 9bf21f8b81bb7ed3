"""Supervised fine-tuning (behaviour cloning) entry point: demonstrations -> a policy checkpoint.

    python -m rlinf_embodied.sft sft.dataset=demos/pickcube                         # mlp BC, CPU
    python -m rlinf_embodied.sft sft.dataset=demos/pickcube sft.eval_interval=500 sft.max_steps=5000 \
        env.max_episode_steps=100   # evaluated episodes as long as the planner's PickCube demonstrations
    python -m rlinf_embodied.sft env=libero policy=pi0 policy.checkpoint=/ckpt/pi0 sft.dataset=demos/libero \
        sft.batch_size=32 sft.lr=2.5e-5 cluster.simulate_gpus=false

Checkpoints: <run dir>/checkpoints/{step_XXXXXX,final,best}/policy, each loadable with
`policy.checkpoint=` by `python -m rlinf_embodied.train` and `python -m rlinf_embodied.eval`.
Ctrl-C (or SIGTERM) finishes the current steps, saves checkpoints/step_XXXXXX and prints the command that
continues the run (`sft.resume=<that checkpoint>`); exit code 130 (143).
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from .config import SFTConfig, SFTRunConfig, register_configs, typed_config
from .datasets.time_limit import longest_episode, warn_if_time_limit_short
from .envs.action_settings import ACTION_SETTINGS
from .envs.registration import time_limit
from .paths import CONFIG_DIR, log_into, make_output_dir
from .runners.interrupts import Interrupted, StopRequest, continue_command, report_forced_stop, report_stop
from .unread_settings import override_key, reject_unread_settings

logger = logging.getLogger(__name__)
register_configs()


def run_sft(cfg: SFTRunConfig, output_dir: str, cluster=None, stop: StopRequest | None = None) -> list[dict]:
    """Check the config, start (or join, or use `cluster`) the Ray cluster, run the SFTRunner.

    With `stop`, SIGINT/SIGTERM stop the run after the current steps with a checkpoint; `stop.checkpoint`
    then names it."""
    from .runners.sft_runner import SFTRunner, check_sft_config
    from .scheduler import Cluster

    check_sft_config(cfg)  # fail before any process starts
    warn_if_eval_time_limit_short(cfg)
    with stop.handling() if stop is not None else contextlib.nullcontext():
        own_cluster = cluster is None
        if own_cluster:
            cluster = Cluster.from_config(cfg.cluster)
        runner = None
        try:
            if stop is not None:
                stop.install()  # again: ray.init installs its own SIGTERM handler
            runner = SFTRunner(cfg, cluster, output_dir, stop=stop)
            return runner.run()
        finally:
            try:
                if runner is not None:
                    runner.shutdown()
            finally:
                if own_cluster:
                    cluster.shutdown()


# The env settings only SFT's evaluations read (their envs: how many, what they observe, when their episodes end).
# Without evaluations SFT reads env.id (the dataset's env check, the cameras a policy reads, the checkpoint's record)
# and the env.kwargs of READ_ENV_KWARGS; everything else under env.kwargs (reward_mode, camera_size, task_id,
# sim_backend, ...) configures the evaluations' envs alone.
EVAL_ONLY_ENV_SETTINGS = {
    "env.num_envs": "its evaluations' envs (up to sft.eval_episodes of them)",
    "env.obs_mode": "its evaluations' envs (the policy's inputs are the dataset's: its state and cameras)",
    "env.max_episode_steps": "its evaluations' episodes",
    "env.ignore_terminations": "its evaluations' episodes",
}
# control_mode is checked against the dataset's, and both are recorded beside every checkpoint's policy
# (env_actions.json), which eval, collect and RL compare with their env
READ_ENV_KWARGS = tuple(ACTION_SETTINGS)  # control_mode, binarize_gripper


def unread_settings(sft: SFTConfig) -> dict[str, str]:
    """The settings this SFT run never reads (unread_settings.py), with what to set instead: the env settings of
    EVAL_ONLY_ENV_SETTINGS size and shape only the evaluations' envs (min(env.num_envs, sft.eval_episodes)), so
    without evaluations nothing reads them (before: env.max_episode_steps, env.ignore_terminations and
    env.obs_mode were accepted and ignored, probe 63 #6). env.kwargs: reject_unread_env_kwargs."""
    if sft.eval_interval > 0:
        return {}
    return {
        key: f"python -m rlinf_embodied.sft reads {key} only for {what}, and sft.eval_interval=0 runs none; set "
        f"sft.eval_interval > 0, or leave {key} out"
        for key, what in EVAL_ONLY_ENV_SETTINGS.items()
    }


def unread_env_kwargs(override: str) -> list[str]:
    """The env.kwargs names a command-line override sets that no SFT without evaluations reads (those outside
    READ_ENV_KWARGS): `env.kwargs.reward_mode=sparse` -> ["reward_mode"], and the keys of a whole mapping
    (`env.kwargs={reward_mode:sparse,control_mode:pd_ee_delta_pos}` -> ["reward_mode"])."""
    key = override_key(override)
    if key.startswith("env.kwargs."):
        name = key[len("env.kwargs.") :].split(".", 1)[0]
        return [] if name in READ_ENV_KWARGS else [name]
    if key != "env.kwargs":
        return []
    from hydra.core.override_parser.overrides_parser import OverridesParser

    value = OverridesParser.create().parse_override(override).value()
    return sorted(name for name in value if name not in READ_ENV_KWARGS) if isinstance(value, dict) else []


def reject_unread_env_kwargs(overrides: list[str], sft: SFTConfig) -> None:
    """Without evaluations (sft.eval_interval=0) an env.kwargs setting other than READ_ENV_KWARGS given on the
    command line is an error (before: `env.kwargs.reward_mode=sparse` was accepted and ignored, probe 63 #6). The
    env group's own kwargs (env=libero's camera_size, task_id) are not the user's and pass."""
    if sft.eval_interval > 0:
        return
    for override in overrides:
        names = unread_env_kwargs(override)
        if names:
            listed = ", ".join(f"env.kwargs.{name}" for name in names)
            *first, last = ["env.id", *(f"env.kwargs.{name}" for name in READ_ENV_KWARGS)]
            raise ValueError(
                f"{override}: python -m rlinf_embodied.sft reads {listed} only for its evaluations' envs, and "
                f"sft.eval_interval=0 runs none (without evaluations it reads {', '.join(first)} and {last}, "
                f"recorded with the checkpoint's policy); set sft.eval_interval > 0, or leave {listed} out"
            )


def reject_unread_overrides(overrides: list[str], sft: SFTConfig) -> None:
    """The command line's settings this run never reads are errors: unread_settings', then env.kwargs'."""
    reject_unread_settings(overrides, unread_settings(sft))
    reject_unread_env_kwargs(overrides, sft)


def warn_if_eval_time_limit_short(cfg: SFTRunConfig) -> bool:
    """SFT's evaluations run episodes of up to env.max_episode_steps steps: below the dataset's longest
    demonstration they cut off a policy that imitates it (before: eval/episode_length 50 for demonstrations of
    70-96 steps, without a word). The words of collect's warning; returns whether it warned."""
    if cfg.sft.eval_interval == 0:
        return False
    limit = time_limit(cfg.env.id, cfg.env.max_episode_steps)
    return warn_if_time_limit_short(
        logger,
        longest_episode(cfg.sft.dataset),
        f"are in sft.dataset={cfg.sft.dataset!r}",
        limit,
        f"SFT's evaluations (sft.eval_interval={cfg.sft.eval_interval}) end their episodes at {limit} steps, "
        "failing a policy that takes as long as its demonstrations",
    )


def last_training_line(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The last line with a training loss: with sft.eval_async an evaluation's own line (no loss) can come last."""
    return next((line for line in reversed(history) if "sft/loss" in line), None)


@hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="sft")
def main(cfg) -> None:
    output_dir = cfg.sft.output_dir or HydraConfig.get().runtime.output_dir
    typed: SFTRunConfig = typed_config(cfg)
    reject_unread_overrides(list(HydraConfig.get().overrides.task), typed.sft)
    typed.sft.output_dir = output_dir
    make_output_dir(output_dir, "sft.output_dir")
    from .runners.metrics_logger import output_dir_claimed

    # as train's: another run's outputs there are refused unless this run resumes from one of its checkpoints
    with output_dir_claimed(output_dir, "sft.output_dir", typed.sft.resume, "sft.resume"):
        _run_main(cfg, typed, output_dir)


def _run_main(cfg, typed: SFTRunConfig, output_dir: str) -> None:
    log_into(output_dir, HydraConfig.get().runtime.output_dir, "sft.log")
    OmegaConf.save(cfg, os.path.join(output_dir, "config.yaml"))
    stop = StopRequest(work="steps (up to the next metrics line)")

    def resume_command() -> str | None:
        return continue_command("rlinf_embodied.sft", stop.checkpoint, "sft.resume", "sft.output_dir", output_dir)

    try:
        history = run_sft(typed, output_dir, stop=stop)
    except Interrupted as interrupted:
        report_forced_stop(stop, interrupted, resume_command())
    last = last_training_line(history)
    finished = last is not None and last["step"] == typed.sft.max_steps
    if stop.requested and not finished:
        report_stop(stop, "step", resume_command())
    if last is not None:
        logger.info("finished %d steps: sft/loss=%.4f -> %s", last["step"], last["sft/loss"], output_dir)
    print(f"checkpoint: {os.path.join(output_dir, 'checkpoints', 'final', 'policy')}")
    print(f"metrics: {os.path.join(output_dir, 'metrics.jsonl')}")


if __name__ == "__main__":
    main()
