"""Move a module's parameters/buffers or an optimizer's state to CPU and back, bit-exact.

CPU copies are pinned when CUDA exists (fast, async host<->device copies). FSDP2 modules override
`nn.Module._apply` to re-point their sharded parameters after a move, so going through `_apply` moves
the local shards of DTensor parameters correctly.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.tensor import DTensor

CPU = torch.device("cpu")


def _on_local(tensor: torch.Tensor, fn) -> torch.Tensor:
    """Apply fn to a plain tensor, or to a DTensor's local shard (keeping mesh and placements)."""
    if isinstance(tensor, DTensor):
        local = fn(tensor._local_tensor)
        return DTensor.from_local(
            local, tensor.device_mesh, tensor.placements, run_check=False, shape=tensor.shape, stride=tensor.stride()
        )
    return fn(tensor)


def _plain_to_cpu(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.device.type == "cpu":
        return tensor
    if tensor.device.type != "cuda":
        return tensor.to(CPU)
    out = torch.empty_like(tensor, device=CPU, pin_memory=True)
    out.copy_(tensor, non_blocking=True)  # stream-ordered; the caller synchronizes once at the end
    return out


def _to_cpu(tensor: torch.Tensor) -> torch.Tensor:
    return tensor if tensor.device.type == "cpu" else _on_local(tensor, _plain_to_cpu)


def _to_device(device: torch.device):
    def plain(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(device, non_blocking=True)

    def move(tensor: torch.Tensor) -> torch.Tensor:
        return tensor if tensor.device == device else _on_local(tensor, plain)

    return move


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _release_gpu_memory() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()  # the async device->host copies are complete
        torch.cuda.empty_cache()


def apply_keeping_parameters(module: nn.Module, fn) -> None:
    """`module._apply(fn)`, but every Parameter object survives (its contents are swapped in place).

    By default `_apply` may register *new* Parameter objects; an optimizer built on the old ones then
    steps tensors the model no longer uses, and training silently stops changing the model.
    """
    previous = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        module._apply(fn)
    finally:
        torch.__future__.set_swap_module_params_on_conversion(previous)


def _all_on(module: nn.Module, device_type: str) -> bool:
    tensors = list(module.parameters()) + list(module.buffers())
    return all(t.device.type == device_type for t in tensors)


def offload_module(module: nn.Module) -> None:
    """Parameters and buffers -> (pinned) CPU memory. A no-op for a module already on CPU."""
    if _all_on(module, "cpu"):
        return
    apply_keeping_parameters(module, _to_cpu)
    _release_gpu_memory()


def onload_module(module: nn.Module, device: torch.device) -> None:
    if _all_on(module, device.type) and device.type == "cpu":
        return
    apply_keeping_parameters(module, _to_device(device))
    _synchronize(device)


def _state_tensors(optimizer: torch.optim.Optimizer):
    """(state dict, key) of every tensor in the optimizer state to move, except scalar step counters
    that live on the CPU by design. Fused and capturable optimizers keep their step counters on the
    parameters' device, so those move with the rest: after an offload they sit on the CPU too, and
    leaving them there makes the next fused step fail with a device mismatch."""
    for group in optimizer.param_groups:
        steps_on_device = bool(group.get("fused") or group.get("capturable"))
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and not (
                    key == "step" and value.dim() == 0 and value.device.type == "cpu" and not steps_on_device
                ):
                    yield state, key


def offload_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    for state, key in list(_state_tensors(optimizer)):
        state[key] = _to_cpu(state[key])
    _release_gpu_memory()


def onload_optimizer_state(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    move = _to_device(device)
    for state, key in list(_state_tensors(optimizer)):
        state[key] = move(state[key])
    _synchronize(device)
