"""Training entry point.

python -m rlinf_embodied.train                                     # PPO + MLP, ManiSkill PushCube, CPU
python -m rlinf_embodied.train runner.max_iterations=2 env.num_envs=4
python -m rlinf_embodied.train env=libero policy=pi0 policy.checkpoint=/ckpt/pi0 cluster=hybrid_4gpu
"""

from __future__ import annotations

import contextlib
import logging
import os

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from .config import TrainConfig, is_auto, register_configs, typed_config
from .paths import CONFIG_DIR, log_into, make_output_dir
from .runners.interrupts import Interrupted, StopRequest, continue_command, report_forced_stop, report_stop
from .workers.policy_loading import check_policy_config, warn_size_not_read

logger = logging.getLogger(__name__)
register_configs()


def check_train_config(cfg: TrainConfig) -> None:
    """What can be checked without starting Ray: the env id, the policy (name, size, overrides) and the placement."""
    from .envs.action_settings import check_action_settings
    from .envs.registration import check_env
    from .runners.embodied_runner import (
        check_env_split,
        check_offload_setting,
        check_resume_leaves_work,
        check_rollout_reaches_time_limit_early,
        check_task_ids,
        component_placement,
        read_saved_iteration,
    )
    from .runners.placement_profile import check_auto_request
    from .workers.resume_check import check_resume_directory, check_resume_fits_run, reject_sft_checkpoint

    check_env(cfg.env, local=cfg.cluster.address is None)
    check_policy_config(cfg.policy)
    reject_chunk_level_without_chunks(cfg)
    reject_algorithm_settings_the_policy_cannot_use(cfg)
    check_action_settings(cfg.policy.checkpoint, cfg.env.id, cfg.env.kwargs)  # RL from SFT in the SFT's action space
    warn_initialising_overrides_on_resume(cfg)
    warn_checkpoint_weights_not_read_on_resume(cfg)
    if cfg.runner.resume:  # before: the actor's error, after every worker had started
        check_resume_directory(cfg.runner.resume, "runner.resume")
        reject_sft_checkpoint(cfg.runner.resume, "runner.resume")
        # the resumed policy's actions keep their meaning (before: another control_mode of the same width went on)
        check_action_settings(
            os.path.join(cfg.runner.resume, "policy"),
            cfg.env.id,
            cfg.env.kwargs,
            named_by=f"runner.resume={cfg.runner.resume!r}",
        )
        # its policy and the settings that shape its weights (before: the actor's error, after start-up)
        check_resume_fits_run(cfg.runner.resume, "runner.resume", cfg.policy, cfg.env)
        # before: after Ray and the worker groups had started (EmbodiedRunner), and place printed the command
        check_resume_leaves_work(cfg, read_saved_iteration(cfg.runner.resume))
    check_rollout_reaches_time_limit_early(cfg)
    check_auto_request(cfg)  # `auto` is resolved in run_training, on the started cluster
    if not (is_auto(cfg.cluster.component_placement) or is_auto(cfg.runner.pipeline_stage_num)):
        placement = component_placement(cfg)
        check_env_split(cfg, placement)
        check_offload_setting(cfg, placement)
    else:  # check_env_split's layout-free part (before: under auto, after Ray, as "no candidate layout can run")
        check_task_ids(cfg)


def reject_chunk_level_without_chunks(cfg: TrainConfig) -> None:
    """algorithm.logprob_level=chunk sums a chunk's actions' log-probs: with chunks of one action it is the action
    level (before: accepted, and every metric byte-equal to the default's)."""
    from .unread_settings import reject_ineffective_setting
    from .workers.policy_loading import predicted_policy_dims

    if cfg.algorithm.logprob_level == "chunk" and predicted_policy_dims(cfg.policy)["action_chunk"] == 1:
        reject_ineffective_setting(
            cfg.algorithm,
            "algorithm",
            "logprob_level",
            f"policy {cfg.policy.name!r} acts in chunks of one action, where a chunk's log-prob is the action's; "
            "use 'action' (the default) or 'token', or a policy with action chunks (policy.overrides.action_chunk)",
        )


def reject_algorithm_settings_the_policy_cannot_use(cfg: TrainConfig) -> None:
    """An estimator that reads a critic needs the policy's value head (before: GAE ran on values of 0 and logged a
    value loss of 0), and an entropy bonus needs an entropy with a gradient (Flow-SDE's noise is a fixed schedule:
    before, entropy_coef changed train/loss and nothing else)."""
    from .unread_settings import reject_ineffective_setting
    from .workers.policy_loading import predicted_policy_field, reject_value_head_overrides_without_critic

    reject_value_head_overrides_without_critic(cfg.policy, cfg.algorithm)

    if cfg.algorithm.uses_critic and predicted_policy_field(cfg.policy, "add_value_head") is False:
        raise ValueError(
            f"algorithm.adv_type={cfg.algorithm.adv_type!r} reads a critic, but policy {cfg.policy.name!r} has "
            f"add_value_head=false: set policy.overrides.add_value_head=true, or use a critic-free estimator "
            f"(algorithm=grpo or algorithm=reinforce_pp)"
        )
    if predicted_policy_field(cfg.policy, "noise_method") == "flow_sde":
        reject_ineffective_setting(
            cfg.algorithm,
            "algorithm",
            "entropy_coef",
            f"policy {cfg.policy.name!r} samples with noise_method='flow_sde', whose noise follows a fixed schedule, "
            "so its entropy has no gradient; use policy.overrides.noise_method=flow_noise (a learned noise) for an "
            "entropy bonus",
        )


# Policy fields that only initialise weights of a new policy: a resumed run restores those weights from its checkpoint
INITIALISING_FIELDS = ("init_log_std",)


def warn_initialising_overrides_on_resume(cfg: TrainConfig) -> list[str]:
    """A warning, not an error: a stopped run's printed resume command repeats its overrides (before: a resume with
    policy.overrides.init_log_std=-3 ran on at the checkpoint's std without a word). The fields named, for tests."""
    ignored = [name for name in INITIALISING_FIELDS if cfg.runner.resume and name in cfg.policy.overrides]
    for name in ignored:
        logger.warning(
            "policy.overrides.%s=%s is not read with runner.resume: it initialises a new policy, and the resumed run "
            "restores the trained weights from its checkpoint; start a new run (policy.checkpoint=<checkpoint>/policy) "
            "to reset it",
            name,
            cfg.policy.overrides[name],
        )
    return ignored


def warn_checkpoint_weights_not_read_on_resume(cfg: TrainConfig) -> bool:
    """A warning, not an error: a resume command repeats the run's policy.checkpoint, which still builds the model
    (before: runner.resume with another policy.checkpoint trained on from the resumed weights without a word). No
    warning where policy.checkpoint is the one the resumed run started from (recorded in its checkpoint), as in the
    printed resume command (before: following it warned). True where it warned, for tests."""
    from .runners.embodied_runner import read_started_from

    if not (cfg.runner.resume and cfg.policy.checkpoint):
        return False
    if read_started_from(cfg.runner.resume) == os.path.abspath(cfg.policy.checkpoint):
        return False
    reference = " and the algorithm.ref_kl_coef reference policy" if cfg.algorithm.ref_kl_coef > 0 else ""
    logger.warning(
        "policy.checkpoint=%s: its weights are not trained with runner.resume=%s, which wins: the resumed run restores "
        "its trained weights and optimizer from runner.resume, and policy.checkpoint still sets the model's "
        "architecture (its config.json)%s; start a new run without runner.resume to train from policy.checkpoint's "
        "weights (nothing to change where it is the checkpoint the resumed run started from)",
        cfg.policy.checkpoint,
        cfg.runner.resume,
        reference,
    )
    return True


def run_training(cfg: TrainConfig, output_dir: str, stop: StopRequest | None = None) -> list[dict]:
    """Start (or join) the Ray cluster, run the EmbodiedRunner, shut everything down.

    With `stop`, SIGINT/SIGTERM stop the run after the current iteration with a checkpoint
    (runners/interrupts.py); `stop.checkpoint` then names it."""
    from .runners.embodied_runner import EmbodiedRunner
    from .scheduler import Cluster

    check_train_config(cfg)  # fail before any process starts
    with stop.handling() if stop is not None else contextlib.nullcontext():
        cluster = Cluster.from_config(cfg.cluster)
        runner = None
        try:
            if stop is not None:
                stop.install()  # again: ray.init installs its own SIGTERM handler
            resolve_placement(cfg, cluster, output_dir, checked=True)  # check_train_config checked `auto` above
            runner = EmbodiedRunner(cfg, cluster, output_dir, stop=stop)
            return runner.run()
        finally:
            try:
                if runner is not None:
                    runner.shutdown(close_timeout_s=5.0 if stop is not None and stop.forced else 30.0)
            finally:
                cluster.shutdown()


def resolve_placement(cfg: TrainConfig, cluster, output_dir: str, checked: bool = False) -> None:
    """`auto` placement / pipeline stages: measured (or cached) costs -> the fastest layout, written into cfg;
    the candidate table is printed and kept in output_dir/placement.txt. Nothing to do without `auto`.
    `checked`: check_train_config (check_auto_request) already ran on cfg, as run_training does before Ray."""
    from .runners.placement_profile import resolve_auto_placement

    lines: list[str] = []

    def log(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    if resolve_auto_placement(cfg, cluster, log=log, checked=checked) is not None:
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, "placement.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")


@hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="config")
def main(cfg) -> None:
    output_dir = cfg.runner.output_dir or HydraConfig.get().runtime.output_dir
    typed: TrainConfig = typed_config(cfg)
    typed.runner.output_dir = output_dir
    warn_size_not_read(typed.policy, list(HydraConfig.get().overrides.task))
    make_output_dir(output_dir, "runner.output_dir")
    from .runners.metrics_logger import output_dir_claimed

    # before anything is written into it: another run's outputs there are refused, unless this run resumes from one
    # of its checkpoints (the printed resume command does); held until the run ends
    with output_dir_claimed(output_dir, "runner.output_dir", typed.runner.resume, "runner.resume"):
        _run_main(cfg, typed, output_dir)


def _run_main(cfg, typed: TrainConfig, output_dir: str) -> None:
    log_into(output_dir, HydraConfig.get().runtime.output_dir, "train.log")
    OmegaConf.save(cfg, os.path.join(output_dir, "config.yaml"))
    stop = StopRequest()

    def resume_command() -> str | None:
        return continue_command(
            "rlinf_embodied.train", stop.checkpoint, "runner.resume", "runner.output_dir", output_dir
        )

    try:
        history = run_training(typed, output_dir, stop)
    except Interrupted as interrupted:
        report_forced_stop(stop, interrupted, resume_command())
    finished = bool(history) and history[-1]["iteration"] == typed.runner.max_iterations - 1
    if stop.requested and not finished:
        report_stop(stop, "iteration", resume_command())
    if history:
        last = history[-1]
        logger.info(
            "finished %d iterations: rollout/success_once=%.3f time/env_steps=%d -> %s",  # the progress bar's
            len(history),
            last.get("rollout/success_once", float("nan")),
            last.get("time/env_steps", 0),
            output_dir,
        )
    print(f"metrics: {os.path.join(output_dir, 'metrics.jsonl')}")


if __name__ == "__main__":
    main()
