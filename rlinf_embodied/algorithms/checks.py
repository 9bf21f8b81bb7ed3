"""Fail fast, and say where, when a training quantity stops being finite."""

from __future__ import annotations

import math
from typing import Mapping

import torch


class NonFiniteError(FloatingPointError):
    """A loss, gradient norm, advantage, ... holds NaN or inf. The message names which and when."""

    def __init__(self, name: str, iteration: int, detail: str):
        self.name = name
        self.iteration = iteration
        super().__init__(f"non-finite {name!r} at iteration {iteration}: {detail}")


def check_finite(name_to_tensor: Mapping[str, torch.Tensor | float | None], iteration: int) -> None:
    """Raise NonFiniteError for the first entry holding NaN/inf; None entries are skipped."""
    for name, value in name_to_tensor.items():
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            if not math.isfinite(float(value)):
                raise NonFiniteError(name, iteration, f"value is {value}")
            continue
        value = value.detach()
        if not value.is_floating_point() and not value.is_complex():
            continue
        finite = torch.isfinite(value)
        if bool(finite.all()):
            continue
        num_nan = int(torch.isnan(value).sum())
        num_inf = int(torch.isinf(value).sum())
        raise NonFiniteError(
            name,
            iteration,
            f"{num_nan} NaN and {num_inf} inf among {value.numel()} elements of shape {tuple(value.shape)}",
        )
