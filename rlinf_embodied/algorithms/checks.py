"""Fail fast, and say where, when a training quantity stops being finite."""

from __future__ import annotations

import math
from typing import Mapping

import torch

from ..transfer import names_by_device


class NonFiniteError(FloatingPointError):
    """A loss, gradient norm, advantage, ... holds NaN or inf. The message names which and when."""

    def __init__(self, name: str, iteration: int, detail: str):
        self.name = name
        self.iteration = iteration
        self.detail = detail
        super().__init__(f"non-finite {name!r} at iteration {iteration}: {detail}")

    def __reduce__(self):  # pickled with its own three arguments: raised in a Ray worker, it reaches the driver
        return type(self), (self.name, self.iteration, self.detail)


def check_finite(name_to_tensor: Mapping[str, torch.Tensor | float | None], iteration: int) -> None:
    """Raise NonFiniteError naming an entry that holds NaN/inf; None entries are skipped. The tensors' verdicts
    come back to the host in one read per device (each read waits for the device's queue), not one per tensor."""
    tensors = {}
    for name, value in name_to_tensor.items():
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            if not math.isfinite(float(value)):
                raise NonFiniteError(name, iteration, f"value is {value}")
            continue
        if value.is_floating_point() or value.is_complex():
            tensors[name] = value.detach()
    for names in names_by_device(tensors).values():
        verdicts = torch.stack([torch.isfinite(tensors[name]).all() for name in names]).tolist()
        for name, finite in zip(names, verdicts):
            if not finite:
                raise _non_finite(name, tensors[name], iteration)


def _non_finite(name: str, value: torch.Tensor, iteration: int) -> NonFiniteError:
    num_nan = int(torch.isnan(value).sum())
    num_inf = int(torch.isinf(value).sum())
    return NonFiniteError(
        name,
        iteration,
        f"{num_nan} NaN and {num_inf} inf among {value.numel()} elements of shape {tuple(value.shape)}",
    )
