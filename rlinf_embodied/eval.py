"""Evaluation entry point: a success table, results.json and mp4 videos in the run directory.

python -m rlinf_embodied.eval policy.checkpoint=outputs/.../checkpoints/iteration_000059/policy
python -m rlinf_embodied.eval env=libero policy=pi0 policy.checkpoint=/ckpt/pi0 eval.task_ids=[0,1,2]
"""

from __future__ import annotations

import os

import hydra
from hydra.core.hydra_config import HydraConfig

from .config import EvalConfig, EvalRunConfig, PolicyConfig, register_configs, typed_config
from .paths import CONFIG_DIR, log_into, make_output_dir
from .unread_settings import override_key, reject_unread_settings

register_configs()


# env.num_envs sizes training's vector env and the env groups set it; an evaluation plays eval.num_envs envs
UNREAD_SETTINGS = {
    "env.num_envs": "python -m rlinf_embodied.eval steps eval.num_envs envs in parallel (env.num_envs sizes "
    "training's vector env); set eval.num_envs instead",
}


def check_has_checkpoint(policy: PolicyConfig) -> None:
    """An evaluation scores saved weights. Before, a command without policy.checkpoint scored a randomly initialised
    policy and printed its 0% table like any other."""
    from .workers.policy_loading import MissingCheckpointError

    if policy.checkpoint is None:
        raise MissingCheckpointError(
            "python -m rlinf_embodied.eval needs policy.checkpoint=<a policy directory written by train or sft, e.g. "
            "outputs/.../checkpoints/best/policy>; without it the policy would be randomly initialised"
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
    from .runners.evaluator import evaluate_policy, print_success_table
    from .workers.policy_loading import check_policy_config, warn_size_not_read

    reject_unread_settings(list(HydraConfig.get().overrides.task), UNREAD_SETTINGS)
    typed: EvalRunConfig = typed_config(cfg)
    check_env(typed.env)
    check_policy_config(typed.policy)  # an unknown size or override named before the env is built
    warn_size_not_read(typed.policy, list(HydraConfig.get().overrides.task))
    check_has_checkpoint(typed.policy)
    output_dir = typed.eval.output_dir or HydraConfig.get().runtime.output_dir
    make_output_dir(output_dir, "eval.output_dir")  # before the episodes: results.json is written after them
    log_into(output_dir, HydraConfig.get().runtime.output_dir, "eval.log")
    video_settings = given_video_settings(list(HydraConfig.get().overrides.task), typed.eval)
    results = evaluate_policy(typed.env, typed.policy, typed.eval, output_dir, video_settings=video_settings)
    print_success_table(results)
    print(f"results: {os.path.join(output_dir, 'results.json')}")


if __name__ == "__main__":
    main()
