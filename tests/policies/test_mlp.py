"""`mlp` policy: shapes, act/evaluate agreement, the clip convention, checkpoints, gradients, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

from rlinf_embodied.policies import ActOutput, make_policy
from rlinf_embodied.policies.mlp.modeling import MLPPolicy

ACTION_DIM, STATE_DIM = 4, 6


def tiny_mlp(**overrides) -> MLPPolicy:
    torch.manual_seed(0)
    return make_policy(
        "mlp",
        size="tiny",
        action_dim=overrides.pop("action_dim", ACTION_DIM),
        state_dim=overrides.pop("state_dim", STATE_DIM),
        **overrides,
    )


@pytest.mark.parametrize("chunk", [1, 3])
def test_act_shapes_and_evaluate_agreement(chunk):
    policy = tiny_mlp(action_chunk=chunk)
    obs = policy.example_obs(5)
    assert obs["state"].shape == (5, STATE_DIM) and obs["state"].dtype == torch.float32
    assert len(obs["instruction"]) == 5
    out = policy.act(obs)
    assert out.actions.shape == out.log_probs.shape == (5, chunk, ACTION_DIM)
    assert out.values.shape == (5,)
    assert out.extras["raw_actions"].shape == (5, chunk, ACTION_DIM)
    assert not out.log_probs.requires_grad
    evaluated = policy.evaluate(obs, out)
    torch.testing.assert_close(evaluated.log_probs, out.log_probs, atol=1e-5, rtol=0)
    torch.testing.assert_close(evaluated.values, out.values, atol=1e-5, rtol=0)
    assert evaluated.entropy.shape == (5, chunk, ACTION_DIM)


def test_log_probs_and_entropy_match_torch_normal():
    policy = tiny_mlp(action_chunk=2)
    obs = policy.example_obs(3)
    out = policy.act(obs)
    means = policy.actor(obs["state"]).reshape(3, 2, ACTION_DIM)
    reference = Normal(means, policy.log_std.exp())
    evaluated = policy.evaluate(obs, out)
    torch.testing.assert_close(out.log_probs, reference.log_prob(out.extras["raw_actions"]), atol=1e-5, rtol=0)
    torch.testing.assert_close(evaluated.entropy, reference.entropy(), atol=1e-6, rtol=0)


def test_actions_are_clipped_raw_samples_and_log_probs_are_pre_clip():
    # A wide std (e^1) makes many raw samples leave [-1, 1], so the clip is exercised.
    policy = tiny_mlp(init_log_std=1.0)
    obs = policy.example_obs(64)
    out = policy.act(obs)
    raw = out.extras["raw_actions"]
    assert (raw.abs() > 1).any(), "test needs samples outside the action space"
    torch.testing.assert_close(out.actions, raw.clamp(-1, 1))
    means = policy.actor(obs["state"]).reshape(raw.shape)
    torch.testing.assert_close(out.log_probs, Normal(means, math.e).log_prob(raw), atol=1e-5, rtol=0)


def test_action_bounds_unnormalize_the_clipped_sample():
    low, high = [-2.0, 0.0, 0.0, -0.5], [2.0, 1.0, 10.0, 0.5]
    policy = tiny_mlp(init_log_std=1.0, action_low=low, action_high=high)
    out = policy.act(policy.example_obs(64))
    low_t, high_t = torch.tensor(low), torch.tensor(high)
    assert ((out.actions >= low_t) & (out.actions <= high_t)).all()
    expected = low_t + (out.extras["raw_actions"].clamp(-1, 1) + 1) / 2 * (high_t - low_t)
    torch.testing.assert_close(out.actions, expected)


def test_deterministic_returns_the_mean():
    policy = tiny_mlp(init_log_std=0.5)
    obs = policy.example_obs(4)
    first, second = policy.act(obs, deterministic=True), policy.act(obs, deterministic=True)
    torch.testing.assert_close(first.actions, second.actions, atol=0, rtol=0)
    means = policy.actor(obs["state"]).reshape(4, 1, ACTION_DIM)
    torch.testing.assert_close(first.extras["raw_actions"], means)
    torch.testing.assert_close(first.actions, means.clamp(-1, 1))
    assert not torch.equal(policy.act(obs).actions, first.actions)  # stochastic mode differs


def test_default_preset_is_the_ppo_baseline_architecture():
    policy = make_policy("mlp", size="default", action_dim=8, state_dim=42)
    linears = [m for m in policy.actor if isinstance(m, torch.nn.Linear)]
    assert [layer.out_features for layer in linears] == [256, 256, 256, 8]
    assert sum(isinstance(m, torch.nn.Tanh) for m in policy.actor) == 3
    assert torch.all(policy.log_std == -0.5)
    # orthogonal init: the actor's last layer rows are orthonormal up to the 0.01*sqrt(2) gain
    last = linears[-1].weight
    torch.testing.assert_close(last @ last.T, (0.01 * math.sqrt(2)) ** 2 * torch.eye(8), atol=1e-7, rtol=1e-4)
    assert torch.all(linears[-1].bias == 0)


def test_save_and_load_give_identical_outputs(tmp_path):
    policy = tiny_mlp(action_chunk=2, action_low=[-1.0] * ACTION_DIM, action_high=[3.0] * ACTION_DIM)
    with torch.no_grad():
        policy.log_std.fill_(-0.2)  # a non-initial value must survive the round trip
    policy.save_pretrained(tmp_path / "ckpt")
    loaded = MLPPolicy.from_pretrained(tmp_path / "ckpt")
    obs = policy.example_obs(4)
    out = policy.act(obs)
    torch.testing.assert_close(loaded.act(obs, deterministic=True).actions, policy.act(obs, deterministic=True).actions)
    reloaded_eval, original_eval = loaded.evaluate(obs, out), policy.evaluate(obs, out)
    torch.testing.assert_close(reloaded_eval.log_probs, original_eval.log_probs, atol=0, rtol=0)
    torch.testing.assert_close(reloaded_eval.values, original_eval.values, atol=0, rtol=0)
    assert loaded.config == policy.config


def test_init_log_std_override_resets_a_loaded_std_and_keeps_the_means(tmp_path):
    """RL from a BC checkpoint: policy.overrides.init_log_std replaces the NLL-fitted exploration std."""
    policy = tiny_mlp()
    with torch.no_grad():
        policy.log_std.fill_(-1.6)
    policy.save_pretrained(tmp_path / "bc")
    loaded = MLPPolicy.from_pretrained(tmp_path / "bc", init_log_std=-3.0)
    assert torch.all(loaded.log_std == -3.0) and loaded.config.init_log_std == -3.0
    obs = policy.example_obs(3)
    torch.testing.assert_close(loaded.act(obs, deterministic=True).actions, policy.act(obs, deterministic=True).actions)
    assert torch.all(MLPPolicy.from_pretrained(tmp_path / "bc").log_std == -1.6)  # no override: the checkpoint's


def test_gradients_reach_every_parameter():
    policy = tiny_mlp(action_chunk=2)
    obs = policy.example_obs(8)
    out = policy.act(obs)
    evaluated = policy.evaluate(obs, out)
    loss = evaluated.log_probs.sum() + evaluated.values.square().sum() + evaluated.entropy.sum()
    loss.backward()
    for name, param in policy.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_bf16_weights_keep_float32_log_probs_that_agree():
    policy = tiny_mlp().to(torch.bfloat16)
    obs = policy.example_obs(4)
    out = policy.act(obs)
    assert out.log_probs.dtype == torch.float32 and out.values.dtype == torch.float32
    torch.testing.assert_close(policy.evaluate(obs, out).log_probs, out.log_probs, atol=1e-5, rtol=0)


def test_missing_state_key_names_the_key_and_the_keys_present():
    policy = tiny_mlp()
    with pytest.raises(KeyError, match=r"no 'state'.*\['rgb'\]"):
        policy.act({"rgb": torch.zeros(2, 8, 8, 3, dtype=torch.uint8)})


def test_wrong_state_width_names_expected_and_got_shapes():
    policy = tiny_mlp()
    with pytest.raises(ValueError, match=r"shape \(2, 5\); expected \(N, 6\)"):
        policy.act({"state": torch.zeros(2, 5)})
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        policy.act({"state": torch.zeros(6)})


def test_mismatched_action_dims_error():
    policy = tiny_mlp()
    other = tiny_mlp(action_dim=ACTION_DIM + 1)
    obs = policy.example_obs(3)
    with pytest.raises(ValueError, match=r"expected \(3, 1, 4\)"):
        policy.evaluate(obs, other.act(obs))
    with pytest.raises(KeyError, match="raw_actions"):
        policy.evaluate(obs, ActOutput(actions=torch.zeros(3, 1, 4), log_probs=torch.zeros(3, 1, 4)))
    with pytest.raises(ValueError, match="action_dim=4 but action_low has 3 entries"):
        tiny_mlp(action_low=[0.0] * 3, action_high=[1.0] * 3)


def test_config_rejects_stateless_mlp():
    with pytest.raises(ValueError, match="state_dim=0"):
        make_policy("mlp", size="tiny", state_dim=0)


def test_evaluate_as_an_fsdp2_forward_method(check_evaluate_under_fsdp2):
    """The ActorWorker path: fully_shard + register_fsdp_forward_method("evaluate"), one gloo rank."""
    reference, policy = tiny_mlp(action_chunk=2), tiny_mlp(action_chunk=2)
    check_evaluate_under_fsdp2(reference, policy, reference.example_obs(4))


def test_actor_ignore_state_dims(tmp_path):
    """The actor does not see the ignored dims (the critic does); the option survives save/load; bad dims error."""
    policy = make_policy("mlp", size="tiny", action_dim=ACTION_DIM, state_dim=STATE_DIM, actor_ignore_state_dims=[1, 3])
    state = torch.randn(5, STATE_DIM)
    moved = state.clone()
    moved[:, [1, 3]] += 3.0
    means, values = policy.action_means_and_values({"state": state})
    means2, values2 = policy.action_means_and_values({"state": moved})
    torch.testing.assert_close(means, means2)
    assert not torch.allclose(values, values2)
    policy.save_pretrained(str(tmp_path / "p"))
    assert MLPPolicy.from_pretrained(str(tmp_path / "p")).config.actor_ignore_state_dims == [1, 3]
    with pytest.raises(ValueError, match=r"actor_ignore_state_dims \[6\]"):
        make_policy("mlp", size="tiny", action_dim=ACTION_DIM, state_dim=STATE_DIM, actor_ignore_state_dims=[6])


def test_action_bounds_are_checked_against_the_envs_action_space():
    """Before: action_low/high of [-2, 2] on PushCube's [-1, 1] were accepted; the env clipped half of each range."""
    from rlinf_embodied.policies.mlp.configuration import MLPConfig

    wide = MLPConfig(action_dim=2, state_dim=3, action_low=[-2.0, -0.5], action_high=[2.0, 0.5])
    with pytest.raises(
        ValueError,
        match=r"action_low=\[-2.0, -0.5\], action_high=\[2.0, 0.5\] reach beyond env 'toy''s action space "
        r"low=\[-1.0, -1.0\], high=\[1.0, 1.0\] in dimensions \[0\]",
    ):
        wide.check_within_action_space([-1.0, -1.0], [1.0, 1.0], "env 'toy'")
    wide.check_within_action_space([-2.0, -1.0], [2.0, 1.0], "env 'toy'")  # within (the bounds themselves)
    wide.check_within_action_space([-float("inf")] * 2, [float("inf")] * 2, "env 'toy'")  # an unbounded space
    MLPConfig(action_dim=2, state_dim=3).check_within_action_space([-0.5] * 2, [0.5] * 2, "env 'toy'")  # no bounds
