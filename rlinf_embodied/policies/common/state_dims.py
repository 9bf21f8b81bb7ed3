"""Hiding state dims from a model (the copycat fix: mlp's `actor_ignore_state_dims`, the flow VLAs'
`ignore_state_dims`). One check and one zeroing, so every policy means the same by it."""

from __future__ import annotations

import numbers
from typing import Sequence

import torch


def check_integer_dims(field: str, dims: Sequence[int] | None) -> None:
    """ValueError naming `field` when a dim is no integer (int(1.5) would silently hide dim 1) or is negative."""
    not_integers = [d for d in dims or [] if isinstance(d, bool) or not isinstance(d, numbers.Integral)]
    if not_integers:
        raise ValueError(f"{field} {not_integers} are not integers: state dims are indices 0, 1, 2, ...")
    negative = [d for d in dims or [] if d < 0]
    if negative:
        raise ValueError(f"{field} {negative} must be >= 0")


def check_state_dims(field: str, dims: Sequence[int] | None, state_dim: int) -> None:
    """ValueError naming `field` when a dim is no integer or not in 0..state_dim-1."""
    check_integer_dims(field, dims)
    bad = [d for d in dims or [] if not 0 <= d < state_dim]
    if bad:
        raise ValueError(f"{field} {bad} are not state dims (state_dim={state_dim}: 0-{state_dim - 1})")


def zero_state_dims(state: torch.Tensor, dims: Sequence[int] | None) -> torch.Tensor:
    """(N, D) state with `dims` zeroed, as a copy (the caller's tensor is unchanged); `state` when none."""
    if not dims:
        return state
    state = state.clone()
    for dim in dims:  # fill_ per column: no host index tensor to copy, so a CUDA graph may capture it
        state.select(1, int(dim)).fill_(0)
    return state
