"""Training entry point.

    python -m rlinf_embodied.train                                     # PPO + MLP, ManiSkill PickCube, CPU
    python -m rlinf_embodied.train runner.max_iterations=2 env.num_envs=4
    python -m rlinf_embodied.train env=libero policy=pi0 policy.checkpoint=/ckpt/pi0 cluster=hybrid_4gpu
"""
from __future__ import annotations

import logging
import os

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from .config import TrainConfig, register_configs
from .paths import CONFIG_DIR
from .workers.policy_loading import check_policy_config

logger = logging.getLogger(__name__)
register_configs()


def check_train_config(cfg: TrainConfig) -> None:
    """What can be checked without starting Ray: the policy (name, size, overrides) and the placement."""
    from .runners.embodied_runner import component_placement

    check_policy_config(cfg.policy)
    component_placement(cfg)


def run_training(cfg: TrainConfig, output_dir: str) -> list[dict]:
    """Start (or join) the Ray cluster, run the EmbodiedRunner, shut everything down."""
    from .runners.embodied_runner import EmbodiedRunner
    from .scheduler import Cluster

    check_train_config(cfg)  # fail before any process starts
    cluster = Cluster(address=cfg.cluster.address, num_nodes=cfg.cluster.num_nodes,
                      num_gpus_per_node=cfg.cluster.num_gpus_per_node, simulate_gpus=cfg.cluster.simulate_gpus)
    runner = EmbodiedRunner(cfg, cluster, output_dir)
    try:
        return runner.run()
    finally:
        runner.shutdown()
        cluster.shutdown()


@hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="config")
def main(cfg) -> None:
    output_dir = cfg.runner.output_dir or HydraConfig.get().runtime.output_dir
    typed: TrainConfig = OmegaConf.to_object(cfg)
    typed.runner.output_dir = output_dir
    os.makedirs(output_dir, exist_ok=True)
    OmegaConf.save(cfg, os.path.join(output_dir, "config.yaml"))
    history = run_training(typed, output_dir)
    if history:
        last = history[-1]
        logger.info("finished %d iterations: success_rate=%.3f env_steps=%d -> %s", len(history),
                    last.get("success_rate", float("nan")), last.get("env_steps", 0), output_dir)
    print(f"metrics: {os.path.join(output_dir, 'metrics.jsonl')}")


if __name__ == "__main__":
    main()
