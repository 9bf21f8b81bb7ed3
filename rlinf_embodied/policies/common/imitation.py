"""Helpers shared by the policies' imitation losses (`sft_loss(obs, actions, is_pad=None)`).

Contract of `sft_loss`: `actions` are demonstration action chunks in env units, (N, chunk, action_dim)
(or (N, action_dim) when the policy's chunk is 1); `is_pad` (N, chunk) bool marks rows past the end of
the demonstration (repeated last actions): they are excluded from the loss. Returns a scalar with grad.
"""

from __future__ import annotations

import torch


def as_action_chunk(
    actions, action_chunk: int, action_dim: int, policy_name: str, device: torch.device | None = None
) -> torch.Tensor:
    """Demonstration actions as a float32 (N, action_chunk, action_dim) tensor, or a clear error."""
    actions = torch.as_tensor(actions)
    if actions.ndim == 2 and action_chunk == 1:
        actions = actions[:, None]
    if actions.ndim != 3 or tuple(actions.shape[1:]) != (action_chunk, action_dim):
        raise ValueError(
            f"{policy_name}: demonstration actions have shape {tuple(actions.shape)}; expected "
            f"(N, action_chunk={action_chunk}, action_dim={action_dim}) for this policy"
        )
    return actions.to(device=device, dtype=torch.float32)


def valid_rows(is_pad: torch.Tensor | None, batch: int, action_chunk: int, device: torch.device) -> torch.Tensor:
    """(N, chunk) float32 weights: 1 for real demonstration rows, 0 for padding."""
    if is_pad is None:
        return torch.ones(batch, action_chunk, device=device)
    is_pad = torch.as_tensor(is_pad, device=device)
    if tuple(is_pad.shape) != (batch, action_chunk):
        raise ValueError(f"is_pad has shape {tuple(is_pad.shape)}; expected (N={batch}, action_chunk={action_chunk})")
    return (~is_pad.bool()).float()


def padded_rows_mean(values: torch.Tensor, is_pad: torch.Tensor | None) -> torch.Tensor:
    """Mean of `values` (N, chunk, ...) over the rows `is_pad` (N, chunk) does not mark (0 if none)."""
    weights = valid_rows(is_pad, values.shape[0], values.shape[1], values.device)
    weights = weights.reshape(*weights.shape, *([1] * (values.ndim - 2))).expand_as(values)
    return (values.float() * weights).sum() / weights.sum().clamp(min=1.0)
