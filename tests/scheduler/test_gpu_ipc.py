"""CUDA IPC weight sync between two worker processes on one GPU (what a collocated actor and rollout use)."""

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
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    cluster = Cluster(num_gpus_per_node=1)
    yield cluster
    cluster.shutdown()


class Sender(Worker):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.model = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.Linear(512, 8)).to(self.device)
        self.released = 0

    def device_state_dict(self) -> dict:
        return dict(self.model.state_dict())

    def release_device_state(self) -> None:
        self.released += 1

    def checksum(self) -> tuple[float, int]:
        return float(sum(p.double().abs().sum() for p in self.model.parameters())), self.released


class Receiver(Worker):
    """Holds the same model in bf16, on the GPU or offloaded to host memory."""

    def __init__(self):
        super().__init__()
        self.model = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.Linear(512, 8))
        self.model.to(self.device, torch.bfloat16)

    def load_state_dict(self, state_dict: dict) -> None:
        self.model.load_state_dict(state_dict)

    def offload(self) -> None:
        self.offload_model(self.model)

    def checksum(self) -> tuple[float, str]:
        return float(sum(p.double().abs().sum() for p in self.model.parameters())), str(
            next(self.model.parameters()).device
        )


def test_cuda_ipc_sync_to_a_receiver_on_the_same_gpu_on_device_and_offloaded(cluster):
    one_gpu = FlexiblePlacementStrategy([[0]])
    sender = Sender.create_group().launch(cluster, name="ipc_sender", placement_strategy=one_gpu)
    receiver = Receiver.create_group().launch(cluster, name="ipc_receiver", placement_strategy=one_gpu)
    try:
        assert sender.sync_method(receiver) == "cuda_ipc"
        expected = sender.checksum().wait()[0][0]
        sender.sync_weights_to(receiver)
        total, device = receiver.checksum().wait()[0]
        assert device == "cuda:0" and total == pytest.approx(expected, rel=1e-2)
        assert sender.checksum().wait()[0][1] == 1  # released once the receiver had copied
        receiver.offload().wait()
        sender.sync_weights_to(receiver)  # into pinned host memory
        total, device = receiver.checksum().wait()[0]
        assert device == "cpu" and total == pytest.approx(expected, rel=1e-2)
    finally:
        sender.shutdown()
        receiver.shutdown()
