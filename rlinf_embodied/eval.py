"""Evaluation entry point: a success table, results.json and mp4 videos in the run directory.

python -m rlinf_embodied.eval policy.checkpoint=outputs/.../checkpoints/iteration_000059/policy
python -m rlinf_embodied.eval env=libero policy=pi0 policy.checkpoint=/ckpt/pi0 eval.task_ids=[0,1,2]
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import hydra
from hydra.core.hydra_config import HydraConfig

from .config import EvalConfig, EvalRunConfig, PolicyConfig, register_configs, typed_config
from .paths import CONFIG_DIR, log_into, make_output_dir, refuse_earlier_results
from .unread_settings import ineffective_setting_error, override_key, reject_unread_settings

register_configs()


# env.num_envs sizes training's vector env and the env groups set it; an evaluation plays eval.num_envs envs
UNREAD_SETTINGS = {
    "env.num_envs": "python -m rlinf_embodied.eval steps eval.num_envs envs in parallel (env.num_envs sizes "
    "training's vector env); set eval.num_envs instead",
}


# policy.overrides fields that only sampled actions read: a deterministic act takes the Gaussian's mean (mlp, cnn,
# OpenVLA-OFT's continuous head: init_log_std), the most likely action token (OpenVLA: temperature) or the flow's
# plain ODE from fixed noise (pi0, GR00T, flow_mlp: the noise settings)
SAMPLING_FIELDS = (
    "init_log_std",
    "temperature",
    "noise_method",
    "noise_level",
    "noise_std_min",
    "noise_std_max",
    "stochastic_steps",
)
# and those only a deterministic act reads (the flow policies' fixed initial noise)
DETERMINISTIC_FIELDS = ("deterministic_noise", "deterministic_seed")


def reject_sampling_overrides(
    overrides: Mapping[str, Any], deterministic: bool, setting: str = "eval.deterministic"
) -> None:
    """A sampling-noise override where the policy acts deterministically changes no action (before: accepted, and
    "eval at noise 0.05" printed the same table as "eval at noise 0.5"); the flow policies' deterministic-noise
    fields where it samples, likewise. `setting` names the switch (collect.deterministic for collect)."""
    if deterministic:
        reason = (
            f"it shapes sampled actions only, and {setting}=true (the default) acts deterministically (the "
            f"Gaussian's mean, the most likely action token, the flow's noise-free ODE); set {setting}=false to "
            f"score the sampling policy with it (eval.seed then seeds the sampling), or drop the override"
        )
        names = SAMPLING_FIELDS
    else:
        reason = (
            f"only a deterministic act reads it (the flow's fixed initial noise), and {setting}=false samples; "
            f"set {setting}=true, or drop the override"
        )
        names = DETERMINISTIC_FIELDS
    for name in names:
        if name in overrides:
            raise ineffective_setting_error("policy.overrides", name, overrides[name], reason)


def check_has_checkpoint(policy: PolicyConfig) -> None:
    """An evaluation scores saved weights. Before, a command without policy.checkpoint scored a randomly initialised
    policy and printed its 0% table like any other."""
    from .workers.policy_loading import MissingCheckpointError

    if policy.checkpoint is None:
        raise MissingCheckpointError(
            "python -m rlinf_embodied.eval needs policy.checkpoint=<a policy directory written by train or sft, e.g. "
            "outputs/.../checkpoints/best/policy>; without it the policy would be randomly initialised"
        )


def reject_task_id_with_task_ids(overrides: list[str], eval_cfg: EvalConfig) -> None:
    """env.kwargs.task_id given on the command line with eval.task_ids: eval.task_ids picks the tasks, so the
    given task id would change nothing (before: replaced silently). The env group's own default (LIBERO's
    task_id: 0) is not a choice of the user's, so it is not refused."""
    if eval_cfg.task_ids is None:
        return
    given = [override for override in overrides if override_key(override) == "env.kwargs.task_id"]
    if given:
        raise ValueError(
            f"{given[-1]} and eval.task_ids={list(eval_cfg.task_ids)} both pick the tasks, and eval.task_ids "
            "replaces env.kwargs.task_id: give one of them"
        )


def given_video_settings(overrides: list[str], eval_cfg: EvalConfig) -> list[str]:
    """The video settings the command line gave while eval.video is on ("eval.video_envs=2"): where the env renders
    no rgb frames they would change nothing, and the evaluation refuses them; the default eval.video=true only
    warns there, so that evaluating a state env needs no eval.video=false."""
    if not eval_cfg.video:
        return []
    given = {override_key(override) for override in overrides}
    values = {"eval.video": "true", "eval.video_envs": eval_cfg.video_envs}
    return [f"{key}={value}" for key, value in values.items() if key in given and value is not None]


@hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="eval")
def main(cfg) -> None:
    from .envs.registration import check_env
    from .runners.evaluator import check_eval_seed, evaluate_policy, print_success_table
    from .workers.policy_loading import check_policy_config, warn_size_not_read

    reject_unread_settings(list(HydraConfig.get().overrides.task), UNREAD_SETTINGS)
    typed: EvalRunConfig = typed_config(cfg)
    check_eval_seed(typed.eval)
    reject_task_id_with_task_ids(list(HydraConfig.get().overrides.task), typed.eval)
    check_env(typed.env)
    # an unknown size or override, or an override of the checkpoint's architecture, named before the env is built
    check_policy_config(typed.policy)
    reject_sampling_overrides(dict(typed.policy.overrides), typed.eval.deterministic)
    warn_size_not_read(typed.policy, list(HydraConfig.get().overrides.task))
    check_has_checkpoint(typed.policy)
    output_dir = typed.eval.output_dir or HydraConfig.get().runtime.output_dir
    # before the episodes: results.json is written after them (an earlier one is not overwritten)
    refuse_earlier_results(output_dir, "eval.output_dir")
    make_output_dir(output_dir, "eval.output_dir")
    log_into(output_dir, HydraConfig.get().runtime.output_dir, "eval.log")
    video_settings = given_video_settings(list(HydraConfig.get().overrides.task), typed.eval)
    results = evaluate_policy(typed.env, typed.policy, typed.eval, output_dir, video_settings=video_settings)
    print_success_table(results)
    print(f"results: {os.path.join(output_dir, 'results.json')}")


if __name__ == "__main__":
    main()
