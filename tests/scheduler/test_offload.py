"""Which optimizer-state tensors an offload moves (CPU; the GPU round trips are in tests/workers/test_actor_gpu.py)."""

from __future__ import annotations

import torch

from rlinf_embodied.scheduler.offload import _state_tensors


def stepped_adam(**kwargs) -> torch.optim.Optimizer:
    weight = torch.nn.Parameter(torch.randn(4, 3))
    optimizer = torch.optim.AdamW([weight], lr=1e-3, **kwargs)
    weight.grad = torch.randn(4, 3)
    optimizer.step()
    return optimizer


def moved_keys(optimizer: torch.optim.Optimizer) -> set[str]:
    return {key for _, key in _state_tensors(optimizer)}


def test_plain_adam_keeps_its_cpu_step_counter_on_the_cpu():
    assert moved_keys(stepped_adam()) == {"exp_avg", "exp_avg_sq"}


def test_fused_adam_moves_its_step_counters():
    # fused Adam keeps `step` on the parameters' device; left on the CPU after an offload, the next
    # step fails with "state_steps is on cpu, different from other tensors on cuda:0" (capturable
    # Adam, CUDA-only, is covered by the same group flag check)
    assert moved_keys(stepped_adam(fused=True)) == {"step", "exp_avg", "exp_avg_sq"}
