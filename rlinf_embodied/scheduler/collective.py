"""Communicators between processes of different worker groups, and flat-buffer packing.

Each worker's default torch.distributed group covers only its own WorkerGroup. To move tensors
between groups (weight sync, GPU send/recv) we build a separate process group over a TCPStore that
one member hosts: NCCL between GPU workers, gloo otherwise.
"""

from __future__ import annotations

import socket
from collections import OrderedDict
from datetime import timedelta

import torch
import torch.distributed as dist

TIMEOUT = timedelta(minutes=10)


def node_ip() -> str:
    import ray

    return ray.util.get_node_ip_address()


def host_store(world_size: int) -> tuple[dist.TCPStore, str, int]:
    """A TCPStore server on a free port of this node -> (store, ip, port)."""
    store = dist.TCPStore("0.0.0.0", 0, world_size, is_master=True, timeout=TIMEOUT, wait_for_workers=False)
    return store, node_ip(), store.port


def connect_store(ip: str, port: int, world_size: int) -> dist.TCPStore:
    return dist.TCPStore(ip, port, world_size, is_master=False, timeout=TIMEOUT)


def new_group(store: dist.Store, prefix: str, rank: int, world_size: int, backend: str) -> dist.ProcessGroup:
    """A standalone process group (not registered as the default) over `store` under `prefix`."""
    prefixed = dist.PrefixStore(prefix, store)
    if backend == "nccl":
        return dist.ProcessGroupNCCL(prefixed, rank, world_size)
    if backend == "gloo":
        return dist.ProcessGroupGloo(prefixed, rank, world_size, TIMEOUT)
    raise ValueError(f"backend {backend!r}: use 'nccl' or 'gloo'")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


# ---- flat buffers -------------------------------------------------------------------------------
def tensor_layout(tensors: "OrderedDict[str, torch.Tensor] | dict") -> list[tuple[str, tuple, torch.dtype]]:
    """(name, shape, dtype) per tensor, in order: what a receiver needs to unpack flat buffers."""
    return [(name, tuple(t.shape), t.dtype) for name, t in tensors.items()]


def flatten_by_dtype(tensors: dict[str, torch.Tensor], device: torch.device) -> dict[torch.dtype, torch.Tensor]:
    """One contiguous 1-D buffer per dtype on `device`, tensors concatenated in dict order."""
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors.values():
        groups.setdefault(t.dtype, []).append(t.reshape(-1))
    return {dtype: torch.cat([p.to(device) for p in parts]) for dtype, parts in groups.items()}


def empty_buffers(
    layout: list[tuple[str, tuple, torch.dtype]], device: torch.device
) -> dict[torch.dtype, torch.Tensor]:
    sizes: dict[torch.dtype, int] = {}
    for _, shape, dtype in layout:
        sizes[dtype] = sizes.get(dtype, 0) + int(torch.Size(shape).numel())
    return {dtype: torch.empty(n, dtype=dtype, device=device) for dtype, n in sizes.items()}


def unflatten(
    layout: list[tuple[str, tuple, torch.dtype]], buffers: dict[torch.dtype, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Views into `buffers`, one per layout entry."""
    offsets = {dtype: 0 for dtype in buffers}
    out = {}
    for name, shape, dtype in layout:
        n = int(torch.Size(shape).numel())
        start = offsets[dtype]
        out[name] = buffers[dtype][start : start + n].view(shape)
        offsets[dtype] = start + n
    return out


def dtype_order(buffers: dict[torch.dtype, torch.Tensor]) -> list[torch.dtype]:
    """The same buffer order on every rank."""
    return sorted(buffers, key=str)
