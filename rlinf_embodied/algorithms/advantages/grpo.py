"""GRPO (Shao et al. 2024) outcome advantages for embodied rollouts.

Exactly what is computed:
  1. Groups. Envs are grouped by `env_id // group_size` (env ids are the global env indices the
     env workers reset with a shared seed per group); without env ids, by position: envs
     [0, group_size) form group 0, and so on.
  2. Episodes. Each env's rollout is cut into episodes at its (chunk) dones. An episode is
     *finished* if its done lies inside the rollout; the trailing, still running one is not.
  3. Outcome of an episode = the undiscounted sum of its rewards (for sparse 0/1 rewards: success).
     For chunked rewards (T, N, C), rewards after an episode's done inside its last chunk are not
     counted.
  4. Within a group, the outcomes of ALL finished episodes of ALL its envs (an env may finish
     several in one rollout) give mean and std (unbiased, like TRL / verl). Each finished episode's
     advantage is (outcome - mean) / (std + eps), copied to every step of that episode.
  5. Steps of unfinished episodes, of groups with fewer than 2 finished episodes and of groups
     whose outcomes are all equal get advantage exactly 0: no policy gradient from them.
Returns are the episode outcome broadcast to its steps (0 where unfinished); GRPO trains no critic.
"""

from __future__ import annotations

import torch

from ..config import AlgorithmConfig
from ..registry import register_advantage
from ..rollout import aggregate_chunk_rewards, episode_index


class EpisodeOutcomes:
    """Outcomes of every episode of a rollout, flattened to one id per (env, episode of that env)."""

    def __init__(
        self, rewards: torch.Tensor, dones: torch.Tensor, group_size: int, env_ids: torch.Tensor | None = None
    ):
        step_rewards, step_dones, _ = aggregate_chunk_rewards(rewards, dones, gamma=1.0)  # (T, N) x2
        num_steps, num_envs = step_rewards.shape
        self.episode, self.finished = episode_index(step_dones)  # (T, N) x2
        env = torch.arange(num_envs, device=step_rewards.device).expand(num_steps, num_envs)
        self.ids = env * (num_steps + 1) + self.episode  # (T, N) unique per (env, episode)
        num_ids = num_envs * (num_steps + 1)
        self.outcome = torch.zeros(num_ids, dtype=step_rewards.dtype, device=step_rewards.device)
        self.outcome.index_add_(0, self.ids.reshape(-1), step_rewards.reshape(-1))
        self.is_finished = torch.zeros(num_ids, dtype=torch.bool, device=step_rewards.device)
        self.is_finished[self.ids[self.finished]] = True
        self.group = group_ids(num_envs, group_size, env_ids).to(step_rewards.device).repeat_interleave(num_steps + 1)


def group_ids(num_envs: int, group_size: int, env_ids: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) group index of each env: env_id // group_size (position // group_size without ids)."""
    if env_ids is None:
        if num_envs % group_size:
            raise ValueError(f"{num_envs} envs do not split into GRPO groups of {group_size}")
        env_ids = torch.arange(num_envs)
    groups = env_ids.long() // group_size
    return torch.unique(groups, return_inverse=True)[1]  # dense 0 .. num_groups - 1


def group_statistics(values: torch.Tensor, group: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per-group count, mean, unbiased std and (max - min) of `values` where `valid` (all (M,))."""
    num_groups = int(group.max()) + 1 if group.numel() else 0
    weights = valid.to(values.dtype)
    count = values.new_zeros(num_groups).index_add(0, group, weights)
    mean = values.new_zeros(num_groups).index_add(0, group, values * weights) / count.clamp(min=1)
    squared = (values - mean[group]) ** 2 * weights
    var = values.new_zeros(num_groups).index_add(0, group, squared) / (count - 1).clamp(min=1)
    inf = float("inf")
    high = values.new_full((num_groups,), -inf).scatter_reduce(
        0, group, torch.where(valid, values, values.new_tensor(-inf)), "amax"
    )
    low = values.new_full((num_groups,), inf).scatter_reduce(
        0, group, torch.where(valid, values, values.new_tensor(inf)), "amin"
    )
    return count, mean, var.sqrt(), high - low


def compute_grpo_advantages(
    rewards: torch.Tensor, dones: torch.Tensor, group_size: int, eps: float = 1e-6, env_ids: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """rewards, dones (T, N) or (T, N, chunk) -> advantages, returns (T, N). See the module docstring."""
    episodes = EpisodeOutcomes(rewards, dones, group_size, env_ids)
    count, mean, std, spread = group_statistics(episodes.outcome, episodes.group, episodes.is_finished)
    informative = (count >= 2) & (spread > 0)  # (num_groups,)
    scored = episodes.is_finished & informative[episodes.group]  # per episode id
    advantage = torch.where(
        scored,
        (episodes.outcome - mean[episodes.group]) / (std[episodes.group] + eps),
        torch.zeros_like(episodes.outcome),
    )
    returns = torch.where(episodes.is_finished, episodes.outcome, torch.zeros_like(episodes.outcome))
    return advantage[episodes.ids], returns[episodes.ids]


def dynamic_sampling_mask(
    rewards: torch.Tensor, dones: torch.Tensor, group_size: int, env_ids: torch.Tensor | None = None, atol: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """DAPO dynamic sampling on a rollout: keep the envs of groups whose finished-episode outcomes
    are not all equal (within atol). Groups where every episode succeeded or every one failed carry
    no GRPO signal (all advantages 0) and only dilute the batch.

    Returns keep_mask (N,) bool and keep_indices (K,) long, e.g. for `trajectory.select_envs`.
    """
    episodes = EpisodeOutcomes(rewards, dones, group_size, env_ids)
    count, _, _, spread = group_statistics(episodes.outcome, episodes.group, episodes.is_finished)
    informative = (count >= 2) & (spread > atol)  # (num_groups,)
    env_group = group_ids(rewards.shape[1], group_size, env_ids).to(rewards.device)
    keep = informative[env_group]
    return keep, keep.nonzero().squeeze(-1)


def filter_groups(outcomes: torch.Tensor, group_size: int, atol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """DAPO dynamic sampling with one outcome per env (N,), groups of `group_size` consecutive envs:
    keep_mask (N,) bool (False for every env of an all-equal group) and keep_indices (K,) long."""
    if outcomes.dim() != 1 or outcomes.numel() % group_size:
        raise ValueError(
            f"outcomes must be (N,) with N divisible by group_size={group_size}, got shape {tuple(outcomes.shape)}"
        )
    grouped = outcomes.reshape(-1, group_size)  # (num_groups, group_size)
    informative = (grouped.max(dim=1).values - grouped.min(dim=1).values) > atol
    keep = informative.repeat_interleave(group_size)
    return keep, keep.nonzero().squeeze(-1)


@register_advantage("grpo", grouped=True, normalized=True, settings=("group_size", "grpo_eps"))
def grpo_advantage(
    *,
    rewards: torch.Tensor,
    dones: torch.Tensor,
    values: torch.Tensor | None,
    cfg: AlgorithmConfig,
    env_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    return compute_grpo_advantages(rewards, dones, cfg.group_size, cfg.grpo_eps, env_ids)
