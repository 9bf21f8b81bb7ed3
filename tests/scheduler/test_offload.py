"""Which optimizer-state tensors an offload moves, and the host buffers every offload reuses (CPU; the GPU
round trips are in tests/workers/test_actor_gpu.py and below, marked gpu)."""

from __future__ import annotations

import gc

import pytest
import torch

from rlinf_embodied.scheduler.offload import (
    HostBuffers,
    _state_tensors,
    apply_keeping_parameters,
    host_buffers,
    offload_module,
    offload_optimizer_state,
    offload_state,
    onload_module,
    onload_optimizer_state,
    onload_state,
)


def stepped_adam(**kwargs) -> torch.optim.Optimizer:
    weight = torch.nn.Parameter(torch.randn(4, 3))
    optimizer = torch.optim.AdamW([weight], lr=1e-3, **kwargs)
    weight.grad = torch.randn(4, 3)
    optimizer.step()
    return optimizer


def moved_keys(optimizer: torch.optim.Optimizer) -> set[str]:
    return {key for _, key in _state_tensors(optimizer)}


def test_plain_adam_keeps_its_cpu_step_counter_on_the_cpu():
    assert moved_keys(stepped_adam()) == {"exp_avg", "exp_avg_sq"}


def test_fused_adam_moves_its_step_counters():
    # fused Adam keeps `step` on the parameters' device; left on the CPU after an offload, the next
    # step fails with "state_steps is on cpu, different from other tensors on cuda:0" (capturable
    # Adam, CUDA-only, is covered by the same group flag check)
    assert moved_keys(stepped_adam(fused=True)) == {"step", "exp_avg", "exp_avg_sq"}


def test_host_buffers_are_reused_by_every_offload_and_survive_the_swap():
    # On the CPU the copies are not pinned; the bookkeeping is the same as on a GPU machine
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4)
    weight = model.weight
    buffers = HostBuffers(pin=False)
    apply_keeping_parameters(model, buffers.start().take)  # "offload"
    first_ptrs = [b.data_ptr() for b in buffers.buffers]
    assert model.weight is weight  # the Parameter object survives
    assert model.weight.data_ptr() == first_ptrs[0]  # and now lives in the kept buffer
    apply_keeping_parameters(model, lambda t: t.clone())  # "onload": the weights move out of the buffers
    assert model.weight.data_ptr() != first_ptrs[0]
    with torch.no_grad():
        model.weight.add_(1.0)  # "training" changes the weights
    trained = model.weight.detach().clone()
    apply_keeping_parameters(model, buffers.start().take)  # the next offload
    assert [b.data_ptr() for b in buffers.buffers] == first_ptrs  # no new host memory
    assert len(buffers.buffers) == 2  # weight and bias
    assert torch.equal(model.weight.detach(), trained)  # holding the new values


def test_host_buffers_reallocate_a_slot_whose_tensor_changed_shape():
    buffers = HostBuffers(pin=False)
    buffers.start().take(torch.zeros(4, 3))
    kept = buffers.buffers[0]
    out = buffers.start().take(torch.ones(2, 3))
    assert buffers.buffers[0] is not kept and buffers.buffers[0].shape == (2, 3)
    assert torch.equal(out, torch.ones(2, 3))
    assert buffers.nbytes == 2 * 3 * 4


def test_a_buffer_a_cpu_tensor_still_lives_in_is_not_refilled():
    buffers = HostBuffers(pin=False)
    resident = buffers.start().take(torch.full((4,), 7.0))  # offloaded and still on the CPU
    out = buffers.start(in_use=[resident]).take(torch.zeros(4))  # same shape, same slot
    assert out.data_ptr() != resident.data_ptr()
    assert torch.equal(resident, torch.full((4,), 7.0))  # not overwritten


def test_host_buffers_are_kept_per_owner_and_dropped_with_it():
    model, other = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    assert host_buffers(model) is host_buffers(model)
    assert host_buffers(model) is not host_buffers(other)
    from rlinf_embodied.scheduler import offload

    before = len(offload._HOST_BUFFERS)
    del other
    gc.collect()
    assert len(offload._HOST_BUFFERS) == before - 1


@pytest.mark.gpu
def test_pinned_host_copies_are_reused_across_round_trips():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    device = torch.device("cuda")
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 8)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 64, device=device)).sum().backward()
    optimizer.step()
    pointers = []
    for _ in range(3):
        expected = [p.detach().cpu() for p in model.parameters()]
        offload_module(model)
        offload_optimizer_state(optimizer)
        assert all(p.device.type == "cpu" and p.is_pinned() for p in model.parameters())
        assert all(torch.equal(p.detach(), e) for p, e in zip(model.parameters(), expected))
        pointers.append([p.data_ptr() for p in model.parameters()])
        onload_module(model, device)
        onload_optimizer_state(optimizer, device)
        model(torch.randn(4, 64, device=device)).sum().backward()
        optimizer.step()  # the weights change between round trips
    assert pointers[0] == pointers[1] == pointers[2]
    # one kept buffer per weight and one per gradient (`_apply` moves both), none added after round 1
    tensors = [*model.parameters(), *(p.grad for p in model.parameters())]
    assert host_buffers(model).nbytes == sum(t.numel() * t.element_size() for t in tensors)


@pytest.mark.gpu
def test_offload_state_moves_every_model_and_optimizer_in_one_pass_and_back_bit_exact():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    device = torch.device("cuda")
    policy, reference = torch.nn.Linear(64, 64).to(device), torch.nn.Linear(64, 64).to(device)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    policy(torch.randn(4, 64, device=device)).sum().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    before = [t.detach().cpu() for t in [*policy.parameters(), *reference.parameters()]]
    moments = [s["exp_avg"].cpu() for s in optimizer.state.values()]
    offload_state(modules=[policy, reference], optimizers=[optimizer])
    models_on_host = [t for m in (policy, reference) for t in m.parameters()]
    assert all(t.device.type == "cpu" and t.is_pinned() for t in models_on_host)
    assert all(s["exp_avg"].device.type == "cpu" for s in optimizer.state.values())
    onload_state(device, modules=[policy, reference], optimizers=[optimizer])
    after = [t.detach().cpu() for t in [*policy.parameters(), *reference.parameters()]]
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert all(torch.equal(s["exp_avg"].cpu(), m) for s, m in zip(optimizer.state.values(), moments))
    assert all(s["exp_avg_sq"].device.type == "cuda" for s in optimizer.state.values())


def test_a_dtensors_local_shard_is_what_moves_and_plain_tensors_pass_without_the_dtensor_module():
    """offload no longer imports torch.distributed.tensor (0.5 s in every env and rollout worker process): a DTensor
    (FSDP2's parameters) is still found and its local shard moved, keeping its mesh and placements."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Shard, distribute_tensor

    from rlinf_embodied.scheduler import offload

    started = not dist.is_initialized()
    if started:
        dist.init_process_group("gloo", init_method="tcp://127.0.0.1:0", rank=0, world_size=1)
    try:
        tensor = distribute_tensor(torch.arange(4.0), init_device_mesh("cpu", (1,)), [Shard(0)])
        assert offload._local(tensor) is tensor._local_tensor
        doubled = offload._on_local(tensor, lambda local: local * 2)
        assert isinstance(doubled, DTensor) and doubled.placements == tensor.placements
        assert torch.equal(doubled.to_local(), torch.arange(4.0) * 2)
    finally:
        if started:
            dist.destroy_process_group()
    plain = torch.ones(3)
    assert offload._local(plain) is plain and torch.equal(offload._on_local(plain, lambda t: t + 1), plain + 1)
