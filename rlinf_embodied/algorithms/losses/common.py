"""Pieces every policy loss shares: log-prob reduction, the clipped surrogate, value loss, aggregation.

Shapes: B samples (one per (step, env) of the rollout), C actions per chunk, A action dims.
`loss_mask` is (B,) (which samples to train on), (B, C) (which actions of each chunk, e.g.
`rollout.credited_steps(dones)` to skip actions executed after the episode ended) or (B, C, A).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import LOGPROB_LEVELS, AlgorithmConfig
from ..rollout import normalize

# metrics of micro-batches that combine by max; the rest are partial sums (see MinibatchTotals)
MAX_METRICS = ("ratio_max", "ratio_max_abs_dev")


@dataclass(frozen=True)
class MinibatchTotals:
    """A whole minibatch's counts and advantage statistics, for a loss computed one micro-batch at a time
    (gradient accumulation, algorithm.micro_batch_size). Every mean of a micro-batch's loss and metrics then
    divides by the minibatch's count instead of its own, so the micro-batches' losses, gradients and metrics
    (except MAX_METRICS) sum to the minibatch's exactly, whatever the masks; advantages are normalised with
    the minibatch's mean and std, not the micro-batch's."""

    kept_samples: torch.Tensor  # () samples keeping any element
    kept_elements: torch.Tensor  # () elements kept at cfg.logprob_level
    advantage_mean: torch.Tensor  # () over the kept samples (0 where nothing is normalised)
    advantage_std: torch.Tensor | None  # () unbiased; None where fewer than 2 samples are kept

    def normalize(self, advantages: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
        """`rollout.normalize` with the minibatch's statistics."""
        centered = advantages - self.advantage_mean
        return centered if self.advantage_std is None else centered / (self.advantage_std + eps)

    def denominator(self, mode: str) -> torch.Tensor:
        """What `aggregate(..., mode)` divides by over the whole minibatch."""
        return self.kept_elements if mode == "token-mean" else self.kept_samples


def minibatch_totals(
    old_log_probs: torch.Tensor, advantages: torch.Tensor, loss_mask: torch.Tensor | None, cfg: AlgorithmConfig
) -> MinibatchTotals:
    """The MinibatchTotals of a minibatch: old_log_probs (B, C, A) (only its shape is read), advantages (B,)."""
    token_mask = token_mask_of(loss_mask, old_log_probs)  # (B, C, A)
    sample_mask = token_mask.reshape(token_mask.shape[0], -1).any(dim=1)  # (B,)
    kept = advantages[sample_mask].float()
    return MinibatchTotals(
        kept_samples=sample_mask.sum().float(),
        kept_elements=reduce_mask(token_mask, cfg.logprob_level).sum().float(),
        advantage_mean=kept.mean() if kept.numel() else kept.new_zeros(()),
        advantage_std=kept.std() if kept.numel() >= 2 else None,
    )


def accumulate_metrics(total: dict[str, torch.Tensor], micro: dict[str, torch.Tensor]) -> None:
    """Add one micro-batch's metrics (computed with MinibatchTotals) into `total`: sums, maxima for MAX_METRICS."""
    for key, value in micro.items():
        if key not in total:
            total[key] = value
        else:
            total[key] = torch.maximum(total[key], value) if key in MAX_METRICS else total[key] + value


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


def reduce_mask(token_mask: torch.Tensor, level: str) -> torch.Tensor:
    """(B, C, A) bool -> the mask of `reduce_log_probs(..., level)`'s output: kept if any token is."""
    if level == "token":
        return token_mask.reshape(token_mask.shape[0], -1)
    if level == "action":
        return token_mask.any(dim=-1)
    return token_mask.reshape(token_mask.shape[0], -1).any(dim=-1)


def token_mask_of(loss_mask: torch.Tensor | None, log_probs: torch.Tensor) -> torch.Tensor:
    """(B,), (B, C) or (B, C, A) loss mask (None = all) -> (B, C, A) bool like log_probs."""
    if loss_mask is None:
        return torch.ones_like(log_probs, dtype=torch.bool)
    if loss_mask.dim() > 3 or loss_mask.shape != log_probs.shape[: loss_mask.dim()]:
        raise ValueError(
            f"loss_mask {tuple(loss_mask.shape)} must be a prefix of log_probs' "
            f"(B, chunk, act_dim) = {tuple(log_probs.shape)}"
        )
    mask = loss_mask.bool().reshape(*loss_mask.shape, *([1] * (3 - loss_mask.dim())))
    return mask.expand_as(log_probs)


def broadcast_per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) per-sample values (advantages) -> broadcastable against `like` (B, ...)."""
    return values.reshape(values.shape[0], *([1] * (like.dim() - 1)))


def clipped_surrogate(ratio: torch.Tensor, advantages: torch.Tensor, clip_low: float, clip_high: float) -> torch.Tensor:
    """Per-element PPO loss max(-A * ratio, -A * clip(ratio, 1 - clip_low, 1 + clip_high))."""
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    return torch.maximum(-advantages * ratio, -advantages * clipped)


def aggregate(
    losses: torch.Tensor, mask: torch.Tensor | None, mode: str, totals: MinibatchTotals | None = None
) -> torch.Tensor:
    """(B, ...) per-element losses and a same-shape bool mask (None = all) -> scalar.

    "token-mean": mean over every kept element of the batch (DAPO's token-level loss: every token
    weighs the same, however many its sample keeps). "sample-mean": mean over each sample's kept
    elements, then over samples keeping any (PPO's per-sample loss). They differ only when samples
    keep different numbers of elements. With `totals` (a micro-batch of a minibatch) the mean divides by the
    minibatch's count.
    """
    if mask is None:
        mask = torch.ones_like(losses, dtype=torch.bool)
    weights = mask.to(losses.dtype)
    if mode == "token-mean":
        count = weights.sum() if totals is None else totals.denominator(mode)
        return (losses * weights).sum() / count.clamp(min=1)
    if mode == "sample-mean":
        per_sample_sum = (losses * weights).reshape(losses.shape[0], -1).sum(dim=1)
        per_sample_count = weights.reshape(losses.shape[0], -1).sum(dim=1)
        has_any = (per_sample_count > 0).to(losses.dtype)
        per_sample = per_sample_sum / per_sample_count.clamp(min=1)
        count = has_any.sum() if totals is None else totals.denominator(mode)
        return (per_sample * has_any).sum() / count.clamp(min=1)
    raise ValueError(f"unknown loss aggregation {mode!r}; valid: ['sample-mean', 'token-mean']")


def value_loss(
    new_values: torch.Tensor | None,
    old_values: torch.Tensor | None,
    returns: torch.Tensor,
    value_clip: float | None,
    sample_mask: torch.Tensor | None = None,
    totals: MinibatchTotals | None = None,
) -> torch.Tensor:
    """0.5 * mean (V - R)^2; with value_clip, the pessimistic max with V clipped to old V +- value_clip
    (CleanRL's clip_vloss). 0 when the policy has no critic (new_values None). All (B,)."""
    if new_values is None:
        return returns.new_zeros(())
    new_values = new_values.reshape(returns.shape)
    squared = (new_values - returns) ** 2
    if value_clip is not None:
        old_values = old_values.reshape(returns.shape).to(new_values.dtype)
        clipped = old_values + torch.clamp(new_values - old_values, -value_clip, value_clip)
        squared = torch.maximum(squared, (clipped - returns) ** 2)
    return 0.5 * aggregate(squared, sample_mask, "sample-mean", totals)


def explained_variance(values: torch.Tensor, returns: torch.Tensor) -> float | None:
    """1 - Var(R - V) / Var(R) over a rollout's samples (B,): 1 = the critic predicts the returns, 0 = no better
    than their mean, < 0 = worse (CleanRL's losses/explained_variance). None where the returns do not vary."""
    returns = returns.reshape(-1).double()
    variance = torch.var(returns, unbiased=False)
    if returns.numel() < 2 or float(variance) == 0.0:
        return None
    residual = returns - values.reshape(-1).to(returns.dtype)
    return float(1.0 - torch.var(residual, unbiased=False) / variance)


def clipped_policy_loss(
    *,
    new_log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    entropy: torch.Tensor | None,
    new_values: torch.Tensor | None,
    old_values: torch.Tensor | None,
    returns: torch.Tensor,
    cfg: AlgorithmConfig,
    clip_low: float,
    clip_high: float,
    aggregation: str,
    loss_mask: torch.Tensor | None = None,
    totals: MinibatchTotals | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped-ratio policy loss + vf_coef * value loss (estimators with a critic) - entropy_coef * entropy.

    new/old_log_probs (B, C, A); advantages, returns, old_values (B,); new_values (B,) or None;
    entropy broadcastable to (B, C, A) (per token) or None; loss_mask see the module docstring.
    Log-probs (masked tokens left out of the sums) and entropies are reduced at cfg.logprob_level,
    advantages broadcast over what remains. Returns the loss and detached scalar metrics; with `totals` (one
    micro-batch of a minibatch) both are the micro-batch's share of the minibatch's (see MinibatchTotals).
    """
    token_mask = token_mask_of(loss_mask, new_log_probs)  # (B, C, A)
    mask = reduce_mask(token_mask, cfg.logprob_level)  # like new_lp
    sample_mask = token_mask.reshape(token_mask.shape[0], -1).any(dim=1)  # (B,)
    zero = new_log_probs.new_zeros(())
    new_lp = reduce_log_probs(torch.where(token_mask, new_log_probs, zero), cfg.logprob_level)
    old_lp = reduce_log_probs(torch.where(token_mask, old_log_probs.to(new_log_probs.dtype), zero), cfg.logprob_level)
    if cfg.normalize_in_loss:
        advantages = normalize(advantages, sample_mask) if totals is None else totals.normalize(advantages)
    advantages = broadcast_per_sample(advantages.to(new_lp.dtype), new_lp)

    log_ratio = new_lp - old_lp
    ratio = torch.exp(log_ratio)
    policy_loss = aggregate(clipped_surrogate(ratio, advantages, clip_low, clip_high), mask, aggregation, totals)
    entropy_term = zero
    if entropy is not None:
        token_entropy = torch.where(token_mask, torch.broadcast_to(entropy, new_log_probs.shape), zero)
        entropy_term = aggregate(reduce_log_probs(token_entropy, cfg.logprob_level), mask, aggregation, totals)
    loss = policy_loss - cfg.entropy_coef * entropy_term
    metrics = ratio_metrics(ratio, log_ratio, mask, clip_low, clip_high, totals) | {
        "policy_loss": policy_loss.detach(),
        "entropy": entropy_term.detach(),
    }
    if cfg.uses_critic:  # a critic-free estimator (GRPO) has no critic to train and no value_loss to log
        v_loss = value_loss(new_values, old_values, returns, cfg.value_clip, sample_mask, totals)
        loss = loss + cfg.vf_coef * v_loss
        metrics["value_loss"] = v_loss.detach()
    return loss, metrics


def reference_kl(
    new_log_probs: torch.Tensor,
    ref_log_probs: torch.Tensor,
    loss_mask: torch.Tensor | None,
    level: str,
    totals: MinibatchTotals | None = None,
) -> torch.Tensor:
    """KL(new || reference) estimated on the batch's actions (drawn by the rollout policy, as in verl's
    KL loss): mean over kept elements of exp(r) - 1 - r, r = ref_lp - new_lp at `level`, clipped to [-20, 20].
    new/ref_log_probs (B, C, A); gradients flow through new_log_probs only; `totals`: see MinibatchTotals."""
    token_mask = token_mask_of(loss_mask, new_log_probs)  # (B, C, A)
    mask = reduce_mask(token_mask, level)
    zero = new_log_probs.new_zeros(())
    new_lp = reduce_log_probs(torch.where(token_mask, new_log_probs, zero), level)
    ref_lp = reduce_log_probs(torch.where(token_mask, ref_log_probs.detach().to(new_lp.dtype), zero), level)
    log_ratio = torch.clamp(ref_lp - new_lp, -20.0, 20.0)
    kl = torch.exp(log_ratio) - 1.0 - log_ratio
    if totals is not None:
        return kl[mask].sum() / totals.kept_elements.clamp(min=1)
    return kl[mask].mean() if bool(mask.any()) else zero


@torch.no_grad()
def ratio_metrics(
    ratio: torch.Tensor,
    log_ratio: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float,
    clip_high: float,
    totals: MinibatchTotals | None = None,
) -> dict[str, torch.Tensor]:
    kept_ratio, kept_log_ratio = ratio[mask], log_ratio[mask]
    empty = kept_ratio.numel() == 0
    if empty:
        kept_ratio, kept_log_ratio = ratio.new_ones(1), ratio.new_zeros(1)
    clipped = (kept_ratio < 1.0 - clip_low) | (kept_ratio > 1.0 + clip_high)

    def mean(values: torch.Tensor) -> torch.Tensor:  # over the minibatch's kept elements where micro-batched
        if totals is None:
            return values.mean()
        return (values.new_zeros(()) if empty else values.sum()) / totals.kept_elements.clamp(min=1)

    return {
        "approx_kl": mean((kept_ratio - 1.0) - kept_log_ratio),  # k3 estimator of KL(old || new)
        "clip_fraction": mean(clipped.to(ratio.dtype)),
        "ratio_mean": mean(kept_ratio),
        "ratio_max": kept_ratio.max(),
        "ratio_max_abs_dev": (kept_ratio - 1.0).abs().max(),  # max |ratio - 1| over the kept elements
    }
