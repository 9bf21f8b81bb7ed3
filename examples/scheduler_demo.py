"""The scheduler in one page: a placement, two worker groups, a channel between them.

python examples/scheduler_demo.py        # CPU: 2 simulated GPUs
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ray.cloudpickle  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from rlinf_embodied.scheduler import Channel, Cluster, ComponentPlacement, Worker  # noqa: E402


class Producer(Worker):
    def __init__(self, scale: float):
        super().__init__()  # rank, world_size, device and the group's process group are ready
        self.scale = scale

    def produce(self, channel: Channel, n: int) -> int:
        for step in range(n):
            channel.put(torch.full((2,), self.scale * step + self.rank), key=f"to{self.rank}")
        total = torch.tensor([float(n)])
        dist.all_reduce(total)  # over this group's ranks only
        return int(total)


class Consumer(Worker):
    def __init__(self):
        super().__init__()

    def consume(self, channel: Channel, num_producers: int, n: int) -> list[float]:
        return [float(channel.get(key=f"to{rank}").sum()) for rank in range(num_producers) for _ in range(n)]


def main() -> None:
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import __main__
    cluster = Cluster(num_gpus_per_node=2, simulate_gpus=True)
    placement = ComponentPlacement({"producer": "0-1", "consumer": "1"}, num_gpus=cluster.num_gpus_per_node)
    print(f"{cluster}; mode {placement.mode}; producer GPUs {placement.gpus('producer')}")
    producers = Producer.create_group(10.0).launch(
        cluster, name="producer", placement_strategy=placement.strategy("producer")
    )
    consumer = Consumer.create_group().launch(
        cluster, name="consumer", placement_strategy=placement.strategy("consumer")
    )
    channel = Channel.create("demo", maxsize=2)  # bounded: producers wait for the consumer
    pending = producers.produce(channel, 3)
    print("consumer got sums", consumer.consume(channel, producers.world_size, 3).wait()[0])
    print("items produced over all producer ranks:", pending.wait())
    producers.shutdown()
    consumer.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main()
