"""Typed training configuration: every default lives here, once.

Hydra composes `configs/config.yaml` with the groups `env/`, `policy/`, `algorithm/`, `cluster/` on top
of the `TrainConfig` schema registered below, so a typo in an override (`runner.max_iteration=3`) or a
wrong type fails at start-up with the key named instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import numbers
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, get_type_hints

import numpy as np

from .algorithms.config import AlgorithmConfig
from .envs.batching import MAX_SEED, is_int
from .finite import reject_non_finite
from .unread_settings import reject_ineffective_setting


def matches_type(value: Any, hint: Any) -> bool:
    """Whether `value` is a valid value of the type hint `hint`: the one type check of the typed configs (train,
    eval, SFT, algorithm), of the policies' configs and of policy.overrides. Nothing is converted, so it refuses
    what a conversion would silently change: a bool where an int or a float is asked for (True is an int to Python:
    num_layers=True built one layer), 2.5 for an int, a list of floats or strings for list[int]. Accepted as they
    were before: numpy ints and floats, an int for a float, a tuple or OmegaConf's ListConfig for a list. A str
    field takes any non-mapping (Hydra reads `...=1` as an int; such configs normalise the value themselves)."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(matches_type(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin in (list, tuple) or hint in (list, tuple):
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (Sequence, np.ndarray)):
            return False
        items = [arg for arg in typing.get_args(hint) if arg is not Ellipsis]
        return not items or all(matches_type(item, items[0]) for item in value)
    if origin is dict or hint is dict:
        return isinstance(value, Mapping)
    if hint is bool:
        return isinstance(value, (bool, np.bool_))
    if hint is int:
        return is_int(value)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if hint is str:
        return not isinstance(value, Mapping)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def type_name(hint: Any) -> str:
    """`hint` as a config's documentation writes it: int, float | None, list[int], ..."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return "None"
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    return str(hint).replace("typing.", "")


@functools.lru_cache(maxsize=None)
def field_hints(config_class: type) -> dict[str, Any]:
    """A config dataclass's field type hints, resolved once per class."""
    return typing.get_type_hints(config_class)


def wrong_type_message(name: str, value: Any, hint: Any) -> str:
    """The error for a setting `name` whose `value` is not of its type `hint`, or "" where it is."""
    if matches_type(value, hint):
        return ""
    wanted = type_name(hint)
    note = " (a bool is not a number)" if isinstance(value, (bool, np.bool_)) and "bool" not in wanted else ""
    item_hints = [
        typing.get_args(arg)[0]
        for arg in (typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,))
        if typing.get_origin(arg) in (list, tuple) and typing.get_args(arg)
    ]
    if item_hints and isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, (str, bytes)):
        bad = next((i for i, item in enumerate(value) if not matches_type(item, item_hints[0])), None)
        if bad is not None:  # name the entry: [32.7, 64, 64] was truncated to [32, 64, 64]
            note = f": {wrong_type_message(f'{name}[{bad}]', value[bad], item_hints[0])}"
    return f"{name}={value!r} ({type(value).__name__}) is not a valid {wanted}{note}"


def reject_wrong_types(config: Any, prefix: str = "") -> None:
    """ValueError naming the first field of the dataclass `config` whose value is not of its annotated type
    (matches_type), e.g. `algorithm.update_epochs=2.5 (float) is not a valid int`. Run first in __post_init__, so
    the range checks after it compare numbers: before, AlgorithmConfig(update_epochs=2.5) and EnvConfig(num_envs=2.5)
    were accepted and failed later inside range() or torch, and gamma='0.9' raised "'<' not supported"."""
    hints = field_hints(type(config))
    for item in dataclasses.fields(config):
        message = wrong_type_message(f"{prefix}{item.name}", getattr(config, item.name), hints.get(item.name, Any))
        if message:
            raise ValueError(message)


def reject_empty_paths(config: Any, section: str, unset_meanings: dict[str, str]) -> None:
    """An empty path (`runner.resume=` from an unset shell variable) was read as unset: the run started fresh or
    wrote to the default directory without a word. Refuse it, naming what leaving the setting out would do."""
    for name, unset_meaning in unset_meanings.items():
        value = getattr(config, name)
        if value is not None and not str(value).strip():
            raise ValueError(
                f"{section}.{name}={value!r} is empty: give a directory, or leave the setting out ({unset_meaning})"
            )


@dataclass
class EnvConfig:
    id: str = "rlinf/ManiSkill-PickCube"
    num_envs: int = 16  # in total, split evenly over the env workers
    obs_mode: str = "state"
    max_episode_steps: Optional[int] = 50
    ignore_terminations: bool = False
    # Forwarded to gym.make_vec (control_mode, reward_mode, task_id, camera size, sim_backend, ...).
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        reject_wrong_types(self, "env.")
        # here, not only in gym.make_vec: the error then names the setting to change, before any worker starts
        if self.num_envs < 1:
            raise ValueError(f"env.num_envs={self.num_envs} must be >= 1 (envs in total, over all env workers)")
        if self.max_episode_steps is not None and self.max_episode_steps < 1:
            raise ValueError(
                f"env.max_episode_steps={self.max_episode_steps} must be >= 1, or null for the env's own limit"
            )
        # gym.make_vec gets these from env's own settings: a second value in kwargs was a TypeError at make_vec
        repeated = sorted({"obs_mode", "max_episode_steps", "ignore_terminations", "num_envs"} & set(self.kwargs))
        if repeated:
            key = repeated[0]
            raise ValueError(
                f"env.kwargs.{key}={self.kwargs[key]!r} repeats the setting env.{key}: set env.{key}="
                f"{self.kwargs[key]} instead"
            )


@dataclass
class PolicyConfig:
    name: str = "mlp"
    size: str = "tiny"
    checkpoint: Optional[str] = None  # a local directory written by save_pretrained / a converter
    require_checkpoint: bool = False  # VLA configs set this: random weights would waste GPU hours
    precision: str = "float32"  # "float32" or "bf16" (rollout in bf16; the trainer keeps fp32 master weights)
    overrides: dict[str, Any] = field(default_factory=dict)  # policy config fields (hidden sizes, ...)

    def __post_init__(self) -> None:
        reject_wrong_types(self, "policy.")


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
    # For the same reason configs/cluster/*.yaml give each component its own key: the command line then
    # moves one component (`cluster.component_placement.env=0`) or several
    # (`cluster.component_placement={env:0,rollout:0,actor:1}`); new keys are allowed (OPEN_MAPPINGS).
    # Or the string "auto": the driver measures the components' costs and picks the fastest layout
    # (scheduler/auto_placement.py). Typed Any so it can hold either; __post_init__ checks which.
    component_placement: Any = field(default_factory=dict)

    def __post_init__(self) -> None:
        reject_wrong_types(self, "cluster.")
        placement = self.component_placement
        if isinstance(placement, str):
            if placement.strip().lower() != AUTO:
                raise ValueError(
                    f"cluster.component_placement={placement!r}: give a mapping of component(s) to "
                    f"GPU ids ({{env:0,rollout:0,actor:1}}) or 'auto'"
                )
            self.component_placement = AUTO
        elif placement is None:
            self.component_placement = {}
        elif not isinstance(placement, dict):
            raise ValueError(
                f"cluster.component_placement={placement!r} of type {type(placement).__name__}: give a "
                f"mapping of component(s) to GPU ids or 'auto'"
            )
        if self.num_nodes < 1 or self.num_gpus_per_node < 1:
            raise ValueError(
                f"cluster.num_nodes={self.num_nodes}, cluster.num_gpus_per_node="
                f"{self.num_gpus_per_node}: both must be >= 1"
            )


AUTO = "auto"  # cluster.component_placement / runner.pipeline_stage_num chosen by scheduler/auto_placement.py


def is_auto(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() == AUTO


COLLOCATED_PLACEMENT = {"env,rollout,actor": "all"}


@dataclass
class RunnerConfig:
    max_iterations: int = 50
    rollout_steps: int = 50  # policy calls (action chunks) per env per iteration
    # Env shards per worker that overlap simulation with inference; "auto": chosen with the placement
    # (scheduler/auto_placement.py). Typed Any so it can hold either; __post_init__ checks which.
    pipeline_stage_num: Any = 1
    seed: int = 0
    # Reset every env at the start of each iteration with seeds derived from (seed, iteration): an
    # iteration then depends on the weights and optimizer it starts from, so a resume starts where the run
    # stopped (to floating-point rounding: ManiSkill's CPU PhysX scene keeps its contact order across seeded
    # resets, and a resumed run's env processes are new; see the README's paragraph on resuming).
    reset_each_iteration: bool = True
    # Rollouts with the deterministic policy: for tests that compare trajectories across layouts. Training cannot
    # learn from them (a flow policy's chain then has no stochastic step: zero log-probs, no policy gradient), so a
    # config asking for it is rejected; deterministic episodes are what runner.eval_interval and eval play.
    deterministic_rollout: bool = False
    save_interval: int = 0  # iterations between checkpoints; 0 saves only at the end
    # Checkpoint the last iteration. False for runs read only for their metrics (benchmarks): pi0-3b's
    # checkpoint is 47 GB (actor.pt + the policy's weights). A stop by signal still checkpoints. False is refused
    # where save_interval divides max_iterations (the periodic save would write the last iteration anyway): use a
    # save_interval that does not divide it, or 0.
    save_final: bool = True
    # Every eval_interval iterations (and at the last; 0 = never) the env workers play eval_rounds
    # episodes per env with the deterministic policy from held-out seeds: eval/* metrics, and the
    # best eval/success_once so far is kept in checkpoints/best (PPO runs can peak, then collapse).
    eval_interval: int = 0
    eval_rounds: int = 1
    resume: Optional[str] = None  # a checkpoint directory written by a previous run
    output_dir: Optional[str] = None  # defaults to Hydra's run directory
    progress: bool = True
    # Where the actor shares GPUs with the rollout or env, swap the models each iteration: the rollout's out
    # to host memory while the actor trains, the actor's out while the rollout acts. False keeps them all
    # resident (the GPU must hold every model and the actor's optimizer state at once): no swap seconds, and
    # the rollout's CUDA graphs (act_cuda_graphs) survive, since its weights are synced in place.
    offload: bool = True

    def __post_init__(self) -> None:
        reject_wrong_types(self, "runner.")
        reject_empty_paths(self, "runner", {"resume": "start a new run", "output_dir": "Hydra's run directory"})
        for name, what in (("max_iterations", "iterations to train"), ("rollout_steps", "policy calls per env")):
            if getattr(self, name) < 1:
                raise ValueError(f"runner.{name}={getattr(self, name)} must be >= 1 ({what})")
        stages = self.pipeline_stage_num
        if is_auto(stages):
            self.pipeline_stage_num = AUTO
        elif isinstance(stages, bool) or not isinstance(stages, int) or stages < 1:
            raise ValueError(f"runner.pipeline_stage_num={stages!r} must be an integer >= 1 (1 = no overlap) or 'auto'")
        for name in ("save_interval", "eval_interval"):
            if getattr(self, name) < 0:
                raise ValueError(f"runner.{name}={getattr(self, name)} must be >= 0 (0 = off)")
        if self.deterministic_rollout:
            raise ValueError(
                "runner.deterministic_rollout=true: policy-gradient training needs stochastic rollouts (a flow "
                "policy's deterministic chain has zero log-probs, so nothing would train). For deterministic "
                "episodes during training set runner.eval_interval; after it, python -m rlinf_embodied.eval"
            )
        if self.eval_rounds < 1:
            raise ValueError(f"runner.eval_rounds={self.eval_rounds} must be >= 1 (episodes per env per evaluation)")
        if self.save_interval > self.max_iterations:  # before: accepted, and no periodic checkpoint was written
            raise ValueError(
                f"runner.save_interval={self.save_interval} > runner.max_iterations={self.max_iterations}: no "
                f"periodic checkpoint would be written; set it <= {self.max_iterations}, or 0 (only the last, "
                "runner.save_final)"
            )
        if not self.save_final and self.save_interval and self.max_iterations % self.save_interval == 0:
            # before: the periodic save wrote the last iteration anyway, so save_final=false changed nothing
            raise ValueError(
                f"runner.save_final=false with runner.save_interval={self.save_interval}, which divides "
                f"runner.max_iterations={self.max_iterations}: the periodic save checkpoints the last iteration "
                "anyway; for no last checkpoint use a save_interval that does not divide max_iterations (or 0), or "
                "drop runner.save_final=false"
            )
        if self.eval_interval == 0:
            reject_ineffective_setting(
                self, "runner", "eval_rounds", "runner.eval_interval=0 runs no evaluation; set it > 0"
            )


@dataclass
class TrainConfig:
    env: EnvConfig = field(default_factory=EnvConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)

    def __post_init__(self) -> None:
        warmup, iterations = self.algorithm.critic_warmup_iterations, self.runner.max_iterations
        if warmup >= iterations:  # before: accepted; every iteration trained the critic alone
            raise ValueError(
                f"algorithm.critic_warmup_iterations={warmup} >= runner.max_iterations={iterations}: the policy "
                f"would never train (its lr is 0 during the critic's warm-up); set it below {iterations}"
            )
        if iterations == 1:  # before: accepted; the one iteration's lr is base_lr * (1 - 0 / 1), as without it
            reject_ineffective_setting(
                self.algorithm,
                "algorithm",
                "anneal_lr",
                "runner.max_iterations=1 trains one iteration at the full lr (the decay starts after it); set "
                "runner.max_iterations > 1",
            )
        # before: a worker's "not a multiple of the GRPO group size" once Ray and the envs had started
        group = self.algorithm.env_group_size
        if self.env.num_envs % group:
            raise ValueError(
                f"env.num_envs={self.env.num_envs} is not a multiple of algorithm.group_size={group} (adv_type="
                f"{self.algorithm.adv_type!r} compares the episodes of each group of {group} envs reset alike): set "
                f"env.num_envs to a multiple of {group}, e.g. {-(-self.env.num_envs // group) * group}"
            )


@dataclass
class EvalConfig:
    num_episodes: int = 10  # per task
    num_envs: int = 4  # envs stepped in parallel per task
    task_ids: Optional[list[int]] = None  # suites (LIBERO): which task_ids; None = the env as configured
    deterministic: bool = True
    # env i's first episode is seeded seed + i, its later ones by that env's seeded generator: the episodes played
    # depend on num_envs as well as seed (results.json records both), as in ManiSkill's and RLinf's evaluations
    seed: int = 1000
    video: bool = True  # needs rgb frames; skipped with a warning where nothing renders
    video_envs: Optional[int] = None  # tile the first k envs; None = the first min(4, num_envs)
    output_dir: Optional[str] = None  # defaults to Hydra's run directory
    device: str = "auto"
    progress: bool = True  # the per-task progress bar; false keeps piped logs free of its carriage returns

    def __post_init__(self) -> None:
        reject_wrong_types(self, "eval.")
        reject_empty_paths(self, "eval", {"output_dir": "Hydra's run directory"})
        for name, what in (("num_episodes", "episodes per task"), ("num_envs", "envs stepped in parallel")):
            if getattr(self, name) < 1:
                raise ValueError(f"eval.{name}={getattr(self, name)} must be >= 1 ({what})")
        if self.num_envs > self.num_episodes:  # each env plays its share of the episodes (see evaluator.py)
            raise ValueError(
                f"eval.num_envs={self.num_envs} > eval.num_episodes={self.num_episodes}: each env plays an equal "
                f"share of the episodes, so {self.num_envs - self.num_episodes} envs would play none; set "
                f"eval.num_envs <= {self.num_episodes}"
            )
        if self.task_ids is not None and (not self.task_ids or len(set(self.task_ids)) != len(self.task_ids)):
            raise ValueError(  # [] evaluated nothing and reported a success rate of 0.0; [0, 0] counted a task twice
                f"eval.task_ids={list(self.task_ids)}: list each task to evaluate once (e.g. [0,1,2]), or leave it "
                "unset for the env's own task"
            )
        if self.seed < 0:  # episode seeds go to env.reset(seed=...), which takes none below 0
            raise ValueError(f"eval.seed={self.seed} must be >= 0 (env i's first episode is seeded eval.seed + i)")
        if self.video and self.video_envs is not None and not 1 <= self.video_envs <= self.num_envs:
            raise ValueError(  # more than num_envs was recorded as num_envs, silently
                f"eval.video_envs={self.video_envs} must lie in [1, eval.num_envs={self.num_envs}] (envs tiled in "
                "the video), or be unset (the first min(4, eval.num_envs)), or eval.video=false"
            )
        if not self.video:
            reject_ineffective_setting(self, "eval", "video_envs", "eval.video=false records no video; set it true")


@dataclass
class EvalRunConfig:
    env: EnvConfig = field(default_factory=EnvConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


SFT_EVAL_SEED_OFFSET = 1000  # SFT's evaluations play the episodes of seeds sft.seed + 1000, + 1001, ...


@dataclass
class SFTConfig:
    """Supervised fine-tuning (behaviour cloning) from a LeRobot v2.1 demonstration dataset.

    Optimizer: AdamW. Schedule: linear warmup from 0 over `warmup_steps`, then `lr_schedule`:
    "cosine" decays to `min_lr_ratio * lr` at `max_steps`, "constant" stays at `lr`.
    """

    dataset: Optional[str] = None  # required: a local dataset directory (meta/info.json, data/...)
    max_steps: int = 2000
    batch_size: int = 64  # global: split evenly over the actor ranks
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    lr_schedule: str = "cosine"  # "cosine" | "constant"
    min_lr_ratio: float = 0.1  # cosine floor, as a fraction of lr
    grad_clip: float = 1.0  # max global grad norm; 0 = no clipping
    # Checkpoints (and so evaluations) hold an exponential moving average of the weights with this decay
    # (workers/ema.py; e.g. 0.999), kept beside the parameters in fp32; training steps the live weights.
    # 0 = off: checkpoints hold the last step's weights.
    ema_decay: float = 0.0
    # Policies that normalise with dataset statistics (the VLAs and flow_mlp; Policy.normalizes_with_dataset_stats)
    # whose config has no action (state) statistics
    # get the dataset's per-dimension 1st/99th percentiles as action_low/high (state_low/high); they
    # are saved in the checkpoint's config.json. mlp/cnn keep the env's [-1, 1] action convention.
    normalize_from_dataset: bool = True
    # Random shift of every training image by up to this many pixels (border repeated), per sample;
    # the usual augmentation for imitation from pixels. Needs a dataset with cameras. 0 = off.
    image_shift: int = 0
    # Keep the dataset's states, actions and decoded frames on the training device (GPU memory: frames
    # x H x W x 3 bytes per camera), so batches are gathered and shifted there with no host copies.
    data_on_device: bool = True
    # torch.compile each of the policy's transformer layers (its fsdp_units) in place for the training steps:
    # fused elementwise kernels, one compiled graph per layer type. The first step pays the compilation
    # (about a minute); checkpoints and evaluations are unchanged. One actor rank only (not with FSDP yet), and
    # not with the policy's gradient_checkpointing (dynamo stops at every checkpointed layer).
    compile: bool = False
    # Steps between image probes (sft/probe_loss vs sft/probe_loss_shuffled_images: does the policy use
    # its cameras?), two extra forward passes each. None: every 100 steps for datasets with cameras, off
    # for state-only ones; 0 = off.
    image_probe_interval: Optional[int] = None
    # The dataset's last val_episodes episodes are held out of training. Every val_interval steps,
    # sft/val_loss is the imitation loss of a fixed batch of their frames under fixed flow noise and
    # times, so it moves only with the weights: a val loss that rises while sft/loss falls is
    # overfitting (stop 28: closed-loop success fell from 14% to 3% as sft/loss fell 0.049 -> 0.034).
    val_episodes: int = 0
    val_interval: int = 100
    eval_interval: int = 0  # steps between env evaluations (and one at the end); 0 = never
    eval_episodes: int = 10
    # Evaluate in a process of its own on the first actor GPU while the actor ranks train on (each evaluation's
    # metrics line is logged when it ends, at the step it evaluated). The trainer's state then stays on the GPU
    # beside the evaluation's policy; false: training waits, its state offloaded while the episodes run.
    eval_async: bool = False
    # Stop after the first periodic evaluation whose eval/success_once reaches this, saving that step as
    # checkpoints/final: few-shot SFT as an RL start (the pi-RL recipe), where training on makes the policy
    # better than the start RL is meant to improve, or (decayed lr, stop 26) worse. None = run to max_steps.
    # With eval_async, training goes on while the result comes: final then holds that step's policy only (no
    # training state; sft.json names the evaluated step), and training stops at the step the result arrived at.
    # The run's last step waits for a pending result: where it reaches this, final is that earlier step's policy and
    # the last step's checkpoint is kept as checkpoints/step_XXXXXX.
    stop_at_success: Optional[float] = None
    save_interval: int = 0  # steps between checkpoints/step_XXXXXX; 0 = only checkpoints/final
    log_interval: int = 10  # at most this many steps between metric lines (means over those steps)
    seed: int = 0
    output_dir: Optional[str] = None  # defaults to Hydra's run directory
    progress: bool = True
    # checkpoints/<name> of an earlier run of the same dataset (any step_XXXXXX, final, or the one Ctrl-C
    # saved): continue from its step with its weights, optimizer, EMA and data order, to sft.max_steps.
    resume: Optional[str] = None

    def __post_init__(self) -> None:
        reject_wrong_types(self, "sft.")
        reject_non_finite(self, "sft.")
        reject_empty_paths(self, "sft", {"resume": "start a new run", "output_dir": "Hydra's run directory"})
        for name in ("max_steps", "batch_size", "log_interval", "eval_episodes", "val_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"sft.{name}={getattr(self, name)} must be >= 1")
        for name in (
            "warmup_steps",
            "eval_interval",
            "save_interval",
            "weight_decay",
            "grad_clip",
            "image_shift",
            "val_episodes",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"sft.{name}={getattr(self, name)} must be >= 0")
        if self.image_probe_interval is not None and self.image_probe_interval < 0:
            raise ValueError(f"sft.image_probe_interval={self.image_probe_interval} must be >= 0 (0 = off)")
        if self.lr <= 0:
            raise ValueError(f"sft.lr={self.lr} must be > 0")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"sft.lr_schedule={self.lr_schedule!r}; valid: 'cosine', 'constant'")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"sft.min_lr_ratio={self.min_lr_ratio} must lie in [0, 1]")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"sft.ema_decay={self.ema_decay} must lie in [0, 1) (0 = no weight averaging)")
        self._reject_intervals_beyond_max_steps()
        if self.eval_async and self.eval_interval == 0:
            raise ValueError("sft.eval_async=true runs the periodic evaluations, but sft.eval_interval=0 (none)")
        if self.eval_interval == 0:
            reject_ineffective_setting(
                self, "sft", "eval_episodes", "sft.eval_interval=0 runs no evaluation; set it > 0"
            )
        if self.val_episodes == 0:
            reject_ineffective_setting(
                self, "sft", "val_interval", "sft.val_episodes=0 holds no episodes out to measure; set it > 0"
            )
        if self.lr_schedule == "constant":
            reject_ineffective_setting(
                self, "sft", "min_lr_ratio", "sft.lr_schedule=constant never decays the lr; use sft.lr_schedule=cosine"
            )
        self._check_stop_at_success()
        first_eval_seed = self.seed + SFT_EVAL_SEED_OFFSET
        if self.eval_interval and first_eval_seed < 0:  # before: eval.seed's error at the first evaluation
            raise ValueError(
                f"sft.seed={self.seed}: SFT evaluates the episodes of seeds from sft.seed + {SFT_EVAL_SEED_OFFSET} = "
                f"{first_eval_seed}, and env.reset takes no seed below 0; set sft.seed >= {-SFT_EVAL_SEED_OFFSET}"
            )

    def _reject_intervals_beyond_max_steps(self) -> None:
        """Settings whose first step lies past sft.max_steps (before: accepted, and nothing happened at all)."""
        beyond = {
            "warmup_steps": "the lr would never reach sft.lr",
            "save_interval": "no step_XXXXXX checkpoint would be written (checkpoints/final always is)",
        }
        if self.val_episodes:
            beyond["val_interval"] = "sft.val_episodes would be held out of training and never measured"
        if self.image_probe_interval is not None:
            beyond["image_probe_interval"] = "no image probe would run"
        for name, consequence in beyond.items():
            if getattr(self, name) > self.max_steps:
                raise ValueError(
                    f"sft.{name}={getattr(self, name)} > sft.max_steps={self.max_steps}: {consequence}; set it "
                    f"<= {self.max_steps}"
                )

    def _check_stop_at_success(self) -> None:
        if self.stop_at_success is not None:
            if not 0.0 <= self.stop_at_success <= 1.0:
                raise ValueError(f"sft.stop_at_success={self.stop_at_success} must lie in [0, 1] (or null: never)")
            if self.eval_interval == 0:
                raise ValueError(
                    f"sft.stop_at_success={self.stop_at_success} acts on periodic evaluations, but sft.eval_interval=0 "
                    "(none): set sft.eval_interval > 0"
                )


@dataclass
class SFTRunConfig:
    env: EnvConfig = field(default_factory=EnvConfig)  # eval env; its control_mode must match the dataset's
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)

    def __post_init__(self) -> None:
        self._check_eval_seeds()

    @property
    def eval_num_envs(self) -> int:
        """The envs of SFT's evaluations (workers/sft_worker.sft_eval_config): one per episode, up to env.num_envs."""
        return max(1, min(self.env.num_envs, self.sft.eval_episodes))

    def _check_eval_seeds(self) -> None:
        """SFT's evaluations seed env i's first episode sft.seed + 1000 + i, and the simulators take seeds up to
        MAX_SEED (2**32 - 1). Before: a larger sft.seed was accepted, the training steps ran, and the first
        evaluation failed in a worker naming eval.seed, a setting the SFT command does not have."""
        if not self.sft.eval_interval:
            return
        num_envs = self.eval_num_envs
        last = self.sft.seed + SFT_EVAL_SEED_OFFSET + num_envs - 1
        if last > MAX_SEED:
            raise ValueError(
                f"sft.seed={self.sft.seed}: SFT's evaluations (sft.eval_interval={self.sft.eval_interval}) seed env "
                f"i's first episode sft.seed + {SFT_EVAL_SEED_OFFSET} + i, up to {last} with their {num_envs} envs "
                f"(min(env.num_envs={self.env.num_envs}, sft.eval_episodes={self.sft.eval_episodes})), above the "
                f"largest seed {MAX_SEED}; valid: {-SFT_EVAL_SEED_OFFSET} <= sft.seed <= "
                f"{MAX_SEED - SFT_EVAL_SEED_OFFSET - num_envs + 1}"
            )


@dataclass
class CollectConfig:
    """Demonstrations -> a LeRobot v2.1 dataset (python -m rlinf_embodied.collect)."""

    source: str = "motion_planner"  # "motion_planner" (ManiSkill's scripted solutions) | "policy" (policy.checkpoint)
    num_episodes: int = 10  # episodes to attempt (seeds seed .. seed+num_episodes-1; seeds already written are skipped)
    only_success: bool = True  # drop failed episodes
    output_dir: Optional[str] = None  # required: the dataset root; an existing dataset is resumed
    num_workers: int = 1  # env processes (planner: a process pool; policy: one env per vector-env worker)
    seed: int = 0  # episode seeds are seed, seed+1, ...
    fps: int = 20  # not a setting: other values are refused (a dataset's fps is its env's control rate)
    max_episode_steps: Optional[int] = None  # planner only: give up on longer solutions; None = no cap
    deterministic: bool = True  # policy source: act with the deterministic policy
    device: str = "auto"  # policy source
    progress: bool = True

    def __post_init__(self) -> None:
        reject_wrong_types(self, "collect.")


@dataclass
class CollectRunConfig:
    env: EnvConfig = field(default_factory=EnvConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)


# Free-form mappings (dict[str, Any] fields) that take new keys from the command line, e.g.
# `cluster.component_placement.env=0`, `policy.overrides.hidden_dim=64`, `env.kwargs.reward_mode=sparse`.
# The rest of the schema stays in struct mode, so a typo elsewhere (`runner.max_iteration=3`) still fails.
OPEN_MAPPINGS = ("env.kwargs", "policy.overrides", "cluster.component_placement")


def structured_schema(schema: type) -> Any:
    """`schema` as an OmegaConf node whose OPEN_MAPPINGS accept keys the defaults do not have."""
    from omegaconf import OmegaConf

    node = OmegaConf.structured(schema)
    for path in OPEN_MAPPINGS:
        child = OmegaConf.select(node, path)
        if child is not None:
            OmegaConf.set_struct(child, False)
    return node


def reject_unknown_keys(values: Any, schema: type, path: str = "") -> None:
    """Refuse keys that are not fields of `schema` (a dataclass), outside OPEN_MAPPINGS. `values` is the composed
    config as plain containers. Before: `+env.max_episode_step=10` (Hydra's own hint for a typo) was added to the
    composed config and dropped by OmegaConf.to_object, so the run went on with the default."""
    hints = get_type_hints(schema)
    valid = [f.name for f in dataclasses.fields(schema)]
    for key, value in values.items():
        name = f"{path}{key}"
        if key not in valid:
            raise ValueError(unknown_key_message(name, str(key), path, valid))
        if name not in OPEN_MAPPINGS and dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            reject_unknown_keys(value, hints[key], f"{name}.")


def unknown_key_message(name: str, key: str, path: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
    section = path.rstrip(".") or "the config"
    hint = f"did you mean {' or '.join(path + c for c in close)}? " if close else ""
    return f"{name} is not a setting of {section} (it would be ignored); {hint}valid: {', '.join(valid)}"


def typed_config(cfg: Any) -> Any:
    """The composed DictConfig as its dataclass (what every entry point runs with), refusing keys the schema lacks."""
    from omegaconf import OmegaConf

    reject_unknown_keys(OmegaConf.to_container(cfg, resolve=False), OmegaConf.get_type(cfg))
    return OmegaConf.to_object(cfg)


CONFIG_NAMES = {"config": "train", "eval": "eval", "sft": "sft", "collect": "collect"}  # configs/<name>.yaml: entry


def compose_config(config_name: str, overrides: list[str]) -> Any:
    """The typed config `python -m rlinf_embodied.<entry>` would run with these command-line overrides, for
    scripts that call the runners in-process: `config_name` is one of CONFIG_NAMES ("config": train, "eval", "sft",
    "collect"; `place` composes "config")."""
    from hydra import compose, initialize_config_dir

    from .paths import CONFIG_DIR

    if config_name not in CONFIG_NAMES:  # before: Hydra's MissingConfigException, which lists no valid name
        close = difflib.get_close_matches(str(config_name), list(CONFIG_NAMES), n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        shown = ", ".join(f"{name!r} ({entry})" for name, entry in CONFIG_NAMES.items())
        raise ValueError(f"compose_config({config_name!r}): no such config; {hint}valid: {shown}")
    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return typed_config(compose(config_name=config_name, overrides=overrides))


def register_configs() -> None:
    """Register the schema with Hydra; configs/config.yaml lists `base_train_config` first."""
    from hydra.core.config_store import ConfigStore  # imported here: workers need no Hydra

    ConfigStore.instance().store(name="base_train_config", node=structured_schema(TrainConfig))
    ConfigStore.instance().store(name="base_eval_config", node=structured_schema(EvalRunConfig))
    ConfigStore.instance().store(name="base_sft_config", node=structured_schema(SFTRunConfig))
    ConfigStore.instance().store(name="base_collect_config", node=structured_schema(CollectRunConfig))
