"""`cnn` policy: rgb (+ state) shapes, image sizes, act/evaluate agreement, checkpoints, gradients, errors."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal

from rlinf_embodied.policies import make_policy
from rlinf_embodied.policies.cnn.configuration import CNNConfig
from rlinf_embodied.policies.cnn.modeling import CNNPolicy

ACTION_DIM = 3


def tiny_cnn(**overrides) -> CNNPolicy:
    torch.manual_seed(0)
    return make_policy("cnn", size="tiny", action_dim=overrides.pop("action_dim", ACTION_DIM), **overrides)


@pytest.mark.parametrize("state_dim, chunk", [(0, 1), (5, 2)])
def test_act_shapes_and_evaluate_agreement(state_dim, chunk):
    policy = tiny_cnn(state_dim=state_dim, action_chunk=chunk)
    obs = policy.example_obs(4)
    assert obs["rgb"].shape == (4, 32, 32, 3) and obs["rgb"].dtype == torch.uint8
    assert ("state" in obs) == (state_dim > 0)
    out = policy.act(obs)
    assert out.actions.shape == out.log_probs.shape == (4, chunk, ACTION_DIM)
    assert out.values.shape == (4,)
    assert (out.actions.abs() <= 1).all()
    evaluated = policy.evaluate(obs, out)
    torch.testing.assert_close(evaluated.log_probs, out.log_probs, atol=1e-5, rtol=0)
    torch.testing.assert_close(evaluated.values, out.values, atol=1e-5, rtol=0)
    reference = Normal(out.extras["raw_actions"] * 0, policy.log_std.exp()).entropy()
    torch.testing.assert_close(evaluated.entropy, reference.expand(4, chunk, ACTION_DIM))


def test_state_changes_the_outputs_when_used():
    policy = tiny_cnn(state_dim=5)
    obs = policy.example_obs(2)
    shifted = {**obs, "state": obs["state"] + 3.0}
    assert not torch.allclose(policy.act(obs).values, policy.act(shifted).values)


@pytest.mark.parametrize("height, width", [(16, 16), (48, 40), (96, 96)])
def test_any_image_size_at_least_the_minimum_works(height, width):
    policy = tiny_cnn()
    obs = {"rgb": torch.randint(0, 256, (2, height, width, 3), dtype=torch.uint8)}
    out = policy.act(obs)
    torch.testing.assert_close(policy.evaluate(obs, out).log_probs, out.log_probs, atol=1e-5, rtol=0)


def test_too_small_image_size_names_the_minimum():
    policy = tiny_cnn()
    assert policy.config.min_image_size() == 16
    out = policy.act({"rgb": torch.zeros(2, 15, 15, 3, dtype=torch.uint8)})  # resized to image_size=32
    assert out.actions.shape == (2, 1, ACTION_DIM)
    with pytest.raises(ValueError, match="below the conv stack's minimum 16"):
        tiny_cnn(image_size=12)


def test_image_size_is_the_resolution_the_network_sees():
    """Before: image_size only sized example_obs; the network took whatever the camera rendered, so
    policy.overrides.image_size=64 changed neither the parameters nor any output on 128 px images."""
    import torch.nn.functional as F

    small, large = tiny_cnn(image_size=16), tiny_cnn(image_size=64)
    large.load_state_dict(small.state_dict())  # the same weights: only image_size differs
    rgb = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    features = small.image_encoder(rgb)
    assert (features - large.image_encoder(rgb)).abs().max() > 0.05
    # image_size=16 sees the 64 px camera as it sees the same camera resized to 16 px (up to uint8 rounding)
    resized = F.interpolate(rgb.permute(0, 3, 1, 2).float(), size=(16, 16), mode="bilinear", antialias=True)
    rgb16 = resized.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    torch.testing.assert_close(features, small.image_encoder(rgb16), atol=0.02, rtol=0)
    assert features.abs().max() > 0.1  # not all zero after the ReLU


def test_default_preset_matches_maniskill_naturecnn():
    policy = make_policy("cnn", size="default", action_dim=8, state_dim=9)
    assert policy.config.image_size == 128
    convs = [m for m in policy.image_encoder.convs if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [(32, 8, 4), (64, 4, 2), (64, 3, 1)]
    obs = policy.example_obs(2)
    assert obs["rgb"].shape == (2, 128, 128, 3) and obs["state"].shape == (2, 9)
    assert policy.act(obs).actions.shape == (2, 1, 8)


def test_save_and_load_give_identical_outputs(tmp_path):
    policy = tiny_cnn(state_dim=4, action_chunk=2)
    policy.save_pretrained(tmp_path / "ckpt")
    loaded = CNNPolicy.from_pretrained(tmp_path / "ckpt")
    assert loaded.config == policy.config
    obs = policy.example_obs(3)
    out = policy.act(obs)
    torch.testing.assert_close(
        loaded.act(obs, deterministic=True).actions, policy.act(obs, deterministic=True).actions, atol=0, rtol=0
    )
    torch.testing.assert_close(loaded.evaluate(obs, out).log_probs, policy.evaluate(obs, out).log_probs, atol=0, rtol=0)


def test_gradients_reach_every_parameter():
    policy = tiny_cnn(state_dim=4)
    obs = policy.example_obs(6)
    evaluated = policy.evaluate(obs, policy.act(obs))
    (evaluated.log_probs.sum() + evaluated.values.square().sum() + evaluated.entropy.sum()).backward()
    for name, param in policy.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_observation_errors():
    policy = tiny_cnn(state_dim=4)
    obs = policy.example_obs(2)
    with pytest.raises(KeyError, match=r"no 'rgb'"):
        policy.act({"state": obs["state"]})
    with pytest.raises(KeyError, match=r"no 'state'"):
        policy.act({"rgb": obs["rgb"]})
    with pytest.raises(ValueError, match=r"shape \(2, 7\); expected \(N, 4\)"):
        policy.act({**obs, "state": torch.zeros(2, 7)})
    with pytest.raises(TypeError, match="expected torch.uint8"):
        policy.act({**obs, "rgb": obs["rgb"].float()})
    with pytest.raises(ValueError, match=r"expected \(N, H, W, 3\)"):
        policy.act({**obs, "rgb": obs["rgb"].permute(0, 3, 1, 2)})
    with pytest.raises(ValueError, match="batch 3 but obs\\['rgb'\\] has 2"):
        policy.act({**obs, "state": torch.zeros(3, 4)})


def test_mismatched_action_dims_error():
    policy, other = tiny_cnn(), tiny_cnn(action_dim=ACTION_DIM + 2)
    obs = policy.example_obs(2)
    with pytest.raises(ValueError, match=r"expected \(2, 1, 3\)"):
        policy.evaluate(obs, other.act(obs))


def test_config_validates_conv_lists():
    with pytest.raises(ValueError, match="equal length"):
        CNNConfig(conv_channels=[8, 8], conv_kernels=[3], conv_strides=[1])
    config = CNNConfig.from_dict(
        {"conv_channels": (4, 4), "conv_kernels": (3, 3), "conv_strides": (1, 1), "image_size": 8}
    )
    assert config.conv_channels == [4, 4] and config.min_image_size() == 5


def test_evaluate_as_an_fsdp2_forward_method(check_evaluate_under_fsdp2):
    """The ActorWorker path: fully_shard + register_fsdp_forward_method("evaluate"), one gloo rank."""
    reference, policy = tiny_cnn(state_dim=4), tiny_cnn(state_dim=4)
    check_evaluate_under_fsdp2(reference, policy, reference.example_obs(3))
