"""PPO clipped surrogate (Schulman et al. 2017), symmetric clip, per-sample loss mean."""

from __future__ import annotations

import torch

from ..config import AlgorithmConfig
from ..registry import register_loss
from .common import MinibatchTotals, clipped_policy_loss


@register_loss("ppo", clip_settings=("clip_ratio",))
def ppo_loss(
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
    """Ratio clipped to [1 - clip_ratio, 1 + clip_ratio]; value clipping with cfg.value_clip."""
    return clipped_policy_loss(
        new_log_probs=new_log_probs,
        old_log_probs=old_log_probs,
        advantages=advantages,
        entropy=entropy,
        new_values=new_values,
        old_values=old_values,
        returns=returns,
        cfg=cfg,
        clip_low=cfg.clip_ratio,
        clip_high=cfg.clip_ratio,
        aggregation="sample-mean",
        loss_mask=loss_mask,
        totals=totals,
    )
