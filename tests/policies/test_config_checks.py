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
    ("mlp", {"actor_ignore_state_dims": [1.5]}, r"actor_ignore_state_dims\[0\]=1.5 \(float\) is not a valid int"),
    ("mlp", {"actor_ignore_state_dims": [-1]}, r"actor_ignore_state_dims \[-1\] must be >= 0"),
    ("pi0", {"ignore_state_dims": [2.0]}, r"ignore_state_dims\[0\]=2.0 \(float\) is not a valid int"),
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


@pytest.mark.parametrize(
    ("overrides", "message"),
    [  # before: [32.7, 64, 64] built 32 channels, [True, 2, 1] a stride of 1, and 'a' gave int()'s error, no field
        ({"conv_channels": [32.7, 64, 64]}, r"conv_channels=\[32.7, 64, 64\] .*conv_channels\[0\]=32.7 \(float\)"),
        ({"conv_kernels": [8.9, 4, 3]}, r"conv_kernels\[0\]=8.9 \(float\) is not a valid int"),
        ({"conv_strides": [True, 2, 1]}, r"conv_strides\[0\]=True \(bool\) is not a valid int \(a bool is not a"),
        ({"conv_channels": ["a", 64, 64]}, r"conv_channels\[0\]='a' \(str\) is not a valid int"),
    ],
)
def test_cnn_conv_lists_take_only_ints_and_name_the_field(overrides, message):
    from rlinf_embodied.config import PolicyConfig
    from rlinf_embodied.policies import make_policy
    from rlinf_embodied.workers.policy_loading import check_policy_config

    with pytest.raises(ValueError, match=message):
        make_policy("cnn", **overrides)
    with pytest.raises(ValueError, match=rf"policy.overrides.{message}"):  # the command line's check, before Ray
        check_policy_config(PolicyConfig(name="cnn", size="tiny", overrides=overrides))


def test_cnn_conv_lists_of_ints_stay_accepted_as_plain_lists():
    import numpy as np
    from omegaconf import OmegaConf

    config = tiny_config("cnn", conv_channels=(4, np.int64(8), 8), conv_strides=OmegaConf.create([2, 2, 1]))
    assert config.conv_channels == [4, 8, 8] and type(config.conv_channels[1]) is int
    assert config.conv_strides == [2, 2, 1] and isinstance(config.conv_strides, list)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [  # before: torch.empty's TypeError, "'<' not supported", one hidden layer, "'int' object is not iterable"
        ({"hidden_dim": 2.5}, r"^hidden_dim=2.5 \(float\) is not a valid int$"),
        ({"hidden_dim": "32"}, r"^hidden_dim='32' \(str\) is not a valid int$"),
        ({"num_layers": True}, r"^num_layers=True \(bool\) is not a valid int \(a bool is not a number\)$"),
        ({"actor_ignore_state_dims": 3}, r"^actor_ignore_state_dims=3 \(int\) is not a valid list\[int\] \| None$"),
        ({"init_log_std": "x"}, r"^init_log_std='x' \(str\) is not a valid float$"),
    ],
)
def test_make_policy_refuses_wrongly_typed_settings_naming_them(overrides, message):
    from rlinf_embodied.policies import make_policy

    with pytest.raises(ValueError, match=message):
        make_policy("mlp", **overrides)


def test_make_policy_keeps_accepting_numpy_numbers_and_ints_for_floats():
    import numpy as np

    from rlinf_embodied.policies import make_policy

    policy = make_policy(
        "mlp",
        action_dim=2,
        hidden_dim=np.int64(16),
        num_layers=1,
        init_log_std=-1,
        action_low=[-1, -1],
        action_high=np.array([1.0, 1.0]),
    )
    assert policy.config.hidden_dim == 16 and policy.config.init_log_std == -1


def test_flow_max_action_dim_is_checked_against_the_env_s_action_dim_not_the_preset_s_placeholder():
    """Before: policy=flow_mlp policy.overrides.max_action_dim=4 on PushCube (4-D actions) was refused with "action_dim=7
    exceeds max_action_dim=4", the preset's placeholder action_dim (the env's is passed when the policy is built)."""
    from rlinf_embodied.config import PolicyConfig
    from rlinf_embodied.workers.policy_loading import check_policy_config

    for size in ("tiny", "default"):  # (pi0 and gr00t share the check: FlowPolicyConfig's)
        for max_action_dim in (4, 5):
            check_policy_config(PolicyConfig(name="flow_mlp", size=size, overrides={"max_action_dim": max_action_dim}))
    with pytest.raises(ValueError, match=r"action_dim=7 exceeds max_action_dim=4 .*: set max_action_dim >= 7"):
        check_policy_config(PolicyConfig(name="flow_mlp", overrides={"max_action_dim": 4, "action_dim": 7}))
    bounds = {"action_low": [-1.0] * 6, "action_high": [1.0] * 6}  # statistics: their width is the action_dim
    with pytest.raises(ValueError, match=r"action_dim=6 exceeds max_action_dim=4"):
        check_policy_config(PolicyConfig(name="flow_mlp", overrides={"max_action_dim": 4, **bounds}))
    with pytest.raises(ValueError, match=r"max_action_dim=0 must be >= 1"):
        check_policy_config(PolicyConfig(name="flow_mlp", overrides={"max_action_dim": 0}))
    with pytest.raises(ValueError, match=r"action_dim=5 exceeds max_action_dim=4"):  # the workers: the env's dim
        tiny_config("flow_mlp", action_dim=5, max_action_dim=4)


@pytest.mark.parametrize(
    ("content", "message"),
    [  # before: AttributeError 'list' object has no attribute 'get', TypeError "pop expected at most 1 argument", ...
        ("[1, 2]", r"config.json' holds a JSON list, not an object of config settings: the checkpoint is damaged"),
        ("null", r"config.json' holds a JSON null, not an object"),
        ('"mlp"', r"config.json' holds a JSON string, not an object"),
    ],
)
def test_a_checkpoint_config_json_that_is_no_object_is_named(tmp_path, content, message):
    from rlinf_embodied.config import PolicyConfig
    from rlinf_embodied.policies import load_policy, make_policy
    from rlinf_embodied.workers.policy_loading import check_policy_config

    make_policy("mlp", size="tiny", action_dim=2, state_dim=4).save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(content)
    for load in (
        lambda: policy_class("mlp").from_pretrained(tmp_path),
        lambda: load_policy(tmp_path),
        lambda: check_policy_config(PolicyConfig(name="mlp", checkpoint=str(tmp_path))),
    ):
        with pytest.raises(ValueError, match=message):
            load()


def test_a_wrongly_typed_field_of_a_checkpoint_config_json_is_named(tmp_path):
    """Before: hidden_dim "32" failed with "'<' not supported between instances of 'str' and 'int'"."""
    from rlinf_embodied.config import PolicyConfig
    from rlinf_embodied.policies import load_policy, make_policy
    from rlinf_embodied.workers.policy_loading import check_policy_config

    make_policy("mlp", size="tiny", action_dim=2, state_dim=4).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**saved, "hidden_dim": "32"}))
    message = r"its config.json is damaged: hidden_dim='32' \(str\) is not a valid int; re-save the checkpoint"
    with pytest.raises(ValueError, match=rf"^checkpoint '.*': {message}"):
        load_policy(tmp_path)
    with pytest.raises(ValueError, match=rf"^policy.checkpoint='.*': {message}"):
        check_policy_config(PolicyConfig(name="mlp", checkpoint=str(tmp_path)))
    (tmp_path / "config.json").write_text(json.dumps({**saved, "hidden_dim": 32.0}))
    with pytest.raises(ValueError, match=r"hidden_dim=32.0 \(float\) is not a valid int"):
        load_policy(tmp_path)
