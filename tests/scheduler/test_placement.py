"""GPU-id specs, component placement, strategies: pure Python, no Ray."""

from __future__ import annotations

import pytest

from rlinf_embodied.scheduler import (
    ComponentPlacement,
    FlexiblePlacementStrategy,
    PackedPlacementStrategy,
    parse_gpu_spec,
)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("all", [0, 1, 2, 3, 4, 5, 6, 7]),
        ("3", [3]),
        (3, [3]),
        ("0,2,3", [0, 2, 3]),
        ("0-3", [0, 1, 2, 3]),
        ("0-3,5,7", [0, 1, 2, 3, 5, 7]),
        (" 6 , 1-2 ", [1, 2, 6]),
        ([4, 5], [4, 5]),
    ],
)
def test_spec_forms(spec, expected):
    assert parse_gpu_spec(spec, total_gpus=8) == expected


@pytest.mark.parametrize(
    "spec, quoted, hint",
    [
        ("3-1", "'3-1'", "reversed"),
        ("0,8", "8", "beyond"),
        ("0,,2", "empty", "valid forms"),
        ("0,x", "'x'", "not an integer"),
        ("1.5", "'1.5'", "not an integer"),
        ("-1", "'-1'", "negative"),
        ("0-", "'0-'", "lacks its end"),
        ("0-2,2", "[2]", "more than once"),
        ("", "empty", "valid forms"),
        (None, "None", "valid forms"),
        ([], "[] is empty", "valid forms"),  # before: [] (no GPUs), and strategy() raised a bare IndexError
        ((), "() is empty", "valid forms"),
        # int() reads these, so before they were accepted ("1_0" as GPU 10): only ASCII digits are GPU ids
        ("１", "'１'", "not an integer"),
        ("+1", "'+1'", "not an integer"),
        ("1_0", "'1_0'", "not an integer"),
        ("٣", "'٣'", "not an integer"),
        ("0-٣", "'٣'", "not an integer"),
        ([True], "'True'", "not an integer"),
    ],
)
def test_spec_errors_quote_the_token(spec, quoted, hint):
    with pytest.raises(ValueError) as error:
        parse_gpu_spec(spec, total_gpus=8)
    assert quoted in str(error.value) and hint in str(error.value)


def test_multi_node_global_ids():
    placement = ComponentPlacement({"env": "0-3", "actor": "4-7"}, num_gpus=4, num_nodes=2)
    nodes = [p.node_rank for p in placement.strategy("actor").placements(4, 2)]
    local = [p.local_gpu_ids for p in placement.strategy("actor").placements(4, 2)]
    assert nodes == [1, 1, 1, 1] and local == [(0,), (1,), (2,), (3,)]


@pytest.mark.parametrize(
    "mapping, gpus, mode",
    [
        ({"env,rollout,actor": "all"}, 2, "collocated"),
        ({"env,rollout": "0", "actor": "1"}, 2, "disaggregated"),
        ({"env": "0-1", "rollout": "2-3", "actor": "all"}, 4, "hybrid"),
        ({"env": "0", "rollout": "0-1"}, 2, "hybrid"),
        ({"env": "0", "rollout": "1", "actor": "2-3"}, 4, "disaggregated"),
        ({"env": "0", "rollout": "0", "actor": "1"}, 2, "disaggregated"),  # one key per component, as in configs/
        ({"env": "all", "rollout": "all", "actor": "all"}, 2, "collocated"),
        ({"actor": "all"}, 1, "collocated"),
    ],
)
def test_mode(mapping, gpus, mode):
    assert ComponentPlacement(mapping, num_gpus=gpus).mode == mode


def test_components_and_gpus():
    placement = ComponentPlacement({"env,rollout": "0-1", "actor": 3}, num_gpus=4)
    assert placement.components == ["env", "rollout", "actor"]
    assert placement.gpus("rollout") == [0, 1] and placement.gpus("actor") == [3]
    with pytest.raises(ValueError, match="'critic'"):
        placement.gpus("critic")


@pytest.mark.parametrize(
    "mapping, message",
    [
        ({"env": "0", "env,actor": "1"}, "'env' is placed twice.*cluster.component_placement.env=0"),
        ({"env,": "0"}, "empty component name"),
        ({"env": "0", "critic": "1"}, "unknown component 'critic'"),
        ({"env": "5"}, "beyond"),
        ({}, "empty"),
        ({"env": [], "actor": "0"}, r"GPU spec \[\] is empty; valid forms"),
    ],
)
def test_component_errors(mapping, message):
    with pytest.raises(ValueError, match=message):
        ComponentPlacement(mapping, num_gpus=4, component_names=["env", "rollout", "actor"])


def test_default_strategy_one_process_per_gpu():
    placement = ComponentPlacement({"env": "0,2,3", "actor": "0-3"}, num_gpus=4)
    env = placement.strategy("env").placements(4)
    assert [p.global_gpu_ids for p in env] == [(0,), (2,), (3,)]
    assert [p.rank for p in env] == [0, 1, 2] and {p.world_size for p in env} == {3}
    assert [p.cuda_visible_devices for p in placement.strategy("actor").placements(4)] == ["0", "1", "2", "3"]


def test_packed_processes_per_gpu_and_gpus_per_process():
    shared = PackedPlacementStrategy(0, 1, num_processes_per_gpu=2).placements(2)
    assert [p.local_gpu_ids for p in shared] == [(0,), (0,), (1,), (1,)]
    assert [p.local_rank for p in shared] == [0, 1, 2, 3] and shared[0].local_world_size == 4
    wide = PackedPlacementStrategy(0, 7, num_gpus_per_process=4).placements(4, 2)
    assert [(p.node_rank, p.local_gpu_ids) for p in wide] == [(0, (0, 1, 2, 3)), (1, (0, 1, 2, 3))]
    assert [p.cuda_visible_devices for p in wide] == ["0,1,2,3", "0,1,2,3"]
    assert [p.local_rank for p in wide] == [0, 0]


def test_strategy_errors():
    with pytest.raises(ValueError, match="GPU id 4, but the cluster has 4 GPUs"):
        PackedPlacementStrategy(2, 5).placements(4)
    with pytest.raises(ValueError, match="span nodes"):
        PackedPlacementStrategy(2, 5, num_gpus_per_process=4).placements(4, 2)
    with pytest.raises(ValueError, match="do not split"):
        PackedPlacementStrategy(0, 2, num_gpus_per_process=2)
    with pytest.raises(ValueError, match="start_gpu <= end_gpu"):
        PackedPlacementStrategy(3, 1)
    with pytest.raises(ValueError, match="'a'"):
        FlexiblePlacementStrategy([[0], ["a"]])
    with pytest.raises(ValueError, match="GPU id 9"):
        FlexiblePlacementStrategy([[0, 1], [9]]).placements(8)
    with pytest.raises(ValueError, match=r"process 0 lists GPU\(s\) \[0\] more than once"):
        FlexiblePlacementStrategy([[0, 0]])
    FlexiblePlacementStrategy([[0], [0]])  # two processes on one GPU is a valid layout


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ComponentPlacement({"env": "0"}, 1.5), r"num_gpus=1.5 \(per node\), num_nodes=1: both"),
        (lambda: ComponentPlacement({"env": "0"}, "2"), r"num_gpus='2' \(per node\)"),
        (lambda: ComponentPlacement({"env": "0"}, True), r"num_gpus=True \(per node\)"),
        (lambda: ComponentPlacement({"env": "0"}, 2, num_nodes=1.0), r"num_nodes=1.0: both must be integers"),
        (lambda: ComponentPlacement("all", 2), r"component_placement='all' of type str is not a mapping"),
        (lambda: FlexiblePlacementStrategy([[True]]), r"GPU id True is not a non-negative integer"),
        (lambda: FlexiblePlacementStrategy([0, 1]), r"process 0's GPUs 0 are not a list of GPU ids"),
        (lambda: FlexiblePlacementStrategy("01"), r"FlexiblePlacementStrategy\('01'\): give a non-empty list"),
        (lambda: PackedPlacementStrategy("0", "1"), r"start_gpu='0' of type str is not an integer"),
        (lambda: PackedPlacementStrategy(0.5, 1), r"start_gpu=0.5 of type float is not an integer"),
        (lambda: PackedPlacementStrategy(0, 1, num_processes_per_gpu=True), r"num_processes_per_gpu=True of type bool"),
    ],
)
def test_wrong_types_are_named(make, message):
    """Before: accepted (1.5 GPUs, GPU True) or raw TypeError / AttributeError / "1.5 GPUs" messages."""
    with pytest.raises(ValueError, match=message):
        make()


def test_cluster_counts_must_be_integers():
    from rlinf_embodied.scheduler import Cluster

    with pytest.raises(ValueError, match=r"num_gpus_per_node=1.5: both must be integers >= 1"):
        Cluster(num_gpus_per_node=1.5)  # refused before Ray starts


def test_execute_on_names_a_rank_of_the_wrong_type():
    from rlinf_embodied.scheduler import Worker, WorkerGroup

    group = WorkerGroup(Worker, (), {})
    group.name, group.placements = "env", PackedPlacementStrategy(0, 1).placements(num_gpus_per_node=2)
    for rank in ("0", True, 0.0):
        with pytest.raises(TypeError, match=rf"rank {rank!r} of type \w+ is not an int; group 'env' has ranks 0-1"):
            group.execute_on(rank)
    with pytest.raises(ValueError, match=r"rank 2 is not in group 'env' \(ranks 0-1\)"):
        group.execute_on(2)


def test_execute_on_refuses_no_rank_and_a_repeated_rank_and_takes_numpy_integers():
    """Before: execute_on() did nothing, execute_on(0, 0) ran the method twice on rank 0, and a numpy rank was
    refused ("rank np.int64(0) of type int64 is not an int")."""
    import numpy as np

    from rlinf_embodied.scheduler import Worker, WorkerGroup

    group = WorkerGroup(Worker, (), {})
    group.name, group.placements = "env", PackedPlacementStrategy(0, 2).placements(num_gpus_per_node=4)
    with pytest.raises(ValueError, match=r"execute_on\(\) of worker group 'env' got no rank; give one or more of"):
        group.execute_on()
    with pytest.raises(ValueError, match=r"execute_on\(0, 2, 0\) names rank\(s\) \[0\] more than once"):
        group.execute_on(0, 2, np.int32(0))
    assert group.execute_on(np.int64(2), 0)._ranks == [2, 0]
    assert all(type(rank) is int for rank in group.execute_on(np.int64(2))._ranks)
    with pytest.raises(TypeError, match=r"rank np.True_ of type bool is not an int"):
        group.execute_on(np.bool_(True))


@pytest.mark.parametrize("placement", [{"a": "0-1"}, {"a": "0,2"}])
def test_a_bad_process_count_per_gpu_gets_one_message_whatever_the_gpus(placement):
    """Before: contiguous GPUs named PackedPlacementStrategy's arguments, others FlexiblePlacementStrategy([])."""
    with pytest.raises(ValueError, match=r"strategy\('a', num_processes_per_gpu=0\): num_processes_per_gpu must be"):
        ComponentPlacement(placement, num_gpus=4).strategy("a", num_processes_per_gpu=0)
    with pytest.raises(ValueError, match=r"num_processes_per_gpu=True"):
        ComponentPlacement(placement, num_gpus=4).strategy("a", num_processes_per_gpu=True)


def test_flexible_strategy():
    placements = FlexiblePlacementStrategy([[5], [0, 1]]).placements(4, 2)
    assert [(p.node_rank, p.local_gpu_ids, p.local_rank) for p in placements] == [(1, (1,), 0), (0, (0, 1), 0)]


def test_weight_sync_avoids_nccl_between_processes_on_one_gpu():
    """NCCL refuses a communicator with two processes on one GPU; 'auto' sync must see that coming."""
    from rlinf_embodied.scheduler import Worker, WorkerGroup

    def group_on(strategy) -> WorkerGroup:
        group = WorkerGroup(Worker, (), {})
        group.placements = strategy.placements(num_gpus_per_node=4)
        return group

    actor = group_on(PackedPlacementStrategy(0, 1))  # ranks on GPUs 0 and 1
    assert actor._shares_gpu_with(group_on(PackedPlacementStrategy(0, 0)))  # rollout on GPU 0 with actor rank 0
    assert not actor._shares_gpu_with(group_on(PackedPlacementStrategy(1, 1)))  # actor rank 1 does not send
    assert not actor._shares_gpu_with(group_on(PackedPlacementStrategy(2, 3)))


def as_launched(group):
    """A WorkerGroup made by hand (no processes) that passes the launched check of sync_weights_to."""
    from rlinf_embodied.scheduler.cluster import ray_session

    group._hosts, group._launched, group._session = [object()] * group.world_size, True, ray_session()
    return group


def test_auto_weight_sync_uses_cuda_ipc_only_for_one_sender_sharing_every_receivers_gpu():
    from rlinf_embodied.scheduler import Worker, WorkerGroup

    def group_on(strategy, uses_cuda=True) -> WorkerGroup:
        group = WorkerGroup(Worker, (), {})
        group.placements = strategy.placements(num_gpus_per_node=4)
        group.uses_cuda = uses_cuda
        return as_launched(group)

    actor = group_on(PackedPlacementStrategy(0, 0))
    assert actor.sync_method(group_on(PackedPlacementStrategy(0, 0))) == "cuda_ipc"  # collocated on one GPU
    assert actor.sync_method(group_on(PackedPlacementStrategy(1, 1))) == "collective"
    assert actor.sync_method(group_on(PackedPlacementStrategy(0, 1))) == "object_store"  # rank 1 is elsewhere
    assert actor.sync_method(group_on(PackedPlacementStrategy(0, 0), uses_cuda=False)) == "object_store"
    two_ranks = group_on(PackedPlacementStrategy(0, 1))
    assert two_ranks.sync_method(group_on(PackedPlacementStrategy(0, 0))) == "object_store"
    with pytest.raises(ValueError, match="cuda_ipc sync .* needs one"):
        two_ranks.sync_weights_to(group_on(PackedPlacementStrategy(0, 0)), method="cuda_ipc")


def test_auto_weight_sync_falls_back_to_the_object_store_when_cuda_ipc_fails(monkeypatch, caplog):
    from rlinf_embodied.scheduler import Worker, WorkerGroup
    from rlinf_embodied.scheduler.worker import WorkerError

    def group_on_gpu0() -> WorkerGroup:
        group = WorkerGroup(Worker, (), {})
        group.placements, group.uses_cuda, group.name = PackedPlacementStrategy(0, 0).placements(1), True, "g"
        return as_launched(group)

    actor, rollout, calls = group_on_gpu0(), group_on_gpu0(), []

    def failing_ipc(dst):
        raise WorkerError("rank 0 failed in ipc_load_weights()")

    monkeypatch.setattr(actor, "_sync_by_cuda_ipc", failing_ipc)
    monkeypatch.setattr(actor, "_sync_by_object_store", lambda dst: calls.append("object_store"))
    with pytest.raises(WorkerError):
        actor.sync_weights_to(rollout, method="cuda_ipc")  # asked for by name: the error stands
    actor.sync_weights_to(rollout)
    assert calls == ["object_store"] and "CUDA IPC weight sync" in caplog.text
    assert actor.sync_method(rollout) == "object_store"  # and stays there


@pytest.mark.parametrize(
    "address, error, message",
    [
        ("bogus", ValueError, r"cluster.address='bogus' is not 'auto', '<host>:<port>'"),
        ("bogus:port", ValueError, r"is not 'auto'"),
        ("bogus.invalid:1234", ConnectionError, r"cluster.address='bogus.invalid:1234': nothing answers at"),
        ("ray://bogus.invalid:10001", ConnectionError, r"nothing answers at bogus.invalid:10001"),
    ],
)
def test_a_cluster_address_that_cannot_answer_fails_at_once(address, error, message):
    """Before: ray.init retried an unreachable address for minutes (stopped by `timeout` after 5)."""
    import time

    from rlinf_embodied.scheduler.cluster import check_reachable

    start = time.monotonic()
    with pytest.raises(error, match=message):
        check_reachable(address, timeout_s=2.0)
    assert time.monotonic() - start < 5.0


def test_a_listening_cluster_address_passes():
    import socket

    from rlinf_embodied.scheduler.cluster import check_reachable

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_reachable(f"127.0.0.1:{server.getsockname()[1]}")
        check_reachable("auto")
