"""Evaluation entry point: a success table, results.json and mp4 videos in the run directory.

python -m rlinf_embodied.eval policy.checkpoint=outputs/.../checkpoints/iteration_000059/policy
python -m rlinf_embodied.eval env=libero policy=pi0 policy.checkpoint=/ckpt/pi0 eval.task_ids=[0,1,2]
"""

from __future__ import annotations

import os

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from .config import EvalRunConfig, register_configs
from .paths import CONFIG_DIR

register_configs()


@hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="eval")
def main(cfg) -> None:
    from .runners.evaluator import evaluate_policy, print_success_table

    typed: EvalRunConfig = OmegaConf.to_object(cfg)
    output_dir = typed.eval.output_dir or HydraConfig.get().runtime.output_dir
    results = evaluate_policy(typed.env, typed.policy, typed.eval, output_dir)
    print_success_table(results)
    print(f"results: {os.path.join(output_dir, 'results.json')}")


if __name__ == "__main__":
    main()
