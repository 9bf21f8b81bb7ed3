"""Host-to-device copies that do not stall the host on the device's queue.

A blocking `tensor.to("cuda")` synchronises the stream: the host waits until every kernel queued before it has run,
so it queues the next kernels only once the GPU has gone idle. The SFT step made several such copies (random
shifts, prompt tokens, flow times, action statistics), and the compiled pi0-small step kept an H200 busy 39% of
the time (benchmarks/RESULTS.md, stop 39). Code on a training or inference step's path copies through here.
"""

from __future__ import annotations

import torch


def host_to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """`tensor` on `device`; a host tensor bound for a CUDA device goes through pinned memory without blocking (the
    caching host allocator keeps the pinned block until the copy has run). Elsewhere, a plain `.to`."""
    device = torch.device(device)
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
