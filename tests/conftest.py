"""Shared pytest set-up: GPU tests are skipped where CUDA is absent."""

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA (marked @pytest.mark.gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
