"""Channel throughput vs raw Ray object passing, between two worker processes on one node.

For each payload (a small Python object, 1 MB and 16 MB tensors) a producer worker sends N items to a
consumer worker (a) through a Channel over its node-local socket (the default), (b) through a Channel
reached by Ray actor calls only (`node_local=False`, what other nodes use), (c) raw: ray.put in the
producer, the ref handed over (through the driver), ray.get in the consumer. Prints items/s and the
ratios.

Then the rollout loop's pattern, ping-pong: one worker puts an observation and waits for the other's
reply on a second key (env worker <-> rollout worker); round trips/s of both transports side by side.

    python benchmarks/channel.py                      # CPU, small defaults
    python benchmarks/channel.py --items 200 --sizes small,1MB,16MB
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_args import positive_int  # noqa: E402

import ray  # noqa: E402
import ray.cloudpickle  # noqa: E402
import torch  # noqa: E402

from rlinf_embodied.scheduler import Channel, Cluster, PackedPlacementStrategy, Worker  # noqa: E402

SIZES = {"small": 0, "1MB": 1 << 20, "16MB": 16 << 20}


def make_item(size: str):
    if SIZES[size] == 0:
        return {"step": 1, "reward": 0.5, "done": False}
    return torch.ones(SIZES[size] // 4, dtype=torch.float32)


class Endpoint(Worker):
    def produce_channel(self, channel: Channel, size: str, n: int) -> None:
        item = make_item(size)
        for _ in range(n):
            channel.put(item, key="bench")

    def consume_channel(self, channel: Channel, n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            channel.get(key="bench")
        return time.perf_counter() - start

    def ping(self, channel: Channel, n: int) -> float:
        item = make_item("small")
        start = time.perf_counter()
        for _ in range(n):
            channel.put(item, key="ping")
            channel.get(key="pong")
        return time.perf_counter() - start

    def pong(self, channel: Channel, n: int) -> None:
        for _ in range(n):
            channel.put(channel.get(key="ping"), key="pong")

    def produce_raw(self, size: str, n: int) -> list:
        item = make_item(size)
        return [[ray.put(item)] for _ in range(n)]  # wrapped so the refs are not resolved in transit

    def consume_raw(self, refs: list) -> float:
        for (ref,) in refs:
            ray.get(ref)
        return 0.0


def measure_channel(producer, consumer, size: str, n: int, node_local: bool) -> float:
    channel = Channel.create("bench_channel", maxsize=64, node_local=node_local)
    start = time.perf_counter()
    pending = producer.produce_channel(channel, size, n)
    consumer.consume_channel(channel, n).wait()
    pending.wait()
    seconds = time.perf_counter() - start
    channel.destroy()
    return seconds


def measure_raw(producer, consumer, size: str, n: int) -> float:
    start = time.perf_counter()
    refs = producer.produce_raw(size, n).wait()[0]
    consumer.consume_raw(refs).wait()
    return time.perf_counter() - start


def ping_pong(producer, consumer, n: int, node_local: bool, repeats: int = 3) -> float:
    """Best of `repeats` round-trip rates (trips/s)."""
    best = 0.0
    for _ in range(repeats):
        channel = Channel.create("bench_ping_pong", maxsize=2, node_local=node_local)
        pending = consumer.pong(channel, n)
        seconds = producer.ping(channel, n).wait()[0]
        pending.wait()
        channel.destroy()
        best = max(best, n / seconds)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=positive_int, default=50, help="items per payload size")
    parser.add_argument("--sizes", default="small,1MB,16MB", help=f"comma list of {list(SIZES)}")
    args = parser.parse_args(argv)
    sizes = args.sizes.split(",")
    for size in sizes:
        if size not in SIZES:
            parser.error(f"--sizes: {size!r} is not one of {list(SIZES)}")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cluster = Cluster(num_gpus_per_node=1, simulate_gpus=True)  # two processes on GPU 0 (real or simulated)
    producer = Endpoint.create_group().launch(
        cluster, name="producer", placement_strategy=PackedPlacementStrategy(0, 0)
    )
    consumer = Endpoint.create_group().launch(
        cluster, name="consumer", placement_strategy=PackedPlacementStrategy(0, 0)
    )
    for node_local in (True, False):  # warm-up
        measure_channel(producer, consumer, "small", 5, node_local)
    print(
        f"{'payload':>8} {'socket items/s':>15} {'ray-call items/s':>17} {'raw ray items/s':>16} "
        f"{'socket/ray-call':>16} {'socket/raw':>11} {'socket ms/item':>15}"
    )
    for size in sizes:
        socket_s = measure_channel(producer, consumer, size, args.items, node_local=True)
        ray_call_s = measure_channel(producer, consumer, size, args.items, node_local=False)
        raw_s = measure_raw(producer, consumer, size, args.items)
        print(
            f"{size:>8} {args.items / socket_s:>15.0f} {args.items / ray_call_s:>17.0f} {args.items / raw_s:>16.0f} "
            f"{ray_call_s / socket_s:>15.2f}x {raw_s / socket_s:>10.2f}x {1e3 * socket_s / args.items:>15.3f}"
        )
    print(f"\n{'ping-pong':>9} {'socket trips/s':>15} {'ray-call trips/s':>17} {'speed-up':>9}")
    trips = {node_local: ping_pong(producer, consumer, args.items, node_local) for node_local in (True, False)}
    print(f"{'small':>9} {trips[True]:>15.0f} {trips[False]:>17.0f} {trips[True] / trips[False]:>8.2f}x")
    producer.shutdown()
    consumer.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main()
