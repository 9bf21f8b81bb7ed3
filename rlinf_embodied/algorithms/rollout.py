"""Shared rollout-tensor operations: chunk aggregation, truncation bootstrap, episode segmentation.

Shapes: T rollout steps (policy calls), N envs, C steps per action chunk.

Chunk-level treatment (the standard for action-chunking VLAs): a policy call executes C env steps
and is ONE decision step of a semi-MDP.
  * reward of the chunk = sum_k gamma**k * r_k over k = 0 .. the chunk's last done step (all C steps
    if none is done); rewards after an episode ended inside the chunk are not credited to it,
  * the chunk is done if any of its steps is done,
  * the next chunk's value is discounted by gamma**C (so with C = 1 everything is the usual MDP).
Per-step inputs (T, N) are treated as chunks of C = 1.
"""

from __future__ import annotations

from typing import Callable

import torch

# Sums a tensor of statistics over the ranks that each hold a slice of the batch (sum_over_ranks, or a test's)
SumOverRanks = Callable[[torch.Tensor], torch.Tensor]


def as_chunked(x: torch.Tensor) -> torch.Tensor:
    """(T, N) -> (T, N, 1); (T, N, C) unchanged."""
    if x.dim() == 2:
        return x.unsqueeze(-1)
    if x.dim() == 3:
        return x
    raise ValueError(f"expected a (T, N) or (T, N, chunk) rollout tensor, got shape {tuple(x.shape)}")


def last_done_index(dones: torch.Tensor) -> torch.Tensor:
    """(..., C) bool -> (...) index of the last done step in each chunk, -1 where none is done."""
    steps = torch.arange(dones.shape[-1], device=dones.device).expand_as(dones)
    return torch.where(dones, steps, torch.full_like(steps, -1)).max(dim=-1).values


def credited_steps(dones: torch.Tensor) -> torch.Tensor:
    """(..., C) dones -> (..., C) bool: the chunk's steps up to and including its last done step
    (every step if none is done). Steps after the episode ended inside the chunk are not part of it:
    they earn it no reward, and their actions can be left out of the loss by passing this mask,
    flattened to (B, C), as `loss_mask`."""
    chunk = dones.shape[-1]
    last_done = last_done_index(dones.bool())
    cutoff = torch.where(last_done >= 0, last_done, torch.full_like(last_done, chunk - 1))
    return torch.arange(chunk, device=dones.device) <= cutoff.unsqueeze(-1)


def aggregate_chunk_rewards(
    rewards: torch.Tensor, dones: torch.Tensor, gamma: float
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Per-step rewards/dones (T, N[, C]) -> chunk rewards (T, N), chunk dones (T, N), chunk discount.

    Chunk reward = sum_k gamma**k r_k up to and including the chunk's last done step; chunk done =
    any step done; chunk discount = gamma**C (what the next chunk's value is multiplied by).
    """
    rewards, dones = as_chunked(rewards), as_chunked(dones).bool()
    if rewards.shape != dones.shape:
        raise ValueError(f"rewards {tuple(rewards.shape)} and dones {tuple(dones.shape)} differ in shape")
    chunk = rewards.shape[-1]
    steps = torch.arange(chunk, device=rewards.device)
    credited = credited_steps(dones)  # (T, N, C)
    step_discounts = gamma ** steps.to(rewards.dtype)  # (C,)
    chunk_rewards = (rewards * step_discounts * credited).sum(dim=-1)
    return chunk_rewards, dones.any(dim=-1), gamma**chunk


def fold_truncation_bootstrap(
    rewards: torch.Tensor, dones: torch.Tensor, truncations: torch.Tensor, final_values: torch.Tensor, gamma: float
) -> torch.Tensor:
    """Bootstrap time-limit ends: r[last done step] += gamma * V(final obs) where truncated.

    rewards, dones: (T, N[, C]); truncations: (T, N[, C]) bool, True only where the episode was cut by
    a time limit and NOT terminated (a terminated episode has value 0 after its end); final_values:
    (T, N), the value of the observation the truncated episode ended in (before the auto-reset).
    Returns new rewards of the input's shape. (The rollout worker does the same before sending a
    Trajectory, so `compute_advantages(trajectory, cfg)` needs no final values.)
    """
    step_level = rewards.dim() == 2
    rewards, dones = as_chunked(rewards).clone(), as_chunked(dones).bool()
    truncated = as_chunked(truncations).bool().any(dim=-1)  # (T, N)
    index = last_done_index(dones).clamp(min=0)  # (T, N)
    bonus = gamma * final_values.to(rewards.dtype) * truncated
    rewards.scatter_add_(-1, index.unsqueeze(-1), bonus.unsqueeze(-1))
    return rewards.squeeze(-1) if step_level else rewards


def episode_index(dones: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Segment each env's rollout into episodes by its (T, N) chunk dones.

    Returns episode (T, N) long: how many episodes the env finished before step t (0 for the
    episode running at the start of the rollout), and finished (T, N) bool: whether step t's
    episode ends inside the rollout (False for the trailing, still running one).
    """
    dones = dones.long()
    ended_before = dones.cumsum(dim=0) - dones  # (T, N): exclusive cumulative sum
    total_ended = dones.sum(dim=0, keepdim=True)  # (1, N)
    return ended_before, ended_before < total_ended


def normalize(x: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / (std + eps) over all elements (where mask is True); std is unbiased (CleanRL)."""
    values = x if mask is None else x[mask.bool().expand_as(x)]
    if values.numel() < 2:
        return x - values.mean() if values.numel() else x
    return (x - values.mean()) / (values.std() + eps)


def sum_over_ranks(stats: torch.Tensor) -> torch.Tensor:
    """`stats` summed over every rank of the default torch.distributed process group (in a worker: its own group's
    ranks, e.g. the actor's); unchanged where none is initialised or it has one rank. Every rank must call it."""
    dist = torch.distributed
    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return stats
    on_gpu = dist.get_backend() == "nccl"  # NCCL reduces GPU tensors only
    reduced = stats.to(torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu"))
    dist.all_reduce(reduced)
    return reduced.to(stats.device)


def normalize_over_ranks(x: torch.Tensor, eps: float = 1e-8, sum_stats: SumOverRanks = sum_over_ranks) -> torch.Tensor:
    """normalize(x) with the mean and unbiased std of every rank's x together, where each rank holds a slice of the
    batch: one reduction of (count, sum, sum of squares) in float64. With one rank it is normalize(x)."""
    values = x.detach().reshape(-1).to(torch.float64)
    local = torch.stack([values.new_tensor(float(values.numel())), values.sum(), values.square().sum()])
    count, total, squares = sum_stats(local).tolist()
    if count < 1:
        return x
    mean = total / count
    if count < 2:
        return x - mean
    variance = max(squares - count * mean * mean, 0.0) / (count - 1)
    return (x - mean) / (variance**0.5 + eps)
