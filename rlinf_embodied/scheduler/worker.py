"""Worker / WorkerGroup: one Ray actor per rank, a torch.distributed group per WorkerGroup.

    group = MyWorker.create_group(cfg).launch(cluster, name="actor", placement_strategy=strategy)
    results = group.train(batch).wait()          # every rank; a list of per-rank results
    group.execute_on(0).env_spec().wait()        # chosen ranks

Each rank runs in a `_WorkerHost` actor that (1) sets CUDA_VISIBLE_DEVICES / rank environment,
(2) joins the group's process group (NCCL on GPUs, gloo on CPU) over a TCPStore hosted by rank 0,
and only then (3) constructs the user's Worker subclass, so every user method, __init__ included,
can use torch.distributed.
"""

from __future__ import annotations

import logging
import numbers
import os
import pickle
import time
import uuid
import weakref
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Sequence

import numpy as np
import ray
import torch
import torch.distributed as dist
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from . import collective, cuda_ipc, offload
from .channel import (
    RESERVED_PREFIX,
    Channel,
    ChannelGoneError,
    channel_holder,
    cluster_address,
    current_job,
    describe_run,
    other_run,
)
from .cluster import Cluster, ray_session
from .names import NameInUseError, check_name, in_use_message
from .placement import (
    SPEC_HELP,
    ComponentPlacement,
    FlexiblePlacementStrategy,
    PackedPlacementStrategy,
    Placement,
    PlacementStrategy,
    parse_gpu_spec,
)

logger = logging.getLogger(__name__)

_REGISTRY_NAME = "rlinf_group_registry"


class WorkerError(RuntimeError):
    """A worker method raised; the message names the group, rank, method and the remote traceback."""


@dataclass(frozen=True)
class WorkerContext:
    group_name: str
    placement: Placement
    device: torch.device


def _mailbox_name(group_name: str) -> str:
    return f"{RESERVED_PREFIX}{group_name}"


def _p2p_key(src_group: str, src_rank: int, dst_rank: int) -> str:
    return f"{src_group}/{src_rank}->{dst_rank}"


@ray.remote(num_cpus=0)
class _GroupRegistry:
    """The running groups: name -> {"world_size", "cuda", "token", "job"} ("job": the Ray job, i.e. the run, that
    launched it). A name is claimed by one group at a time
    (its p2p mailbox is named after it); workers read it to check a peer's ranks and whether it uses a GPU."""

    def __init__(self):
        self.groups: dict[str, dict] = {}

    def claim(self, name: str, info: dict) -> bool:
        """Register `name` with `info`; False (and nothing changes) where a running group has it."""
        if name in self.groups:
            return False
        self.groups[name] = info
        return True

    def release(self, name: str, token: str) -> None:
        """Forget `name` if the claim holding it is `token`'s (not a later group's under the same name), and tell
        the running groups' receivers that it is gone (_post_gone)."""
        if self.groups.get(name, {}).get("token") == token:
            _post_gone(name, self.groups.pop(name), self.groups)

    def lookup(self, name: str) -> tuple[dict | None, list[str]]:
        """(`name`'s info or None, every running group's name)."""
        return self.groups.get(name), sorted(self.groups)


# (Ray node id, handle): the driver's handle keeps the registry alive, as a non-detached actor dies with its
# owner's last handle (before, it died as soon as a group registered, and every lookup found nothing). The
# node id tells a handle of an earlier Ray instance of this process (ray.shutdown, ray.init) from a live one.
_REGISTRY_HANDLE: list[tuple[str, Any]] = []


def _registry():
    node_id = ray.get_runtime_context().get_node_id()
    if not _REGISTRY_HANDLE or _REGISTRY_HANDLE[0][0] != node_id:
        handle = _GroupRegistry.options(name=_REGISTRY_NAME, get_if_exists=True).remote()
        _REGISTRY_HANDLE[:] = [(node_id, handle)]
    return _REGISTRY_HANDLE[0][1]


def _lookup_group(name: str) -> tuple[dict | None, list[str]]:
    """The registry's info on group `name` and the running groups' names; a worker reads the registry
    the driver created rather than create one it would own (it would die with the worker)."""
    try:
        registry = ray.get_actor(_REGISTRY_NAME)
    except ValueError:  # no group was ever started in this Ray namespace
        return None, []
    return ray.get(registry.lookup.remote(name))


def _held_by_this_run(name: str) -> ValueError:
    """The refusal of a worker group name a group of this process (run) holds."""
    return ValueError(
        f"a worker group named {name!r} is already running; shut it down first (its WorkerGroup's .shutdown()) or "
        "launch this one under another name"
    )


def _group_holder(info: dict | None) -> tuple[str, dict | None]:
    """Whose run holds a worker group name, from its registry entry `info`: ("other", the other running run's job
    entry), ("ours", None) for this process's run, ("ended", None) for a claim left by a run that ended, or
    ("free", None) where there is no entry."""
    if info is None:
        return "free", None
    job = info.get("job")
    holder = other_run(job)
    if holder is not None:
        return "other", holder
    if job in (None, current_job()):
        return "ours", None
    return "ended", None


def check_names_free(groups: Sequence[str] = (), channels: Sequence[str] = ()) -> None:
    """Raise, touching nothing, where a worker group name in `groups` or a channel name in `channels` is taken:
    NameInUseError (a ValueError) naming every one another running run (Ray job) on this Ray cluster holds, and how
    to go on; ValueError where a group of this process holds one. Channels this run made, and names of a run that
    ended, are free (a create replaces them). Call it before starting a run's channels and groups: a run that
    started some of them first, then failed on a taken name, left the other run without them (before: its channels
    were replaced, and its workers waited on channels that were gone)."""
    for name in groups:
        _check_group_name(name)
    taken_groups, taken_channels, holders, ours = [], [], [], []
    for name in groups:
        verdict, holder = _group_holder(_lookup_group(name)[0])
        if verdict == "other":
            taken_groups.append(name)
            holders.append(holder)
        elif verdict == "ours":
            ours.append(name)
        else:  # free, or a claim left by a run that ended (the launch takes it over); its mailbox too
            holder = channel_holder(_mailbox_name(name))
            if holder is not None:  # a running run's group the registry lost (it died with the run that made it)
                taken_groups.append(name)
                holders.append(holder)
    for name in channels:
        holder = channel_holder(name)
        if holder is not None:
            taken_channels.append(name)
            holders.append(holder)
    if taken_groups or taken_channels:
        described = list(dict.fromkeys(describe_run(holder) for holder in holders))
        raise NameInUseError(in_use_message(taken_groups, taken_channels, cluster_address(), described))
    if ours:
        raise _held_by_this_run(ours[0])


def _release_claim(name: str, token: str) -> None:
    """Release a claim without waiting (a WorkerGroup garbage-collected without shutdown), through the handle
    a later claim from this process uses too, so Ray runs the release first."""
    if ray.is_initialized() and _REGISTRY_HANDLE:
        _registry().release.remote(name, token)


# A send's cached mailbox failing like this belonged to a group that has been shut down.
_MAILBOX_GONE = (ChannelGoneError, ray.exceptions.RayActorError)
_GONE = "gone"  # the message kind _post_gone puts where a released group's ranks sent


def _post_gone(name: str, info: dict, running: dict[str, dict]) -> None:
    """Put (_GONE, token) under every key a rank of the released group `name` sent on, in every running group's
    mailbox: a receiver that cached the group's info (Worker.recv) learns that it no longer runs."""
    for group, group_info in running.items():
        try:
            mailbox = Channel.connect(_mailbox_name(group))
            for src_rank in range(info["world_size"]):
                for dst_rank in range(group_info["world_size"]):
                    mailbox.put((_GONE, info["token"]), key=_p2p_key(name, src_rank, dst_rank))
        except (ValueError, *_MAILBOX_GONE):
            pass  # a group starting (no mailbox, no receiver yet) or shutting down: none of its ranks receives


def _check_rank(rank: Any, group_name: str | None, world_size: int) -> int:
    """`rank` as an int, where it is an integer (numpy's too, not a bool) rank of a group of `world_size` ranks."""
    if not isinstance(rank, numbers.Integral) or isinstance(rank, (bool, np.bool_)):
        raise TypeError(
            f"rank {rank!r} of type {type(rank).__name__} is not an int; group {group_name!r} has ranks "
            f"0-{world_size - 1}"
        )
    rank = int(rank)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in group {group_name!r} (ranks 0-{world_size - 1})")
    return rank


def _check_group_name(name: Any) -> None:
    check_name(name, "worker group", "actor")


class Worker:
    """Base class of every worker. Subclasses: `__init__(self, cfg, ...)` calling `super().__init__()`."""

    def __init__(self):
        super().__init__()
        # Set by _WorkerHost.setup before __init__ runs; absent for a Worker built outside a group.
        context = getattr(self, "_rlinf_context", None) or WorkerContext(
            group_name="local", placement=Placement(0, 1, 0, (), (), 0, 1), device=torch.device("cpu")
        )
        self.group_name: str = context.group_name
        self.placement: Placement = context.placement
        self.rank: int = context.placement.rank
        self.world_size: int = context.placement.world_size
        self.device: torch.device = context.device
        self._channels: dict[str, Channel] = {}
        self._peer_info: dict[str, dict] = {}
        self._p2p_store: Any = None
        self._p2p_groups: dict[str, Any] = {}
        self._p2p_uid = uuid.uuid4().hex[:12]  # names this process's NCCL pairs apart from an earlier one's
        self._offloaded_optimizers: set[int] = set()
        self._rlinf_worker_initialized = True  # _WorkerHost.setup checks that a subclass's __init__ called this

    @classmethod
    def create_group(cls, *args: Any, **kwargs: Any) -> "WorkerGroup":
        """An unlaunched group; `.launch(cluster, name=..., placement_strategy=...)` starts it."""
        return WorkerGroup(cls, args, kwargs)

    # ---- weight sync hooks (a sender defines full_state_dict, a receiver load_state_dict) ----------
    def device_state_dict(self) -> dict[str, torch.Tensor]:
        """The full weights as tensors on this worker's GPU, for a CUDA IPC sync (WorkerGroup.sync_weights_to).
        A sender that may sync to a group on its own GPU defines it; release_device_state follows the sync."""
        raise NotImplementedError(
            f"{type(self).__name__} has no device_state_dict(): define it, or sync with method='object_store'"
        )

    def release_device_state(self) -> None:
        """Called once every receiver has copied what device_state_dict() returned."""

    # ---- offload ------------------------------------------------------------------------------
    def offload_model(self, module: torch.nn.Module) -> None:
        """Parameters and buffers to (pinned) CPU memory; FSDP2 modules keep their sharding."""
        offload.offload_module(module)

    def onload_model(self, module: torch.nn.Module) -> None:
        offload.onload_module(module, self.device)

    def offload_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        offload.offload_optimizer_state(optimizer)

    def onload_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        offload.onload_optimizer_state(optimizer, self.device)

    def offload_state(
        self, modules: Sequence[torch.nn.Module] = (), optimizers: Sequence[torch.optim.Optimizer] = ()
    ) -> None:
        """Several models and optimizers at once: one synchronize and one cache release for all of them."""
        offload.offload_state(modules=modules, optimizers=optimizers)

    def onload_state(
        self, modules: Sequence[torch.nn.Module] = (), optimizers: Sequence[torch.optim.Optimizer] = ()
    ) -> None:
        offload.onload_state(self.device, modules=modules, optimizers=optimizers)

    # ---- measurement (scheduler/auto_placement.py's profile) ------------------------------------
    def gpu_memory_gib(self) -> tuple[float, float]:
        """(the most GPU memory PyTorch has reserved in this process, its GPU's total), in GiB; (0, inf)
        off CUDA. Memory outside PyTorch's allocator (the CUDA context, a GPU simulator's) is not counted."""
        if self.device.type != "cuda" or not torch.cuda.is_available():
            return 0.0, float("inf")
        gib = float(2**30)
        return (
            torch.cuda.max_memory_reserved(self.device) / gib,
            torch.cuda.get_device_properties(self.device).total_memory / gib,
        )

    # ---- point to point -----------------------------------------------------------------------
    def _channel(self, name: str) -> Channel:
        if name not in self._channels:
            self._channels[name] = Channel.connect(name)
        return self._channels[name]

    def _peer(self, group: str, rank: int, fresh: bool = False) -> dict:
        """The registry's info on `group`, once it is checked to be running and to have `rank`. Cached per
        group; looked up again when `fresh` or where the cached size lacks `rank` (the group may have been
        relaunched). A lookup that finds another group under the name drops the old one's mailbox."""
        _check_group_name(group)
        info = self._peer_info.get(group)
        if fresh or info is None or not (isinstance(rank, numbers.Integral) and 0 <= rank < info["world_size"]):
            cached = self._peer_info.pop(group, None)
            info, running = _lookup_group(group)
            if cached is not None and (info is None or info["token"] != cached["token"]):
                self._channels.pop(_mailbox_name(group), None)
            if info is None:
                raise ValueError(f"no worker group named {group!r} is running; running: {running}")
            self._peer_info[group] = info
        _check_rank(rank, group, info["world_size"])
        return info

    def send(self, obj: Any, dst_group: str, dst_rank: int) -> None:
        """Send to rank `dst_rank` of group `dst_group`; FIFO per (sender, receiver) pair.

        A CUDA tensor between two GPU workers goes over NCCL (the call returns once the peer receives
        it the first time, while the pair's communicator forms); anything else goes through Ray.
        A group shut down since the last send to it: a ValueError naming it, or the group now running
        under its name receives.
        """
        try:
            self._send(obj, dst_group, dst_rank)
            return
        except _MAILBOX_GONE:
            pass  # the cached mailbox was a group's shut down since: before, every later send failed on it
        self._send(obj, dst_group, dst_rank, fresh=True)  # outside the except: no chained mailbox error

    def _send(self, obj: Any, dst_group: str, dst_rank: int, fresh: bool = False) -> None:
        peer = self._peer(dst_group, dst_rank, fresh)
        dst_rank = int(dst_rank)
        mailbox = self._channel(_mailbox_name(dst_group))
        key = _p2p_key(self.group_name, self.rank, dst_rank)
        if isinstance(obj, torch.Tensor) and obj.is_cuda and peer["cuda"]:
            # One communicator per (this process, receiving process): a relaunched peer gets a new one.
            pair = f"p2p/{key}/{dst_group}@{peer['token'][:12]}/{self._p2p_uid}"
            if self._p2p_store is None:
                self._p2p_store, ip, port = collective.host_store(2)
                self._p2p_address = (ip, port)
            group = self._p2p_groups.get(pair)
            if group is None:
                group = self._p2p_groups[pair] = collective.new_group(self._p2p_store, pair, 0, 2, "nccl")
            mailbox.put(("nccl", pair, self._p2p_address, tuple(obj.shape), obj.dtype), key=key)
            group.send([obj.contiguous()], 1, 0).wait()
        else:
            mailbox.put(("obj", obj), key=key)

    def recv(self, src_group: str, src_rank: int, timeout: float | None = None) -> Any:
        """The next object rank `src_rank` of `src_group` sent to this worker (blocks; TimeoutError after `timeout`
        s, and nothing is taken: a later recv gets the message. GroupHandle.wait(timeout=) cannot end a recv that
        waits in a worker, so bound the wait here).

        The group's info is cached, as a send's is (before: a registry lookup at every recv, 0.8 ms). Where the
        group shuts down the registry posts a "gone" message with its token (_post_gone): the recv then looks the
        group up again and names it where none runs (a recv already waiting on it too: before, that one waited for
        ever), or receives from the group relaunched under the name. A "gone" of an earlier group is skipped."""
        peer = self._peer(src_group, src_rank)
        mailbox = self._channel(_mailbox_name(self.group_name))
        key = _p2p_key(src_group, int(src_rank), self.rank)
        deadline = None if timeout is None else time.monotonic() + timeout

        def next_message():
            if deadline is None:
                return mailbox.get(key=key)
            try:
                return mailbox.get(key=key, timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise TimeoutError(
                    f"recv from worker group {src_group!r} rank {src_rank}: nothing arrived within {timeout} s"
                ) from None

        message = next_message()
        while message[0] == _GONE:
            if message[1] == peer["token"]:
                peer = self._peer(src_group, src_rank, fresh=True)
            message = next_message()
        if message[0] == "obj":
            return message[1]
        _, pair, (ip, port), shape, dtype = message
        group = self._p2p_groups.get(pair)
        if group is None:
            store = collective.connect_store(ip, port, 2)
            group = self._p2p_groups[pair] = collective.new_group(store, pair, 1, 2, "nccl")
        tensor = torch.empty(shape, dtype=dtype, device=self.device)
        group.recv([tensor], 0, 0).wait()
        return tensor


# ---- the actor that hosts one rank ----------------------------------------------------------------
@ray.remote(num_cpus=0)
class _WorkerHost:
    def __init__(self, worker_cls: type, group_name: str, placement: Placement, real_gpus: bool):
        if real_gpus:
            os.environ["CUDA_VISIBLE_DEVICES"] = placement.cuda_visible_devices
        os.environ.update(
            RANK=str(placement.rank),
            WORLD_SIZE=str(placement.world_size),
            LOCAL_RANK=str(placement.local_rank),
            LOCAL_WORLD_SIZE=str(placement.local_world_size),
        )
        self.device = torch.device("cuda", 0) if real_gpus else torch.device("cpu")
        if real_gpus:
            torch.cuda.set_device(self.device)
        self.worker_cls = worker_cls
        self.group_name, self.placement = group_name, placement
        self.worker: Worker | None = None
        self.stores: dict[str, Any] = {}  # TCPStores this process hosts or joined, by purpose
        self.cross_groups: dict[str, Any] = {}

    def host_store(self, purpose: str, world_size: int) -> tuple[str, int]:
        store, ip, port = collective.host_store(world_size)
        self.stores[purpose] = store
        return ip, port

    def setup(self, ip: str, port: int, args: tuple, kwargs: dict) -> None:
        """Join the group's default process group, then build the user's worker with args/kwargs."""
        rank, world_size = self.placement.rank, self.placement.world_size
        store = self.stores.get("default") if rank == 0 else collective.connect_store(ip, port, world_size)
        os.environ.update(MASTER_ADDR=ip, MASTER_PORT=str(port))
        backend = "nccl" if self.device.type == "cuda" else "gloo"
        dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timedelta(minutes=30))
        worker = self.worker_cls.__new__(self.worker_cls)
        worker._rlinf_context = WorkerContext(self.group_name, self.placement, self.device)
        worker.__init__(*args, **kwargs)
        if not getattr(worker, "_rlinf_worker_initialized", False):  # before: every later call failed in user code
            raise TypeError(
                f"{self.worker_cls.__name__}.__init__ did not call super().__init__(): a Worker subclass must, to get "
                "its rank, world_size, device and channels"
            )
        self.worker = worker

    def _built(self) -> Worker:
        if self.worker is None:
            raise RuntimeError(
                f"worker group {self.group_name!r} rank {self.placement.rank}: the worker is not built yet; call the "
                "group's .wait_launched() first"
            )
        return self.worker

    def call(self, _rlinf_method: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._built(), _rlinf_method)(*args, **kwargs)

    def call_and_put(self, method_name: str) -> list | None:
        """Run a method and keep its result in the object store: [ref] (None when it returned None)."""
        result = getattr(self._built(), method_name)()
        return None if result is None or result == {} else [ray.put(result)]

    # ---- weight sync through CUDA IPC (processes on one GPU) ---------------------------------
    def ipc_share_weights(self) -> dict:
        self._ipc_held = self.worker.device_state_dict()  # alive until ipc_release
        return cuda_ipc.share(self._ipc_held)

    def ipc_load_weights(self, package: dict) -> None:
        self.worker.load_state_dict(cuda_ipc.open_shared(package))
        torch.cuda.synchronize(self.device)  # the copies have read the sender's memory before it is released

    def ipc_release(self) -> None:
        self._ipc_held = None
        self.worker.release_device_state()

    # ---- weight sync over a cross-group communicator ----------------------------------------
    def _cross_group(self, key: str, ip: str, port: int, rank: int, world_size: int, backend: str):
        if key not in self.cross_groups:
            store = self.stores[key] if rank == 0 else collective.connect_store(ip, port, world_size)
            self.stores[key] = store
            self.cross_groups[key] = collective.new_group(store, key, rank, world_size, backend)
        return self.stores[key], self.cross_groups[key]

    def weights_send(self, key: str, seq: int, ip: str, port: int, world_size: int, backend: str) -> None:
        state_dict = self.worker.full_state_dict()  # collective over this group; rank 0 gets it
        if self.placement.rank != 0:
            return
        store, group = self._cross_group(key, ip, port, 0, world_size, backend)
        layout = collective.tensor_layout(state_dict)
        store.set(f"meta/{seq}", pickle.dumps(layout))
        device = self.device if backend == "nccl" else torch.device("cpu")
        buffers = collective.flatten_by_dtype(state_dict, device)
        _broadcast(group, buffers)

    def weights_recv(self, key: str, seq: int, ip: str, port: int, rank: int, world_size: int, backend: str) -> None:
        store, group = self._cross_group(key, ip, port, rank, world_size, backend)
        layout = pickle.loads(store.get(f"meta/{seq}"))
        device = self.device if backend == "nccl" else torch.device("cpu")
        buffers = collective.empty_buffers(layout, device)
        _broadcast(group, buffers)
        self.worker.load_state_dict(collective.unflatten(layout, buffers))


def _broadcast(group, buffers: dict[torch.dtype, torch.Tensor]) -> None:
    opts = dist.BroadcastOptions()
    opts.rootRank = 0
    for dtype in collective.dtype_order(buffers):
        group.broadcast([buffers[dtype]], opts).wait()


# ---- driver side --------------------------------------------------------------------------------
class GroupHandle:
    """Pending per-rank results of one group call; `.wait()` returns them in rank order."""

    def __init__(
        self, group_name: str, method_name: str, ranks: Sequence[int], refs: list, labels: Sequence[str] | None = None
    ):
        self.group_name, self.method_name = group_name, method_name
        self.ranks, self.refs = list(ranks), refs
        # What failed, per ref, for the error message.
        self._per_rank = labels is None  # one group's method on its ranks (a timeout names the ranks)
        self.labels = (
            list(labels)
            if labels is not None
            else [f"worker group {group_name!r} rank {rank} failed in {method_name}()" for rank in self.ranks]
        )

    def done(self) -> bool:
        """Whether every rank has returned (or failed: `wait()` then raises it). Never blocks."""
        ready, _ = ray.wait(self.refs, num_returns=len(self.refs), timeout=0)
        return len(ready) == len(self.refs)

    def wait(self, timeout: float | None = None) -> list:
        """Every result in rank order. On a failure, WorkerError: the first failure's traceback in full, and the
        exception line of every other rank that failed by `OTHER_FAILURES_GRACE_S` later (the same error on
        every rank arrives within it); before, those surfaced only as Ray's "Unhandled error" log lines.

        `timeout` (seconds) bounds the whole call, all ranks together (before: each rank in turn, so N ranks could
        take N x timeout). A TimeoutError does not stop the call: a worker method cannot be interrupted, so it runs
        on to its end, and later calls on its ranks queue behind it (a rank runs one call at a time). The error
        names those ranks; `wait()` on this handle again collects the results. To bound a wait inside a worker, use
        `Channel.get(timeout=...)` or `Worker.recv(..., timeout=...)`."""
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0):
            raise ValueError(f"wait(timeout={timeout!r}): give seconds >= 0, or None to wait for ever")
        deadline = None if timeout is None else time.monotonic() + timeout
        pending = list(self.refs)
        while pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            done, pending = ray.wait(pending, num_returns=1, timeout=left)
            if not done:
                raise TimeoutError(self._timeout_message(timeout, pending))
            failures = self._failures(done)
            if failures:
                if pending:
                    settled, _ = ray.wait(pending, num_returns=len(pending), timeout=OTHER_FAILURES_GRACE_S)
                    failures += self._failures(settled)
                raise WorkerError(self._failure_message(failures)) from None
        return ray.get(self.refs)

    def _timeout_message(self, timeout: float, pending: list) -> str:
        unfinished = sorted(self.refs.index(ref) for ref in pending)
        if self._per_rank:
            where = f"rank(s) {[self.ranks[i] for i in unfinished]} of worker group {self.group_name!r}"
        else:  # wait_all's or a weight sync's: each by its label
            where = "; ".join(self.labels[i].replace(" failed", "", 1) for i in unfinished)
        return (
            f"{self.group_name}.{self.method_name}() did not finish in {timeout}s on {where}: the call is still "
            "running there (or waiting behind an earlier call of the rank), and goes on, as a running worker method "
            "cannot be interrupted; later calls on those ranks queue behind it. .wait() on this handle again collects "
            "its results; shutting the group down ends it"
        )

    def _failures(self, refs: list) -> list[tuple[int, ray.exceptions.RayError]]:
        """(index into self.refs, error) of each of `refs` (finished) that failed."""
        failed = []
        for ref in refs:
            try:
                ray.get(ref)
            except ray.exceptions.RayError as error:  # a task's error, a dead actor, an exception Ray cannot unpickle
                failed.append((self.refs.index(ref), error))
        return failed

    def _failure_message(self, failures: list[tuple[int, ray.exceptions.RayError]]) -> str:
        (first, error), others = failures[0], sorted(failures[1:], key=lambda failure: failure[0])
        message = f"{self.labels[first]}:\n{error}"
        if others:
            lines = "\n".join(f"  {self.labels[index]}: {_exception_line(other)}" for index, other in others)
            message += f"\n{len(others)} more failed in this call:\n{lines}"
        return message


OTHER_FAILURES_GRACE_S = 2.0  # how long a failed call waits for its other ranks' errors (not their results)


def _exception_line(error: ray.exceptions.RayError) -> str:
    """The remote exception's type and message ("KeyError: 'x'"), without its traceback."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__  # e.g. a dead actor's "The actor died ..."


def wait_all(*handles: GroupHandle) -> list[list]:
    """Each handle's results (in order), failing on the first error among all of them. Calls that feed each
    other (an env worker's interact and the rollout worker's generate, over channels) must be waited on
    together: waiting on one first hung for ever when the other failed, its peer blocked on the channel."""
    combined = GroupHandle(
        "+".join(handle.group_name for handle in handles),
        "+".join(handle.method_name for handle in handles),
        [rank for handle in handles for rank in handle.ranks],
        [ref for handle in handles for ref in handle.refs],
        [label for handle in handles for label in handle.labels],
    )
    results = iter(combined.wait())
    return [[next(results) for _ in handle.refs] for handle in handles]


class _MethodCaller:
    def __init__(self, group: "WorkerGroup", method_name: str, ranks: Sequence[int]):
        self.group, self.method_name, self.ranks = group, method_name, ranks

    def __call__(self, *args: Any, **kwargs: Any) -> GroupHandle:
        refs = [self.group._hosts[r].call.remote(self.method_name, *args, **kwargs) for r in self.ranks]
        return GroupHandle(self.group.name, self.method_name, self.ranks, refs)


class _RankSubset:
    def __init__(self, group: "WorkerGroup", ranks: Sequence[int]):
        self._group, self._ranks = group, ranks

    def __getattr__(self, method_name: str) -> _MethodCaller:
        if method_name.startswith("_"):
            raise AttributeError(method_name)
        self._group._check_method(method_name)
        return _MethodCaller(self._group, method_name, self._ranks)


def _group_attributes() -> set[str]:
    """The public names a WorkerGroup answers itself: a worker method under one of them is out of the group's reach."""
    return {name for name in dir(WorkerGroup) if not name.startswith("_")} | {"name", "placements", "uses_cuda"}


def _resolve_strategy(spec: Any, cluster: Cluster) -> PlacementStrategy:
    """launch's placement_strategy: a PlacementStrategy, a GPU spec (one process per GPU: "0-1", "all", 3, [0, 2])
    or one GPU-id list per process ([[0], [1, 2]]); None is GPU 0. Before, anything but a PlacementStrategy failed
    with "'str' object has no attribute 'placements'"."""
    if spec is None:
        return PackedPlacementStrategy(0, 0)
    if isinstance(spec, PlacementStrategy):
        return spec
    if isinstance(spec, ComponentPlacement):
        raise TypeError(
            f"placement_strategy={spec!r} places several components; give this group's own: "
            "ComponentPlacement(...).strategy(<component name>)"
        )
    if isinstance(spec, (list, tuple)) and spec and all(isinstance(item, (list, tuple)) for item in spec):
        return FlexiblePlacementStrategy(spec)
    integral = isinstance(spec, numbers.Integral) and not isinstance(spec, (bool, np.bool_))
    if isinstance(spec, str) or integral or isinstance(spec, (list, tuple)):
        spec = int(spec) if integral else spec
        gpus = parse_gpu_spec(spec, cluster.num_gpus)  # ValueError naming the spec and the valid forms
        return ComponentPlacement({"group": gpus}, cluster.num_gpus_per_node, cluster.num_nodes).strategy("group")
    raise TypeError(
        f"placement_strategy={spec!r} of type {type(spec).__name__} is not a PlacementStrategy "
        "(PackedPlacementStrategy, FlexiblePlacementStrategy, ComponentPlacement(...).strategy(name)), a GPU spec "
        f"({SPEC_HELP}; one process per GPU) or one list of GPU ids per process ([[0], [2, 3]])"
    )


class WorkerGroup:
    """The ranks of one Worker class; attribute access calls that method on every rank. A Worker method named like
    one of the group's own attributes (start, shutdown, name, ...) is refused at create_group: the group's
    attribute would answer instead (before: silently, e.g. group.shutdown() killed the group without the
    worker's own shutdown running)."""

    def __init__(self, worker_cls: type, args: tuple, kwargs: dict):
        if not (isinstance(worker_cls, type) and issubclass(worker_cls, Worker)):
            raise TypeError(f"{worker_cls!r} is not a Worker subclass")
        clashes = sorted(name for name in _group_attributes() if callable(getattr(worker_cls, name, None)))
        if clashes:
            listed = ", ".join(f"{name}()" for name in clashes)
            raise TypeError(
                f"{worker_cls.__name__} defines {listed}, named like WorkerGroup's own attribute(s): group.{clashes[0]} "
                f"would reach the group's, never the worker's; rename the method(s) (e.g. {clashes[0]}_worker)"
            )
        self._worker_cls, self._args, self._kwargs = worker_cls, args, kwargs
        self._hosts: list = []
        self._pending: list = []  # ObjectRefs `start` issued that `wait_launched` waits for
        self._store_ref = None
        self._launched = False
        self._shut_down = False  # shutdown() ended a started group (until a new start)
        self._session: tuple | None = None  # the Ray connection the group's processes belong to
        self._sync_seq = 0
        self._sync_stores: dict[str, tuple[str, int]] = {}
        self._ipc_failed = False  # a CUDA IPC sync failed once: "auto" uses the object store from then on
        self.name: str | None = None
        self.placements: list[Placement] = []
        self.uses_cuda = False
        self._claim_token: str | None = None  # this group's claim on its name in the registry, while running
        self._mailbox: Channel | None = None  # the p2p mailbox this group started (shutdown destroys that one only)
        self._claim_finalizer: weakref.finalize | None = None

    # ---- launch -------------------------------------------------------------------------------
    def launch(self, cluster: Cluster, name: str, placement_strategy: Any = None) -> "WorkerGroup":
        """Start one process per placement and build the worker in each; returns when all are built.

        placement_strategy: a PlacementStrategy (e.g. ComponentPlacement(...).strategy(name)), a GPU spec ("0-1",
        "all", 3, [0, 2]: one process per GPU) or one list of GPU ids per process; None: one process on GPU 0."""
        return self.start(cluster, name, placement_strategy).wait_launched()

    def start(self, cluster: Cluster, name: str, placement_strategy: Any = None) -> "WorkerGroup":
        """`launch` without waiting: the processes start (and import the worker's module) while the
        caller starts other groups; `bind` may still change the worker's arguments until `wait_launched`."""
        if self._hosts:
            raise RuntimeError(f"worker group {self.name!r} is already launched")
        if not isinstance(cluster, Cluster):
            raise TypeError(
                f"launch(cluster={cluster!r}): give the Cluster to launch on (Cluster(...)), not a "
                f"{type(cluster).__name__}"
            )
        cluster.check_usable()
        _check_group_name(name)
        strategy = _resolve_strategy(placement_strategy, cluster)
        placements = strategy.placements(cluster.num_gpus_per_node, cluster.num_nodes)
        self._claim_name(name, len(placements), cluster.has_real_gpus)
        self.placements, self.name, self.uses_cuda = placements, name, cluster.has_real_gpus
        self._shut_down, self._launched, self._session = False, False, ray_session()
        try:
            mailbox = Channel.start(_mailbox_name(name), _mailbox=True)
            self._mailbox, self._pending = mailbox.channel, [mailbox.ready]
            self._hosts = [self._start_host(cluster, placement) for placement in self.placements]
            self._store_ref = self._hosts[0].host_store.remote("default", self.world_size)
        except BaseException:
            self.shutdown()
            raise
        return self

    def _claim_name(self, name: str, world_size: int, cuda: bool) -> None:
        """Take `name` in the group registry, or refuse: a second group under a running group's name replaced
        its p2p mailbox (messages lost, its receivers waiting for ever) and its registry entry. A group of another
        running run (Ray job) holding it: NameInUseError, for a user of the command line (before: "shut it down
        first (its WorkerGroup's .shutdown())", which they cannot). A claim left by a run that ended is taken over."""
        token = uuid.uuid4().hex
        info = {"world_size": world_size, "cuda": cuda, "token": token, "job": current_job()}
        registry = _registry()
        for _ in range(2):
            if ray.get(registry.claim.remote(name, info)):
                break
            held, _ = ray.get(registry.lookup.remote(name))
            if held is None:  # released meanwhile: claim again
                continue
            verdict, holder = _group_holder(held)
            if verdict == "other":
                raise NameInUseError(in_use_message([name], [], cluster_address(), [describe_run(holder)]))
            if verdict == "ours":
                raise _held_by_this_run(name)
            logger.info("worker group %r: taking over the name from run %s, which ended", name, held.get("job"))
            ray.get(registry.release.remote(name, held["token"]))
        else:
            raise ValueError(f"worker group {name!r}: its name could not be claimed (claimed and released meanwhile)")
        self._claim_token = token
        # Released by shutdown; also where the group is garbage-collected without one (its processes end then).
        self._claim_finalizer = weakref.finalize(self, _release_claim, name, token)
        self._claim_finalizer.atexit = False

    def bind(self, *args: Any, **kwargs: Any) -> "WorkerGroup":
        """Set the arguments of the worker's __init__ (those of create_group) before `wait_launched`:
        a group can start before the values it needs exist (the policies' dims come from the env group)."""
        if self._launched:
            raise RuntimeError(f"worker group {self.name!r} already built its workers; bind before wait_launched")
        self._args, self._kwargs = args, kwargs
        return self

    def wait_launched(self) -> "WorkerGroup":
        """Join the group's process group and build the worker on every rank (after `start`). Again on a built
        group: returns it as it is (before: built the workers a second time, which failed, and the failure shut the
        healthy group down)."""
        if self._launched and self._hosts:
            self._check_session()
            return self
        if not self._hosts:
            self._check_not_shut_down()
            raise RuntimeError(f"{self._worker_cls.__name__} group is not started; call .start(cluster, name=...)")
        self._check_session()
        try:
            ray.get(self._pending)
            ip, port = ray.get(self._store_ref)
            refs = [host.setup.remote(ip, port, self._args, self._kwargs) for host in self._hosts]
            GroupHandle(self.name, f"{self._worker_cls.__name__}.__init__", range(self.world_size), refs).wait()
        except BaseException:
            self.shutdown()
            raise
        self._launched = True
        logger.info(
            "launched %s x%d (%s) on GPUs %s",
            self.name,
            self.world_size,
            self._worker_cls.__name__,
            [p.global_gpu_ids for p in self.placements],
        )
        return self

    def _start_host(self, cluster: Cluster, placement: Placement):
        node = cluster.node(placement.node_rank)
        affinity = NodeAffinitySchedulingStrategy(node_id=node.node_id, soft=False)
        return _WorkerHost.options(scheduling_strategy=affinity, num_cpus=0, num_gpus=0).remote(
            self._worker_cls, self.name, placement, cluster.has_real_gpus
        )

    @property
    def world_size(self) -> int:
        """The number of ranks; 0 before start and after shutdown."""
        return len(self.placements)

    # ---- calls --------------------------------------------------------------------------------
    def _check_not_shut_down(self) -> None:
        if self._shut_down:
            raise RuntimeError(
                f"worker group {self.name!r} was shut down; launch a new group (or this one again) to use it"
            )

    def _check_session(self) -> None:
        """Refuse a group whose Ray connection has ended: a call would start a new Ray instance of its own and fail
        in Ray's internals (before), the group's processes being gone."""
        if self._hosts and ray_session() != self._session:
            raise RuntimeError(
                f"worker group {self.name!r} belongs to a cluster that was shut down (a Cluster's shutdown() or "
                "ray.shutdown() ended the Ray it ran on, and its processes with it); create a Cluster and launch the "
                "group again"
            )

    def _check_launched(self) -> None:
        """The group's workers are built and its Ray connection is the current one."""
        if not self._hosts:
            self._check_not_shut_down()
            raise RuntimeError(f"{self._worker_cls.__name__} group is not launched; call .launch(cluster, name=...)")
        self._check_session()
        if not self._launched:
            raise RuntimeError(
                f"worker group {self.name!r} is started but its workers are not built; call .wait_launched() first"
            )

    def _check_method(self, method_name: str) -> None:
        self._check_launched()
        if not callable(getattr(self._worker_cls, method_name, None)):
            raise AttributeError(f"{self._worker_cls.__name__} has no method {method_name!r}")

    def __getattr__(self, method_name: str) -> _MethodCaller:
        if method_name.startswith("_"):
            raise AttributeError(method_name)
        self._check_method(method_name)
        return _MethodCaller(self, method_name, range(self.world_size))

    def execute_on(self, *ranks: int) -> _RankSubset:
        """The given ranks only (each once, at least one; numpy integers are fine): `.execute_on(0).method()`."""
        if not ranks:
            raise ValueError(
                f"execute_on() of worker group {self.name!r} got no rank; give one or more of its ranks "
                f"0-{self.world_size - 1}, or call the method on the group for every rank"
            )
        checked = [_check_rank(rank, self.name, self.world_size) for rank in ranks]
        repeated = sorted({rank for rank in checked if checked.count(rank) > 1})
        if repeated:  # before: the method ran twice on the rank
            raise ValueError(f"execute_on{tuple(checked)} names rank(s) {repeated} more than once; give each rank once")
        return _RankSubset(self, checked)

    # ---- weight sync --------------------------------------------------------------------------
    def sync_weights_to(self, dst: "WorkerGroup", method: str = "auto") -> None:
        """Every rank here runs full_state_dict(); every dst rank then runs load_state_dict(full dict).

        method: "auto" (see sync_method), "object_store", "collective" (a broadcast over a cross-group
        communicator; gloo on CPU) or "cuda_ipc" (one sender rank, every receiver on its GPU: the receivers
        copy from the sender's device memory; the sender defines device_state_dict).
        Both groups must be launched (before: a shut-down destination hung a collective sync for 30 minutes).
        """
        if method not in ("auto", "object_store", "collective", "cuda_ipc"):
            raise ValueError(
                f"sync_weights_to(method={method!r}): use 'auto', 'object_store', 'collective' or 'cuda_ipc'"
            )
        if not isinstance(dst, WorkerGroup):
            raise TypeError(f"sync_weights_to(dst={dst!r}): give the receiving WorkerGroup")
        for role, group in (("source", self), ("destination", dst)):
            try:
                group._check_launched()
            except RuntimeError as error:
                raise RuntimeError(f"sync_weights_to: the {role} {error}") from None
        auto, method = method == "auto", self.sync_method(dst) if method == "auto" else method
        if method == "object_store":
            self._sync_by_object_store(dst)
        elif method == "collective":
            self._sync_by_broadcast(dst)
        elif method == "cuda_ipc":
            try:
                self._sync_by_cuda_ipc(dst)
            except WorkerError as error:
                if not auto:
                    raise
                logger.warning(
                    "CUDA IPC weight sync from %r to %r failed; syncing through the Ray object store from now on:\n%s",
                    self.name,
                    dst.name,
                    error,
                )
                self._ipc_failed = True
                self._sync_by_object_store(dst)
        else:
            raise ValueError(
                f"sync_weights_to(method={method!r}): use 'auto', 'object_store', 'collective' or 'cuda_ipc'"
            )

    def sync_method(self, dst: "WorkerGroup") -> str:
        """What 'auto' sync uses: CUDA IPC when one sender rank shares its GPU with every receiver (collocated
        on one GPU), an NCCL broadcast when no two members share a GPU, else the Ray object store."""
        if not (self.uses_cuda and dst.uses_cuda):
            return "object_store"
        if self._all_on_one_gpu_with(dst) and not self._ipc_failed:
            return "cuda_ipc"
        return "object_store" if self._shares_gpu_with(dst) else "collective"

    def _all_on_one_gpu_with(self, dst: "WorkerGroup") -> bool:
        src = self.placements[0]
        return self.world_size == 1 and all(
            p.node_rank == src.node_rank and p.global_gpu_ids == src.global_gpu_ids for p in dst.placements
        )

    def _shares_gpu_with(self, dst: "WorkerGroup") -> bool:
        """Whether src rank 0 and a dst rank (or two dst ranks) sit on one GPU: NCCL then refuses the
        broadcast ("duplicate GPU"), as it needs one process per GPU in a communicator."""
        members = [self.placements[0].global_gpu_ids] + [p.global_gpu_ids for p in dst.placements]
        flat = [gpu for gpus in members for gpu in gpus]
        return len(flat) != len(set(flat))

    def _sync_by_object_store(self, dst: "WorkerGroup") -> None:
        refs = [host.call_and_put.remote("full_state_dict") for host in self._hosts]
        results = GroupHandle(self.name, "full_state_dict", range(self.world_size), refs).wait()
        if not results[0]:
            raise ValueError(f"{self.name} rank 0's full_state_dict() returned nothing to sync")
        (state_ref,) = results[0]
        dst.load_state_dict(state_ref).wait()  # Ray hands every rank the same object, read once per node

    def _sync_by_cuda_ipc(self, dst: "WorkerGroup") -> None:
        if not self._all_on_one_gpu_with(dst):
            raise ValueError(
                f"cuda_ipc sync from {self.name!r} to {dst.name!r} needs one {self.name} rank and every {dst.name} "
                "rank on its GPU; use method='collective' or 'object_store'"
            )
        package = GroupHandle(self.name, "ipc_share_weights", [0], [self._hosts[0].ipc_share_weights.remote()])
        (shared,) = package.wait()
        try:
            loads = [host.ipc_load_weights.remote(shared) for host in dst._hosts]
            GroupHandle(dst.name, "ipc_load_weights", range(dst.world_size), loads).wait()
        finally:
            GroupHandle(self.name, "ipc_release", [0], [self._hosts[0].ipc_release.remote()]).wait()

    def _sync_by_broadcast(self, dst: "WorkerGroup") -> None:
        # per launch of dst: a group relaunched under the name forms a new communicator (its old one's members died)
        key = f"sync/{self.name}->{dst.name}@{dst._claim_token[:12]}"
        world_size = 1 + dst.world_size  # src rank 0 + every dst rank
        backend = "nccl" if (self.uses_cuda and dst.uses_cuda) else "gloo"
        if key not in self._sync_stores:
            self._sync_stores[key] = ray.get(self._hosts[0].host_store.remote(key, world_size))
        ip, port = self._sync_stores[key]
        self._sync_seq += 1
        send = [host.weights_send.remote(key, self._sync_seq, ip, port, world_size, backend) for host in self._hosts]
        recv = [
            host.weights_recv.remote(key, self._sync_seq, ip, port, 1 + r, world_size, backend)
            for r, host in enumerate(dst._hosts)
        ]
        labels = [f"worker group {self.name!r} rank {r} failed sending weights" for r in range(self.world_size)] + [
            f"worker group {dst.name!r} rank {r} failed receiving weights" for r in range(dst.world_size)
        ]
        GroupHandle(self.name, "sync_weights_to", [], send + recv, labels).wait()

    # ---- teardown -----------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Kill the ranks' processes, destroy the p2p mailbox and free the name for another group. A group
        that never claimed its name (its start was refused) touches neither the name nor the mailbox. Afterwards
        the group has no ranks (world_size 0) and refuses calls, naming itself as shut down; it can be launched
        again. A group whose Ray connection ended (its processes with it) only forgets them."""
        started = bool(self._hosts) or self._claim_token is not None
        alive = ray_session() == self._session and ray.is_initialized()
        hosts, self._hosts = self._hosts, []
        self.placements, self._launched, self._pending, self._store_ref = [], False, [], None
        self._sync_stores.clear()
        mailbox, self._mailbox = self._mailbox, None
        self._shut_down = self._shut_down or started
        if alive:
            for host in hosts:
                ray.kill(host)
        if self._claim_token is None:
            return
        self._claim_finalizer.detach()
        token, self._claim_token, self._claim_finalizer = self._claim_token, None, None
        if not alive:
            return
        # From now on a send to this group fails. Its own mailbox only (before: any by the name; a start refused
        # because another run held the mailbox destroyed that run's).
        if mailbox is not None:
            mailbox.destroy()
        ray.get(_registry().release.remote(self.name, token))  # before a relaunch claims it

    def __repr__(self) -> str:
        if self._shut_down and not self._hosts:
            return f"WorkerGroup({self.name!r}, {self._worker_cls.__name__}, shut down)"
        return f"WorkerGroup({self.name!r}, {self._worker_cls.__name__} x{self.world_size})"
