"""SFTWorker: supervised fine-tuning (behaviour cloning) of the policy from demonstrations.

It is an ActorWorker (the same policy building, FSDP2 sharding over every rank when world_size > 1,
offload/onload and unsharded save_pretrained copies) that trains on a LeRobot v2.1 dataset instead of
rollouts. Each rank loads the dataset from its local path and draws its share (batch_size /
world_size frames) of every global batch from its own generator (a fresh permutation of all frames
per epoch); the loss is the policy's own imitation loss, `policy.sft_loss(obs, actions, is_pad)`, on
action chunks of the policy's length (rows past an episode's end are masked). AdamW, linear warmup,
then cosine decay to min_lr_ratio * lr (or constant), global grad-norm clipping.

Precision: parameters are float32 master weights; with policy.precision=bf16 the forward and backward
run under torch.autocast(bf16) (bf16 weights would round small SFT updates away; FSDP, when sharding,
also casts its parameters to bf16 for compute, see ActorWorker._shard_policy).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

import numpy as np
import torch
from torch.distributed.checkpoint.state_dict import get_model_state_dict
from torch.distributed.fsdp import register_fsdp_forward_method

from ..algorithms.checks import check_finite
from ..datasets.augmentation import random_shift
from ..config import SFT_EVAL_SEED_OFFSET, EvalConfig, PolicyConfig, SFTConfig, SFTRunConfig
from ..policies import policy_class
from ..scheduler import Worker
from .actor_worker import FULL_STATE, ActorWorker
from .disk_space import state_nbytes
from .ema import ParameterEMA
from .messages import seed_for, to_device
from .policy_loading import build_policy, compute_dtype

if TYPE_CHECKING:
    from ..runners.evaluator import TaskResult

logger = logging.getLogger(__name__)

STATS_PERCENTILES = (1.0, 99.0)
DEFAULT_IMAGE_PROBE_INTERVAL = 100  # steps; two no-grad forwards each, about 1% of the steps' compute
COMPILE_BACKEND = "inductor"  # sft.compile's torch.compile backend (tests use "aot_eager": the same capture)


class SFTWorker(ActorWorker):
    def __init__(self, cfg: SFTRunConfig):
        super().__init__(cfg, action_dim=0, state_dim=0)  # the dims come from the dataset in init_worker

    # ---- set-up -------------------------------------------------------------------------------
    def init_worker(self) -> dict[str, Any]:
        from ..datasets import DemoDataset

        sft: SFTConfig = self.cfg.sft
        self.dataset = DemoDataset(sft.dataset)
        self.action_dim, self.state_dim = self.dataset.action_dim, self.dataset.state_dim
        camera_variation = check_cameras_vary(self.dataset, sft.dataset)
        if sft.batch_size % self.world_size:
            raise ValueError(
                f"sft.batch_size={sft.batch_size} does not split evenly over {self.world_size} actor ranks"
            )
        self.local_batch_size = sft.batch_size // self.world_size
        torch.manual_seed(sft.seed)  # identical initial weights on every rank
        self.compute_dtype = compute_dtype(self.cfg.policy, self.device)
        # fp32 master weights (what AdamW steps and checkpoints read); forwards run under autocast
        policy = build_policy(self.cfg.policy, self.action_dim, self.state_dim, self.device, master_weights=True)
        check_policy_matches_dataset(policy, self.dataset, sft.dataset)
        stats = {}
        if sft.normalize_from_dataset and policy.normalizes_with_dataset_stats:
            stats = apply_dataset_stats(policy, self.dataset)
            # The unsharded copies that _save_policy builds from cfg.policy must carry them too.
            self.cfg.policy.overrides = {**dict(self.cfg.policy.overrides), **stats}
        if not callable(getattr(policy, "sft_loss", None)):
            raise TypeError(f"policy {policy.name!r} has no sft_loss(obs, actions, is_pad) imitation loss")
        self.policy = policy
        if sft.compile:
            compile_layers(policy, self.world_size)
        if self.world_size > 1:
            self._shard_policy()
            register_fsdp_forward_method(self.policy, "sft_loss")
        trainable = [p for p in self.policy.parameters() if p.requires_grad]
        # one fused kernel per step on a single GPU (FSDP's sharded parameters keep the foreach default)
        fused = self.device.type == "cuda" and self.world_size == 1
        self.optimizer = torch.optim.AdamW(trainable, lr=sft.lr, weight_decay=sft.weight_decay, fused=fused or None)
        self.ema = ParameterEMA(trainable, sft.ema_decay) if sft.ema_decay > 0 else None
        train_frames = held_out_start(self.dataset, sft.val_episodes, sft.dataset)  # frames [0, train_frames)
        self.sampler = FrameSampler(train_frames, seed_for(sft.seed, self.rank, 7717))
        self.probe_sampler = FrameSampler(train_frames, seed_for(sft.seed, self.rank, 5323))
        # (B,) a fixed batch of held-out frames, the same at every validation
        val_order = torch.randperm(
            self.dataset.num_frames - train_frames,
            generator=torch.Generator().manual_seed(seed_for(sft.seed, self.rank, 3301)),
        )
        self.val_frames = train_frames + val_order[: self.local_batch_size]
        self.augment_generator = torch.Generator().manual_seed(seed_for(sft.seed, self.rank, 1913))
        if sft.data_on_device:
            self.dataset.to(self.device)
        torch.manual_seed(seed_for(sft.seed, self.rank, 4099))  # per-rank noise/flow times in the losses
        return {
            "action_dim": self.action_dim,
            "state_dim": self.state_dim,
            "action_chunk": policy.config.action_chunk,
            "num_frames": self.dataset.num_frames,
            "num_episodes": self.dataset.num_episodes,
            "train_frames": train_frames,
            "dataset_stats": sorted(stats),
            "trainable_parameters": sum(p.numel() for p in trainable),
            "total_parameters": sum(p.numel() for p in policy.parameters()),
            "frozen_by_config": frozen_by_config(policy.config),
            "camera_pixel_std": camera_variation,
            "images_decoded_at_load": self.dataset.decoded_eagerly,
            "decoded_image_bytes": self.dataset.decoded_bytes,
        }

    def _autocast(self):
        if self.compute_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.compute_dtype)

    # ---- training -----------------------------------------------------------------------------
    def train_steps(self, start_step: int, num_steps: int) -> dict[str, float]:
        """Optimizer steps start_step .. start_step + num_steps - 1; means of their metrics (over ranks)."""
        sft: SFTConfig = self.cfg.sft
        chunk = self.policy.config.action_chunk
        trainable = [p for group in self.optimizer.param_groups for p in group["params"]]
        max_norm = sft.grad_clip if sft.grad_clip > 0 else math.inf
        self.policy.train()
        self._check_optimizer_owns_parameters()
        losses, norms = [], []  # device scalars: one host sync for all steps, after the last
        lr = sft.lr
        start = time.perf_counter()
        for step in range(start_step, start_step + num_steps):
            lr = lr_at(sft, step)
            loss, grad_norm = self._optimizer_step(lr, chunk, trainable, max_norm)
            losses.append(loss)
            norms.append(grad_norm)
        step_losses, step_norms = torch.stack(losses).tolist(), torch.stack(norms).tolist()
        seconds = (time.perf_counter() - start) / num_steps  # the .tolist() above waited for the device
        for offset, (step_loss, step_norm) in enumerate(zip(step_losses, step_norms)):
            # a non-finite loss or gradient fails the run here, at most one logging interval after its step
            check_finite({"sft/loss": step_loss, "sft/grad_norm": step_norm}, start_step + offset)
        metrics = {
            "sft/loss": self._mean_over_ranks(float(np.mean(step_losses))),
            "sft/grad_norm": float(np.mean(step_norms)),
            "sft/lr": lr,
            "time/step": self._mean_over_ranks(seconds),
        }
        probe_every = DEFAULT_IMAGE_PROBE_INTERVAL if sft.image_probe_interval is None else sft.image_probe_interval
        end_step = start_step + num_steps
        if self.dataset.camera_keys and probe_every and end_step // probe_every > start_step // probe_every:
            probe, shuffled = self.probe_image_reliance(chunk)
            metrics["sft/probe_loss"] = self._mean_over_ranks(probe)
            metrics["sft/probe_loss_shuffled_images"] = self._mean_over_ranks(shuffled)
        if len(self.val_frames) and end_step // sft.val_interval > start_step // sft.val_interval:
            metrics["sft/val_loss"] = self._mean_over_ranks(self.validation_loss(chunk))
        return metrics

    def _optimizer_step(
        self, lr: float, chunk: int, trainable: list[torch.Tensor], max_norm: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step on a fresh batch: (loss, gradient norm) as float32 device scalars. Nothing here waits for the
        device (no host reads, no blocking copies), so the host queues the next step while this one runs."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        obs, actions, is_pad = self._batch(self.sampler.next(self.local_batch_size), chunk, augment=True)
        with self._autocast():
            loss = self.policy.sft_loss(obs, actions, is_pad)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, max_norm)
        grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update()
        return loss.detach().float(), grad_norm.detach().float()

    @torch.no_grad()
    def validation_loss(self, chunk: int) -> float:
        """The imitation loss of the fixed held-out batch (sft.val_episodes) with the same flow noise and times
        every call, so it moves only with the weights; with sft.ema_decay, of the averaged weights that the
        checkpoints (and so the evaluations) hold."""
        obs, actions, is_pad = self._batch(self.val_frames, chunk, augment=False)
        averaged = self.ema.swapped_in() if self.ema is not None else contextlib.nullcontext()
        with averaged:
            return float(self._seeded_loss(obs, actions, is_pad, seed_for(self.cfg.sft.seed, self.rank, 3307)))

    def _seeded_loss(self, obs: dict[str, Any], actions: torch.Tensor, is_pad: torch.Tensor, seed: int) -> torch.Tensor:
        """The imitation loss with the loss's own random draws (flow noise and times) seeded by `seed`, leaving
        the training's random streams where they were."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            with self._autocast():
                return self.policy.sft_loss(obs, actions, is_pad).float()

    def _batch(
        self, frames: torch.Tensor, chunk: int, augment: bool
    ) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
        """The dataset's frames `frames` (B,) as a batch on the training device: obs, actions (B, chunk, A),
        is_pad (B, chunk); with `augment`, every camera image randomly shifted by up to sft.image_shift px."""
        obs, actions, is_pad = self.dataset.sample(frames, chunk)
        if augment:
            for camera in self.dataset.camera_keys:  # (B, H, W, C) uint8
                obs[camera] = random_shift(obs[camera], self.cfg.sft.image_shift, self.augment_generator)
        return to_device(obs, self.device), actions.to(self.device), is_pad.to(self.device)

    @torch.no_grad()
    def probe_image_reliance(self, chunk: int) -> tuple[float, float]:
        """The imitation loss of a fresh batch, and of the same batch with its camera images rolled by one
        sample (same noise and flow times). Close values mean the policy ignores its cameras: it imitates
        from the state alone (e.g. the arm's pose along a demonstration's path), which fits the
        demonstrations but cannot find the object from a new start."""
        obs, actions, is_pad = self._batch(self.probe_sampler.next(self.local_batch_size), chunk, augment=False)
        shuffled = {**obs, **{camera: obs[camera].roll(1, dims=0) for camera in self.dataset.camera_keys}}
        seed = int(torch.randint(0, 2**31 - 1, (1,)))
        own, rolled = (self._seeded_loss(batch_obs, actions, is_pad, seed) for batch_obs in (obs, shuffled))
        return float(own), float(rolled)

    # ---- checkpoints and evaluation -------------------------------------------------------------
    def save_policy(self, directory: str) -> None:
        """An unsharded save_pretrained copy at `directory` (every rank takes part; rank 0 writes); with
        sft.ema_decay, of the averaged weights."""
        if self.ema is None:
            model_state = get_model_state_dict(self.policy, options=FULL_STATE)
        else:
            with self.ema.swapped_in():
                model_state = get_model_state_dict(self.policy, options=FULL_STATE)
                if self.device.type == "cpu":  # FULL_STATE's CPU copy is the parameters themselves there
                    model_state = {key: value.clone() for key, value in model_state.items()}
        if self.rank == 0:
            self._save_policy(model_state, directory)

    def extra_checkpoint_nbytes(self) -> int:
        return 0 if self.ema is None else state_nbytes(self.ema.averages)

    def save_training_state(self, directory: str, iteration: int, env_steps: int = 0) -> dict[str, torch.Tensor]:
        """directory/actor.pt (weights, optimizer, rank 0's RNG; `iteration` = the optimizer steps done) and
        directory/sft_rank<R>.pt per rank: the EMA, the frame samplers and this rank's random streams."""
        model_state = super().save_training_state(directory, iteration, env_steps)
        os.makedirs(directory, exist_ok=True)
        rank_state = {
            "world_size": self.world_size,
            "ema": None if self.ema is None else self.ema.state(),
            "sampler": self.sampler.state(),
            "probe_sampler": self.probe_sampler.state(),
            "augment_generator": self.augment_generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        }
        torch.save(rank_state, os.path.join(directory, f"sft_rank{self.rank}.pt"))
        return model_state

    def _keep_configured_learning_rates(self) -> None:
        """Nothing to keep: every step sets its lr from sft.lr's schedule (lr_at), never from a saved initial_lr."""

    def load_training_state(self, directory: str) -> int:
        """Continue from save_training_state's files in `directory`; returns the optimizer steps they hold."""
        step = self.load_checkpoint(directory, setting="sft.resume")["iteration"]
        rank_state = torch.load(os.path.join(directory, f"sft_rank{self.rank}.pt"), weights_only=False)
        if rank_state["world_size"] != self.world_size:
            raise ValueError(
                f"sft.resume={directory!r} was saved by {rank_state['world_size']} actor rank(s), this run has "
                f"{self.world_size}: resume on as many GPUs (cluster.component_placement.actor)"
            )
        if (rank_state["ema"] is None) != (self.ema is None):
            raise ValueError(
                f"sft.resume={directory!r} was saved {'without' if rank_state['ema'] is None else 'with'} an EMA "
                f"of the weights, this run has sft.ema_decay={self.cfg.sft.ema_decay}: use the run's own setting"
            )
        if self.ema is not None:
            self.ema.load_state(rank_state["ema"])
        self.sampler.load_state(rank_state["sampler"])
        self.probe_sampler.load_state(rank_state["probe_sampler"])
        self.augment_generator.set_state(rank_state["augment_generator"])
        torch.set_rng_state(rank_state["torch_rng"])
        if rank_state["cuda_rng"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(rank_state["cuda_rng"], self.device)
        return step

    def eval_env_needs(self) -> EvalEnvNeeds:
        """What the eval env must match: the dataset's dims and the observation keys the policy trains on."""
        needed = [key for key in ("state", *self.dataset.camera_keys) if key in self.policy_input_keys()]
        return EvalEnvNeeds(self.action_dim, self.state_dim, tuple(needed))

    def check_eval_env(self) -> dict[str, int]:
        """Make, reset and close the eval env once (at start), so an env that cannot run here fails now."""
        from ..runners.evaluator import make_eval_env

        with eval_env_errors(self.cfg), tempfile.TemporaryDirectory() as scratch:
            env = make_eval_env(self.cfg.env, EvalConfig(num_envs=1, video=False), None, scratch)
            try:
                return check_eval_env_fits(self.cfg, env, self.eval_env_needs())
            finally:
                env.close()

    def policy_input_keys(self) -> set[str]:
        """Observation keys the policy reads (those of its example_obs)."""
        module = getattr(self.policy, "module", self.policy)
        return set(module.example_obs(1))

    def evaluate_checkpoint(self, policy_dir: str, output_dir: str) -> dict[str, float]:
        """Rank 0: deterministic episodes of the saved policy in the env (runners/evaluator.py)."""
        if self.rank != 0:
            return {}
        return evaluate_sft_checkpoint(self.cfg, str(self.device), policy_dir, output_dir)


def evaluate_sft_checkpoint(
    cfg: SFTRunConfig, device: str, policy_dir: str, output_dir: str, env_cache: dict | None = None
) -> dict[str, float]:
    """SFT's periodic evaluation of a saved policy: sft.eval_episodes deterministic episodes, as eval/* metrics."""
    from ..runners.evaluator import evaluate_policy

    policy_cfg = PolicyConfig(name=cfg.policy.name, checkpoint=policy_dir, precision=cfg.policy.precision)
    results = evaluate_policy(cfg.env, policy_cfg, sft_eval_config(cfg, device), output_dir, env_cache)
    return eval_metrics(results)


def eval_metrics(results: list[TaskResult]) -> dict[str, float]:
    """eval/* of an evaluation's task results, named as training's eval/*: success_once (at any step), success_rate
    (at the final step), episode_return, episode_length (episode-weighted means), num_episodes and, where the env
    reports it, clipped_action_fraction."""
    from ..runners.evaluator import overall_clipped_fraction, overall_success_rates

    episodes = sum(r.episodes for r in results)
    success_once, success_at_end = overall_success_rates(results)
    clipped = overall_clipped_fraction(results)
    return {
        **({} if clipped is None else {"eval/clipped_action_fraction": clipped}),
        "eval/success_once": success_once,
        "eval/success_rate": success_at_end,
        "eval/episode_return": sum(r.mean_return * r.episodes for r in results) / max(episodes, 1),
        "eval/episode_length": sum(r.mean_length * r.episodes for r in results) / max(episodes, 1),
        "eval/num_episodes": float(episodes),
    }


class SFTEvalWorker(Worker):
    """sft.eval_async: evaluates saved SFT checkpoints in a process of its own on the first actor GPU, so the
    actor ranks train on while the episodes run (the synchronous evaluation makes them wait). Its envs are built
    once (build_env, as training starts) and kept for every evaluation; the policy is loaded from each checkpoint."""

    def __init__(self, cfg: SFTRunConfig):
        super().__init__()
        self.cfg = cfg
        self.envs: dict = {}  # task id -> vector env, kept between evaluations

    def build_env(self, needs: EvalEnvNeeds) -> dict[str, int]:
        """The evaluation's envs, built ahead of the first evaluation while training starts, and checked against
        the dataset (the start's check_eval_env, without building a second env for it)."""
        from ..runners.evaluator import eval_tasks, make_eval_env

        eval_cfg = sft_eval_config(self.cfg, str(self.device))
        with eval_env_errors(self.cfg, on_failure=self.close_envs):
            for task_id in eval_tasks(eval_cfg, self.cfg.env):
                self.envs[task_id] = make_eval_env(self.cfg.env, eval_cfg, task_id, "")
            # each evaluation starts from env.reset(seed=eval.seed), so this reset changes none of its episodes
            return check_eval_env_fits(self.cfg, next(iter(self.envs.values())), needs)

    def evaluate_checkpoint(self, policy_dir: str, output_dir: str) -> dict[str, float]:
        start = time.perf_counter()
        metrics = evaluate_sft_checkpoint(self.cfg, str(self.device), policy_dir, output_dir, self.envs)
        return {**metrics, "time/eval_seconds": time.perf_counter() - start}

    def close_envs(self) -> None:
        for env in self.envs.values():
            env.close()
        self.envs.clear()


# ---- helpers ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalEnvNeeds:
    """What SFT's eval env must match: the dataset's action and state dims, and the observation keys the policy
    trains on (state and the dataset's cameras that the policy reads)."""

    action_dim: int
    state_dim: int
    observation_keys: tuple[str, ...]


class EvalEnvMismatch(ValueError):
    """The eval env runs, but does not fit the dataset the policy trains on."""


def check_eval_env_fits(cfg: SFTRunConfig, env: Any, needs: EvalEnvNeeds) -> dict[str, int]:
    """Reset `env` once and compare what it observes and takes with the dataset; the env's spec."""
    from ..envs.spec import env_spec

    env_cfg = cfg.env
    obs, _ = env.reset(seed=0)
    spec = env_spec(env)
    if spec["action_dim"] != needs.action_dim:
        raise EvalEnvMismatch(
            f"the eval env {env_cfg.id!r} has action_dim={spec['action_dim']} but the dataset "
            f"{cfg.sft.dataset!r} has action_dim={needs.action_dim}"
        )
    missing = [key for key in needs.observation_keys if key not in obs]
    if missing:
        raise EvalEnvMismatch(
            f"the policy trains on dataset keys {list(needs.observation_keys)} but the eval env {env_cfg.id!r} "
            f"(obs_mode={env_cfg.obs_mode!r}) observes {sorted(obs)}: {missing} missing"
        )
    if "state" in needs.observation_keys and spec["state_dim"] != needs.state_dim:
        raise EvalEnvMismatch(
            f"the eval env {env_cfg.id!r} has state_dim={spec['state_dim']} but the dataset "
            f"{cfg.sft.dataset!r} has state_dim={needs.state_dim}"
        )
    return spec


@contextlib.contextmanager
def eval_env_errors(cfg: SFTRunConfig, on_failure: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Building and checking SFT's eval env: an EvalEnvMismatch passes as it is, any other failure becomes the
    "cannot run here" error; on_failure (closing what was built) runs first in both cases."""
    try:
        yield
    except EvalEnvMismatch:
        on_failure()
        raise
    except Exception as error:  # noqa: BLE001 - any failure means no evaluation can run here
        on_failure()
        env_cfg = cfg.env
        raise RuntimeError(
            f"sft.eval_interval={cfg.sft.eval_interval} evaluates the policy in env.id={env_cfg.id!r} "
            f"(obs_mode={env_cfg.obs_mode!r}), which cannot run here: {type(error).__name__}: {error}. "
            "Run where the env works, or set sft.eval_interval=0"
        ) from error


def sft_eval_config(cfg: SFTRunConfig, device: str = "auto") -> EvalConfig:
    """The evaluation SFT runs every sft.eval_interval steps: deterministic episodes from sft.seed + 1000, with a
    progress bar where sft.progress shows SFT's."""
    sft: SFTConfig = cfg.sft
    return EvalConfig(
        num_episodes=sft.eval_episodes,
        num_envs=cfg.eval_num_envs,
        seed=sft.seed + SFT_EVAL_SEED_OFFSET,
        video=False,
        device=device,
        progress=sft.progress,
    )


class FrameSampler:
    """Frame indices from a seeded stream of permutations of all frames (one permutation per epoch)."""

    def __init__(self, num_frames: int, seed: int):
        if num_frames < 1:
            raise ValueError("the dataset has no frames")
        self.num_frames = num_frames
        self.generator = torch.Generator().manual_seed(seed)
        self._order = torch.randperm(num_frames, generator=self.generator)
        self._position = 0

    def state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "order": self._order.clone(), "position": self._position}

    def load_state(self, state: dict[str, Any]) -> None:
        if len(state["order"]) != self.num_frames:
            raise ValueError(
                f"saved sampler covers {len(state['order'])} frames, this run trains on {self.num_frames} "
                "(a different dataset, or a different sft.val_episodes)"
            )
        self.generator.set_state(state["generator"])
        self._order, self._position = state["order"].clone(), int(state["position"])

    def next(self, count: int) -> torch.Tensor:
        out = []
        while count > 0:
            if self._position == self.num_frames:
                self._order, self._position = torch.randperm(self.num_frames, generator=self.generator), 0
            take = min(count, self.num_frames - self._position)
            out.append(self._order[self._position : self._position + take])
            self._position += take
            count -= take
        return torch.cat(out)


def check_compilable(policy_name: str, gradient_checkpointing: bool) -> None:
    """sft.compile compiles a policy's layers (its fsdp_units), which the mlp and cnn policies do not have; under
    gradient checkpointing dynamo breaks its graph at every checkpointed layer and compiles almost nothing."""
    if not hasattr(policy_class(policy_name), "fsdp_units"):
        raise ValueError(
            f"sft.compile=true compiles a policy's layers (its fsdp_units); policy {policy_name!r} defines none. It "
            "applies to pi0, gr00t, openvla, openvla_oft and flow_mlp"
        )
    if gradient_checkpointing:
        raise ValueError(
            f"sft.compile=true with policy {policy_name!r}'s gradient_checkpointing=true: torch.compile stops at "
            "every checkpointed layer and compiles almost nothing (pi0-3b's preset checkpoints). Set "
            "policy.overrides.gradient_checkpointing=false (more activation memory) or sft.compile=false"
        )


def compile_layers(policy, world_size: int) -> int:
    """sft.compile: torch.compile each of `policy`'s layers (its fsdp_units: transformer layers for the VLAs) in
    place. Regional compilation: a stack of identical layers shares one compiled graph, so 6 layers cost about
    as much compiling as 1. Returns the number of layers compiled."""
    check_compilable(policy.name, bool(getattr(policy.config, "gradient_checkpointing", False)))
    if world_size > 1:
        raise ValueError(
            f"sft.compile=true runs on one actor rank; this run has {world_size} (FSDP). Use one GPU for the "
            "actor, or sft.compile=false"
        )
    layers = policy.fsdp_units()
    for layer in layers:
        layer.compile(backend=COMPILE_BACKEND)
    return len(layers)


def held_out_start(dataset, val_episodes: int, dataset_path: Optional[str]) -> int:
    """The first frame of the dataset's last `val_episodes` episodes (its frame count when 0): SFT trains on the
    frames before it and validates on the rest."""
    if val_episodes == 0:
        return dataset.num_frames
    if val_episodes >= dataset.num_episodes:
        raise ValueError(
            f"sft.val_episodes={val_episodes} holds out every episode of sft.dataset={dataset_path!r} "
            f"({dataset.num_episodes} episodes): valid values are 0 .. {dataset.num_episodes - 1}"
        )
    start = dataset.episode_bounds()[dataset.num_episodes - val_episodes][0]
    if start >= dataset.num_frames:  # DemoDataset refuses empty episodes; a reader that did not would log no val
        raise ValueError(
            f"sft.val_episodes={val_episodes}: the last {val_episodes} episode(s) of sft.dataset={dataset_path!r} "
            "hold no frames, so sft/val_loss would never be logged; drop the empty episodes"
        )
    return start


def lr_at(sft: SFTConfig, step: int) -> float:
    """Linear warmup over warmup_steps (from lr / warmup_steps), then cosine to min_lr_ratio * lr or constant."""
    if step < sft.warmup_steps:
        return sft.lr * (step + 1) / sft.warmup_steps
    if sft.lr_schedule == "constant":
        return sft.lr
    progress = min(1.0, (step - sft.warmup_steps) / max(1, sft.max_steps - sft.warmup_steps))
    return sft.lr * (sft.min_lr_ratio + (1.0 - sft.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def check_policy_matches_dataset(policy, dataset, dataset_path: Optional[str]) -> None:
    cfg = policy.config
    if cfg.action_dim != dataset.action_dim:
        raise ValueError(
            f"policy {policy.name!r} has action_dim={cfg.action_dim} but the dataset "
            f"sft.dataset={dataset_path!r} has action_dim={dataset.action_dim}"
        )
    if cfg.state_dim and dataset.state_dim != cfg.state_dim:
        raise ValueError(
            f"policy {policy.name!r} has state_dim={cfg.state_dim} but the dataset "
            f"sft.dataset={dataset_path!r} has state_dim={dataset.state_dim}"
        )


def dataset_arrays(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """All (states, actions) of the dataset as (F, D) and (F, A) float32 tensors."""
    states, actions = getattr(dataset, "_states", None), getattr(dataset, "_actions", None)
    if states is None or actions is None:  # no in-memory arrays: one sample over every frame
        obs, chunks, _ = dataset.sample(torch.arange(dataset.num_frames), 1)
        states, actions = obs["state"], chunks[:, 0]
    return states.float().cpu(), actions.float().cpu()


def check_cameras_vary(dataset, path: str, min_pixel_std: float = 0.5) -> dict[str, float]:
    """Raise if a camera shows (almost) the same image in every frame; returns each camera's pixel std."""
    variation = dataset.camera_variation()
    constant = {camera: round(std, 3) for camera, std in variation.items() if std < min_pixel_std}
    if constant:
        raise ValueError(
            f"dataset {path!r}: camera(s) {constant} show the same image in every frame (pixel std across "
            f"frames < {min_pixel_std} of 255): the frames were not rendered. Collect where the env renders "
            "(ManiSkill rgb needs a GPU with Vulkan), or train on the state alone"
        )
    return variation


def percentile_bounds(values: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-dimension 1st/99th percentiles; a (near) constant dimension gets value -+ 1 (it maps to 0)."""
    low, high = np.percentile(values.numpy().astype(np.float64), STATS_PERCENTILES, axis=0)
    narrow = (high - low) < 1e-6
    centre = (high + low) / 2
    low, high = np.where(narrow, centre - 1.0, low), np.where(narrow, centre + 1.0, high)
    return [float(v) for v in low], [float(v) for v in high]


def apply_dataset_stats(policy, dataset) -> dict[str, list[float]]:
    """Set action_low/high (and state_low/high where the config has them) from the dataset's
    percentiles on a policy config that has none; returns what it set (config.json saves them)."""
    cfg = policy.config
    states, actions = dataset_arrays(dataset)
    stats: dict[str, list[float]] = {}
    if cfg.action_low is None and cfg.action_high is None:
        stats["action_low"], stats["action_high"] = percentile_bounds(actions)
    if hasattr(cfg, "state_low") and cfg.state_low is None and cfg.state_high is None and dataset.state_dim > 0:
        stats["state_low"], stats["state_high"] = percentile_bounds(states)
    for key, value in stats.items():
        setattr(cfg, key, value)
    if stats:
        logger.info("%s: normalisation statistics from the dataset: %s", policy.name, sorted(stats))
    return stats


def frozen_by_config(config: Any) -> list[str]:
    """The policy config's freeze_* switches that are on. A checkpoint saved by RL records the ones RL ran with,
    so SFT continued from it trains only what they leave (stop 28 trained 6.0M of pi0-small's 22.2M parameters
    that way without saying so)."""
    return sorted(name for name, value in vars(config).items() if name.startswith("freeze_") and value is True)
