"""Weight sync between two processes on one GPU through CUDA IPC handles.

Why: a collocated actor and rollout share a GPU, and NCCL refuses a communicator with two processes on
one device, so their sync went through the Ray object store: the actor's weights copied to host memory,
serialised, stored, read back and copied up again. For OpenVLA-7B that took 145 s per iteration and
57 GB of host memory (one H200, benchmarks/RESULTS.md). Here the actor shares its device tensors as
IPC handles (a few hundred bytes each, through Ray), the rollout maps them into its own address space
and copies them into its parameters (casting to its dtype on the device), and no byte leaves the GPU
unless the rollout's parameters are offloaded to host memory at that moment.

The sender must keep its tensors alive until every receiver has copied them (`WorkerGroup` releases them
after the receivers return).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.multiprocessing.reductions import reduce_tensor

# Position of the device index in the arguments of torch's rebuild_cuda_tensor (torch >= 2.0):
# (tensor_cls, size, stride, offset, storage_cls, dtype, storage_device, storage_handle, ...).
_DEVICE_ARG = 6


def device_uuid(index: int) -> str:
    return str(torch.cuda.get_device_properties(index).uuid)


def share(tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Picklable handles of CUDA tensors (all on one device): {"uuid": device, "tensors": {name: (fn, args)}}."""
    devices = {t.device for t in tensors.values()}
    if len(devices) != 1 or next(iter(devices)).type != "cuda":
        raise ValueError(f"cuda_ipc.share needs tensors on one CUDA device, got {sorted(map(str, devices))}")
    device = next(iter(devices))
    return {
        "uuid": device_uuid(device.index if device.index is not None else torch.cuda.current_device()),
        "tensors": {name: reduce_tensor(tensor.detach()) for name, tensor in tensors.items()},
    }


def open_shared(package: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Map a `share` package's tensors into this process (views of the sender's memory, not copies).

    The sender's device index may differ from this process's (each sees its GPUs through its own
    CUDA_VISIBLE_DEVICES), so the device is found by UUID."""
    local = {device_uuid(index): index for index in range(torch.cuda.device_count())}
    if package["uuid"] not in local:
        raise ValueError(
            f"cuda_ipc: the sender's GPU {package['uuid']} is not visible here (visible: {sorted(local)}); "
            "IPC sync needs both processes on the same GPU"
        )
    index = local[package["uuid"]]
    opened = {}
    for name, (rebuild, args) in package["tensors"].items():
        args = list(args)
        args[_DEVICE_ARG] = index
        opened[name] = rebuild(*args)
    return opened
