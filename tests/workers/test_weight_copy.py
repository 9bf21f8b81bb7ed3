"""copy_weights_into: load_state_dict's result, with the cast on the source's device."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rlinf_embodied.workers.weight_copy import copy_weights_into


def model(dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.LayerNorm(7), nn.Linear(7, 3)).to(dtype)


def fp32_weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {name: torch.randn_like(tensor, dtype=torch.float32) for name, tensor in model().state_dict().items()}


def test_matches_load_state_dict_bit_for_bit():
    weights = fp32_weights()
    copied, loaded = model(), model()
    copy_weights_into(copied, weights)
    loaded.load_state_dict(weights)
    for name, tensor in copied.state_dict().items():
        assert tensor.dtype == torch.bfloat16 and torch.equal(tensor, loaded.state_dict()[name]), name
    assert not torch.equal(copied[0].weight, model()[0].weight)  # it did change the weights


def test_missing_and_unexpected_keys_are_named():
    weights = fp32_weights()
    weights["extra.bias"] = weights.pop("2.bias")
    with pytest.raises(KeyError, match=r"missing \['2\.bias'\] \(1\), unexpected \['extra\.bias'\] \(1\)"):
        copy_weights_into(model(), weights)


def test_a_shape_mismatch_names_the_weight_and_both_shapes():
    weights = fp32_weights()
    weights["0.weight"] = torch.zeros(7, 6)
    with pytest.raises(ValueError, match=r"'0\.weight' has shape \(7, 6\), the model's \(7, 5\)"):
        copy_weights_into(model(), weights)


@pytest.mark.gpu
def test_gpu_fp32_weights_into_an_offloaded_bf16_model():
    weights = {name: tensor.cuda() for name, tensor in fp32_weights().items()}
    offloaded = model()
    for tensor in offloaded.state_dict().values():
        assert tensor.device.type == "cpu"
    copy_weights_into(offloaded, weights)
    for name, tensor in offloaded.state_dict().items():
        assert tensor.device.type == "cpu" and torch.equal(tensor, weights[name].to(torch.bfloat16).cpu()), name
