"""Real-GPU paths: NCCL send/recv between groups, NCCL weight broadcast, offload that frees GPU memory."""

from __future__ import annotations

import sys

import pytest
import ray.cloudpickle
import torch

from rlinf_embodied.scheduler import Cluster, FlexiblePlacementStrategy, Worker

pytestmark = pytest.mark.gpu
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def cluster():
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 CUDA GPUs")
    cluster = Cluster(num_gpus_per_node=2)
    assert cluster.has_real_gpus
    yield cluster
    cluster.shutdown()


class GpuWorker(Worker):
    def __init__(self):
        super().__init__()
        self.model = torch.nn.Linear(256, 256).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters())
        self.model(torch.randn(4, 256, device=self.device)).sum().backward()
        self.optimizer.step()

    def info(self) -> tuple:
        import os

        return str(self.device), os.environ["CUDA_VISIBLE_DEVICES"], torch.cuda.device_count()

    def send_tensor(self, dst_group: str) -> None:
        self.send(torch.arange(1000, device=self.device, dtype=torch.float32), dst_group, 0)

    def recv_tensor(self, src_group: str) -> tuple[str, float]:
        tensor = self.recv(src_group, 0)
        return str(tensor.device), float(tensor.sum())

    def full_state_dict(self) -> dict:
        return {k: v.cpu() for k, v in self.model.state_dict().items()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.model.load_state_dict(state_dict)

    def weight_sum(self) -> float:
        return float(self.model.weight.sum())

    def offload_round_trip(self) -> tuple[bool, int, int]:
        before = [p.detach().clone() for p in self.model.parameters()]
        state = [v.clone() for s in self.optimizer.state.values() for v in s.values()]
        allocated = torch.cuda.memory_allocated()
        self.offload_model(self.model)
        self.offload_optimizer(self.optimizer)
        offloaded = torch.cuda.memory_allocated()
        pinned = all(p.is_pinned() for p in self.model.parameters())
        self.onload_model(self.model)
        self.onload_optimizer(self.optimizer)
        exact = all(torch.equal(a, b) for a, b in zip(before, self.model.parameters()))
        exact &= all(
            torch.equal(a, b) for a, b in zip(state, [v for s in self.optimizer.state.values() for v in s.values()])
        )
        return exact and pinned, allocated, offloaded


def test_nccl_send_recv_weight_sync_and_offload(cluster):
    a = GpuWorker.create_group().launch(cluster, name="gpu_a", placement_strategy=FlexiblePlacementStrategy([[0]]))
    b = GpuWorker.create_group().launch(cluster, name="gpu_b", placement_strategy=FlexiblePlacementStrategy([[1]]))
    try:
        assert a.info().wait()[0] == ("cuda:0", "0", 1) and b.info().wait()[0] == ("cuda:0", "1", 1)
        receiving = b.recv_tensor("gpu_a")
        a.send_tensor("gpu_b").wait()
        assert receiving.wait()[0] == ("cuda:0", float(sum(range(1000))))
        a.sync_weights_to(b)  # NCCL broadcast
        assert b.weight_sum().wait()[0] == pytest.approx(a.weight_sum().wait()[0])
        exact, allocated, offloaded = a.offload_round_trip().wait()[0]
        assert exact and offloaded < allocated
    finally:
        a.shutdown()
        b.shutdown()
