"""REINFORCE++ (Hu 2025) advantages: discounted returns, normalised over the whole batch.

G_t = r_t + gamma**C * G_{t+1} * (1 - done_t), per chunk step (see `rollout.py` for chunks), with no
critic: episodes still running at the rollout end are not bootstrapped (G stops at the last step).
The advantage is G normalised across every (step, env) of the batch: (G - mean) / (std + eps) (the
paper's global batch normalisation, in place of a critic or a per-prompt baseline). Returns are G.
Each actor rank holds a slice of the batch (its own envs), so the mean and std are those of every rank's
returns together (an all-reduce of count, sum and sum of squares, where torch.distributed is initialised):
a rank whose envs all failed still gets negative advantages.
"""

from __future__ import annotations

import torch

from ..config import AlgorithmConfig
from ..registry import register_advantage
from ..rollout import SumOverRanks, aggregate_chunk_rewards, normalize_over_ranks, sum_over_ranks


def discounted_returns(rewards: torch.Tensor, dones: torch.Tensor, gamma: float) -> torch.Tensor:
    """rewards, dones (T, N) or (T, N, chunk) -> returns (T, N), reset at every done."""
    chunk_rewards, chunk_dones, discount = aggregate_chunk_rewards(rewards, dones, gamma)
    not_done = 1.0 - chunk_dones.to(chunk_rewards.dtype)
    returns = torch.zeros_like(chunk_rewards)
    running = torch.zeros_like(chunk_rewards[0])
    for t in reversed(range(chunk_rewards.shape[0])):
        running = chunk_rewards[t] + discount * not_done[t] * running
        returns[t] = running
    return returns


def compute_reinforce_pp_advantages(
    rewards: torch.Tensor,
    dones: torch.Tensor,
    gamma: float,
    eps: float = 1e-8,
    sum_stats: SumOverRanks = sum_over_ranks,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns) (T, N) of this rank's envs, normalised with the whole batch's statistics
    (`sum_stats` sums them over the ranks)."""
    returns = discounted_returns(rewards, dones, gamma)  # (T, N)
    return normalize_over_ranks(returns, eps=eps, sum_stats=sum_stats), returns


@register_advantage("reinforce_pp", normalized=True, settings=("gamma",))
def reinforce_pp_advantage(
    *,
    rewards: torch.Tensor,
    dones: torch.Tensor,
    values: torch.Tensor | None,
    cfg: AlgorithmConfig,
    env_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    return compute_reinforce_pp_advantages(rewards, dones, cfg.gamma)
