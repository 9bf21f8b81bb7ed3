"""Move a module's parameters/buffers or an optimizer's state to CPU and back, bit-exact.

CPU copies are pinned when CUDA exists (fast, async host<->device copies). FSDP2 modules override
`nn.Module._apply` to re-point their sharded parameters after a move, so going through `_apply` moves
the local shards of DTensor parameters correctly.

Pinning is the slow part: on an H200, the first offload of 15 GB took 6.4 s and later ones 0.3 s
(benchmarks/offload.py), the later ones only because the caching host allocator handed the freed pinned
blocks back. Anything that still holds an old host copy when the next offload comes (FSDP's bookkeeping,
a weight-sync buffer) defeats that cache and the 6 s are paid every iteration. So each module and
optimizer keeps its own pinned buffers (`HostBuffers`), allocated at its first offload and reused by
every later one: the cost of pinning is paid once per process, whatever else holds references.
"""

from __future__ import annotations

import sys
import weakref
from typing import Iterable

import torch
from torch import nn

CPU = torch.device("cpu")


def _is_dtensor(tensor: torch.Tensor) -> bool:
    """Whether `tensor` is an FSDP2 DTensor, without importing torch.distributed.tensor (0.5 s per process, which
    the env and rollout workers never use): where no one imported it, no tensor is one."""
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(tensor, module.DTensor)


def _on_local(tensor: torch.Tensor, fn) -> torch.Tensor:
    """Apply fn to a plain tensor, or to a DTensor's local shard (keeping mesh and placements)."""
    if _is_dtensor(tensor):
        local = fn(tensor._local_tensor)
        return type(tensor).from_local(
            local, tensor.device_mesh, tensor.placements, run_check=False, shape=tensor.shape, stride=tensor.stride()
        )
    return fn(tensor)


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor._local_tensor if _is_dtensor(tensor) else tensor


class HostBuffers:
    """One owner's host copies, one buffer per offloaded tensor in the order an offload visits them.

    `take` returns an alias of the buffer (a new tensor object on the same memory) holding the tensor's
    data: `swap_tensors` (apply_keeping_parameters) exchanges the returned object's contents with the
    parameter's, so the buffer object itself must never be the one returned. A tensor whose shape, stride or
    dtype differs from its slot's buffer (the model changed between offloads) gets a new buffer there.
    """

    def __init__(self, pin: bool):
        self.pin = pin
        self.buffers: list[torch.Tensor] = []
        self.position = 0
        self.in_use: set[int] = set()

    def start(self, in_use: Iterable[torch.Tensor] = ()) -> "HostBuffers":
        """Called at the start of each offload: the next `take` fills the first slot again. `in_use`: the
        owner's tensors already on the CPU; a slot whose buffer one of them still lives in is never refilled
        (it would overwrite that tensor) but gets a new buffer."""
        self.position = 0
        self.in_use = {t.data_ptr() for t in in_use if t.device.type == "cpu"}
        return self

    def take(self, tensor: torch.Tensor) -> torch.Tensor:
        slot = self.position
        self.position += 1
        buffer = self.buffers[slot] if slot < len(self.buffers) else None
        if buffer is None or buffer.data_ptr() in self.in_use or _layout(buffer) != _layout(tensor):
            buffer = torch.empty_like(tensor, device=CPU, pin_memory=self.pin)
            if slot < len(self.buffers):
                self.buffers[slot] = buffer
            else:
                self.buffers.append(buffer)
        out = buffer.detach()  # an alias: same memory, another tensor object
        out.copy_(tensor, non_blocking=self.pin)  # stream-ordered; the caller synchronizes once at the end
        return out

    @property
    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers)


def _layout(tensor: torch.Tensor) -> tuple:
    return tensor.shape, tensor.stride(), tensor.dtype


_HOST_BUFFERS: "weakref.WeakKeyDictionary[object, HostBuffers]" = weakref.WeakKeyDictionary()


def host_buffers(owner: object) -> HostBuffers:
    """The pinned host buffers kept for `owner` (a module or an optimizer), created on first use."""
    if owner not in _HOST_BUFFERS:
        _HOST_BUFFERS[owner] = HostBuffers(pin=torch.cuda.is_available())
    return _HOST_BUFFERS[owner]


def _to_cpu_into(buffers: HostBuffers):
    def plain(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.device.type != "cuda":
            return tensor.to(CPU)
        return buffers.take(tensor)

    def move(tensor: torch.Tensor) -> torch.Tensor:
        return tensor if tensor.device.type == "cpu" else _on_local(tensor, plain)

    return move


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
    offload_state(modules=[module])


def _queue_module_offload(module: nn.Module) -> bool:
    """Queue a module's device->host copies on the current stream (the caller synchronizes); False when the
    module was already on the CPU and nothing was queued."""
    if _all_on(module, "cpu"):
        return False
    resident = [_local(t) for t in [*module.parameters(), *module.buffers()]]
    apply_keeping_parameters(module, _to_cpu_into(host_buffers(module).start(resident)))
    return True


def onload_module(module: nn.Module, device: torch.device) -> None:
    onload_state(device, modules=[module])


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
    offload_state(optimizers=[optimizer])


def _queue_optimizer_offload(optimizer: torch.optim.Optimizer) -> bool:
    """Queue the optimizer state's device->host copies; False when it holds no state to move."""
    entries = list(_state_tensors(optimizer))
    move = _to_cpu_into(host_buffers(optimizer).start(_local(state[key]) for state, key in entries))
    for state, key in entries:
        state[key] = move(state[key])
    return bool(entries)


def offload_state(modules: Iterable[nn.Module] = (), optimizers: Iterable[torch.optim.Optimizer] = ()) -> None:
    """Offload several modules and optimizers in one pass: every copy is queued on the stream first, then one
    synchronize and one release of the cached GPU blocks (what the actor's offload does). On an H200 it timed
    the same as one call per object (4 GB fp32 + Adam: 0.251 s vs 0.243-0.247 s, benchmarks/offload.py)."""
    queued = [_queue_module_offload(module) for module in modules]
    queued += [_queue_optimizer_offload(optimizer) for optimizer in optimizers]
    if any(queued):  # an offload of what is already on the CPU neither waits for the device nor frees its cache
        _release_gpu_memory()


def onload_optimizer_state(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    onload_state(device, optimizers=[optimizer])


def onload_state(
    device: torch.device, modules: Iterable[nn.Module] = (), optimizers: Iterable[torch.optim.Optimizer] = ()
) -> None:
    """The inverse of offload_state: every host->device copy queued, then one synchronize."""
    move = _to_device(device)
    for module in modules:
        if not (_all_on(module, device.type) and device.type == "cpu"):
            apply_keeping_parameters(module, move)
    for optimizer in optimizers:
        for state, key in list(_state_tensors(optimizer)):
            state[key] = move(state[key])
    _synchronize(device)
