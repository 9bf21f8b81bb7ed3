"""What travels through the channels between env, rollout and actor workers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


def seed_for(*parts: int) -> int:
    """A stable 31-bit seed from integers (base seed, iteration, rank, ...), the same in every process."""
    value = 0x9E3779B9
    for part in parts:
        value = (value * 1_000_003 + int(part) + 0x7F4A7C15) % (2**31 - 1)
    return value


def to_device(batch: Any, device: torch.device) -> Any:
    """Tensors in (nested dicts of) a message moved to `device`; strings and other values kept."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def channel_key(env_rank: int, stage: int) -> str:
    """Key of one env shard: env worker `env_rank`'s pipeline stage `stage`."""
    return f"env{env_rank}/stage{stage}"


@dataclass
class EnvOutput:
    """One env shard after reset (rewards None) or after a chunk step. N = envs in the shard."""

    obs: dict[str, Any]
    rewards: torch.Tensor | None = None  # (N, chunk)
    terminations: torch.Tensor | None = None  # (N, chunk) bool
    truncations: torch.Tensor | None = None  # (N, chunk) bool
    # Observations the truncated envs ended in (before auto-reset), to bootstrap their value;
    # final_obs_mask (N,) says which rows are meaningful.
    final_obs: dict[str, Any] | None = None
    final_obs_mask: torch.Tensor | None = None
    env_ids: torch.Tensor | None = None  # (N,) global env indices; sent with the first output
    finished: bool = False  # evaluation: every env of the shard has played its episode; no actions wanted


@dataclass
class Trajectory:
    """A shard's rollout, time-major. T = rollout steps (policy calls), N = envs in the shard."""

    obs: dict[str, Any]  # each tensor (T, N, ...); "instruction": list of T lists of N strings
    actions: torch.Tensor  # (T, N, chunk, act_dim)
    log_probs: torch.Tensor  # (T, N, chunk, act_dim)
    values: torch.Tensor  # (T + 1, N): the last row bootstraps the step after the rollout
    rewards: torch.Tensor  # (T, N, chunk); truncated steps already include gamma * V(final obs)
    dones: torch.Tensor  # (T, N, chunk) bool: terminated or truncated at that step
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # (T, N, ...) for evaluate()
    env_ids: torch.Tensor | None = None  # (N,) global env index, for GRPO groups

    def select_envs(self, env_index: torch.Tensor) -> "Trajectory":
        """The same trajectory restricted to envs `env_index` (the second axis of every tensor)."""

        def pick(value):
            if isinstance(value, torch.Tensor):
                return value[:, env_index]
            return [[row[i] for i in env_index.tolist()] for row in value]  # instructions

        return Trajectory(
            obs={k: pick(v) for k, v in self.obs.items()},
            actions=self.actions[:, env_index],
            log_probs=self.log_probs[:, env_index],
            values=self.values[:, env_index],
            rewards=self.rewards[:, env_index],
            dones=self.dones[:, env_index],
            extras={k: v[:, env_index] for k, v in self.extras.items()},
            env_ids=None if self.env_ids is None else self.env_ids[env_index],
        )

    @staticmethod
    def concat_envs(pieces: list["Trajectory"]) -> "Trajectory":
        """Join trajectories of the same length along the env axis."""

        def join(values):
            if isinstance(values[0], torch.Tensor):
                return torch.cat(values, dim=1)
            return [sum((v[t] for v in values), []) for t in range(len(values[0]))]

        first = pieces[0]
        return Trajectory(
            obs={k: join([p.obs[k] for p in pieces]) for k in first.obs},
            actions=join([p.actions for p in pieces]),
            log_probs=join([p.log_probs for p in pieces]),
            values=join([p.values for p in pieces]),
            rewards=join([p.rewards for p in pieces]),
            dones=join([p.dones for p in pieces]),
            extras={k: join([p.extras[k] for p in pieces]) for k in first.extras},
            env_ids=None if first.env_ids is None else torch.cat([p.env_ids for p in pieces]),
        )
