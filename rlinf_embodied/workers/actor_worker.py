"""ActorWorker: trains the policy with torch FSDP2 (fully_shard) over every actor rank.

Each rank receives its share of the rollout's envs, computes advantages on them (Reinforce++ normalises them
with the statistics of every rank's envs), and runs PPO-style epochs over minibatches; FSDP reduce-scatters the gradients, so all ranks step the same model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

from ..algorithms import (
    MinibatchTotals,
    accumulate_metrics,
    adapted_lr_scale,
    annealed_lr,
    compute_advantages,
    credited_steps,
    dynamic_sampling_mask,
    explained_variance,
    minibatch_totals,
    policy_loss,
    reference_kl,
    resolve_learning_rates,
)
from ..algorithms.checks import check_finite
from ..config import TrainConfig
from ..datasets.demo_seeds import carry_demo_seeds
from ..envs.action_settings import write_action_settings
from ..policies import ActOutput
from ..scheduler import Channel, Worker
from ..transfer import host_floats
from .disk_space import check_free_space, state_nbytes
from .messages import Trajectory, seed_for, to_device
from .mixed_precision import computing_in, store_frozen_in
from .resume_check import check_resume_directory, check_same_model, other_policy_message
from .policy_loading import build_policy, compute_dtype
from .timeline import SpanRecorder

logger = logging.getLogger(__name__)

FULL_STATE = StateDictOptions(full_state_dict=True, cpu_offload=True)
# The mean approx_kl of an update's minibatches evaluated after its first optimizer step (algorithm.desired_kl's)
POST_STEP_KL = "post_step_approx_kl"


class ActorWorker(Worker, SpanRecorder):
    def __init__(self, cfg: TrainConfig, action_dim: int, state_dim: int):
        super().__init__()
        self.cfg = cfg
        self.action_dim = action_dim
        self.state_dim = state_dim
        self.reference: torch.nn.Module | None = None  # built by init_worker when algorithm.ref_kl_coef > 0
        self.lr_scale = 1.0  # algorithm.desired_kl's adaptive scale on the policy's lr (checkpointed)

    def init_worker(self) -> None:
        torch.manual_seed(self.cfg.runner.seed)  # identical initial weights on every rank
        self.compute_dtype = compute_dtype(self.cfg.policy, self.device)
        # fp32 master weights; forwards run on compute-dtype casts, as the rollout computes (mixed_precision.py)
        self.policy = build_policy(self.cfg.policy, self.action_dim, self.state_dim, self.device, master_weights=True)
        if self.world_size > 1:
            self._shard_policy()  # FSDP2 wants one dtype per unit: frozen parameters stay fp32 there
        else:
            store_frozen_in(self.policy, self.compute_dtype)
        # One rank needs no sharding: the plain module (also sidesteps torch 2.11 + CUDA, where a
        # one-rank FSDP2 model ends up registering parameters other than those the optimizer holds).
        self.optimizer = torch.optim.Adam(self._parameter_groups(), eps=1e-5)
        self.reference = self._build_reference() if self.cfg.algorithm.ref_kl_coef > 0 else None

    def _build_reference(self) -> torch.nn.Module:
        """algorithm.ref_kl_coef's reference: the policy the run starts from, frozen, in the compute dtype. Built
        like the actor's (same seed, same checkpoint), so with random init it holds the same initial weights;
        a resumed run loads its checkpoint into the actor only, and keeps this start as the reference."""
        torch.manual_seed(self.cfg.runner.seed)
        reference = build_policy(self.cfg.policy, self.action_dim, self.state_dim, self.device)
        return reference.eval().requires_grad_(False)

    def _configured_learning_rates(self) -> dict[str, float]:
        """Each parameter group's lr: the policy's algorithm.lr, its value head's value_lr (each defaulting to the
        policy class's own rates)."""
        policy_class = type(self.policy)
        lr, value_lr = resolve_learning_rates(
            self.cfg.algorithm, policy_class.default_rl_lr, policy_class.default_value_lr
        )
        return {"policy": lr, "value": value_lr}

    def _parameter_groups(self) -> list[dict[str, Any]]:
        """Trainable parameters in two groups: the policy at algorithm.lr, its value head at value_lr.
        `initial_lr` is what anneal_lr scales."""
        policy_class = type(self.policy)
        lrs = self._configured_learning_rates()
        lr, value_lr = lrs["policy"], lrs["value"]
        value_prefixes = policy_class.value_parameter_prefixes
        trainable = [(name, p) for name, p in self.policy.named_parameters() if p.requires_grad]
        value_params = [p for name, p in trainable if name.startswith(value_prefixes)]
        other_params = [p for name, p in trainable if not name.startswith(value_prefixes)]
        groups = [
            {"params": other_params, "lr": lr, "initial_lr": lr, "name": "policy"},
            {"params": value_params, "lr": value_lr, "initial_lr": value_lr, "name": "value"},
        ]
        return [group for group in groups if group["params"]]

    def _forward_precision(self):
        """One rank: compute on casts of the fp32 masters. FSDP casts its own (MixedPrecisionPolicy)."""
        if self.world_size > 1 or self.compute_dtype == torch.float32:
            return contextlib.nullcontext()
        return computing_in(self.policy, self.compute_dtype)

    def _shard_policy(self) -> None:
        """FSDP2 over every actor rank: the policy's own units first (transformer blocks), then the rest."""
        mesh = init_device_mesh(self.device.type, (self.world_size,))
        # fp32 sharded masters, unsharded for compute in the rollout's dtype, gradients reduced in fp32
        precision = MixedPrecisionPolicy(param_dtype=self.compute_dtype, reduce_dtype=torch.float32)
        self.policy.forced_compute_dtype = self.compute_dtype  # the sharded parameters read fp32
        for unit in getattr(self.policy, "fsdp_units", lambda: [])():
            fully_shard(unit, mesh=mesh, mp_policy=precision)
        fully_shard(self.policy, mesh=mesh, mp_policy=precision)
        register_fsdp_forward_method(self.policy, "evaluate")
        register_fsdp_forward_method(self.policy, "act")
        # FSDP2 finishes setting up its parameters lazily, at the first forward, and registers its
        # sharded parameters again at reshard: the optimizer is built on those, after one forward.
        with torch.no_grad():
            self.policy.act(self.policy.example_obs(1))
        self.policy.reshard()

    # ---- weights ------------------------------------------------------------------------------
    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The unsharded weights on CPU (every rank takes part; rank 0 gets the tensors)."""
        return get_model_state_dict(self.policy, options=FULL_STATE)

    def device_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights on this GPU, for a CUDA IPC sync to a rollout on the same GPU (one actor rank, so
        the parameters are whole). Parameters offloaded to host memory come up for the sync, without the
        optimizer state, and go back in release_device_state."""
        if self.world_size > 1:
            raise ValueError(f"device_state_dict() needs one actor rank (this group has {self.world_size})")
        self._onloaded_for_sync = not all(t.device.type == "cuda" for t in self.policy.state_dict().values())
        if self._onloaded_for_sync:
            self.onload_model(self.policy)
        return {name: tensor.detach() for name, tensor in self.policy.state_dict().items()}

    def release_device_state(self) -> None:
        if getattr(self, "_onloaded_for_sync", False):
            self.offload_model(self.policy)
            self._onloaded_for_sync = False

    # ---- training -----------------------------------------------------------------------------
    def train(self, iteration: int, actor_channel: Channel, num_pieces: int) -> dict[str, float]:
        pieces = [actor_channel.get(key=f"actor{self.rank}") for _ in range(num_pieces)]
        return self._train_on(iteration, Trajectory.concat_envs(pieces))

    def _train_on(self, iteration: int, trajectory: Trajectory) -> dict[str, float]:
        # (T, N) each, on this rank's envs; every rank calls it: Reinforce++ all-reduces its normalisation statistics
        advantages, returns = compute_advantages(trajectory, self.cfg.algorithm)
        samples = flatten_time_and_envs(trajectory, advantages, returns)
        self._set_learning_rates(iteration)
        with self.span("train"):
            metrics = self._update(iteration, samples)
        self._adapt_lr_scale(iteration, metrics)
        metrics["advantage_mean"] = float(advantages.mean())
        for group in self.optimizer.param_groups:
            if group["name"] == "value" and not self.cfg.algorithm.uses_critic:
                continue  # a critic-free estimator never trains the value head: its lr means nothing
            metrics["lr" if group["name"] == "policy" else f"lr_{group['name']}"] = group["lr"]
        return metrics

    def _set_learning_rates(self, iteration: int) -> None:
        """Each group's initial_lr, annealed if asked; the policy's is 0 during critic warmup."""
        for group in self.optimizer.param_groups:
            group["lr"] = annealed_lr(
                self.cfg.algorithm, iteration, self.cfg.runner.max_iterations, group["initial_lr"]
            )
            if group["name"] == "policy":
                group["lr"] *= self.lr_scale
                if iteration < self.cfg.algorithm.critic_warmup_iterations:
                    group["lr"] = 0.0  # critic warmup: only the value head learns

    def _adapt_lr_scale(self, iteration: int, metrics: dict[str, float]) -> None:
        """algorithm.desired_kl: rescale the policy's next lr from this update's post_step_approx_kl (the ranks'
        mean, so every rank keeps the same lr): the KL of the minibatches evaluated after the update's first
        optimizer step. Not train/approx_kl, whose first minibatch is measured before any step (~0), which biased
        it low (one step per update: always 0, and the lr grew x1.5 every iteration). Unchanged during critic
        warmup, when the policy does not move, and where no minibatch was evaluated after a step (target_kl ended
        the update at its first; every rank decides that alike)."""
        algo = self.cfg.algorithm
        if algo.desired_kl is None or iteration < algo.critic_warmup_iterations:
            return
        if POST_STEP_KL in metrics:
            self.lr_scale = adapted_lr_scale(algo, self.lr_scale, self._mean_over_ranks(metrics[POST_STEP_KL]))
        metrics["lr_scale"] = self.lr_scale

    def _update(self, iteration: int, samples: dict[str, Any]) -> dict[str, float]:
        """The iteration's minibatch steps. Metrics are means over the minibatches evaluated, the one whose
        approx_kl passed target_kl included; stop_approx_kl is that minibatch's own (logged only when it ended the
        update: after one step, the means of two minibatches halve the ratio and clip fraction).

        Each minibatch's approx_kl is measured before its own step, against the rollout's log-probs. So
        train/approx_kl (the mean over every minibatch evaluated) includes the first, measured before any step
        (~0: initial_approx_kl), and never sees the last step. post_step_approx_kl, what algorithm.desired_kl
        reads, is the mean over the minibatches evaluated after at least one step (the first left out); absent
        when the update took no step before its last evaluation (one minibatch, or target_kl at the first)."""
        algo = self.cfg.algorithm
        num_samples = samples["actions"].shape[0]
        check_minibatch_split(num_samples, self.cfg, self.rank, self.world_size)
        generator = torch.Generator().manual_seed(seed_for(self.cfg.runner.seed, iteration, 104729))
        history: dict[str, list[float]] = {}
        self.policy.train()
        epochs = [  # a fresh permutation per epoch
            torch.tensor_split(torch.randperm(num_samples, generator=generator), algo.num_minibatches)
            for _ in range(algo.update_epochs)
        ]
        if algo.recompute_log_probs:
            samples = self._recompute_log_probs(samples, epochs[0], history)
        if self.reference is not None:
            samples = self._reference_log_probs(samples, epochs[0])
        minibatches = (minibatch for epoch in epochs for minibatch in epoch)
        steps_taken = 0
        for minibatch in minibatches:
            try:
                step_metrics, stepped = self._minibatch_step(iteration, select(samples, minibatch))
            except torch.OutOfMemoryError as error:
                raise update_out_of_memory(error, len(minibatch), self.cfg, self.world_size, self.policy) from error
            if "initial_approx_kl" not in history:
                # Before any optimizer step: rollout and actor hold the same weights, so this measures how
                # well the actor reproduces the rollout's log-probs (should be ~0; see mixed_precision.py).
                history["initial_approx_kl"] = [step_metrics["approx_kl"]]
                history["initial_ratio_max_abs_dev"] = [step_metrics["ratio_max_abs_dev"]]
            for key, value in step_metrics.items():
                history.setdefault(key, []).append(value)
            if steps_taken > 0:  # the policy has moved since the rollout: a KL of the update's steps
                history.setdefault(POST_STEP_KL, []).append(step_metrics["approx_kl"])
            if not stepped:  # approx_kl passed target_kl: this iteration's update ends (CleanRL / ManiSkill PPO)
                history["stop_approx_kl"] = [step_metrics["approx_kl"]]
                break
            steps_taken += 1
        metrics = {key: float(np.mean(values)) for key, values in history.items()}
        metrics["optimizer_steps"] = float(steps_taken)
        if algo.uses_critic:  # how well the rollout's values predicted the returns the update trains towards
            variance_explained = explained_variance(samples["values"], samples["returns"])
            if variance_explained is not None:
                metrics["explained_variance"] = variance_explained
            # the extremes, so one runaway value (stop 48: value loss 0.05 -> 28 for one iteration) shows where
            values, returns = samples["values"], samples["returns"]
            metrics.update(
                host_floats(
                    {
                        "value_max": values.max(),
                        "value_min": values.min(),
                        "return_max": returns.max(),
                        "return_min": returns.min(),
                    }
                )
            )
        return metrics

    @torch.no_grad()
    def _recompute_log_probs(
        self, samples: dict[str, Any], partition: Sequence[torch.Tensor], history: dict[str, list[float]]
    ) -> dict[str, Any]:
        """The samples with log_probs from the actor's own evaluate, on the first epoch's minibatches (the
        shapes its first steps will see); logs how far the rollout's were (rollout_actor_approx_kl)."""
        log_probs = samples["log_probs"].clone()
        for minibatch, batch, evaluated in self._evaluate_samples(self.policy, samples, partition):
            _, mismatch = policy_loss(
                new_log_probs=evaluated.log_probs,
                old_log_probs=batch["log_probs"],
                advantages=batch["advantages"],
                entropy=None,
                new_values=evaluated.values,
                old_values=batch["values"],
                returns=batch["returns"],
                cfg=self.cfg.algorithm,
                loss_mask=batch.get("loss_mask"),
            )
            history.setdefault("rollout_actor_approx_kl", []).append(float(mismatch["approx_kl"]))
            history.setdefault("rollout_actor_ratio_max_abs_dev", []).append(float(mismatch["ratio_max_abs_dev"]))
            log_probs[minibatch] = evaluated.log_probs.to(log_probs.device, log_probs.dtype)
        return {**samples, "log_probs": log_probs}

    @torch.no_grad()
    def _reference_log_probs(self, samples: dict[str, Any], partition: Sequence[torch.Tensor]) -> dict[str, Any]:
        """The samples with ref_log_probs: the frozen reference's log-probs of their actions, scored once per
        update on the first epoch's minibatches (the reference does not change between epochs)."""
        ref_log_probs = torch.empty_like(samples["log_probs"])
        for minibatch, _, evaluated in self._evaluate_samples(self.reference, samples, partition):
            ref_log_probs[minibatch] = evaluated.log_probs.to(ref_log_probs.device, ref_log_probs.dtype)
        return {**samples, "ref_log_probs": ref_log_probs}

    def _evaluate_samples(
        self, policy: torch.nn.Module, samples: dict[str, Any], partition: Sequence[torch.Tensor]
    ) -> Iterator[tuple[torch.Tensor, dict[str, Any], Any]]:
        """(indices, those samples on the device, policy.evaluate of them) over `partition`'s minibatches, in
        micro-batches where algorithm.micro_batch_size asks."""
        for minibatch in partition:
            for part in self._micro_batches(len(minibatch)):  # the update's memory bound holds here too
                indices = minibatch[part]
                batch = to_device(select(samples, indices), self.device)
                with self._forward_precision():
                    evaluated = policy.evaluate(batch["obs"], act_output_of(batch))
                yield indices, batch, evaluated

    def _minibatch_step(self, iteration: int, batch: dict[str, Any]) -> tuple[dict[str, float], bool]:
        """One optimizer step on a minibatch, its forward and backward in micro-batches where
        algorithm.micro_batch_size asks (their gradients accumulate). Returns (metrics, stepped). No step once the
        ranks' mean approx_kl exceeds algorithm.target_kl (every rank takes the same decision)."""
        algo = self.cfg.algorithm
        parts = self._micro_batches(batch["actions"].shape[0])
        totals = None
        if len(parts) > 1:  # every micro-batch's means divide by the minibatch's counts
            counted = {"old_log_probs": batch["log_probs"], "advantages": batch["advantages"]}
            counted = to_device(counted | {"loss_mask": batch.get("loss_mask")}, self.device)
            totals = minibatch_totals(**counted, cfg=algo)
        self.optimizer.zero_grad(set_to_none=True)
        metrics: dict[str, torch.Tensor] = {}
        for part in parts:
            micro_batch = to_device(batch if totals is None else select(batch, part), self.device)
            with self._forward_precision():  # the backward too: checkpointed layers recompute inside it
                loss, micro_metrics = self._loss(iteration, micro_batch, totals)
                accumulate_metrics(metrics, micro_metrics)
                if totals is None and self._exceeds_target_kl(metrics):
                    return host_floats(metrics), False  # before the backward: no step follows
                loss.backward()
        if totals is not None and self._exceeds_target_kl(metrics):
            self.optimizer.zero_grad(set_to_none=True)
            return host_floats(metrics), False
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), algo.max_grad_norm)
        grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
        check_finite({"grad_norm": grad_norm}, iteration)
        self._check_optimizer_owns_parameters()
        self.optimizer.step()
        return host_floats({**metrics, "grad_norm": grad_norm}), True

    def _loss(
        self, iteration: int, batch: dict[str, Any], totals: MinibatchTotals | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The policy loss (+ the reference KL) of a batch on the device, with detached metrics "loss" included;
        with `totals`, the batch's share of its minibatch's."""
        algo = self.cfg.algorithm
        evaluated = self.policy.evaluate(batch["obs"], act_output_of(batch))
        loss, metrics = policy_loss(
            new_log_probs=evaluated.log_probs,
            old_log_probs=batch["log_probs"],
            advantages=batch["advantages"],
            entropy=evaluated.entropy,
            new_values=evaluated.values,
            old_values=batch["values"],
            returns=batch["returns"],
            cfg=algo,
            loss_mask=batch.get("loss_mask"),
            totals=totals,
        )
        if self.reference is not None:
            ref_kl = reference_kl(
                evaluated.log_probs, batch["ref_log_probs"], batch.get("loss_mask"), algo.logprob_level, totals
            )
            loss = loss + algo.ref_kl_coef * ref_kl
            metrics["ref_kl"] = ref_kl.detach()
        check_finite(
            {"loss": loss, **{f"metric/{k}": v for k, v in metrics.items() if isinstance(v, torch.Tensor)}},
            iteration,
        )
        return loss, metrics | {"loss": loss.detach()}

    def _exceeds_target_kl(self, metrics: dict[str, torch.Tensor]) -> bool:
        target_kl = self.cfg.algorithm.target_kl
        return target_kl is not None and self._mean_over_ranks(metrics["approx_kl"]) > target_kl

    def _micro_batches(self, minibatch_size: int) -> list[torch.Tensor]:
        """Positions within a minibatch of each of its micro-batches (algorithm.micro_batch_size; one part when
        unset or not smaller). Every rank splits into as many parts (FSDP's collectives run per forward and
        backward), the number the ranks' largest minibatch needs."""
        micro_batch_size = self.cfg.algorithm.micro_batch_size
        count = 1 if micro_batch_size is None else -(-minibatch_size // micro_batch_size)
        count = int(self._max_over_ranks(count))
        if count > minibatch_size:
            raise ValueError(
                f"algorithm.micro_batch_size={micro_batch_size} splits actor rank {self.rank}'s minibatch of "
                f"{minibatch_size} samples into {count} micro-batches (as many as another rank's larger minibatch "
                f"needs), so one would be empty: raise algorithm.micro_batch_size or lower algorithm.num_minibatches"
            )
        return list(torch.tensor_split(torch.arange(minibatch_size), count))

    def _max_over_ranks(self, value: int) -> int:
        if self.world_size == 1 or not torch.distributed.is_initialized():
            return value
        tensor = torch.tensor(value, dtype=torch.int64, device=self.device)
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return int(tensor)

    def _mean_over_ranks(self, value: torch.Tensor | float) -> float:
        if self.world_size == 1 or not torch.distributed.is_initialized():
            return float(value)
        tensor = torch.as_tensor(value, dtype=torch.float32, device=self.device).detach().clone()
        torch.distributed.all_reduce(tensor)
        return float(tensor) / self.world_size

    def _check_optimizer_owns_parameters(self) -> None:
        """Fail loudly if the model's trainable parameters are not the tensors the optimizer steps."""
        stepped = {id(p) for group in self.optimizer.param_groups for p in group["params"]}
        stale = [name for name, p in self.policy.named_parameters() if p.requires_grad and id(p) not in stepped]
        if stale:
            raise RuntimeError(
                f"the optimizer does not hold the policy's parameters {stale[:3]}...: they were "
                "replaced after the optimizer was built, so training would not change them"
            )

    # ---- DAPO dynamic sampling (algorithm.dynamic_sampling; the runner drives the rounds) ------
    def collect_groups(
        self, iteration: int, actor_channel: Channel, num_pieces: int, sampling_round: int
    ) -> dict[str, int]:
        """Take this rank's share of one rollout round and keep its informative env groups (those whose
        finished episodes' outcomes are not all equal). Returns kept/dropped group counts of the round
        and how many groups this rank still misses for a full batch (as many as one rollout gives it)."""
        pieces = [actor_channel.get(key=f"actor{self.rank}") for _ in range(num_pieces)]
        collected = collect_informative_groups(Trajectory.concat_envs(pieces), self.cfg, sampling_round)
        if sampling_round == 0:
            self._sampled: list[Trajectory] = []
            self._uninformative: Trajectory | None = None
            self._group_quota = collected["groups"]
        kept, dropped = collected["kept"], collected["dropped"]
        if kept is not None:
            self._sampled.append(kept)
        if self._uninformative is None:
            self._uninformative = dropped
        have = sum(count_groups(t, self.cfg.algorithm.env_group_size) for t in self._sampled)
        return {
            "kept_groups": collected["kept_groups"],
            "dropped_groups": collected["dropped_groups"],
            "missing_groups": max(0, self._group_quota - have),
        }

    def train_collected(self, iteration: int, update: bool = True) -> dict[str, float]:
        """Train on the groups `collect_groups` kept, at most one rollout's worth. A rank that kept none
        trains on uninformative groups (advantages 0) so that every rank takes the same FSDP steps; with
        update=False (no rank kept a group) nothing is trained."""
        sampled, self._sampled = self._sampled, []
        if not update:
            return {"optimizer_steps": 0.0}
        group_size = self.cfg.algorithm.env_group_size
        if sampled:
            trajectory = first_groups(Trajectory.concat_envs(sampled), group_size, self._group_quota)
        else:
            trajectory = self._uninformative
        return self._train_on(iteration, trajectory)

    # ---- checkpoints --------------------------------------------------------------------------
    def save_checkpoint(self, directory: str, iteration: int, env_steps: int) -> None:
        """directory/actor.pt (what runner.resume continues from) and directory/policy (save_pretrained)."""
        model_state = self.save_training_state(directory, iteration, env_steps)
        if self.rank == 0:
            self._save_policy(model_state, os.path.join(directory, "policy"))

    def save_training_state(self, directory: str, iteration: int, env_steps: int) -> dict[str, torch.Tensor]:
        """directory/actor.pt: the full weights, optimizer state, lr scale and rank 0's RNG (every rank takes
        part in gathering; rank 0 writes). Returns the gathered weights."""
        model_state = get_model_state_dict(self.policy, options=FULL_STATE)
        optim_state = get_optimizer_state_dict(self.policy, self.optimizer, options=FULL_STATE)
        if self.rank != 0:
            return model_state
        # actor.pt (weights + optimizer state), then the policy's weights again (save_checkpoint, SFT's saves)
        needed = 2 * state_nbytes(model_state) + state_nbytes(optim_state) + self.extra_checkpoint_nbytes()
        check_free_space(directory, needed, "a checkpoint (actor.pt and the policy's weights)")
        os.makedirs(directory, exist_ok=True)
        torch.save(
            {
                "iteration": iteration,
                "env_steps": env_steps,
                "model": model_state,
                "optimizer": optim_state,
                "lr_scale": self.lr_scale,
                "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
                "policy_name": self.cfg.policy.name,
            },
            os.path.join(directory, "actor.pt"),
        )
        return model_state

    def extra_checkpoint_nbytes(self) -> int:
        """Bytes a subclass writes beside actor.pt (SFT: the EMA weights), for the free-space check."""
        return 0

    def _save_policy(self, model_state: dict[str, torch.Tensor], directory: str) -> None:
        """An unsharded save_pretrained copy, loadable by eval and by `policy.checkpoint=`: the fp32
        master weights, so a run continued from it starts where this one stopped. The policy's own config
        and tokenizer with the gathered weights: building a second model to hold them cost pi0-3b 78 s a save."""
        unknown = set(model_state) - set(self.policy.state_dict())
        if unknown:
            raise ValueError(f"weights to save include keys the policy does not have: {sorted(unknown)[:5]}")
        self.policy.save_pretrained(directory, state_dict=model_state)
        carry_demo_seeds(self.cfg.policy.checkpoint, directory)  # RL from SFT: still not evaluated on its demos
        write_action_settings(directory, self.cfg.env.id, self.cfg.env.kwargs)  # eval, collect, RL: the same actions

    def load_checkpoint(self, directory: str, setting: str = "runner.resume") -> dict[str, int]:
        """`setting`: the config key that named `directory`, for the errors."""
        path = check_resume_directory(directory, setting)
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state["policy_name"] != self.cfg.policy.name:
            raise ValueError(other_policy_message(directory, setting, state["policy_name"], self.cfg.policy.name))
        check_same_model(directory, setting, state["model"], self.policy)
        set_model_state_dict(self.policy, state["model"], options=StateDictOptions(full_state_dict=True))
        # strict=False: a trainable parameter that never got a gradient has no Adam state to restore (pi0's last
        # prefix layer computes queries nothing reads), and it gets none after loading either
        set_optimizer_state_dict(
            self.policy,
            self.optimizer,
            state["optimizer"],
            options=StateDictOptions(full_state_dict=True, strict=False),
        )
        self.lr_scale = float(state.get("lr_scale", 1.0))  # checkpoints before algorithm.desired_kl: 1
        self._keep_configured_learning_rates()
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        return {"iteration": int(state["iteration"]), "env_steps": int(state["env_steps"])}

    def _keep_configured_learning_rates(self) -> None:
        """The optimizer state just loaded brought the saved groups' initial_lr, which every iteration's lr is
        computed from: this run's algorithm.lr / value_lr win (before, `runner.resume=... algorithm.lr=1e-4`
        trained on at the saved lr without a word; lowering the lr is a common reason to resume), and with
        algorithm.desired_kl off the saved adaptive scale no longer applies. Unchanged settings give the saved
        values, so a resume stays exact."""
        if self.cfg.algorithm.desired_kl is None and self.lr_scale != 1.0:  # before: the saved scale stayed, silently
            if self.rank == 0:
                logger.info(
                    "resume: algorithm.desired_kl is off, so the checkpoint's lr scale %g is reset to 1", self.lr_scale
                )
            self.lr_scale = 1.0
        configured = self._configured_learning_rates()
        for group in self.optimizer.param_groups:
            saved, group["initial_lr"] = group["initial_lr"], configured[group["name"]]
            if saved != group["initial_lr"] and self.rank == 0:
                logger.info("resume: the %s lr is %g (the checkpoint's: %g)", group["name"], group["initial_lr"], saved)

    def offload(self) -> None:
        # The finished update's gradients are never read again (every minibatch zeroes them before its
        # backward), so they are dropped rather than copied out and back: with Adam they were a quarter of
        # the bytes an offload moved (stop 26).
        self.optimizer.zero_grad(set_to_none=True)
        self.offload_state(modules=self._models(), optimizers=[self.optimizer])

    def onload(self) -> None:
        self.onload_state(modules=self._models(), optimizers=[self.optimizer])

    def _models(self) -> list[torch.nn.Module]:
        return [self.policy] + ([self.reference] if self.reference is not None else [])


def update_out_of_memory(
    error: torch.OutOfMemoryError, minibatch_size: int, cfg: TrainConfig, world_size: int, policy: torch.nn.Module
) -> torch.OutOfMemoryError:
    """The CUDA message with what to change: stop 32's pi0-3b ran out of an H200's memory in its update, and
    the raw trace through Ray named no setting."""
    config = getattr(policy, "config", None)
    checkpointing = getattr(config, "gradient_checkpointing", None)
    advice = ["raise algorithm.num_minibatches", "lower env.num_envs or runner.rollout_steps"]
    micro_batch_size = cfg.algorithm.micro_batch_size
    if micro_batch_size is None or micro_batch_size >= minibatch_size:  # the same update in less memory first
        advice.insert(0, f"set algorithm.micro_batch_size={max(1, minibatch_size // 4)} (gradient accumulation)")
    else:
        advice.insert(0, f"lower algorithm.micro_batch_size={micro_batch_size}")
    if checkpointing is False:
        advice.insert(1, "turn on policy.overrides.gradient_checkpointing=true")
    # stop 46: pi0-3b trained whole ran out of an H100 in its second update (Adam's moments exist from the first
    # step on), at 20 and 40 samples per minibatch alike: the training state, not the activations, filled it
    for setting in ("freeze_language_model", "freeze_vision_encoder"):
        # with LoRA the base is frozen already, and freezing new adapters is refused (flow/config.py)
        if getattr(config, setting, None) is False and not getattr(config, "lora_rank", 0):
            advice.append(f"set policy.overrides.{setting}=true")
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad) if hasattr(policy, "parameters") else 0
    state = (
        f"{trainable / 1e6:,.1f}M trainable parameters keep ~{trainable * 16 / 2**30:.0f} GiB of fp32 weights, "
        f"gradients and Adam moments over {world_size} actor rank(s) (more actor GPUs shard it); "
        if trainable
        else ""
    )
    return torch.OutOfMemoryError(
        f"the actor ran out of GPU memory in its update, at minibatches of {minibatch_size} samples "
        f"(env.num_envs={cfg.env.num_envs} x runner.rollout_steps={cfg.runner.rollout_steps} samples over "
        f"{world_size} actor rank(s), / algorithm.num_minibatches={cfg.algorithm.num_minibatches}): {state}"
        f"{', or '.join(advice)}. CUDA: {str(error).splitlines()[0][:300]}"
    )


def check_minibatch_split(num_samples: int, cfg: TrainConfig, rank: int, world_size: int) -> None:
    """Every minibatch needs a sample: an empty one would fail deep inside the loss."""
    if num_samples < cfg.algorithm.num_minibatches:
        raise ValueError(
            f"actor rank {rank} got {num_samples} samples this iteration, fewer than "
            f"algorithm.num_minibatches={cfg.algorithm.num_minibatches}: lower algorithm.num_minibatches or raise "
            f"env.num_envs x runner.rollout_steps (now {cfg.env.num_envs} x {cfg.runner.rollout_steps}, "
            f"over {world_size} actor rank(s))"
        )


def group_of(trajectory: Trajectory, group_size: int) -> torch.Tensor:
    """(N,) group id of each env (env_id // group_size)."""
    return trajectory.env_ids.long() // group_size


def count_groups(trajectory: Trajectory, group_size: int) -> int:
    return int(torch.unique(group_of(trajectory, group_size)).numel())


def first_groups(trajectory: Trajectory, group_size: int, num_groups: int) -> Trajectory:
    """The envs of the first `num_groups` groups, in the order the groups first appear."""
    groups = group_of(trajectory, group_size)
    order = []
    for group in groups.tolist():
        if group not in order:
            order.append(group)
    keep = torch.isin(groups, torch.tensor(order[:num_groups], dtype=groups.dtype))
    return trajectory.select_envs(torch.nonzero(keep).flatten())


def collect_informative_groups(trajectory: Trajectory, cfg: TrainConfig, sampling_round: int) -> dict[str, Any]:
    """Split one round's trajectory into informative and uninformative env groups (DAPO dynamic sampling).
    Env ids are offset by the round (round * env.num_envs), so groups of different rounds never merge."""
    group_size = cfg.algorithm.env_group_size
    trajectory = dataclasses.replace(trajectory, env_ids=trajectory.env_ids + sampling_round * cfg.env.num_envs)
    keep, _ = dynamic_sampling_mask(trajectory.rewards, trajectory.dones, group_size, trajectory.env_ids)
    kept = trajectory.select_envs(torch.nonzero(keep).flatten()) if keep.any() else None
    dropped = trajectory.select_envs(torch.nonzero(~keep).flatten()) if (~keep).any() else None
    return {
        "kept": kept,
        "dropped": dropped,
        "groups": count_groups(trajectory, group_size),
        "kept_groups": count_groups(kept, group_size) if kept is not None else 0,
        "dropped_groups": count_groups(dropped, group_size) if dropped is not None else 0,
    }


def flatten_time_and_envs(trajectory: Trajectory, advantages: torch.Tensor, returns: torch.Tensor) -> dict[str, Any]:
    """(T, N, ...) rollout tensors -> (T * N, ...) samples; instructions flattened the same way."""

    def flat(x):
        return x.reshape(-1, *x.shape[2:])

    obs = {
        k: (flat(v) if isinstance(v, torch.Tensor) else [s for row in v for s in row])
        for k, v in trajectory.obs.items()
    }
    return {
        "obs": obs,
        "actions": flat(trajectory.actions),
        "log_probs": flat(trajectory.log_probs),
        "values": flat(trajectory.values[:-1]),
        "advantages": flat(advantages),
        "returns": flat(returns),
        "extras": {k: flat(v) for k, v in trajectory.extras.items()},
        # (T * N, chunk): actions of a chunk after its episode ended were never executed; leave them out
        "loss_mask": flat(credited_steps(trajectory.dones)),
    }


def act_output_of(batch: dict[str, Any]) -> ActOutput:
    """The rollout's output for a minibatch of samples, as `evaluate` takes it."""
    return ActOutput(
        actions=batch["actions"], log_probs=batch["log_probs"], values=batch["values"], extras=batch["extras"]
    )


def select(samples: Any, index: torch.Tensor) -> Any:
    if isinstance(samples, torch.Tensor):
        return samples[index]
    if isinstance(samples, dict):
        return {k: select(v, index) for k, v in samples.items()}
    if isinstance(samples, list):
        return [samples[i] for i in index.tolist()]
    raise TypeError(f"cannot select rows of {type(samples)}")
