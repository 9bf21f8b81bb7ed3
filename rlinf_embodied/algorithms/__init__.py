"""RL algorithms: advantage estimators and policy losses, each in a registry.

    advantages, returns = compute_advantages(trajectory, cfg)   # (T, N) each, by cfg.adv_type
    loss, metrics = policy_loss(new_log_probs=..., old_log_probs=..., advantages=..., entropy=...,
                                new_values=..., old_values=..., returns=..., cfg=cfg)  # by cfg.loss_type

Adding an estimator or a loss: one file under advantages/ or losses/ with a `@register_advantage`
/ `@register_loss` line, imported in that subpackage's __init__.
"""

from __future__ import annotations

from typing import Any

import torch

from . import advantages as _advantages  # noqa: F401  (registers "gae", "grpo", "reinforce_pp")
from . import losses as _losses  # noqa: F401  (registers "ppo", "dapo")
from .advantages import (
    compute_gae,
    compute_grpo_advantages,
    compute_reinforce_pp_advantages,
    discounted_returns,
    dynamic_sampling_mask,
    filter_groups,
)
from .checks import NonFiniteError, check_finite
from .config import AlgorithmConfig, adapted_lr_scale, annealed_lr, resolve_learning_rates
from .losses import (
    MinibatchTotals,
    accumulate_metrics,
    aggregate,
    clipped_surrogate,
    explained_variance,
    minibatch_totals,
    reduce_log_probs,
    reference_kl,
    value_loss,
)
from .registry import advantage_names, get_advantage, get_loss, loss_names, register_advantage, register_loss
from .rollout import aggregate_chunk_rewards, credited_steps, fold_truncation_bootstrap, normalize


def compute_advantages(trajectory: Any, cfg: AlgorithmConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns (T, N) of a rollout with cfg.adv_type.

    `trajectory` needs rewards (T, N[, chunk]) with truncated steps already bootstrapped
    (r += gamma * V(final obs), as the rollout worker sends them), dones (T, N[, chunk]) = terminated
    or truncated, values (T + 1, N), and env_ids (N,) or None (GRPO groups by position then).
    """
    estimator = get_advantage(cfg.adv_type)
    return estimator(
        rewards=trajectory.rewards,
        dones=trajectory.dones,
        values=trajectory.values,
        cfg=cfg,
        env_ids=getattr(trajectory, "env_ids", None),
    )


def policy_loss(
    *,
    new_log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    entropy: torch.Tensor | None,
    new_values: torch.Tensor | None,
    old_values: torch.Tensor | None,
    returns: torch.Tensor,
    cfg: AlgorithmConfig,
    loss_mask: torch.Tensor | None = None,
    totals: MinibatchTotals | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The cfg.loss_type loss of a minibatch: log-probs (B, chunk, act_dim), the rest (B,). `totals`: the
    batch is one micro-batch of a minibatch with these totals (gradient accumulation; see MinibatchTotals).

    Returns (loss, metrics) with metrics policy_loss, value_loss, entropy, approx_kl, clip_fraction,
    ratio_mean, ratio_max (detached scalars).
    """
    return get_loss(cfg.loss_type)(
        new_log_probs=new_log_probs,
        old_log_probs=old_log_probs,
        advantages=advantages,
        entropy=entropy,
        new_values=new_values,
        old_values=old_values,
        returns=returns,
        cfg=cfg,
        loss_mask=loss_mask,
        totals=totals,
    )


__all__ = [
    "AlgorithmConfig",
    "MinibatchTotals",
    "accumulate_metrics",
    "minibatch_totals",
    "NonFiniteError",
    "adapted_lr_scale",
    "annealed_lr",
    "check_finite",
    "resolve_learning_rates",
    "compute_advantages",
    "policy_loss",
    "reference_kl",
    "register_advantage",
    "get_advantage",
    "advantage_names",
    "register_loss",
    "get_loss",
    "loss_names",
    "compute_gae",
    "compute_grpo_advantages",
    "compute_reinforce_pp_advantages",
    "discounted_returns",
    "dynamic_sampling_mask",
    "filter_groups",
    "reduce_log_probs",
    "aggregate",
    "clipped_surrogate",
    "value_loss",
    "explained_variance",
    "aggregate_chunk_rewards",
    "credited_steps",
    "fold_truncation_bootstrap",
    "normalize",
]
