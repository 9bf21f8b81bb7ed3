"""Pieces every policy loss shares: log-prob reduction, the clipped surrogate, value loss, aggregation.

Shapes: B samples (one per (step, env) of the rollout), C actions per chunk, A action dims.
"""
from __future__ import annotations

import torch

from ..config import LOGPROB_LEVELS, AlgorithmConfig
from ..rollout import normalize


def reduce_log_probs(log_probs: torch.Tensor, level: str) -> torch.Tensor:
    """(B, C, A) per-token log-probs -> "token": (B, C*A); "action": (B, C) summed over A;
    "chunk": (B,) summed over C and A. Entropies reduce the same way."""
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs must be (B, chunk, act_dim), got shape {tuple(log_probs.shape)}")
    if level == "token":
        return log_probs.reshape(log_probs.shape[0], -1)
    if level == "action":
        return log_probs.sum(dim=-1)
    if level == "chunk":
        return log_probs.sum(dim=(-2, -1))
    raise ValueError(f"unknown log-prob level {level!r}; valid: {list(LOGPROB_LEVELS)}")


def broadcast_per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) per-sample values (advantages, masks) -> broadcastable against `like` (B, ...)."""
    return values.reshape(values.shape[0], *([1] * (like.dim() - 1)))


def clipped_surrogate(ratio: torch.Tensor, advantages: torch.Tensor, clip_low: float,
                      clip_high: float) -> torch.Tensor:
    """Per-element PPO loss max(-A * ratio, -A * clip(ratio, 1 - clip_low, 1 + clip_high))."""
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    return torch.maximum(-advantages * ratio, -advantages * clipped)


def aggregate(losses: torch.Tensor, sample_mask: torch.Tensor | None, mode: str) -> torch.Tensor:
    """(B, ...) per-element losses -> scalar.

    "token-mean": mean over every element of every kept sample (DAPO's token-level loss: each token
    weighs the same whatever sample it belongs to). "sample-mean": mean over each sample's elements,
    then over kept samples (PPO's usual per-sample loss). Without a mask, and with the fixed number
    of elements per sample that actions have, the two agree.
    """
    if sample_mask is None:
        sample_mask = torch.ones(losses.shape[0], dtype=torch.bool, device=losses.device)
    weights = broadcast_per_sample(sample_mask.to(losses.dtype), losses).expand_as(losses)
    if mode == "token-mean":
        return (losses * weights).sum() / weights.sum().clamp(min=1)
    if mode == "sample-mean":
        per_sample = losses.reshape(losses.shape[0], -1).mean(dim=1)
        sample_weights = sample_mask.to(losses.dtype)
        return (per_sample * sample_weights).sum() / sample_weights.sum().clamp(min=1)
    raise ValueError(f"unknown loss aggregation {mode!r}; valid: ['sample-mean', 'token-mean']")


def value_loss(new_values: torch.Tensor | None, old_values: torch.Tensor | None, returns: torch.Tensor,
               value_clip: float | None, sample_mask: torch.Tensor | None = None) -> torch.Tensor:
    """0.5 * (V - R)^2, or with value_clip the pessimistic max against V clipped to old V +- value_clip.
    0 when the policy has no critic (new_values None)."""
    if new_values is None:
        return returns.new_zeros(())
    new_values = new_values.reshape(returns.shape)
    squared = (new_values - returns) ** 2
    if value_clip is not None:
        clipped = old_values.reshape(returns.shape) + torch.clamp(new_values - old_values.reshape(returns.shape),
                                                                  -value_clip, value_clip)
        squared = torch.maximum(squared, (clipped - returns) ** 2)
    return 0.5 * aggregate(squared, sample_mask, "sample-mean")


def clipped_policy_loss(*, new_log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor,
                        entropy: torch.Tensor | None, new_values: torch.Tensor | None,
                        old_values: torch.Tensor | None, returns: torch.Tensor, cfg: AlgorithmConfig,
                        clip_low: float, clip_high: float, aggregation: str,
                        loss_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped-ratio policy loss + vf_coef * value loss - entropy_coef * entropy.

    new/old_log_probs (B, C, A); advantages, returns, old_values (B,); new_values (B,) or None;
    entropy broadcastable to (B, C, A) (per token) or None; loss_mask (B,) bool: samples to train
    on (None = all). Log-probs and entropies are reduced at cfg.logprob_level, and advantages
    broadcast over what remains. Returns the loss and detached scalar metrics.
    """
    new_lp = reduce_log_probs(new_log_probs, cfg.logprob_level)  # (B, C*A) | (B, C) | (B,)
    old_lp = reduce_log_probs(old_log_probs, cfg.logprob_level).to(new_lp.dtype)
    if cfg.normalize_advantages and cfg.adv_type == "gae":
        advantages = normalize(advantages, loss_mask)
    advantages = broadcast_per_sample(advantages.to(new_lp.dtype), new_lp)

    log_ratio = new_lp - old_lp
    ratio = torch.exp(log_ratio)
    policy_loss = aggregate(clipped_surrogate(ratio, advantages, clip_low, clip_high), loss_mask, aggregation)
    if entropy is not None:
        token_entropy = torch.broadcast_to(entropy, new_log_probs.shape)
        entropy_term = aggregate(reduce_log_probs(token_entropy, cfg.logprob_level), loss_mask, aggregation)
    else:
        entropy_term = new_lp.new_zeros(())
    v_loss = value_loss(new_values, old_values, returns, cfg.value_clip, loss_mask)
    loss = policy_loss + cfg.vf_coef * v_loss - cfg.entropy_coef * entropy_term

    with torch.no_grad():
        kept = torch.ones_like(ratio, dtype=torch.bool) if loss_mask is None else \
            broadcast_per_sample(loss_mask.bool(), ratio).expand_as(ratio)
        kept_ratio, kept_log_ratio = ratio[kept], log_ratio[kept]
        clipped = (kept_ratio < 1.0 - clip_low) | (kept_ratio > 1.0 + clip_high)
        metrics = {
            "policy_loss": policy_loss.detach(),
            "value_loss": v_loss.detach(),
            "entropy": entropy_term.detach(),
            "approx_kl": ((kept_ratio - 1.0) - kept_log_ratio).mean(),  # k3 estimator, >= 0
            "clip_fraction": clipped.to(ratio.dtype).mean(),
            "ratio_mean": kept_ratio.mean(),
            "ratio_max": kept_ratio.max() if kept_ratio.numel() else ratio.new_zeros(()),
        }
    return loss, metrics
