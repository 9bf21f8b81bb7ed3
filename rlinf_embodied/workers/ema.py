"""Exponential moving average of a model's trainable parameters, for imitation learning.

Diffusion and flow policies trained from scratch score higher closed loop with an EMA of their weights than with
the last optimizer step's (Diffusion Policy, Chi et al. 2023). The average is kept beside the parameters (the
same local shards under FSDP) and swapped in for saving; training always steps the live weights.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


class ParameterEMA:
    """ema <- decay_t * ema + (1 - decay_t) * param after every optimizer step, with decay_t warming up as
    min(decay, (1 + step) / (10 + step)) so the first steps are not dominated by the initial weights."""

    def __init__(self, parameters: list[torch.nn.Parameter], decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay={decay} must lie in (0, 1)")
        self.parameters, self.decay = list(parameters), decay
        # fp32, like the master weights; one copy whatever the parameters' dtype
        self.averages = [p.detach().to(torch.float32, copy=True) for p in self.parameters]
        self.updates = 0

    def decay_at(self, updates: int) -> float:
        return min(self.decay, (1.0 + updates) / (10.0 + updates))

    @torch.no_grad()
    def update(self) -> None:
        weight = 1.0 - self.decay_at(self.updates)
        torch._foreach_lerp_(self.averages, [p.detach().float() for p in self.parameters], weight)
        self.updates += 1

    def state(self) -> dict:
        """The averages (this rank's local shards under FSDP) on the CPU, and the update count."""
        return {"averages": [_local(a).detach().cpu().clone() for a in self.averages], "updates": self.updates}

    @torch.no_grad()
    def load_state(self, state: dict) -> None:
        if len(state["averages"]) != len(self.averages):
            raise ValueError(f"saved EMA holds {len(state['averages'])} tensors, this model has {len(self.averages)}")
        for average, saved in zip(self.averages, state["averages"]):
            _local(average).copy_(saved)
        self.updates = int(state["updates"])

    @contextlib.contextmanager
    @torch.no_grad()
    def swapped_in(self) -> Iterator[None]:
        """The parameters hold the averages inside the block (e.g. to save them), their own values after it."""
        live = [p.detach().clone() for p in self.parameters]
        for param, average in zip(self.parameters, self.averages):
            param.copy_(average)
        try:
            yield
        finally:
            for param, value in zip(self.parameters, live):
                param.copy_(value)


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's local shard (FSDP), any other tensor itself."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor
