"""Typed training configuration: every default lives here, once.

Hydra composes `configs/config.yaml` with the groups `env/`, `policy/`, `algorithm/`, `cluster/` on top
of the `TrainConfig` schema registered below, so a typo in an override (`runner.max_iteration=3`) or a
wrong type fails at start-up with the key named instead of being ignored.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from .algorithms.config import AlgorithmConfig


@dataclass
class EnvConfig:
    id: str = "rlinf/ManiSkill-PickCube"
    num_envs: int = 16  # in total, split evenly over the env workers
    obs_mode: str = "state"
    max_episode_steps: Optional[int] = 50
    ignore_terminations: bool = False
    # Forwarded to gym.make_vec (control_mode, reward_mode, task_id, camera size, sim_backend, ...).
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class PolicyConfig:
    name: str = "mlp"
    size: str = "tiny"
    checkpoint: Optional[str] = None  # a local directory written by save_pretrained / a converter
    require_checkpoint: bool = False  # VLA configs set this: random weights would waste GPU hours
    precision: str = "float32"  # "float32" or "bf16" (bf16 only takes effect on GPU)
    overrides: dict[str, Any] = field(default_factory=dict)  # policy config fields (hidden sizes, ...)


@dataclass
class ClusterConfig:
    address: Optional[str] = None  # an existing Ray cluster; None starts a local one
    num_nodes: int = 1
    num_gpus_per_node: int = 1
    # On a machine without CUDA, present num_gpus_per_node simulated GPUs (Ray resources) so the same
    # placement runs on CPU processes. Ignored where real GPUs exist.
    simulate_gpus: bool = True
    # Component name(s) -> GPU ids ("all", "3", "0-3,5"); see scheduler/placement.py. Empty means every
    # component on all GPUs (collocated). It is empty here, not that dict, because Hydra merges dicts:
    # a cluster/*.yaml placement would otherwise be added to the default's keys instead of replacing them.
    component_placement: dict[str, Any] = field(default_factory=dict)


COLLOCATED_PLACEMENT = {"env,rollout,actor": "all"}


@dataclass
class RunnerConfig:
    max_iterations: int = 50
    rollout_steps: int = 50  # policy calls (action chunks) per env per iteration
    pipeline_stage_num: int = 1  # env shards per worker that overlap simulation with inference
    seed: int = 0
    # Reset every env at the start of each iteration with seeds derived from (seed, iteration): an
    # iteration then depends only on the weights and optimizer it starts from, so resume is exact.
    reset_each_iteration: bool = True
    deterministic_rollout: bool = False
    save_interval: int = 0  # iterations between checkpoints; 0 saves only at the end
    # Every eval_interval iterations (and at the last; 0 = never) the env workers play eval_rounds
    # episodes per env with the deterministic policy from held-out seeds: eval/* metrics, and the
    # best eval/success_once so far is kept in checkpoints/best (PPO runs can peak, then collapse).
    eval_interval: int = 0
    eval_rounds: int = 1
    resume: Optional[str] = None  # a checkpoint directory written by a previous run
    output_dir: Optional[str] = None  # defaults to Hydra's run directory
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("save_interval", "eval_interval"):
            if getattr(self, name) < 0:
                raise ValueError(f"runner.{name}={getattr(self, name)} must be >= 0 (0 = off)")
        if self.eval_rounds < 1:
            raise ValueError(f"runner.eval_rounds={self.eval_rounds} must be >= 1 (episodes per env per evaluation)")


@dataclass
class TrainConfig:
    env: EnvConfig = field(default_factory=EnvConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)


@dataclass
class EvalConfig:
    num_episodes: int = 10  # per task
    num_envs: int = 4  # envs stepped in parallel per task
    task_ids: Optional[list[int]] = None  # suites (LIBERO): which task_ids; None = the env as configured
    deterministic: bool = True
    seed: int = 1000
    video: bool = True  # needs rgb frames; skipped with a warning where nothing renders
    video_envs: int = 4  # tile the first k envs
    output_dir: Optional[str] = None  # defaults to Hydra's run directory
    device: str = "auto"


@dataclass
class EvalRunConfig:
    env: EnvConfig = field(default_factory=EnvConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def register_configs() -> None:
    """Register the schema with Hydra; configs/config.yaml lists `base_train_config` first."""
    from hydra.core.config_store import ConfigStore  # imported here: workers need no Hydra

    ConfigStore.instance().store(name="base_train_config", node=TrainConfig)
    ConfigStore.instance().store(name="base_eval_config", node=EvalRunConfig)
