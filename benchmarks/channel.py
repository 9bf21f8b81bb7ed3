"""Channel throughput vs raw Ray object passing, between two worker processes.

For each payload (a small Python object, 1 MB and 16 MB tensors) a producer worker sends N items to a
consumer worker, (a) through a Channel, (b) raw: ray.put in the producer, the ref handed over (through
the driver), ray.get in the consumer. Prints items/s, MB/s and the Channel/raw ratio.

Then the rollout loop's pattern, ping-pong: one worker puts an observation-sized item and waits for
the other's reply on a second key (env worker <-> rollout worker), with acknowledged puts
(block=True) vs unacknowledged ones (block=False, what the workers use); round trips/s side by side.

    python benchmarks/channel.py                      # CPU, small defaults
    python benchmarks/channel.py --items 200 --sizes small,1MB,16MB
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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

    def ping(self, channel: Channel, n: int, block: bool) -> float:
        item = make_item("small")
        start = time.perf_counter()
        for _ in range(n):
            channel.put(item, key="ping", block=block)
            channel.get(key="pong")
        channel.flush()
        return time.perf_counter() - start

    def pong(self, channel: Channel, n: int, block: bool) -> None:
        for _ in range(n):
            channel.put(channel.get(key="ping"), key="pong", block=block)
        channel.flush()

    def produce_raw(self, size: str, n: int) -> list:
        item = make_item(size)
        return [[ray.put(item)] for _ in range(n)]  # wrapped so the refs are not resolved in transit

    def consume_raw(self, refs: list) -> float:
        for (ref,) in refs:
            ray.get(ref)
        return 0.0


def measure(producer, consumer, size: str, n: int) -> tuple[float, float]:
    channel = Channel.create("bench_channel", maxsize=64)
    start = time.perf_counter()
    pending = producer.produce_channel(channel, size, n)
    consumer.consume_channel(channel, n).wait()
    pending.wait()
    channel_s = time.perf_counter() - start
    start = time.perf_counter()
    refs = producer.produce_raw(size, n).wait()[0]
    consumer.consume_raw(refs).wait()
    raw_s = time.perf_counter() - start
    channel.destroy()
    return channel_s, raw_s


def ping_pong(producer, consumer, n: int, block: bool, repeats: int = 3) -> float:
    """Best of `repeats` round-trip rates (trips/s)."""
    best = 0.0
    for _ in range(repeats):
        channel = Channel.create("bench_ping_pong", maxsize=2)
        pending = consumer.pong(channel, n, block)
        seconds = producer.ping(channel, n, block).wait()[0]
        pending.wait()
        channel.destroy()
        best = max(best, n / seconds)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=50, help="items per payload size")
    parser.add_argument("--sizes", default="small,1MB,16MB", help=f"comma list of {list(SIZES)}")
    args = parser.parse_args()
    sizes = args.sizes.split(",")
    for size in sizes:
        if size not in SIZES:
            parser.error(f"--sizes: {size!r} is not one of {list(SIZES)}")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cluster = Cluster(num_gpus_per_node=1, simulate_gpus=True)  # two processes on GPU 0 (real or simulated)
    producer = Endpoint.create_group().launch(cluster, name="producer", placement_strategy=PackedPlacementStrategy(0, 0))
    consumer = Endpoint.create_group().launch(cluster, name="consumer", placement_strategy=PackedPlacementStrategy(0, 0))
    measure(producer, consumer, "small", 5)  # warm-up
    print(f"{'payload':>8} {'channel items/s':>16} {'raw items/s':>12} {'channel MB/s':>13} {'raw MB/s':>9} "
          f"{'channel/raw':>12} {'channel latency ms':>19}")
    for size in sizes:
        channel_s, raw_s = measure(producer, consumer, size, args.items)
        mb = SIZES[size] * args.items / 1e6
        print(f"{size:>8} {args.items / channel_s:>16.0f} {args.items / raw_s:>12.0f} "
              f"{mb / channel_s:>13.1f} {mb / raw_s:>9.1f} {raw_s / channel_s:>12.2f} "
              f"{1e3 * channel_s / args.items:>19.2f}")
    print(f"\n{'ping-pong':>9} {'put(block=True) trips/s':>24} {'put(block=False) trips/s':>25} {'speed-up':>9}")
    trips = {block: ping_pong(producer, consumer, args.items, block) for block in (True, False)}
    print(f"{'small':>9} {trips[True]:>24.0f} {trips[False]:>25.0f} {trips[False] / trips[True]:>8.2f}x")
    producer.shutdown()
    consumer.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main()
