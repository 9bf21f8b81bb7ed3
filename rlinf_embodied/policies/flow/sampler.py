"""Sampling a denoising chain and recomputing its log-probability, shared by pi0 and GR00T.

A policy supplies `step_fn(rows, x, k) -> StepDistribution`: the ODE mean, the stochastic mean and
the std of denoising step k evaluated at `x` for the samples `rows` (None = the whole batch). The
sampler never sees the network, so `act` (sampling, no grad) and `evaluate` (recomputing, with grad)
run the identical transition formula on the identical stored chain, which is what makes their
log-probs agree.

Padded action dimensions (the model predicts `max_action_dim`, the env uses the first `action_dim`)
follow the ODE mean without noise: they are a deterministic function of the stochastic path, so the
path density is exactly the product over the used dimensions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .sde import gaussian_entropy, gaussian_log_prob


@dataclass
class StepDistribution:
    ode_mean: torch.Tensor  # (n, chunk, A_pad) deterministic Euler step
    sde_mean: torch.Tensor  # (n, chunk, A_pad) mean of the stochastic transition
    std: torch.Tensor  # broadcastable to sde_mean


StepFn = Callable[[torch.Tensor | None, torch.Tensor, int], StepDistribution]


@dataclass
class ChainSample:
    chain: torch.Tensor  # (N, K + 1, chunk, A_pad) float32: x at tau_0 = 1 ... tau_K = 0
    log_probs: torch.Tensor  # (N, chunk, action_dim), summed over stochastic steps
    entropy: torch.Tensor  # (N, chunk, action_dim), summed over stochastic steps


def transition_log_prob(x_next: torch.Tensor, dist: StepDistribution, action_dim: int) -> torch.Tensor:
    """(n, chunk, action_dim) log-density of x_next under the stochastic transition (used dims only)."""
    std = dist.std.expand_as(dist.sde_mean)[..., :action_dim]
    return gaussian_log_prob(x_next[..., :action_dim], dist.sde_mean[..., :action_dim], std)


def transition_entropy(dist: StepDistribution, action_dim: int) -> torch.Tensor:
    return gaussian_entropy(dist.std.expand_as(dist.sde_mean)[..., :action_dim])


def sample_chain(
    step_fn: StepFn,
    x_init: torch.Tensor,
    stochastic: torch.Tensor,
    action_dim: int,
    any_noisy: tuple[bool, ...] | None = None,
) -> ChainSample:
    """Integrate from noise `x_init` (N, chunk, A_pad); stochastic (N, K) bool picks noisy steps.
    `any_noisy` (K,): whether any sample is noisy at step k, when the caller knows it (a CUDA graph
    capture must not sync with the host); by default read from `stochastic`."""
    batch, num_steps = stochastic.shape
    x = x_init.float()
    chain = [x]
    per_step = x.new_zeros(batch, num_steps, x.shape[1], action_dim)
    entropy = x.new_zeros(batch, x.shape[1], action_dim)
    if any_noisy is None:
        any_noisy = tuple(stochastic.any(dim=0).tolist())  # one host sync for the chain, not two per step
    for k in range(num_steps):
        dist = step_fn(None, x, k)
        noisy = stochastic[:, k].view(-1, 1, 1)
        used = torch.where(noisy, dist.sde_mean, dist.ode_mean)[..., :action_dim]
        if any_noisy[k]:
            std = dist.std.expand_as(dist.sde_mean)[..., :action_dim]
            used = used + torch.randn_like(std) * std * noisy
        x = torch.cat([used, dist.ode_mean[..., action_dim:]], dim=-1)
        if any_noisy[k]:
            per_step[:, k] = torch.where(noisy, transition_log_prob(x, dist, action_dim), 0.0)
            entropy = entropy + torch.where(noisy, transition_entropy(dist, action_dim), 0.0)
        chain.append(x)
    # Summed over the step axis exactly as chain_log_probs does, so both agree to rounding.
    return ChainSample(chain=torch.stack(chain, dim=1), log_probs=per_step.sum(dim=1), entropy=entropy)


def chain_log_probs(
    step_fn: StepFn, chain: torch.Tensor, stochastic: torch.Tensor, action_dim: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Recompute the stochastic transitions of a stored chain, with gradients.

    Only the (sample, step) pairs marked stochastic are evaluated, so a "random_one" chain costs one
    network pass per sample instead of K. Returns log_probs and entropy (N, chunk, action_dim),
    summed over steps, and per-step log-probs (N, K, chunk, action_dim) (zero on deterministic steps).
    """
    batch, num_steps = stochastic.shape
    chain = chain.float()
    per_step = chain.new_zeros(batch, num_steps, chain.shape[2], action_dim)
    entropy = chain.new_zeros(batch, chain.shape[2], action_dim)
    for k in range(num_steps):
        rows = stochastic[:, k].nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        whole_batch = rows.numel() == batch
        x, x_next = chain[:, k], chain[:, k + 1]
        if not whole_batch:
            x, x_next = x.index_select(0, rows), x_next.index_select(0, rows)
        dist = step_fn(None if whole_batch else rows, x, k)
        step_log_prob = transition_log_prob(x_next, dist, action_dim)
        step_entropy = transition_entropy(dist, action_dim)
        step_index = torch.full_like(rows, k)
        per_step = per_step.index_put((rows, step_index), step_log_prob)
        entropy = entropy.index_add(0, rows, step_entropy)
    return per_step.sum(dim=1), entropy, per_step
