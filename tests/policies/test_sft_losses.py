"""The policies' imitation losses: `sft_loss(obs, actions, is_pad=None)` on env-unit action chunks."""

from __future__ import annotations

import math

import pytest
import torch

from rlinf_embodied.policies import make_policy


def padded_variant(actions: torch.Tensor, is_pad: torch.Tensor) -> torch.Tensor:
    """The same chunks with wild values in the padded rows: a masked loss must not see them."""
    other = actions.clone()
    other[is_pad] = 7.5
    return other


def test_mlp_bc_is_the_gaussian_nll_of_the_clipped_normalised_demonstration():
    torch.manual_seed(0)
    policy = make_policy(
        "mlp",
        size="tiny",
        action_dim=3,
        state_dim=5,
        action_chunk=2,
        action_low=[-2.0, -2.0, 0.0],
        action_high=[2.0, 2.0, 1.0],
    )
    obs = policy.example_obs(6)
    actions = torch.rand(6, 2, 3) * 2 - 0.5  # env units, some outside the bounds
    is_pad = torch.zeros(6, 2, dtype=torch.bool)
    is_pad[:2, 1] = True
    loss = policy.sft_loss(obs, actions, is_pad)
    means, _ = policy._means_and_values(obs)
    target = policy.normalize_actions(actions).clamp(-1, 1)
    std = policy.log_std.exp()
    nll = 0.5 * ((target - means) / std) ** 2 + policy.log_std + 0.5 * math.log(2 * math.pi)
    expected = nll[~is_pad].mean()
    torch.testing.assert_close(loss, expected)
    assert policy.sft_loss(obs, padded_variant(actions, is_pad), is_pad).item() == pytest.approx(loss.item())
    assert policy.sft_loss(obs, padded_variant(actions, is_pad)).item() != pytest.approx(loss.item())
    loss.backward()
    assert policy.log_std.grad is not None and policy.actor[0].weight.grad is not None
    assert all(p.grad is None for p in policy.critic.parameters())  # BC leaves the critic alone


def test_bc_fits_a_deterministic_expert_and_shrinks_the_std():
    torch.manual_seed(0)
    policy = make_policy("mlp", size="tiny", action_dim=2, state_dim=4)
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)
    states = torch.randn(256, 4)
    actions = torch.tanh(states[:, :2] - states[:, 2:])[:, None]  # (N, 1, 2) learnable mapping
    first = None
    for _ in range(150):
        loss = policy.sft_loss({"state": states}, actions)
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < first - 1.0
    deterministic = policy.act({"state": states}, deterministic=True).actions
    assert (deterministic - actions).abs().mean() < 0.1
    assert policy.log_std.exp().max() < 0.3  # started at exp(-0.5) = 0.61


def test_wrong_action_shape_names_the_policy_dims():
    policy = make_policy("mlp", size="tiny", action_dim=3, state_dim=4)
    with pytest.raises(ValueError, match=r"action_chunk=1, action_dim=3"):
        policy.sft_loss(policy.example_obs(2), torch.zeros(2, 1, 5))


@pytest.mark.parametrize("name, time_key", [("pi0", "tau"), ("gr00t", "t")])
def test_flow_losses_mask_padded_chunk_rows(name, time_key):
    torch.manual_seed(0)
    policy = make_policy(name, size="tiny")
    cfg = policy.config
    obs = policy.example_obs(3)
    actions = torch.rand(3, cfg.action_chunk, cfg.action_dim) * 2 - 1
    is_pad = torch.zeros(3, cfg.action_chunk, dtype=torch.bool)
    is_pad[0, -2:] = True
    fixed = {"noise": torch.randn(3, cfg.action_chunk, cfg.max_action_dim), time_key: torch.tensor([0.3, 0.6, 0.9])}
    loss = policy.sft_loss(obs, actions, is_pad, **fixed)
    assert torch.isfinite(loss)
    # Padded rows are still inputs (x_tau; the chunk's tokens attend to each other), but not targets.
    assert policy.sft_loss(obs, padded_variant(actions, is_pad), is_pad, **fixed).item() == pytest.approx(
        loss.item(), rel=0.05
    )
    all_valid = torch.zeros_like(is_pad)
    torch.testing.assert_close(
        policy.sft_loss(obs, actions, all_valid, **fixed), policy.sft_loss(obs, actions, **fixed)
    )
    unmasked = policy.sft_loss(obs, padded_variant(actions, is_pad), **fixed)
    assert unmasked.item() > loss.item() * 1.5  # the wild padded rows count without the mask


@pytest.mark.parametrize("head", ["continuous", "discrete"])
def test_openvla_oft_losses_mask_padded_chunk_rows(head):
    torch.manual_seed(0)
    policy = make_policy("openvla_oft", size="tiny", action_head_type=head)
    cfg = policy.config
    obs = policy.example_obs(2)
    actions = torch.rand(2, cfg.action_chunk, cfg.action_dim) * 1.6 - 0.8
    is_pad = torch.zeros(2, cfg.action_chunk, dtype=torch.bool)
    is_pad[1, 1:] = True
    loss = policy.sft_loss(obs, actions, is_pad)
    masked_other = policy.sft_loss(obs, padded_variant(actions, is_pad), is_pad)
    assert masked_other.item() == pytest.approx(loss.item(), rel=1e-5)
    assert policy.sft_loss(obs, padded_variant(actions, is_pad)).item() != pytest.approx(loss.item(), rel=1e-3)
    loss.backward()
    trained = policy.action_head if head == "continuous" else policy.language_model.lm_head
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trained.parameters())


def test_openvla_token_cross_entropy_takes_one_step_and_rejects_chunks():
    torch.manual_seed(0)
    policy = make_policy("openvla", size="tiny")
    obs = policy.example_obs(2)
    actions = torch.rand(2, 1, policy.config.action_dim) * 2 - 1
    loss = policy.sft_loss(obs, actions)
    assert 0 < loss.item() < 2 * math.log(policy.config.n_action_bins)  # near uniform at random init
    torch.testing.assert_close(policy.sft_loss(obs, actions[:, 0]), loss)
    with pytest.raises(ValueError, match="action_chunk=1"):
        policy.sft_loss(obs, actions.expand(2, 3, -1))
