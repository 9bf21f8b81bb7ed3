"""RolloutWorker: policy inference for the env shards assigned to it (no grad, bf16 on GPU).

Each rollout step visits the shards in the same order the env workers step them (env rank, then
pipeline stage). With 2 stages per env worker, while this worker runs the policy on stage 1's
observations, the env worker is already simulating stage 0 with the actions it just received.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..config import TrainConfig
from ..policies import ActOutput
from ..policies.common.cuda_graph import release_act_graphs
from ..scheduler import Channel, Worker
from .messages import EnvOutput, Trajectory, channel_key, seed_for, to_device
from .policy_loading import build_policy
from .timeline import SpanRecorder
from .trajectory_buffer import TrajectoryBuffer
from .weight_copy import copy_weights_into

logger = logging.getLogger(__name__)


class RolloutWorker(Worker, SpanRecorder):
    def __init__(self, cfg: TrainConfig, action_dim: int, state_dim: int, num_env_workers: int):
        super().__init__()
        self.cfg = cfg
        self.action_dim = action_dim
        self.state_dim = state_dim
        self.num_env_workers = num_env_workers

    def init_worker(self) -> None:
        self.policy = build_policy(self.cfg.policy, self.action_dim, self.state_dim, self.device)
        self.policy.eval()
        self.policy.requires_grad_(False)

    def shards(self) -> list[tuple[int, int]]:
        """(env_rank, stage) pairs this worker serves: env ranks round-robin over rollout ranks."""
        stages = self.cfg.runner.pipeline_stage_num
        return [
            (env_rank, stage)
            for env_rank in range(self.rank, self.num_env_workers, self.world_size)
            for stage in range(stages)
        ]

    # ---- weights ------------------------------------------------------------------------------
    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        copy_weights_into(self.policy, state_dict)  # casts on the sender's GPU when offloaded (weight_copy.py)

    def policy_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.policy.state_dict().items()}

    # ---- rollout ------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        iteration: int,
        env_channel: Channel,
        action_channel: Channel,
        actor_channel: Channel,
        num_actor_ranks: int,
        sampling_round: int = 0,
    ) -> dict[str, float]:
        """Serve `rollout_steps` policy calls per shard, then send each shard's trajectory to the actors."""
        extra = (sampling_round,) if sampling_round else ()  # dynamic sampling's further rounds
        torch.manual_seed(seed_for(self.cfg.runner.seed, iteration, 7919, self.rank, *extra))
        buffers = {shard: TrajectoryBuffer() for shard in self.shards()}
        num_steps = self.cfg.runner.rollout_steps
        for step in range(num_steps + 1):
            for shard in self.shards():
                with self.span(f"wait env{shard[0]}/stage{shard[1]}"):
                    env_output: EnvOutput = env_channel.get(key=channel_key(*shard))
                buffer = buffers[shard]
                if env_output.env_ids is not None:
                    buffer.env_ids = env_output.env_ids
                if env_output.rewards is not None:
                    buffer.add_outcome(env_output, self._final_values(env_output))
                with self.span(f"infer env{shard[0]}/stage{shard[1]}"):
                    act_output = self._act(env_output.obs, self.cfg.runner.deterministic_rollout)
                if step < num_steps:
                    with self.span(f"send env{shard[0]}/stage{shard[1]}"):
                        action_channel.put(act_output.actions.float().cpu(), key=channel_key(*shard))
                    buffer.add_step(env_output.obs, act_output)
                else:  # one more observation per shard only to bootstrap the last value
                    buffer.add_bootstrap_value(act_output.values)
        self._send_to_actors(buffers, actor_channel, num_actor_ranks)
        return {}

    @torch.no_grad()
    def evaluate(self, env_channel: Channel, action_channel: Channel) -> None:
        """Serve deterministic actions to every shard until it reports its evaluation episodes finished,
        `eval_rounds` times (the env workers' `evaluate` counts the episodes)."""
        for _ in range(self.cfg.runner.eval_rounds):
            playing = set(self.shards())
            while playing:
                for shard in self.shards():
                    if shard not in playing:
                        continue
                    env_output: EnvOutput = env_channel.get(key=channel_key(*shard))
                    if env_output.finished:
                        playing.discard(shard)
                        continue
                    actions = self._act(env_output.obs, deterministic=True).actions  # (N, chunk, act_dim)
                    action_channel.put(actions.float(), key=channel_key(*shard))

    def _act(self, obs: dict[str, Any], deterministic: bool) -> ActOutput:
        obs = to_device(obs, self.device)
        return self.policy.act(obs, deterministic=deterministic).to("cpu")

    def _final_values(self, env_output: EnvOutput) -> torch.Tensor | None:
        """V(final obs) of truncated envs (zeros elsewhere), so a time limit is not taken for a failure.
        None without a critic to read: the policy has none, or the estimator reads none (GRPO's outcomes are
        the episodes' rewards alone)."""
        if env_output.final_obs is None or not self.policy.has_critic or not self.cfg.algorithm.uses_critic:
            return None
        values = self._act(env_output.final_obs, self.cfg.runner.deterministic_rollout).values
        if values is None:
            return None
        return values.float() * env_output.final_obs_mask.float()

    def _send_to_actors(self, buffers: dict, actor_channel: Channel, num_actor_ranks: int) -> None:
        """Split each shard's envs over the actor ranks (data parallel) and send the pieces."""
        gamma = self.cfg.algorithm.gamma
        for (env_rank, stage), buffer in buffers.items():
            trajectory: Trajectory = buffer.finish(gamma=gamma)
            for actor_rank, piece in enumerate(
                split_envs(trajectory, num_actor_ranks, self.cfg.algorithm, self.cfg.env.num_envs)
            ):
                actor_channel.put(piece, key=f"actor{actor_rank}")

    def offload(self) -> None:
        release_act_graphs(self.policy)  # the onload moves the weights: the graphs would be recaptured anyway
        self.offload_model(self.policy)

    def onload(self) -> None:
        self.onload_model(self.policy)


def num_env_groups(total_envs: int, group_size: int, num_actor_ranks: int) -> int:
    """The number of env groups (single envs without GRPO); an error unless every actor rank gets at least one."""
    if total_envs % group_size:
        raise ValueError(f"env.num_envs={total_envs} is not a multiple of algorithm.group_size={group_size}")
    num_groups = total_envs // group_size
    if num_groups < num_actor_ranks:
        what = f"{num_groups} env group(s) of {group_size}" if group_size > 1 else f"{num_groups} env(s)"
        raise ValueError(
            f"env.num_envs={total_envs}: {what} cannot feed {num_actor_ranks} actor ranks (one per GPU that "
            f"cluster.component_placement gives actor); use env.num_envs >= {num_actor_ranks * group_size}"
        )
    return num_groups


def split_envs(trajectory: Trajectory, num_parts: int, algorithm_cfg, total_envs: int) -> list[Trajectory]:
    """Split a shard's trajectory along the env axis into one piece per actor rank.

    Actor rank r trains on the contiguous block of global env ids r * total / num_parts ... (whole
    GRPO groups), whichever shard they were stepped in: every rank gets an equal share of the
    rollout even when a shard holds fewer envs than there are actor ranks. Pieces may be empty.
    """
    unit = algorithm_cfg.env_group_size
    num_groups = num_env_groups(total_envs, unit, num_parts)
    owner = (trajectory.env_ids // unit) * num_parts // num_groups  # (N,) actor rank of each env
    return [trajectory.select_envs(torch.nonzero(owner == rank).flatten()) for rank in range(num_parts)]
