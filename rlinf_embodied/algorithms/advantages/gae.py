"""Generalised Advantage Estimation (Schulman et al. 2016) on (chunked) rollouts.

Episode ends: `dones` marks both terminations and truncations; the recursion never looks past a
done. A terminated episode is worth 0 afterwards. A truncated (time-limit) one should be
bootstrapped with the value of the observation it ended in: pass `truncations` (truncated and not
terminated) with `final_values`, or fold gamma * V(final obs) into the reward at the truncated step
beforehand (the rollout worker does; see `fold_truncation_bootstrap`). Without either, a truncation
is treated like a termination. `values[T]` bootstraps the episodes still running at the rollout end.
"""

from __future__ import annotations

import torch

from ..config import AlgorithmConfig
from ..registry import register_advantage
from ..rollout import aggregate_chunk_rewards, fold_truncation_bootstrap


def compute_gae(
    rewards: torch.Tensor,
    dones: torch.Tensor,
    values: torch.Tensor,
    gamma: float,
    gae_lambda: float,
    truncations: torch.Tensor | None = None,
    final_values: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """rewards, dones (T, N) or (T, N, chunk); values (T + 1, N) -> advantages, returns (T, N).

    Chunks are one semi-MDP step (see `rollout.py`): discounted in-chunk reward sum, done if any step
    is done, next value discounted by gamma**chunk; lambda applies per chunk.
    """
    if final_values is not None:
        if truncations is None:
            raise ValueError("final_values needs truncations: which steps to bootstrap with them")
        rewards = fold_truncation_bootstrap(rewards, dones, truncations, final_values, gamma)
    chunk_rewards, chunk_dones, discount = aggregate_chunk_rewards(rewards, dones, gamma)  # (T, N) x2
    num_steps = chunk_rewards.shape[0]
    if values.shape != (num_steps + 1, chunk_rewards.shape[1]):
        raise ValueError(
            f"values must be (T + 1, N) = {(num_steps + 1, chunk_rewards.shape[1])}, got {tuple(values.shape)}"
        )
    values = values.to(chunk_rewards.dtype)
    not_done = 1.0 - chunk_dones.to(chunk_rewards.dtype)  # (T, N)
    advantages = torch.zeros_like(chunk_rewards)
    running = torch.zeros_like(chunk_rewards[0])  # (N,)
    for t in reversed(range(num_steps)):
        delta = chunk_rewards[t] + discount * values[t + 1] * not_done[t] - values[t]
        running = delta + discount * gae_lambda * not_done[t] * running
        advantages[t] = running
    return advantages, advantages + values[:-1]


@register_advantage("gae", critic=True, settings=("gamma", "gae_lambda"))
def gae_advantage(
    *,
    rewards: torch.Tensor,
    dones: torch.Tensor,
    values: torch.Tensor,
    cfg: AlgorithmConfig,
    env_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    return compute_gae(rewards, dones, values, cfg.gamma, cfg.gae_lambda)
