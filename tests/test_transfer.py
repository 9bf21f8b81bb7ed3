import pytest
import torch

from rlinf_embodied.transfer import host_floats, host_to_device, names_by_device


def test_host_floats_reads_scalars_and_numbers_in_their_order():
    values = {"loss": torch.tensor(0.5), "grad_norm": 2.0, "kl": torch.tensor([0.25], dtype=torch.bfloat16)}
    out = host_floats(values)
    assert list(out) == ["loss", "grad_norm", "kl"]
    assert out == {"loss": 0.5, "grad_norm": 2.0, "kl": 0.25}
    assert all(type(value) is float for value in out.values())


def test_host_floats_refuses_a_tensor_that_is_not_one_number():
    with pytest.raises(RuntimeError):
        host_floats({"advantages": torch.ones(3)})


def test_names_by_device_keeps_the_order_within_a_device():
    tensors = {"b": torch.zeros(1), "a": torch.zeros(2, device="meta"), "c": torch.zeros(3)}
    assert names_by_device(tensors) == {torch.device("cpu"): ["b", "c"], torch.device("meta"): ["a"]}


def test_host_to_device_off_cuda_is_a_plain_copy():
    tensor = torch.arange(4)
    assert torch.equal(host_to_device(tensor, "cpu"), tensor)
