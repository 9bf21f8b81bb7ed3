"""Checks shared by the policy tests."""

from __future__ import annotations

import warnings

import pytest
import torch


def evaluate_under_fsdp2(reference, policy, obs, tmp_path) -> None:
    """The multi-rank ActorWorker path on one gloo rank: fully_shard + register_fsdp_forward_method("evaluate").

    `policy` (same weights as `reference`) must reproduce the reference's act() log-probs, raise no
    FSDP warning (e.g. "returned a view tensor") and give every parameter a gradient.
    """
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    out = reference.act(obs)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        fully_shard(policy, mesh=init_device_mesh("cpu", (1,)))
        register_fsdp_forward_method(policy, "evaluate")
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            evaluated = policy.evaluate(obs, out)
        torch.testing.assert_close(evaluated.log_probs, out.log_probs, atol=1e-5, rtol=0)
        (evaluated.log_probs.sum() + evaluated.values.sum()).backward()
        assert all(param.grad is not None for param in policy.parameters())
    finally:
        dist.destroy_process_group()


@pytest.fixture()
def check_evaluate_under_fsdp2(tmp_path):
    return lambda reference, policy, obs: evaluate_under_fsdp2(reference, policy, obs, tmp_path)
