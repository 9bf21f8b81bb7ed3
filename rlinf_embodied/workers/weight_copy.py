"""Copy synced weights into a model whose tensors may sit on another device and in another dtype.

Why not `module.load_state_dict`: it copies tensor by tensor with a blocking `copy_`, and a blocking copy from
the GPU into host memory of another dtype converts on the CPU (torch does so to avoid a temporary on the GPU):
the wider dtype crosses the bus into freshly allocated pageable memory, then a CPU loop casts it. A collocated
rollout is offloaded to host memory in bf16 when the actor's fp32 weights arrive over CUDA IPC, so a sync of
pi0-3b moves 13 GB that way, the likely cause of its 9.5 s sync on an H200 (benchmarks/RESULTS.md stop 32; the
fix is not measured there yet). Here each tensor is cast on its own device first, so only the target dtype
crosses, straight into the target's (pinned) memory.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def copy_weights_into(module: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """load_state_dict(strict=True) semantics: the same keys and shapes, or an error naming them."""
    targets = module.state_dict()  # views of the parameters and buffers: copying into them updates the module
    missing, unexpected = sorted(targets.keys() - state_dict.keys()), sorted(state_dict.keys() - targets.keys())
    if missing or unexpected:
        raise KeyError(
            f"synced weights do not match {type(module).__name__}: missing {missing[:5]} ({len(missing)}), "
            f"unexpected {unexpected[:5]} ({len(unexpected)})"
        )
    for name, target in targets.items():
        source = state_dict[name]
        if source.shape != target.shape:
            raise ValueError(
                f"synced weight {name!r} has shape {tuple(source.shape)}, the model's {tuple(target.shape)}"
            )
        if source.device != target.device and source.dtype != target.dtype:
            source = source.to(target.dtype)  # on the source's device, one tensor at a time
        target.copy_(source)
