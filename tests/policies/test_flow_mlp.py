"""flow_mlp specifics; the RL interface it shares with pi0 and GR00T is tested in test_flow_policies.py."""

import pytest
import torch

from rlinf_embodied.policies import make_policy, policy_class
from rlinf_embodied.policies.flow_mlp.modeling import FlowMLPPolicy


def test_registered_and_reads_state_only():
    assert policy_class("flow_mlp") is FlowMLPPolicy
    policy = make_policy("flow_mlp", size="tiny")
    assert policy.config.camera_keys() == ()
    assert set(policy.example_obs(2)) == {"state", "instruction"}
    assert FlowMLPPolicy.normalizes_with_dataset_stats


@pytest.mark.parametrize(
    "setting",
    [
        dict(use_wrist_image=True),
        dict(lora_rank=4),
        dict(freeze_vision_encoder=True),
        dict(freeze_language_model=True),
        dict(gradient_checkpointing=True),
        dict(image_size=96),
        dict(max_token_len=16),
        dict(trim_prompt_padding=True),  # before: accepted, and a GRPO run's metrics were identical to the default's
    ],
)
def test_camera_and_language_model_settings_are_rejected(setting):
    ((name, value),) = setting.items()
    with pytest.raises(ValueError, match=rf"{name}={value!r}.*no effect"):
        make_policy("flow_mlp", size="tiny", **setting)


@pytest.mark.parametrize("bad", [dict(state_dim=0), dict(hidden_dim=0), dict(time_embed_dim=7)])
def test_bad_sizes_are_rejected(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        make_policy("flow_mlp", size="tiny", **bad)


def test_state_of_the_wrong_width_names_both_widths():
    policy = make_policy("flow_mlp", size="tiny", state_dim=5)
    with pytest.raises(ValueError, match=r"obs\['state'\] has shape \(2, 6\); expected \(N, 5\) \(state_dim=5\)"):
        policy.act({"state": torch.zeros(2, 6), "instruction": ["a", "b"]})


def test_each_chunk_row_reads_its_own_noisy_action():
    """Row r's velocity reads x_tau[r] directly (the design that let chunked SFT fit at all): with the
    trunk's view of the chunk cut, row 2 depends on its own noisy action and on no other row's."""
    torch.manual_seed(0)
    policy = make_policy("flow_mlp", size="tiny")
    cfg = policy.config
    with torch.no_grad():  # the trunk's first layer reads [x_tau flattened; time; h]: cut the x_tau columns
        policy.velocity_net[0].weight[:, : cfg.action_chunk * cfg.max_action_dim] = 0.0
    context = policy.encode_observation(policy.example_obs(1))
    x = torch.randn(1, cfg.action_chunk, cfg.max_action_dim, requires_grad=True)
    velocity, _ = policy.predict_velocity(context, x, torch.tensor([0.5]))
    (grad,) = torch.autograd.grad(velocity[0, 2].sum(), x)
    assert grad[0, 2].abs().sum() > 0 and torch.all(grad[0, [0, 1, 3]] == 0)


def test_freeze_state_encoder_trains_the_velocity_network_alone(tmp_path):
    """The analog of the VLA RL recipe's frozen vision encoder and language model; it survives a reload with the
    override (how RL from an SFT checkpoint sets it)."""
    torch.manual_seed(0)
    make_policy("flow_mlp", size="tiny").save_pretrained(tmp_path)
    policy = FlowMLPPolicy.from_pretrained(tmp_path, freeze_state_encoder=True)
    obs = policy.example_obs(4)
    actions = torch.rand(4, policy.config.action_chunk, policy.config.action_dim) * 2 - 1
    policy.sft_loss(obs, actions, torch.zeros(4, policy.config.action_chunk, dtype=torch.bool)).backward()
    assert all(p.grad is None and not p.requires_grad for p in policy.state_encoder.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.velocity_net.parameters())
    assert all(p.requires_grad for p in FlowMLPPolicy.from_pretrained(tmp_path).state_encoder.parameters())
