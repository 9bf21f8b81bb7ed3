"""Trainer mixed precision: fp32 master weights, compute in the rollout's dtype.

Why: the rollout worker holds the policy in bf16 and samples with it; PPO's ratio compares the
actor's log-probs with those. Two things go wrong if the actor simply holds a bf16 copy too:

* Adam's updates at VLA learning rates (1e-6 .. 1e-5) are far below half a bf16 ulp of typical weights
  (|w| ~ 0.02 -> ulp ~ 1.2e-4), so most of them round away and the model does not learn;
* if the actor instead computes in fp32 (or under autocast), its log-probs differ from the rollout's
  bf16 ones, and the ratio starts away from 1.

So the actor keeps fp32 parameters (what the optimizer steps, what checkpoints and weight sync read)
and runs each forward/backward on bf16 casts of them (`computing_in`): the same arithmetic as the
rollout's bf16 model, whose weights are the same casts after a sync. This is what FSDP's
`MixedPrecisionPolicy(param_dtype=bf16)` does for sharded models; here it serves the one-rank actor.
Floating buffers (e.g. RoPE frequencies) are stored in the compute dtype once, as `module.to(bf16)`
leaves them on the rollout side.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn
from torch.nn.utils.stateless import _reparametrize_module


def cast_floating_buffers(module: nn.Module, dtype: torch.dtype) -> None:
    """Floating buffers -> dtype in place of the originals (parameters untouched)."""
    for submodule in module.modules():
        for name, buffer in list(submodule._buffers.items()):
            if buffer is not None and buffer.is_floating_point() and buffer.dtype != dtype:
                submodule._buffers[name] = buffer.to(dtype)


def store_frozen_in(module: nn.Module, dtype: torch.dtype) -> int:
    """Frozen floating parameters -> dtype in place; returns how many bytes that saved.

    A parameter the optimizer never steps needs no fp32 master: `computing_in` would cast it to the
    compute dtype on every forward anyway. For a LoRA or frozen-VLM actor this halves the memory of the
    frozen part, and with it the actor's offload, onload and weight-sync traffic."""
    saved = 0
    with torch.no_grad():
        for param in module.parameters():
            if not param.requires_grad and param.is_floating_point() and param.dtype != dtype:
                saved += param.numel() * (param.element_size() - torch.empty((), dtype=dtype).element_size())
                param.data = param.data.to(dtype)
    return saved


@contextmanager
def computing_in(module: nn.Module, dtype: torch.dtype) -> Iterator[None]:
    """Run the body with every floating parameter replaced by a differentiable cast to `dtype`.

    Gradients flow back to the fp32 parameters (in fp32). Keep the backward pass inside the body:
    activation checkpointing recomputes forwards there and must see the same casts.
    """
    casts = {
        name: param.to(dtype)
        for name, param in module.named_parameters()
        if param.is_floating_point() and param.dtype != dtype
    }
    if not casts:
        yield
        return
    with _reparametrize_module(module, casts, tie_weights=True):
        yield
