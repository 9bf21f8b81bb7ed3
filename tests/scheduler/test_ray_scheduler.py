"""Worker groups, channels, send/recv, offload and weight sync on one local Ray cluster (CPU, simulated GPUs)."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import re
import sys
import threading
import time

import numpy as np
import pytest
import ray
import ray.cloudpickle
import torch
import torch.distributed as dist

from rlinf_embodied.scheduler import (
    Channel,
    ChannelGoneError,
    ChannelItemError,
    Cluster,
    ComponentPlacement,
    FlexiblePlacementStrategy,
    PackedPlacementStrategy,
    Worker,
    WorkerError,
    wait_all,
)

# Ray workers cannot import this test module by name: ship its worker classes by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def cluster(ray_session):
    return Cluster(num_nodes=1, num_gpus_per_node=8, simulate_gpus=True)  # joins the session's Ray


class ProbeWorker(Worker):
    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale
        self.loaded: dict | None = None

    def info(self) -> dict:
        return {
            "rank": self.rank,
            "world_size": self.world_size,
            "device": str(self.device),
            "gpus": self.placement.local_gpu_ids,
            "group": self.group_name,
            "dist_world": dist.get_world_size(),
            "dist_rank": dist.get_rank(),
        }

    def all_reduce(self) -> float:
        value = torch.tensor([float(self.rank + 1)])
        dist.all_reduce(value)
        return float(value)

    def fail(self) -> None:
        raise KeyError("deliberate failure")

    def fail_non_finite(self) -> None:
        from rlinf_embodied.algorithms import NonFiniteError

        raise NonFiniteError("loss", 0, "1 NaN")

    # weight sync hooks: a collective full_state_dict like the FSDP actor's (rank 0 holds the dict)
    def full_state_dict(self) -> dict[str, torch.Tensor]:
        shard = torch.full((2,), float(self.rank)) * self.scale
        gathered = [torch.empty(2) for _ in range(self.world_size)]
        dist.all_gather(gathered, shard)
        if self.rank != 0:
            return {}
        return {
            "weight": torch.cat(gathered),
            "count": torch.tensor([7, 8], dtype=torch.int64),
            "half": torch.arange(3, dtype=torch.bfloat16),
        }

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.loaded = {k: v.clone() for k, v in state_dict.items()}

    def loaded_state(self) -> dict | None:
        return self.loaded

    # channels and p2p
    def produce(self, channel: Channel, n: int) -> None:
        for i in range(n):
            channel.put((self.rank, i), key=f"from{self.rank}")

    def consume(self, channel: Channel, key: str, n: int) -> list:
        return [channel.get(key=key) for _ in range(n)]

    def consume_batch(self, channel: Channel, key: str, n: int) -> list:
        return channel.get_batch(n, key=key)

    def send_things(self, dst_group: str, dst_rank: int) -> None:
        self.send(torch.arange(4.0) + self.rank, dst_group, dst_rank)
        self.send({"note": "hello", "rank": self.rank}, dst_group, dst_rank)

    def recv_things(self, src_group: str, src_rank: int) -> list:
        return [self.recv(src_group, src_rank), self.recv(src_group, src_rank)]

    def send_one(self, dst_group, dst_rank) -> None:
        self.send("one", dst_group, dst_rank)

    def recv_one(self, src_group, src_rank):
        return self.recv(src_group, src_rank)

    def recv_within(self, src_group, src_rank, timeout):
        return self.recv(src_group, src_rank, timeout=timeout)

    def get_within(self, channel: Channel, key: str, timeout: float):
        return channel.get(key=key, timeout=timeout)

    def nap(self, seconds: float) -> int:
        time.sleep(seconds * (self.rank + 1))
        return self.rank


class FsdpWorker(ProbeWorker):
    """A tiny FSDP2 model + Adam, like ActorWorker, to test offload on sharded (DTensor) state."""

    def __init__(self, scale: float = 1.0):
        super().__init__(scale)
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        torch.manual_seed(0)
        self.model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        self.model.register_buffer("stat", torch.arange(3.0))
        mesh = init_device_mesh(self.device.type, (self.world_size,))
        fully_shard(self.model, mesh=mesh)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-2)

    def step(self) -> float:
        loss = self.model(torch.randn(4, 6)).pow(2).mean()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        return float(loss.detach())

    def snapshot(self) -> dict:
        params = {n: p.to_local().detach().clone() for n, p in self.model.named_parameters()}
        buffers = {n: b.detach().clone() for n, b in self.model.named_buffers()}
        optim = {
            (i, k): (v.to_local() if hasattr(v, "to_local") else v).clone()
            for i, state in enumerate(self.optimizer.state.values())
            for k, v in state.items()
        }
        return {"params": params, "buffers": buffers, "optim": optim}

    def round_trip(self) -> None:
        self.offload_model(self.model)
        self.offload_optimizer(self.optimizer)
        self.onload_model(self.model)
        self.onload_optimizer(self.optimizer)


def launch(cluster, cls, name, strategy, *args):
    return cls.create_group(*args).launch(cluster, name=name, placement_strategy=strategy)


PLACEMENT = {"env": "0-1", "rollout": "2", "actor": "all"}


@pytest.fixture(scope="module")
def groups(cluster):
    """A hybrid layout on 8 simulated GPUs, shared by the tests (starting processes is the slow part)."""
    placement = ComponentPlacement(PLACEMENT, num_gpus=8)
    launched = {
        "env": launch(cluster, ProbeWorker, "env", placement.strategy("env"), 2.0),
        "rollout": launch(cluster, ProbeWorker, "rollout", placement.strategy("rollout"), 3.0),
        # the actor: 2 processes x 4 GPUs each
        "actor": launch(cluster, FsdpWorker, "actor", PackedPlacementStrategy(0, 7, num_gpus_per_process=4)),
    }
    yield launched
    for group in launched.values():
        group.shutdown()


# ---- groups -----------------------------------------------------------------------------------------
def test_hybrid_layout_on_8_simulated_gpus(groups):
    assert ComponentPlacement(PLACEMENT, num_gpus=8).mode == "hybrid"
    env, rollout = groups["env"].info().wait(), groups["rollout"].info().wait()
    assert [i["gpus"] for i in env] == [(0,), (1,)] and [i["gpus"] for i in rollout] == [(2,)]
    infos = groups["actor"].info().wait()
    assert [i["gpus"] for i in infos] == [(0, 1, 2, 3), (4, 5, 6, 7)]
    assert [(i["rank"], i["world_size"], i["dist_rank"], i["dist_world"]) for i in infos] == [
        (0, 2, 0, 2),
        (1, 2, 1, 2),
    ]
    assert {i["device"] for i in infos} == {"cpu"} and {i["group"] for i in infos} == {"actor"}
    assert [i["rank"] for i in groups["actor"].execute_on(1).info().wait()] == [1]
    assert groups["env"].world_size == 2 and groups["actor"].name == "actor"


def test_world_size_2_all_reduce_over_its_own_gloo_group(groups):
    assert groups["env"].all_reduce().wait() == [3.0, 3.0]
    assert groups["rollout"].all_reduce().wait() == [1.0]


def test_errors_name_group_rank_and_cause(groups):
    env = groups["env"]
    with pytest.raises(WorkerError) as error:
        env.execute_on(1).fail().wait()
    message = str(error.value)
    assert "'env' rank 1" in message and "fail()" in message and "deliberate failure" in message
    with pytest.raises(AttributeError, match="no method 'missing'"):
        env.missing()
    with pytest.raises(ValueError, match="rank 2"):
        env.execute_on(2)
    assert env.all_reduce().wait() == [3.0, 3.0]  # the group still works after a failed call
    # an exception with its own __init__ (the actor's NaN guard): before, Ray's "Failed to deserialize exception"
    with pytest.raises(WorkerError, match=r"(?s)'env' rank 0 failed in fail_non_finite\(\).*non-finite 'loss'"):
        env.execute_on(0).fail_non_finite().wait()


def test_wait_all_fails_on_a_worker_whose_peer_waits_for_it(groups):
    """The rollout and the env workers feed each other over channels: the runner waited on the rollout first, so
    an env worker's error (e.g. NaN actions) left the run hanging, the rollout worker blocked on the channel."""
    channel = Channel.create("t_wait_all", maxsize=2)
    waiting = groups["rollout"].consume(channel, "never", 1)  # blocks: nothing is put under this key
    start = time.perf_counter()
    try:
        with pytest.raises(WorkerError, match=r"(?s)'env' rank 1 failed in fail\(\).*deliberate failure"):
            wait_all(waiting, groups["env"].execute_on(1).fail())
        assert time.perf_counter() - start < 30
    finally:
        channel.put("unblock", key="never")  # frees the shared rollout worker for the other tests
    assert waiting.wait() == [["unblock"]]
    assert wait_all(groups["env"].all_reduce(), groups["rollout"].all_reduce()) == [[3.0, 3.0], [1.0]]


def test_an_error_on_several_ranks_names_every_rank(groups):
    """Before: only the first failed rank was named; the others' errors came as Ray "Unhandled error" log lines."""
    with pytest.raises(WorkerError) as error:
        groups["env"].fail().wait()
    message = str(error.value)
    assert message.startswith("worker group 'env' rank ") and "deliberate failure" in message
    assert "1 more failed in this call:" in message
    assert re.search(r"'env' rank [01] failed in fail\(\): KeyError: 'deliberate failure'", message)
    assert "'env' rank 0" in message and "'env' rank 1" in message


def test_a_second_group_under_a_running_name_is_refused(cluster, groups):
    """Before: accepted; its start replaced the running group's p2p mailbox (messages lost) and registry entry."""
    duplicate = ProbeWorker.create_group()
    for _ in range(2):  # the refused group's shutdown must leave the running group's name and mailbox alone
        with pytest.raises(ValueError, match=r"a worker group named 'env' is already running; shut it down first"):
            duplicate.launch(cluster, name="env")
        duplicate.shutdown()
    receiving = groups["env"].execute_on(0).recv_one("rollout", 0)
    groups["rollout"].send_one("env", 0).wait()
    assert receiving.wait(timeout=60) == ["one"]  # the first group's mailbox still delivers


def test_a_name_is_free_again_after_shutdown_or_garbage_collection(cluster):
    first = launch(cluster, ProbeWorker, "t_reuse", None)
    first.shutdown()
    second = launch(cluster, ProbeWorker, "t_reuse", None)
    del second  # dropped without shutdown: its process ends, and so does its claim on the name
    gc.collect()
    third = launch(cluster, ProbeWorker, "t_reuse", None)
    try:
        assert third.info().wait()[0]["group"] == "t_reuse"
    finally:
        third.shutdown()


@pytest.mark.parametrize(
    "method, args, error",
    [
        ("send_one", ("rollout", 9), r"ValueError: rank 9 is not in group 'rollout' \(ranks 0-0\)"),
        ("send_one", ("rollout", True), r"TypeError: rank True of type bool is not an int"),
        ("send_one", ("zz", 0), r"ValueError: no worker group named 'zz' is running; running: \[.*'rollout'.*\]"),
        ("recv_one", ("zz", 0), r"no worker group named 'zz' is running"),  # before: waited for ever
        ("recv_one", ("rollout", 3), r"rank 3 is not in group 'rollout' \(ranks 0-0\)"),
    ],
)
def test_send_recv_check_the_peer_group_and_rank(groups, method, args, error):
    """Before: a send to a rank the group lacks was queued for ever; a group that does not run gave a hang or
    "no channel named '__p2p__/zz'; create it first with Channel.create(...)"."""
    with pytest.raises(WorkerError, match=error) as raised:
        getattr(groups["env"].execute_on(0), method)(*args).wait(timeout=60)
    assert "__p2p__" not in str(raised.value)


def test_a_send_reaches_a_relaunched_group_and_names_a_shut_down_one(cluster, groups):
    """Before: the sender kept the first group's mailbox: "channel '__p2p__/t_peer' is gone" after its shutdown,
    then Ray's ActorDiedError for every later send, to a group relaunched under the name too."""
    sender = groups["env"].execute_on(0)
    for relaunch in range(2):
        peer = launch(cluster, ProbeWorker, "t_peer", None)
        try:
            receiving = peer.recv_one("env", 0)
            sender.send_one("t_peer", 0).wait(timeout=60)  # the second time through the first group's mailbox
            assert receiving.wait(timeout=60) == ["one"], relaunch
        finally:
            peer.shutdown()
    with pytest.raises(WorkerError, match=r"no worker group named 't_peer' is running; running: \[") as raised:
        sender.send_one("t_peer", 0).wait(timeout=60)
    assert "'env'" in str(raised.value).splitlines()[-1] and "__p2p__" not in str(raised.value)


def test_a_recv_from_a_group_shut_down_since_the_last_recv_names_it(cluster, groups):
    """Before: the receiver's cached check passed, and the recv waited for ever."""
    peer = launch(cluster, ProbeWorker, "t_gone", None)
    receiver = groups["rollout"]
    receiving = receiver.recv_one("t_gone", 0)
    peer.send_one("rollout", 0).wait(timeout=60)
    assert receiving.wait(timeout=60) == ["one"]
    peer.shutdown()
    with pytest.raises(WorkerError, match=r"no worker group named 't_gone' is running"):
        receiver.recv_one("t_gone", 0).wait(timeout=30)


def test_a_recv_waiting_on_a_group_as_it_shuts_down_names_it_and_one_relaunched_is_received_from(cluster, groups):
    """The registry's "gone" message (_post_gone) ends a recv that waits on the group (before: waited for ever), and a
    group relaunched under the name is received from, past the gone message of the one before it."""
    receiver = groups["rollout"]
    peer = launch(cluster, ProbeWorker, "t_restart", None)
    receiving = receiver.recv_one("t_restart", 0)
    peer.send_one("rollout", 0).wait(timeout=60)
    assert receiving.wait(timeout=60) == ["one"]  # the receiver has cached the group's info
    waiting = receiver.recv_one("t_restart", 0)
    peer.shutdown()
    with pytest.raises(WorkerError, match=r"no worker group named 't_restart' is running"):
        waiting.wait(timeout=30)
    peer = launch(cluster, ProbeWorker, "t_restart", None)
    try:
        peer.send_one("rollout", 0).wait(timeout=60)
        assert receiver.recv_one("t_restart", 0).wait(timeout=60) == ["one"]
    finally:
        peer.shutdown()


class _Mailbox:
    """A p2p mailbox in this process: a FIFO per key, which raises where a recv would block."""

    def __init__(self):
        self.queues: dict[str, list] = {}

    def put(self, item, key):
        self.queues.setdefault(key, []).append(item)

    def get(self, key):
        return self.queues[key].pop(0)


def test_recv_looks_a_group_up_once_until_the_registry_says_it_is_gone(monkeypatch):
    """Before: a registry lookup (0.8 ms) at every recv. Now once per group, and again after a "gone" message of the
    group it cached: a shut-down group is named, a relaunched one (another token) received from; a "gone" of a group
    before the cached one is skipped without a lookup."""
    from rlinf_embodied.scheduler import worker as worker_module

    running: dict[str, dict] = {"t_src": {"world_size": 1, "cuda": False, "token": "first"}}
    lookups = []

    def lookup_group(name):
        lookups.append(name)
        return running.get(name), sorted(running)

    monkeypatch.setattr(worker_module, "_lookup_group", lookup_group)
    receiver = Worker()  # group "local", rank 0
    mailbox = receiver._channels[worker_module._mailbox_name("local")] = _Mailbox()
    for item in [("obj", 1), ("obj", 2), ("gone", "first"), ("obj", 3), ("gone", "first"), ("obj", 4)]:
        mailbox.put(item, key="t_src/0->0")
    assert [receiver.recv("t_src", 0), receiver.recv("t_src", 0)] == [1, 2]
    assert lookups == ["t_src"]  # the second recv used the cached info
    running["t_src"] = {"world_size": 1, "cuda": False, "token": "second"}  # shut down and relaunched
    assert receiver.recv("t_src", 0) == 3 and lookups == ["t_src"] * 2
    assert receiver.recv("t_src", 0) == 4 and lookups == ["t_src"] * 2  # the first group's gone again: skipped
    del running["t_src"]
    mailbox.put(("gone", "second"), key="t_src/0->0")
    with pytest.raises(ValueError, match=r"^no worker group named 't_src' is running; running: \[\]$"):
        receiver.recv("t_src", 0)


@pytest.mark.parametrize(
    "name, error, message",
    [
        (None, TypeError, r"worker group name None of type NoneType is not a str; e\.g\. 'actor'"),
        ("", ValueError, r"worker group name '' is empty; give a name such as 'actor'"),
        ("  ", ValueError, r"worker group name '  ' is blank; give a name such as 'actor'"),
    ],
)
def test_a_bad_group_name_is_named(cluster, name, error, message):
    with pytest.raises(error, match=message):
        ProbeWorker.create_group().launch(cluster, name=name)


def test_a_blank_channel_name_is_refused():
    """Before: accepted (only '' was refused, while a worker group's blank name was)."""
    with pytest.raises(ValueError, match=r"channel name ' ' is blank; give a name such as 'env_to_rollout'"):
        Channel.create(" ")


def test_joining_ray_with_fewer_simulated_gpus_is_refused(cluster):
    """Before: a Cluster joining this process's Ray took num_gpus_per_node at its word when GPUs were simulated."""
    from rlinf_embodied.scheduler.cluster import SIM_GPU_RESOURCE

    if cluster.has_real_gpus:
        pytest.skip("counts simulated GPUs")
    offered = int(ray.cluster_resources()[SIM_GPU_RESOURCE])
    with pytest.raises(ValueError, match=rf"num_gpus_per_node={offered + 1}, but node 0 .* has {offered} simulated"):
        Cluster(num_nodes=1, num_gpus_per_node=offered + 1, simulate_gpus=True)


def test_launch_beyond_the_cluster_names_id_and_size(cluster):
    with pytest.raises(ValueError, match="GPU id 8.*8 GPUs"):
        launch(cluster, ProbeWorker, "too_big", FlexiblePlacementStrategy([[7], [8]]))


# ---- channels ---------------------------------------------------------------------------------------
def test_channel_fifo_batch_qsize_and_tensors(cluster):
    channel = Channel.create("t_fifo")
    for i in range(5):
        channel.put(i)
    big = torch.randn(512, 1024)  # 2 MB: goes by object-store reference
    channel.put(big, key="big")
    assert channel.qsize() == 5 and channel.qsize("big") == 1 and channel.total_size() == 6
    assert channel.get() == 0 and channel.get_batch(4) == [1, 2, 3, 4]
    assert torch.equal(Channel.connect("t_fifo").get(key="big"), big)
    with pytest.raises(ValueError, match="no channel named 'nope'"):
        Channel.connect("nope")
    with pytest.raises(ValueError, match="maxsize=-1"):
        Channel.create("bad", maxsize=-1)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: Channel.create(None), TypeError, r"channel name None of type NoneType is not a str"),
        (lambda: Channel.create(123), TypeError, r"channel name 123 of type int is not a str"),
        (lambda: Channel.create(""), ValueError, r"channel name '' is empty"),
        (lambda: Channel.connect(None), TypeError, r"channel name None"),
        (lambda: Channel("unused").get_batch(1.5), TypeError, r"get_batch\(n=1.5\): n must be an int >= 0"),
        (lambda: Channel("unused").get_batch("2"), TypeError, r"get_batch\(n='2'\)"),
        (lambda: Channel("unused").get_batch(True), TypeError, r"get_batch\(n=True\)"),
    ],
)
def test_channel_arguments_of_the_wrong_type_are_named(call, error, message):
    """Checked before any Ray call: before, raw TypeErrors, and an empty name was accepted."""
    with pytest.raises(error, match=message):
        call()


def test_channel_back_pressure_blocks_producer(cluster):
    channel = Channel.create("t_bounded", maxsize=2)
    channel.put("a")
    channel.put("b")
    done = threading.Event()
    thread = threading.Thread(target=lambda: (channel.put("c"), done.set()))
    thread.start()
    assert not done.wait(1.0), "a put on a full channel must block"
    assert channel.get() == "a"
    assert done.wait(10.0), "the blocked put must complete once a get frees space"
    thread.join()
    assert [channel.get(), channel.get()] == ["b", "c"]


def test_channel_transports_reach_the_same_queues(cluster):
    fast = Channel.create("t_transport")  # node-local socket for put/get on this node
    fast.put({"obs": torch.arange(3)}, key="k")
    assert isinstance(fast._route, str), "a handle on the actor's node should use the socket"
    assert Channel.connect("t_transport").qsize("k") == 1  # qsize goes through Ray: same queue

    async def via_ray():
        return await Channel.connect("t_transport").get_async(key="k")

    assert torch.equal(asyncio.run(via_ray())["obs"], torch.arange(3))  # socket put, Ray get
    asyncio.run(Channel.connect("t_transport").put_async("from ray", key="k"))
    assert fast.get(key="k") == "from ray"  # Ray put, socket get
    slow = Channel.create("t_transport_ray", node_local=False)
    slow.put(1)
    assert slow.get() == 1 and slow._route is False
    fast.destroy()
    gone = Channel("t_transport", actor=None)
    gone._route = fast._route  # a handle that still knows the socket of a destroyed channel
    with pytest.raises((RuntimeError, ValueError), match="t_transport"):  # gone, or no longer found
        gone.get(key="k")


def test_channel_keys_do_not_block_each_other(cluster):
    channel = Channel.create("t_keys")
    result = {}
    waiter = threading.Thread(target=lambda: result.setdefault("a", channel.get(key="A")))
    waiter.start()
    time.sleep(0.3)  # the get on A is now waiting inside the channel actor
    start = time.perf_counter()
    channel.put(1, key="B")
    assert channel.get(key="B") == 1
    assert time.perf_counter() - start < 2.0
    channel.put("for A", key="A")
    waiter.join(10.0)
    assert result == {"a": "for A"}


def test_channel_async(cluster):
    channel = Channel.create("t_async", maxsize=1)

    async def consume(n):  # one consumer, concurrent with the producer (maxsize 1 makes them alternate)
        return [await channel.get_async(key="k") for _ in range(n)]

    async def scenario():
        consumer = asyncio.ensure_future(consume(3))
        for i in range(3):
            await channel.put_async(torch.full((3,), float(i)) if i == 1 else i, key="k")
        return await consumer

    first, second, third = asyncio.run(scenario())
    assert first == 0 and torch.equal(second, torch.ones(3)) and third == 2


def test_channel_between_worker_processes(groups):
    channel = Channel.create("t_workers", maxsize=3)  # smaller than what is produced: back-pressure
    pending = groups["env"].produce(channel, 10)
    from_1 = groups["rollout"].consume(channel, "from1", 10).wait()[0]
    from_0 = channel.get_batch(10, key="from0")
    pending.wait()
    assert from_1 == [(1, i) for i in range(10)] and from_0 == [(0, i) for i in range(10)]


# ---- point to point ---------------------------------------------------------------------------------
def test_send_recv_tensor_and_object(groups):
    receiving = groups["rollout"].recv_things("env", 1)  # posted first: recv blocks until the send
    groups["env"].execute_on(1).send_things("rollout", 0).wait()
    tensor, obj = receiving.wait()[0]
    assert torch.equal(tensor, torch.arange(4.0) + 1) and obj == {"note": "hello", "rank": 1}


# ---- offload ----------------------------------------------------------------------------------------
def test_offload_round_trip_is_bit_exact_on_fsdp2(groups):
    actor = groups["actor"]
    actor.step().wait()  # Adam state exists now
    before = actor.snapshot().wait()
    actor.round_trip().wait()
    after = actor.snapshot().wait()
    for rank_before, rank_after in zip(before, after):
        assert rank_before["optim"], "Adam state should exist after a step"
        for part in ("params", "buffers", "optim"):
            assert rank_before[part].keys() == rank_after[part].keys()
            for key, value in rank_before[part].items():
                assert torch.equal(value, rank_after[part][key]), (part, key)
    losses = actor.step().wait()  # still trains after the round trip
    assert all(torch.isfinite(torch.tensor(losses)))


def test_offload_in_process_module_and_optimizer():
    worker = ProbeWorker()  # outside a group: rank 0 of 1 on CPU
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    state = {k: v.clone() for k, v in optimizer.state[model.weight].items()}
    weight = model.weight.detach().clone()
    worker.offload_model(model)
    worker.offload_optimizer(optimizer)
    worker.onload_model(model)
    worker.onload_optimizer(optimizer)
    assert torch.equal(model.weight, weight)
    assert all(torch.equal(optimizer.state[model.weight][k], v) for k, v in state.items())


# ---- weight sync ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "src, dst, method",
    [
        ("env", "rollout", "object_store"),
        ("rollout", "env", "object_store"),
        ("env", "rollout", "collective"),
        ("rollout", "env", "collective"),
    ],
)
def test_weight_sync(groups, src, dst, method):
    """2 -> 1 and 1 -> 2 ranks, through the object store and a gloo broadcast."""
    for _ in range(2):  # the second sync reuses the communicator / store
        groups[src].sync_weights_to(groups[dst], method=method)
    scale = {"env": 2.0, "rollout": 3.0}[src]
    expected = torch.cat([torch.full((2,), scale * r) for r in range(groups[src].world_size)])
    states = groups[dst].loaded_state().wait()
    assert len(states) == groups[dst].world_size
    for state in states:
        assert torch.equal(state["weight"], expected)
        assert torch.equal(state["count"], torch.tensor([7, 8]))
        assert state["half"].dtype == torch.bfloat16 and torch.equal(state["half"].float(), torch.arange(3.0))
    with pytest.raises(ValueError, match="method='rsync'"):
        groups[src].sync_weights_to(groups[dst], method="rsync")


def test_a_sync_to_a_shut_down_group_is_refused_and_one_relaunched_under_its_name_receives(cluster, groups):
    """Before: a collective sync to a shut-down group waited 30 minutes for its ranks (world_size still counted
    them); after a relaunch under the name, the sender reused the old group's communicator ("Connection closed")."""
    receiver = ProbeWorker.create_group()
    for relaunch in range(2):
        receiver.launch(cluster, name="t_sync_dst", placement_strategy="3")
        groups["rollout"].sync_weights_to(receiver, method="collective")
        assert torch.equal(receiver.loaded_state().wait()[0]["weight"], torch.zeros(2)), relaunch
        receiver.shutdown()
        assert receiver.world_size == 0 and "shut down" in repr(receiver)
        start = time.perf_counter()
        for method in ("collective", "object_store", "auto"):
            with pytest.raises(RuntimeError, match=r"destination worker group 't_sync_dst' was shut down"):
                groups["rollout"].sync_weights_to(receiver, method=method)
        assert time.perf_counter() - start < 5
        with pytest.raises(RuntimeError, match=r"worker group 't_sync_dst' was shut down"):
            receiver.info()


# ---- use errors: launch, calls and timeouts ------------------------------------------------------
def test_wait_timeout_bounds_the_whole_call_and_names_the_ranks_still_running(groups):
    """Before: the timeout applied to each rank in turn (ranks napping 1.5 and 3 s returned after 3 s under
    timeout=2), and the error said nothing of the call going on."""
    handle = groups["env"].nap(1.5)
    start = time.perf_counter()
    with pytest.raises(TimeoutError, match=r"did not finish in 2.0s on rank\(s\) \[1\] of worker group 'env'") as error:
        handle.wait(timeout=2.0)
    assert 1.9 < time.perf_counter() - start < 2.9
    assert "still running" in str(error.value) and "queue behind it" in str(error.value)
    assert handle.wait(timeout=30) == [0, 1]  # the call went on; waiting again collects it
    with pytest.raises(ValueError, match=r"wait\(timeout=-1\)"):
        groups["env"].nap(0).wait(timeout=-1)


def test_recv_and_channel_get_time_out_inside_the_worker_and_lose_nothing(groups):
    """GroupHandle.wait's timeout cannot end a recv waiting in a worker: Worker.recv(timeout=) and
    Channel.get(timeout=) do, take nothing, and leave the rank free (the next message still arrives)."""
    rollout = groups["rollout"]
    with pytest.raises(WorkerError, match=r"TimeoutError: recv from worker group 'env' rank 0: nothing arrived"):
        rollout.recv_within("env", np.int64(0), 0.3).wait(timeout=30)
    groups["env"].execute_on(0).send_one("rollout", 0).wait(timeout=30)
    assert rollout.recv_within("env", 0, 10).wait(timeout=30) == ["one"]
    for node_local in (True, False):
        channel = Channel.create("t_get_timeout", node_local=node_local)
        with pytest.raises(WorkerError, match=r"TimeoutError: channel 't_get_timeout': no item under key 'k' within"):
            rollout.get_within(channel, "k", 0.3).wait(timeout=30)
        with pytest.raises(TimeoutError, match=r"no item under key 'k' within 0.2 s"):
            channel.get(key="k", timeout=0.2)
        channel.put("v", key="k")
        assert rollout.get_within(channel, "k", 10).wait(timeout=30) == ["v"] and channel.qsize("k") == 0
        with pytest.raises(ValueError, match=r"timeout=-1"):
            channel.get(key="k", timeout=-1)
        channel.destroy()


class Clashing(Worker):
    def shutdown(self):  # a common name for an env or server worker's cleanup
        return "cleaned up"

    def start(self):
        return "started"


class NoSuper(Worker):
    def __init__(self):
        self.value = 1  # no super().__init__()

    def read(self):
        return self.value


def test_worker_methods_named_like_group_attributes_are_refused():
    """Before: group.shutdown() killed the group without running the worker's shutdown, group.start() failed with
    "missing 2 required positional arguments", without a word about the clash."""
    with pytest.raises(TypeError, match=r"Clashing defines shutdown\(\), start\(\), named like WorkerGroup's own"):
        Clashing.create_group()
    ProbeWorker.create_group()  # no clash


def test_launch_arguments_are_checked_and_a_worker_without_super_init_is_named(cluster):
    """Before: "'str' object has no attribute 'placements'" (a GPU spec, as the README writes placements),
    "'NoneType' object has no attribute 'num_gpus_per_node'", and a Worker that forgot super().__init__()
    launched, then failed in every call ("'NoSuper' object has no attribute 'rank'")."""
    group = ProbeWorker.create_group()
    with pytest.raises(TypeError, match=r"launch\(cluster=None\): give the Cluster to launch on"):
        group.launch(None, name="t_args")
    with pytest.raises(TypeError, match=r"places several components; give this group's own: ComponentPlacement"):
        group.launch(cluster, name="t_args", placement_strategy=ComponentPlacement({"a": "0-1"}, num_gpus=8))
    with pytest.raises(TypeError, match=r"placement_strategy=1.5 of type float is not a PlacementStrategy"):
        group.launch(cluster, name="t_args", placement_strategy=1.5)
    with pytest.raises(ValueError, match=r"GPU spec '7-9': id 8 is beyond the cluster's 8 GPUs"):
        group.launch(cluster, name="t_args", placement_strategy="7-9")
    with pytest.raises(WorkerError, match=r"NoSuper.__init__ did not call super\(\).__init__\(\)"):
        NoSuper.create_group().launch(cluster, name="t_nosuper")


def test_a_group_started_but_not_built_refuses_calls_and_a_second_wait_launched_keeps_it(cluster):
    """Before: a call between start() and wait_launched() failed in the worker ("'NoneType' object has no attribute
    'info'"), and a second wait_launched() built the workers again, failed, and shut the healthy group down."""
    group = ProbeWorker.create_group(5.0).start(cluster, name="t_build", placement_strategy="4,6")
    try:
        with pytest.raises(RuntimeError, match=r"group 't_build' is started but its workers are not built"):
            group.info()
        with pytest.raises(ray.exceptions.RayTaskError, match=r"rank 0: the worker is not built yet"):
            ray.get(group._hosts[0].call.remote("info"))  # the worker's side of the same check
        assert group.wait_launched() is group and group.wait_launched() is group
        assert [i["gpus"] for i in group.info().wait()] == [(4,), (6,)]
        assert [i["rank"] for i in group.execute_on(np.int64(1)).info().wait()] == [1]
        with pytest.raises(ValueError, match=r"execute_on\(1, 1\) names rank\(s\) \[1\] more than once"):
            group.execute_on(1, 1)
        with pytest.raises(ValueError, match=r"execute_on\(\) of worker group 't_build' got no rank"):
            group.execute_on()
    finally:
        group.shutdown()


def test_a_group_or_cluster_whose_ray_connection_ended_refuses_calls(cluster, groups, monkeypatch):
    """Before: a call on a group after its Cluster's shutdown started a new Ray instance (without the simulated
    GPUs) and failed with "Can't find actor"; a launch on a shut-down Cluster failed in Ray's scheduling."""
    from rlinf_embodied.scheduler import cluster as cluster_module
    from rlinf_embodied.scheduler import worker as worker_module

    joined = Cluster(num_gpus_per_node=1)  # joins the session's Ray; its shutdown leaves Ray running
    joined.shutdown()
    assert ray.is_initialized() and "shut down" in repr(joined)
    with pytest.raises(RuntimeError, match=r"Cluster\(1 node\(s\) x 1 .*GPUs\) was shut down \(Cluster.shutdown\(\)\)"):
        ProbeWorker.create_group().launch(joined, name="t_closed")
    ended = lambda: ("another session", "02000000")  # noqa: E731 - what ray_session gives after a new ray.init
    monkeypatch.setattr(worker_module, "ray_session", ended)
    monkeypatch.setattr(cluster_module, "ray_session", ended)
    with pytest.raises(RuntimeError, match=r"worker group 'env' belongs to a cluster that was shut down"):
        groups["env"].info()
    with pytest.raises(RuntimeError, match=r"the Ray connection it was made in has ended"):
        cluster.check_usable()
    monkeypatch.undo()
    assert groups["env"].all_reduce().wait() == [3.0, 3.0]


def test_a_cluster_address_other_than_this_process_connection_is_refused(cluster):
    """Before: Cluster(address=...) with Ray running in the process returned the local cluster, even for
    address='garbage'."""
    current = ray.get_runtime_context().gcs_address
    for address in ("10.1.2.3:6379", "garbage"):
        with pytest.raises(ValueError, match=rf"address='{address}'\): Ray is already connected to {current}"):
            Cluster(address=address, num_gpus_per_node=1)
    assert Cluster(address=current, num_gpus_per_node=1).num_gpus == 1


def test_a_ray_started_without_simulated_gpus_is_named_and_channels_need_a_running_ray(monkeypatch):
    """Before: "ask for at most that many" (0, which Cluster refuses) after a plain ray.init(), and Channel.create
    started a Ray instance of its own (without the simulated GPUs a Cluster needs)."""
    from rlinf_embodied.scheduler import channel as channel_module

    plain = Cluster.__new__(Cluster)
    plain.num_gpus_per_node, plain._joined_ray = 2, True
    with pytest.raises(ValueError, match=r"started without the 'simulated_gpu' resource .* ray.init\(resources="):
        plain._check_node_gpus(0, {"Resources": {}, "NodeManagerAddress": "10.0.0.1"}, real=False)
    monkeypatch.setattr(channel_module.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(channel_module.ray, "init", lambda *a, **k: pytest.fail("Channel started Ray"))
    for call in (lambda: Channel.create("t_no_ray"), lambda: Channel.connect("t_no_ray")):
        with pytest.raises(RuntimeError, match=r"Channel 't_no_ray': Ray is not running .* start a Cluster first"):
            call()


@dataclasses.dataclass
class Payload:
    """A class of this module, which Ray's workers cannot import: it travels by value (module registered)."""

    x: int


def test_channel_items_pickle_as_ray_pickles_on_both_transports(groups):
    """Before: the socket transport pickled with the stdlib, by reference: an instance of a class of a by-value
    module (or the driver's __main__) was accepted, then unreadable in a worker (and lost); a lambda was refused by
    put and accepted by put_async, whose socket get then failed and lost it."""
    for node_local in (True, False):
        channel = Channel.create("t_pickling", node_local=node_local)
        channel.put(Payload(3), key="k")
        channel.put(lambda: 41 + 1, key="k")
        asyncio.run(channel.put_async(Payload(4), key="k"))
        asyncio.run(channel.put_async(lambda: 43, key="k"))
        got = groups["rollout"].consume(channel, "k", 4).wait(timeout=60)[0]
        assert (got[0], got[1](), got[2], got[3]()) == (Payload(3), 42, Payload(4), 43), node_local
        asyncio.run(channel.put_async(lambda: 44, key="mixed"))
        channel.put(Payload(5), key="mixed")
        assert channel.get(key="mixed")() == 44 and asyncio.run(channel.get_async(key="mixed")) == Payload(5)
        with pytest.raises(TypeError, match=r"a channel item of type _thread.lock cannot be pickled"):
            channel.put(threading.Lock(), key="k")
        assert channel.total_size() == 0
        channel.destroy()


def test_by_value_items_are_found_by_their_types_within_two_levels():
    """What _dumps hands to cloudpickle: classes and functions of by-value modules (this one) and __main__, at the
    top or within two container levels; a tensor's bytes are never scanned (6 ms per 16 MB before)."""
    import torch

    from rlinf_embodied.scheduler.channel import _needs_by_value

    assert _needs_by_value(Payload(1)) and _needs_by_value({"a": [Payload(1)]}) and _needs_by_value(Payload)
    assert _needs_by_value((1, lambda: 2))  # a lambda of this by-value module
    assert not _needs_by_value((1, dataclasses.asdict))  # a function of an importable module: by reference
    assert not _needs_by_value({"obs": torch.zeros(3), "step": 1}) and not _needs_by_value([[[Payload(1)]]])


@pytest.fixture
def unimportable_class(tmp_path, monkeypatch):
    """A class in a module only this process can import (the workers' and channel actors' sys.path lack it)."""
    (tmp_path / "t_driver_only_module.py").write_text(
        "import dataclasses\nimport torch\n\n@dataclasses.dataclass\nclass Thing:\n    x: object\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import t_driver_only_module

    yield t_driver_only_module.Thing
    sys.modules.pop("t_driver_only_module", None)


@pytest.mark.parametrize("node_local", [True, False])
def test_an_item_a_reader_cannot_unpickle_is_named_and_stays_first_in_its_queue(groups, unimportable_class, node_local):
    """Before: the get's error was "Can't get attribute 'Msg' on <module '__main__'>" and the item was gone."""
    channel = Channel.create("t_unreadable", node_local=node_local)
    channel.put(unimportable_class(1), key="k")
    channel.put("after", key="k")
    message = r"key 'k': an item of type t_driver_only_module.Thing cannot be unpickled in this process .*No module"
    with pytest.raises(WorkerError, match=message):
        groups["rollout"].consume(channel, "k", 1).wait(timeout=60)
    with pytest.raises(WorkerError, match=message):
        groups["rollout"].consume_batch(channel, "k", 2).wait(timeout=60)
    assert channel.qsize("k") == 2
    assert channel.get_batch(2, key="k") == [unimportable_class(1), "after"]  # this process can: in order
    # a large item goes by object-store reference; a socket reader has the channel's actor unpickle it
    asyncio.run(channel.put_async(unimportable_class(torch.zeros(100_000)), key="big"))
    where = "the channel's actor" if node_local else "this process"
    with pytest.raises(WorkerError, match=rf"type t_driver_only_module.Thing cannot be unpickled in {where}"):
        groups["rollout"].consume(channel, "big", 1).wait(timeout=60)
    if node_local:  # this process's socket get too: the actor cannot unpickle it
        with pytest.raises(ChannelItemError, match=r"cannot be unpickled in the channel's actor"):
            channel.get(key="big")
    assert asyncio.run(channel.get_async(key="big")).x.shape == (100_000,)
    channel.destroy()


def test_a_destroyed_channel_is_gone_through_every_handle_and_destroy_is_idempotent(cluster):
    """Before: a handle not used before the destroy raised Ray's ActorDiedError, and a second destroy said "create
    it first"."""
    channel = Channel.create("t_destroyed")
    other = Channel.connect("t_destroyed")
    channel.destroy()
    for call in (lambda: other.put(1), lambda: other.get(), lambda: other.qsize(), lambda: channel.put(1)):
        with pytest.raises(ChannelGoneError, match=r"channel 't_destroyed' is gone"):
            call()
    channel.destroy()
    other.destroy()


def test_a_worker_groups_mailbox_name_is_reserved(groups):
    """Before: Channel.create('__p2p__/env') replaced the running env group's mailbox: its messages were lost."""
    with pytest.raises(ValueError, match=r"'__p2p__/env' is reserved: .*worker group 'env' uses this one"):
        Channel.create("__p2p__/env")
    receiving = groups["env"].execute_on(0).recv_one("rollout", 0)
    groups["rollout"].send_one("env", 0).wait(timeout=30)
    assert receiving.wait(timeout=30) == ["one"]
