"""Shared pytest set-up: GPU tests are skipped where CUDA is absent; one Ray instance for the worker tests."""

import importlib.util
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA (marked @pytest.mark.gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance (8 simulated GPUs without CUDA) for every module that starts workers: starting
    and stopping Ray takes seconds on 2 cores. A module's `Cluster(num_gpus_per_node=N)` made while it runs
    joins it (shutdown leaves it running) and places workers on N GPUs, as a cluster of its own would."""
    from rlinf_embodied.scheduler import Cluster

    cluster = Cluster(num_nodes=1, num_gpus_per_node=torch.cuda.device_count() or 8, simulate_gpus=True)
    yield cluster
    cluster.shutdown()


@pytest.fixture(scope="session")
def benchmark_script():
    """Loads benchmarks/<name>.py as a module (the scripts are not a package), once per session."""
    modules = {}

    def load(name: str):
        if name not in modules:
            spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
            modules[name] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(modules[name])
        return modules[name]

    return load
