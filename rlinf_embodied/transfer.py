"""Copies between host and device that stall the host on the device's queue as little as they can.

A blocking `tensor.to("cuda")` synchronises the stream: the host waits until every kernel queued before it has run,
so it queues the next kernels only once the GPU has gone idle. The SFT step made several such copies (random
shifts, prompt tokens, flow times, action statistics), and the compiled pi0-small step kept an H200 busy 39% of
the time (benchmarks/RESULTS.md, stop 39). Code on a training or inference step's path copies through here.
"""

from __future__ import annotations

from typing import Mapping

import torch


def host_to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """`tensor` on `device`; a host tensor bound for a CUDA device goes through pinned memory without blocking (the
    caching host allocator keeps the pinned block until the copy has run). Elsewhere, a plain `.to`."""
    device = torch.device(device)
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def host_floats(values: Mapping[str, torch.Tensor | float]) -> dict[str, float]:
    """`values` as Python floats, with the device scalars read back in one copy per device: each read waits for the
    device's queue, so a step's dozen metrics read one by one wait a dozen times."""
    out = {name: float(value) for name, value in values.items() if not isinstance(value, torch.Tensor)}
    tensors = {name: value for name, value in values.items() if isinstance(value, torch.Tensor)}
    for names in names_by_device(tensors).values():
        scalars = torch.stack([values[name].detach().reshape(()).float() for name in names]).tolist()
        out.update(zip(names, scalars))
    return {name: out[name] for name in values}


def names_by_device(tensors: Mapping[str, torch.Tensor]) -> dict[torch.device, list[str]]:
    """The names of `tensors` grouped by the device their tensor is on, in their order."""
    by_device: dict[torch.device, list[str]] = {}
    for name, value in tensors.items():
        by_device.setdefault(value.device, []).append(name)
    return by_device
