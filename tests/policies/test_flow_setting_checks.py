"""Flow-policy settings the code cannot use or never reads, refused when the config (or the policy) is built: LoRA
ranges (shared with the Prismatic configs through policies/base.py), freeze_language_model with new LoRA adapters,
value_state_clip without a state for the value head, and Flow-SDE noise levels beyond the chain's stable range."""

from __future__ import annotations

import json

import pytest
import torch

from rlinf_embodied.policies import load_policy, make_policy, policy_class
from rlinf_embodied.policies.flow.config import MAX_NOISE_LEVEL
from rlinf_embodied.policies.flow.sde import flow_sde_step

VLA_POLICIES = ["pi0", "gr00t"]


def tiny_config(name: str, **overrides):
    cls = policy_class(name)
    return cls.config_class.from_dict({**cls.presets["tiny"], **overrides})


# ---- lora_alpha > 0, lora_dropout in [0, 1): the same check for the flow VLAs and the Prismatic VLAs --------------
@pytest.mark.parametrize("name", ["pi0", "gr00t", "openvla", "openvla_oft"])
@pytest.mark.parametrize("alpha", [0, -4])
def test_a_lora_alpha_that_is_not_positive_is_refused(name, alpha):
    """Before: lora_alpha=0 scaled the adapters by 0 (no gradient, the frozen language model never trained), and
    -4 flipped every adapter update."""
    with pytest.raises(ValueError, match=rf"^lora_alpha={alpha} must be > 0"):
        tiny_config(name, lora_rank=4, lora_alpha=alpha)


@pytest.mark.parametrize("name", ["pi0", "gr00t", "openvla", "openvla_oft"])
@pytest.mark.parametrize("dropout", [1.0, 2.0, -0.1])
def test_a_lora_dropout_outside_zero_to_one_is_refused(name, dropout):
    """Before: passed every start-up check, then failed in each worker with torch's message, naming no setting."""
    with pytest.raises(ValueError, match=rf"^lora_dropout={dropout} must lie in \[0, 1\)"):
        tiny_config(name, lora_rank=4, lora_dropout=dropout)


@pytest.mark.parametrize("name", VLA_POLICIES)
def test_lora_settings_in_range_build_adapters_that_train(name):
    policy = make_policy(name, size="tiny", lora_rank=2, lora_alpha=1, lora_dropout=0.5)
    obs = policy.example_obs(2)
    policy.evaluate(obs, policy.act(obs)).log_probs.sum().backward()
    lora_b = [p for n, p in policy.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_b)


# ---- freeze_language_model with LoRA: the whole language model, adapters included ------------------------------------
def trainable_language_model_params(policy) -> list[str]:
    return [n for n, p in policy.backbone_language_model().named_parameters() if p.requires_grad]


@pytest.mark.parametrize("name", VLA_POLICIES)
def test_freeze_language_model_freezes_a_checkpoints_trained_adapters_too(name, tmp_path):
    """Before: LoRA re-enabled the adapters after the freeze, so freeze_language_model=true changed nothing."""
    adapted = make_policy(name, size="tiny", lora_rank=4)
    assert any("lora_" in n for n in trainable_language_model_params(adapted))  # LoRA alone: adapters train
    assert not any("lora_" not in n for n in trainable_language_model_params(adapted))  # base frozen
    with torch.no_grad():  # "trained" adapters: loading must keep them, frozen or not
        for n, p in adapted.named_parameters():
            if "lora_B" in n:
                p.normal_()
    adapted.save_pretrained(tmp_path)
    frozen = policy_class(name).from_pretrained(tmp_path, freeze_language_model=True)
    assert trainable_language_model_params(frozen) == []
    assert any(p.requires_grad for p in frozen.parameters())  # the action expert still trains
    saved = adapted.state_dict()
    assert all(torch.equal(value, saved[key]) for key, value in frozen.state_dict().items())
    obs = frozen.example_obs(2)
    frozen.evaluate(obs, frozen.act(obs)).log_probs.sum().backward()
    assert all(p.grad is None for p in frozen.backbone_language_model().parameters())
    loaded = load_policy(tmp_path)  # the saved config (freeze_language_model=false): the adapters train again
    assert trainable_language_model_params(loaded) == trainable_language_model_params(adapted)


@pytest.mark.parametrize("name", VLA_POLICIES)
def test_freezing_new_adapters_is_refused(name, tmp_path):
    """New adapters add nothing until trained: frozen, lora_rank would change nothing."""
    with pytest.raises(ValueError, match=r"lora_rank=4 adds new LoRA adapters.*freeze_language_model=true freezes"):
        make_policy(name, size="tiny", lora_rank=4, freeze_language_model=True)
    make_policy(name, size="tiny", action_dim=4).save_pretrained(tmp_path)  # a checkpoint without adapters
    with pytest.raises(ValueError, match=r"lora_rank=2 adds new LoRA adapters"):
        policy_class(name).from_pretrained(tmp_path, lora_rank=2, freeze_language_model=True)
    frozen = policy_class(name).from_pretrained(tmp_path, freeze_language_model=True)  # no LoRA: frozen as before
    assert trainable_language_model_params(frozen) == []


# ---- value_state_clip needs the state the value head reads -----------------------------------------------------------
@pytest.mark.parametrize("name", ["pi0", "gr00t", "flow_mlp"])
def test_value_state_clip_without_state_for_the_value_head_is_refused(name):
    """Before: accepted, and the value head (no state input) never read it."""
    with pytest.raises(ValueError, match=r"^value_state_clip=3.0 would change nothing: value_reads_state=false"):
        tiny_config(name, value_reads_state=False, value_state_clip=3.0)
    assert tiny_config(name, value_reads_state=False).value_state_clip is not None  # the default passes
    tiny_config(name, value_reads_state=False, value_state_clip=None)  # no clip: nothing to refuse
    reading = make_policy(name, size="tiny", value_state_clip=0.01)  # read where the value head sees the state
    torch.manual_seed(0)
    wide = make_policy(name, size="tiny", value_state_clip=100.0)
    reading.load_state_dict(wide.state_dict())
    obs = wide.example_obs(2)
    obs["state"] = obs["state"] * 50
    out = reading.act(obs, deterministic=True)
    assert not torch.allclose(out.values, wide.act(obs, deterministic=True).values)


def test_a_saved_config_without_state_for_the_value_head_still_loads():
    config = tiny_config("pi0", value_reads_state=False)
    saved = json.loads(json.dumps(config.to_dict()))
    assert policy_class("pi0").config_class.from_dict(saved) == config


# ---- Flow-SDE noise_level <= sqrt(2) --------------------------------------------------------------------------------
def test_the_noise_level_bound_is_where_the_first_step_removes_all_its_noise():
    """The bound's reason, read off the code: at tau = 1 (x is all noise) the SDE mean keeps 1 - noise_level^2 / 2 of
    the noise estimate; at sqrt(2) none, above it the mean overshoots to the other side."""
    x = torch.randn(64, 4, 8)
    tau = torch.ones(64)
    kept = {}
    for scale in (0.9, 1.0, 1.1):
        mean, _ = flow_sde_step(x, torch.zeros_like(x), tau, dt=0.25, noise_level=MAX_NOISE_LEVEL * scale)
        kept[scale] = ((mean * x).sum() / x.square().sum()).item()
    assert kept[0.9] > 0.1 and abs(kept[1.0]) < 1e-5 and kept[1.1] < -0.1, kept


@pytest.mark.parametrize("name", ["pi0", "gr00t", "flow_mlp"])
@pytest.mark.parametrize("level", [MAX_NOISE_LEVEL * 1.01, 10.0, 100.0])
def test_a_noise_level_beyond_the_stable_range_is_refused(name, level):
    """Before: 10 made every action of a random flow_mlp saturate at the env's bounds (absmax 3.5e6), with finite
    log-probs."""
    with pytest.raises(ValueError, match=rf"^noise_level={level} must lie in \(0, sqrt\(2\) = 1.4142\]"):
        tiny_config(name, noise_level=level)


@pytest.mark.parametrize("level", [0.05, 0.5, 1.0, MAX_NOISE_LEVEL])
def test_noise_levels_in_range_are_accepted(level):
    policy = make_policy("flow_mlp", size="tiny", noise_level=level)
    assert policy.config.noise_level == level
    assert torch.isfinite(policy.act(policy.example_obs(4)).actions).all()
