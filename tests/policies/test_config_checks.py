"""Policy config checks: out-of-range values and settings the chosen mode never reads fail at config creation."""

from __future__ import annotations

import json

import pytest

from rlinf_embodied.policies import available_policies, policy_class


def tiny_config(name: str, **overrides):
    cls = policy_class(name)
    return cls.config_class.from_dict({**cls.presets["tiny"], **overrides})


OUT_OF_RANGE = [
    # before: a critic that always output 0 (0) or a crash in a worker (-3)
    ("flow_mlp", {"value_hidden_dim": 0}, r"value_hidden_dim=0 must be >= 1"),
    ("pi0", {"value_hidden_dim": -3}, r"value_hidden_dim=-3 must be >= 1"),
    ("gr00t", {"value_hidden_dim": 0}, r"value_hidden_dim=0 must be >= 1"),
    ("openvla_oft", {"value_hidden_dim": 0}, r"value_hidden_dim=0 must be >= 1"),
    ("openvla", {"value_hidden_dim": 0}, r"value_hidden_dim=0 must be >= 1"),
    ("pi0", {"rope_theta": -10.0}, r"rope_theta=-10.0 must be > 0"),  # before: NaN actions
    ("openvla", {"rope_theta": 0.0}, r"rope_theta=0.0 must be > 0"),
    ("gr00t", {"llm_rope_theta": -1.0}, r"llm_rope_theta=-1.0 must be > 0"),
    ("openvla", {"n_action_bins": 1}, r"need 2 <= n_action_bins \(1\)"),
    ("pi0", {"image_size": 0}, r"image_size=0 must be >= 1"),
    ("openvla_oft", {"image_size": 0}, r"image_size=0 must be >= 1"),
    ("flow_mlp", {"time_min_period": 0.0}, r"time_min_period=0.0 must be > 0"),  # before: ZeroDivisionError
    ("pi0", {"time_max_period": -4.0}, r"time_max_period=-4.0 must be > 0"),
    ("gr00t", {"downsample_ratio": 0.0}, r"downsample_ratio=0.0 must be 1 / k for an integer k >= 1"),
    ("gr00t", {"downsample_ratio": 0.3}, r"downsample_ratio=0.3 must be 1 / k"),
    ("gr00t", {"downsample_ratio": 2.0}, r"downsample_ratio=2.0 must be 1 / k"),
    ("gr00t", {"noise_beta_alpha": 0.0}, r"noise_beta_alpha=0.0 must be > 0"),
    ("gr00t", {"noise_beta_beta": -1.0}, r"noise_beta_beta=-1.0 must be > 0"),
    ("gr00t", {"noise_s": 0.0}, r"noise_s=0.0 must lie in \(0, 1\]"),
    ("gr00t", {"noise_s": 1.5}, r"noise_s=1.5 must lie in \(0, 1\]"),
    ("gr00t", {"num_timestep_buckets": 0}, r"num_timestep_buckets=0 must be >= 1"),
    ("pi0", {"vlm_depth": 0}, r"vlm_depth=0 must be >= 1"),
    ("gr00t", {"select_layer": 0}, r"select_layer=0 must be >= 1"),
    ("pi0", {"lora_rank": -1}, r"lora_rank=-1 must be >= 0"),  # before: treated as no LoRA
    ("openvla", {"lora_rank": -2}, r"lora_rank=-2 must be >= 0"),
    ("mlp", {"actor_ignore_state_dims": [1.5]}, r"actor_ignore_state_dims \[1.5\] are not integers"),
    ("mlp", {"actor_ignore_state_dims": [-1]}, r"actor_ignore_state_dims \[-1\] must be >= 0"),
    ("pi0", {"ignore_state_dims": [2.0]}, r"ignore_state_dims \[2.0\] are not integers"),
    ("mlp", {"action_dim": 2, "action_low": [0.0, -1.0], "action_high": [0.0, 1.0]}, r"action_low\[0\]=0.0 == "),
    ("pi0", {"state_low": [0.0] * 8, "state_high": [0.0] + [1.0] * 7}, r"state_low\[0\]=0.0 == state_high\[0\]"),
]


@pytest.mark.parametrize(("name", "overrides", "message"), OUT_OF_RANGE)
def test_out_of_range_values_are_refused_at_config_creation(name, overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(name, **overrides)


UNREAD = [
    # (policy, overrides, message): the same seed gave bit-identical actions and log-probs before
    ("pi0", {"noise_std_min": 0.01}, r"noise_std_min=0.01 would change nothing: noise_method='flow_sde'"),
    ("flow_mlp", {"noise_std_max": -0.5}, r"noise_std_max=-0.5 would change nothing: noise_method='flow_sde'"),
    (
        "gr00t",
        {"noise_method": "flow_noise", "noise_level": 0.3},
        r"noise_level=0.3 would change nothing: .*flow_noise",
    ),
    ("openvla_oft", {"temperature": 0.5}, r"temperature=0.5 would change nothing: the continuous head"),
    (
        "openvla_oft",
        {"action_head_type": "discrete", "init_log_std": -1.0},
        r"init_log_std=-1.0 would change nothing: the discrete head",
    ),
    ("openvla_oft", {"use_proprio": False, "ignore_state_dims": [0]}, r"ignore_state_dims=\[0\] would change nothing"),
    ("openvla_oft", {"use_proprio": False, "state_low": [0.0] * 8}, r"state_low=.* would change nothing: use_proprio"),
    (
        "openvla_oft",
        {"use_proprio": False, "state_high": [1.0] * 8},
        r"state_high=.* would change nothing: use_proprio",
    ),
    ("pi0", {"lora_alpha": 32}, r"lora_alpha=32 would change nothing: lora_rank=0 adds no LoRA adapters"),
    ("gr00t", {"lora_dropout": 0.1}, r"lora_dropout=0.1 would change nothing: lora_rank=0"),
    ("openvla", {"lora_alpha": 32}, r"lora_alpha=32 would change nothing: lora_rank=0"),
    ("openvla_oft", {"lora_dropout": 0.1}, r"lora_dropout=0.1 would change nothing: lora_rank=0"),
    (
        "pi0",
        {"deterministic_noise": "zero", "deterministic_seed": 3},
        r"deterministic_seed=3 would change nothing: deterministic_noise='zero'",
    ),
    ("flow_mlp", {"lora_alpha": 32}, r"flow_mlp has no cameras or prompts: lora_alpha=32"),  # its own message
]


@pytest.mark.parametrize(("name", "overrides", "message"), UNREAD)
def test_settings_the_mode_never_reads_are_refused(name, overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(name, **overrides)


READ = [
    ("pi0", {"noise_method": "flow_noise", "noise_std_min": 0.01}),
    ("gr00t", {"noise_level": 0.3}),
    ("openvla_oft", {"action_head_type": "discrete", "temperature": 0.5}),
    ("openvla_oft", {"init_log_std": -1.0}),
    ("pi0", {"lora_rank": 4, "lora_alpha": 32, "lora_dropout": 0.1}),
    ("openvla", {"lora_rank": 4, "lora_alpha": 32}),
    ("pi0", {"deterministic_seed": 3}),
    ("openvla_oft", {"use_proprio": False}),
]


@pytest.mark.parametrize(("name", "overrides"), READ)
def test_the_same_settings_are_accepted_where_read(name, overrides):
    config = tiny_config(name, **overrides)
    assert all(getattr(config, key) == value for key, value in overrides.items())


SAVED_MODES = [(name, {}) for name in sorted(available_policies())] + [
    ("pi0", {"noise_method": "flow_noise", "deterministic_noise": "zero"}),
    ("openvla_oft", {"action_head_type": "discrete", "use_proprio": False}),
]


@pytest.mark.parametrize(("name", "overrides"), SAVED_MODES)
def test_a_saved_config_holding_every_default_still_loads(name, overrides):
    """config.json stores every field, the unread ones at their defaults: the checks compare with the defaults."""
    config = tiny_config(name, **overrides)
    saved = json.loads(json.dumps(config.to_dict()))
    assert policy_class(name).config_class.from_dict(saved) == config


@pytest.mark.parametrize(
    "name, setting",
    [
        ("flow_mlp", {"value_hidden_dim": 64}),
        ("pi0", {"value_reads_state": False}),
        ("gr00t", {"value_state_clip": None}),
        ("openvla", {"value_hidden_dim": 32}),  # the tiny preset's own value, set explicitly: still refused
    ],
)
def test_value_head_settings_without_a_value_head_are_refused_only_where_given(name, setting, tmp_path):
    """Before: add_value_head=false with value_hidden_dim=64 built no value head and read none of it. The tiny
    presets set value_hidden_dim themselves (not the user's choice), and a saved config holds it: both still pass."""
    from rlinf_embodied.policies import make_policy

    key = next(iter(setting))
    with pytest.raises(ValueError, match=rf"^{key}=.* would change nothing: add_value_head=false builds no value head"):
        make_policy(name, size="tiny", add_value_head=False, **setting)
    policy = make_policy(name, size="tiny", add_value_head=False)  # the preset's value_hidden_dim: no error
    make_policy(name, size="tiny", **setting)  # read by the value head
    if name == "flow_mlp":  # a checkpoint saved without a value head loads; an explicit override is refused
        policy.save_pretrained(tmp_path)
        policy_class(name).from_pretrained(tmp_path)
        with pytest.raises(ValueError, match=rf"^{key}=64 would change nothing"):
            policy_class(name).from_pretrained(tmp_path, **setting)
