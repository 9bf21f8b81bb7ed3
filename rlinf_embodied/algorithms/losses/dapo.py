"""DAPO (Yu et al. 2025): decoupled clip ("clip-higher") and token-level loss aggregation.

The ratio is clipped to [1 - clip_ratio_low, 1 + clip_ratio_high] with clip_ratio_high > clip_ratio_low,
so low-probability actions with positive advantage can grow further before the clip stops them
(keeps exploration / entropy up). The loss is the mean over all tokens of the kept samples.
Dynamic sampling (algorithm.dynamic_sampling: drop GRPO groups whose outcomes are all equal, roll out
again with new seeds until the batch is full or algorithm.max_sampling_rounds is reached) runs in the
training loop: EmbodiedRunner rolls out, ActorWorker.collect_groups keeps the informative groups
(`advantages.grpo.dynamic_sampling_mask`), rollout/kept_groups and rollout/dropped_groups count them.
"""

from __future__ import annotations

import torch

from ..config import AlgorithmConfig
from ..registry import register_loss
from .common import MinibatchTotals, clipped_policy_loss


@register_loss("dapo", clip_settings=("clip_ratio_low", "clip_ratio_high"))
def dapo_loss(
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
    return clipped_policy_loss(
        new_log_probs=new_log_probs,
        old_log_probs=old_log_probs,
        advantages=advantages,
        entropy=entropy,
        new_values=new_values,
        old_values=old_values,
        returns=returns,
        cfg=cfg,
        clip_low=cfg.clip_ratio_low,
        clip_high=cfg.clip_ratio_high,
        aggregation="token-mean",
        loss_mask=loss_mask,
        totals=totals,
    )
