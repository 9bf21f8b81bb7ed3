"""Policy registry: name and size errors, load_policy dispatch, mismatched checkpoints."""

from __future__ import annotations

import dataclasses
import json
import os
import re

import pytest
import torch

from rlinf_embodied.policies import available_policies, load_policy, make_policy, policy_class
from rlinf_embodied.policies.cnn.modeling import CNNPolicy
from rlinf_embodied.policies.mlp.modeling import MLPPolicy


def test_registered_names_and_classes():
    assert {"mlp", "cnn", "pi0", "gr00t"} <= set(available_policies())
    assert policy_class("mlp") is MLPPolicy and policy_class("cnn") is CNNPolicy


def test_unknown_policy_name_lists_available_ones():
    with pytest.raises(ValueError, match=r"unknown policy 'mlpp'; available: \[.*'cnn'.*'mlp'.*\]"):
        make_policy("mlpp")


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_presets_tiny_and_default_exist_and_unknown_size_errors(name):
    assert {"tiny", "default"} <= set(policy_class(name).presets)
    with pytest.raises(ValueError, match=rf"unknown size 'huge' for policy '{name}'; available: \['default', 'tiny'\]"):
        make_policy(name, size="huge")


def test_unknown_override_key_names_valid_keys():
    with pytest.raises(ValueError, match=r"unknown config keys \['hiden_dim'\].*'hidden_dim'"):
        make_policy("mlp", hiden_dim=8)


def test_make_policy_applies_action_dim_and_overrides():
    policy = make_policy("mlp", size="tiny", action_dim=5, state_dim=3, hidden_dim=16)
    assert (policy.config.action_dim, policy.config.state_dim, policy.config.hidden_dim) == (5, 3, 16)


def test_load_policy_on_missing_path_names_the_path(tmp_path):
    missing = tmp_path / "no_such_checkpoint"
    with pytest.raises(FileNotFoundError, match="no_such_checkpoint"):
        load_policy(missing)
    with pytest.raises(FileNotFoundError, match="no_such_checkpoint"):
        MLPPolicy.from_pretrained(missing)


def test_load_policy_dispatches_on_the_saved_name(tmp_path):
    torch.manual_seed(0)
    policy = make_policy("cnn", size="tiny", action_dim=2, state_dim=3)
    policy.save_pretrained(tmp_path)
    loaded = load_policy(tmp_path)
    assert isinstance(loaded, CNNPolicy) and loaded.config == policy.config
    obs = policy.example_obs(2)
    torch.testing.assert_close(loaded.act(obs, deterministic=True).actions, policy.act(obs, deterministic=True).actions)


def test_checkpoint_of_one_policy_loaded_as_another_errors(tmp_path):
    make_policy("mlp", size="tiny", action_dim=2, state_dim=3).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"holds policy 'mlp', not 'cnn'"):
        CNNPolicy.from_pretrained(tmp_path)
    # A config.json relabelled as another policy fails on the foreign config keys, naming them.
    config_path = os.path.join(tmp_path, "config.json")
    with open(config_path) as f:
        data = json.load(f)
    with open(config_path, "w") as f:
        json.dump({**data, "policy": "cnn"}, f)
    with pytest.raises(
        ValueError, match=r"CNNConfig: unknown config keys \['actor_ignore_state_dims', 'hidden_dim', 'num_layers'\]"
    ):
        load_policy(tmp_path)


def test_weights_of_a_different_shape_error(tmp_path):
    make_policy("mlp", size="tiny", action_dim=2, state_dim=3).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"has shape \(32,\), this mlp config needs \(64,\) .*size settings"):
        load_policy(tmp_path, hidden_dim=64)


@pytest.mark.parametrize("name", available_policies())
@pytest.mark.parametrize(
    "field, value, message",
    [("action_chunk", 0, "action_chunk=0 must be >= 1"), ("action_dim", 0, "action_dim=0 must be >= 1")],
)
def test_every_policy_config_rejects_empty_action_shapes(name, field, value, message):
    """Every policy's config checks the dims its shapes are built from (openvla_oft once accepted a
    chunk of 0 actions and failed later, inside the model)."""
    config_class = policy_class(name).config_class
    with pytest.raises(ValueError, match=message):
        config_class.from_dict({**policy_class(name).presets["tiny"], field: value})
    with pytest.raises(ValueError, match="state_dim=-1 must be >= 0"):
        config_class.from_dict({**policy_class(name).presets["tiny"], "state_dim": -1})


@pytest.mark.parametrize("name", available_policies())
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_every_policy_config_rejects_non_finite_numbers(name, value):
    """policy.overrides.init_log_std=nan made NaN actions and the run hung in its first rollout; a bound of nan
    would turn every action into nan the same way."""
    cls = policy_class(name)
    preset = cls.presets["tiny"]
    bounds = {"action_low": [-1.0] * (preset.get("action_dim", 7) - 1) + [value]}
    with pytest.raises(ValueError, match=r"action_low=\[.*\] must be finite"):
        cls.config_class.from_dict({**preset, **bounds})
    floats = [
        f.name
        for f in dataclasses.fields(cls.config_class)
        if isinstance(getattr(cls.config_class, f.name, None), float)
    ]
    assert floats, "every policy config has a float setting to check"
    with pytest.raises(ValueError, match=rf"{floats[0]}={value} must be finite"):
        cls.config_class.from_dict({**preset, floats[0]: value})


def test_a_run_directory_given_as_checkpoint_names_the_saved_policies_below_it(tmp_path):
    """Before: policy.checkpoint=<run dir> said only "has no config.json", and flow_mlp's message named a converter
    module that does not exist."""
    from rlinf_embodied.policies.base import missing_config_error
    from rlinf_embodied.policies.flow_mlp.modeling import FlowMLPPolicy

    for name in ("best", "final"):
        make_policy("flow_mlp", size="tiny", action_dim=2, state_dim=3).save_pretrained(
            tmp_path / "checkpoints" / name / "policy"
        )
    (tmp_path / "checkpoints" / "iteration_000001").mkdir()  # no policy inside: not listed
    root = re.escape(str(tmp_path))
    listed = rf"saved policies below it: '{root}/checkpoints/best/policy', '{root}/checkpoints/final/policy'$"
    for load in (FlowMLPPolicy.from_pretrained, MLPPolicy.from_pretrained, load_policy):
        with pytest.raises(FileNotFoundError, match=listed):
            load(tmp_path)
    assert "python -m rlinf_embodied.policies.pi0.convert" in str(missing_config_error(str(tmp_path), "pi0"))
    assert "saved policies" not in str(missing_config_error(str(tmp_path / "checkpoints" / "iteration_000001"), "mlp"))


@pytest.mark.parametrize("name", available_policies())
def test_every_policy_config_checks_its_normalisation_bounds(name):
    """Before: pi0, flow_mlp and gr00t took action bounds of the wrong length (and every policy swapped bounds)
    without a word."""
    config_class = policy_class(name).config_class
    with pytest.raises(ValueError, match=r"action_dim=7 but action_low has 6 entries: .* or action_dim=6"):
        config_class(action_dim=7, state_dim=8, action_low=[-1.0] * 6, action_high=[1.0] * 7)
    with pytest.raises(ValueError, match=r"action_low\[2\]=1.0 > action_high\[2\]=-1.0 \(dimensions \[2\]\)"):
        config_class(action_dim=3, state_dim=8, action_low=[-1.0, -1.0, 1.0], action_high=[1.0, 1.0, -1.0])
    if "state_low" in {field.name for field in dataclasses.fields(config_class)}:
        with pytest.raises(ValueError, match=r"state_dim=8 but state_high has 5 entries"):
            config_class(action_dim=7, state_dim=8, state_low=[-1.0] * 8, state_high=[1.0] * 5)


@pytest.mark.parametrize("name", ["mlp", "flow_mlp"])  # Policy.from_pretrained and FlowPolicy.from_pretrained
def test_a_damaged_checkpoint_names_the_file_and_the_fix(tmp_path, name):
    """Before: 'No such file or directory', safetensors' 'header too small', json's 'line 1 column 2', none naming the
    checkpoint's file."""
    policy = make_policy(name, size="tiny", action_dim=4, state_dim=8)
    for case in ("no_weights", "bad_weights", "bad_config", "ok"):
        policy.save_pretrained(tmp_path / case)
    os.remove(tmp_path / "no_weights" / "model.safetensors")
    (tmp_path / "bad_weights" / "model.safetensors").write_bytes(b"garbage")
    (tmp_path / "bad_config" / "config.json").write_text("{not json")
    with pytest.raises(FileNotFoundError, match=r"has config.json but no model.safetensors"):
        load_policy(tmp_path / "no_weights")
    with pytest.raises(ValueError, match=r"bad_weights/model.safetensors' is not a readable safetensors file"):
        load_policy(tmp_path / "bad_weights")
    with pytest.raises(ValueError, match=r"bad_config/config.json' is not valid JSON"):
        load_policy(tmp_path / "bad_config")
    load_policy(tmp_path / "ok")  # the intact copy loads


@pytest.mark.parametrize(
    "name, extra",
    [("mlp", {}), ("flow_mlp", {}), ("pi0", {}), ("gr00t", {}), ("openvla_oft", {"use_proprio": True})],
)
def test_showing_a_hidden_state_dim_starts_its_weights_at_zero(name, extra, tmp_path):
    """A checkpoint trained with state dims hidden, loaded with fewer hidden (RL from SFT showing the model more),
    acts exactly as saved: the dims' input columns never trained (the dims reached them as 0) and were random."""
    field = policy_class(name).hidden_state_dims_field
    saved = make_policy(name, size="tiny", action_dim=4, state_dim=6, **{field: [1, 2, 3]}, **extra)
    saved.save_pretrained(tmp_path)
    obs = saved.example_obs(3)
    shown = policy_class(name).from_pretrained(tmp_path, **{field: [3]})
    weights = shown.state_input_layer().weight
    assert weights[:, [1, 2]].abs().max() == 0 and weights[:, 0].abs().max() > 0  # columns 1, 2 only
    assert weights[:, 3].equal(saved.state_input_layer().weight[:, 3])  # still hidden: as saved
    torch.manual_seed(0)
    expected = saved.act(obs, deterministic=True).actions
    torch.manual_seed(0)
    assert torch.allclose(shown.act(obs, deterministic=True).actions, expected, atol=1e-6)
    changed = dict(obs, state=obs["state"].clone())
    changed["state"][:, 1] += 0.5  # now an input, though with zero weights it does not move the actions yet
    torch.manual_seed(0)
    assert torch.allclose(shown.act(changed, deterministic=True).actions, expected, atol=1e-6)
    assert shown.config.__dict__[field] == [3]


def test_a_policy_without_a_state_layer_refuses_to_show_hidden_dims(tmp_path, monkeypatch):
    make_policy("mlp", size="tiny", action_dim=2, state_dim=3, actor_ignore_state_dims=[0]).save_pretrained(tmp_path)
    monkeypatch.setattr(MLPPolicy, "state_input_layer", lambda self: None)
    with pytest.raises(
        ValueError, match=r"cannot show state dims \[0\] that its checkpoint hid.*actor_ignore_state_dims=\[0\]"
    ):
        MLPPolicy.from_pretrained(tmp_path, actor_ignore_state_dims=[])


@pytest.mark.parametrize("name", ["flow_mlp", "pi0"])
def test_a_revealed_dims_gain_scales_only_those_dims_and_is_saved(name, tmp_path):
    """RL showing dims its SFT checkpoint hid: at lr 1e-5 their zeroed columns barely grew (stop 56), so the policy's
    view of them can be scaled (under Adam, a gain of G moves their contribution G times faster). The loaded policy
    still acts as saved; the gain and the dims it scales are saved with the policy."""
    saved = make_policy(name, size="tiny", action_dim=4, state_dim=6, ignore_state_dims=[1, 2, 3])
    saved.save_pretrained(tmp_path / "sft")
    obs = saved.example_obs(3)
    plain = policy_class(name).from_pretrained(tmp_path / "sft", ignore_state_dims=[3])
    gained = policy_class(name).from_pretrained(tmp_path / "sft", ignore_state_dims=[3], revealed_state_gain=30.0)
    assert gained.config.revealed_state_dims == [1, 2] and plain.config.revealed_state_dims == [1, 2]
    view, plain_view = gained.normalized_state(obs), plain.normalized_state(obs)
    assert torch.allclose(view[:, [1, 2]], 30 * plain_view[:, [1, 2]]) and view[:, [0, 4, 5]].equal(
        plain_view[:, [0, 4, 5]]
    )
    assert gained.normalized_state(obs, hide_ignored=False).equal(plain.normalized_state(obs, hide_ignored=False))
    torch.manual_seed(0)
    expected = saved.act(obs, deterministic=True).actions
    torch.manual_seed(0)
    assert torch.allclose(gained.act(obs, deterministic=True).actions, expected, atol=1e-6)  # zero columns
    gained.save_pretrained(tmp_path / "rl")
    again = policy_class(name).from_pretrained(tmp_path / "rl")  # hides nothing more: keeps dims and gain
    assert again.config.revealed_state_dims == [1, 2] and again.config.revealed_state_gain == 30.0
    assert again.normalized_state(obs).equal(view)
    with pytest.raises(ValueError, match=r"revealed_state_gain=30.0 scales the state dims .* shows none"):
        policy_class(name).from_pretrained(tmp_path / "sft", revealed_state_gain=30.0)  # hides what it hid
    with pytest.raises(ValueError, match=r"revealed_state_gain=0.0 must be > 0"):
        policy_class(name).from_pretrained(tmp_path / "sft", ignore_state_dims=[3], revealed_state_gain=0.0)


@pytest.mark.parametrize(
    ("name", "fix"),
    [
        ("openvla", r"python -m rlinf_embodied\.policies\.openvla\.convert .* <dst>"),
        ("openvla_oft", r"python -m rlinf_embodied\.policies\.openvla_oft\.convert .* <dst>"),
        ("gr00t", r"python -m rlinf_embodied\.policies\.gr00t\.convert .* <dst>"),
        ("flow_mlp", r"flow_mlp has no converter; give a directory written by save_pretrained"),
    ],
)
def test_a_config_json_naming_no_policy_is_called_an_upstream_layout(name, fix, tmp_path):
    """Before: "holds policy None, not 'gr00t'" (and "unknown policy None" from load_policy)."""
    (tmp_path / "config.json").write_text('{"type": "something upstream"}')
    with pytest.raises(ValueError, match=f"config.json names no policy, so it is an upstream layout.*{fix}"):
        policy_class(name).from_pretrained(tmp_path)
    with pytest.raises(
        ValueError, match=r"names no policy.*one of: python -m rlinf_embodied\.policies\.gr00t\.convert"
    ):
        load_policy(tmp_path)


def test_a_config_json_is_parsed_once_per_version_and_each_reader_gets_its_own_copy(tmp_path, monkeypatch):
    """Before: start-up parsed a checkpoint's config.json 5 times (check, predicted fields, size warning, ...)."""
    import json

    from rlinf_embodied.policies import base

    parses = []
    monkeypatch.setattr(base.json, "load", lambda f: parses.append(f.name) or json.loads(f.read()))
    path = tmp_path / "config.json"
    path.write_text('{"policy": "mlp", "hidden_dim": 64}')
    first = base.read_json_file(str(path))
    first.pop("policy")  # callers pop keys: the next reader still sees them
    assert base.read_json_file(str(path)) == {"policy": "mlp", "hidden_dim": 64} and len(parses) == 1
    path.write_text('{"policy": "mlp", "hidden_dim": 128, "num_layers": 2}')  # rewritten: read again
    assert base.read_json_file(str(path))["hidden_dim"] == 128 and len(parses) == 2


def _weight_shapes(policy) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in policy.state_dict().items()}


def _another_value(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value * 2
    if isinstance(value, list):
        return [item * 2 for item in value]
    return {"continuous": "discrete"}.get(value)


@pytest.mark.parametrize(
    "name, base, other",
    [
        ("mlp", {"state_dim": 4}, {}),
        ("cnn", {"state_dim": 3}, {"conv_kernels": [4, 3, 2]}),  # doubled kernels exceed the tiny images
        ("openvla", {}, {}),
        ("openvla_oft", {}, {"action_head_type": "discrete"}),
        ("pi0", {}, {"vision_stem": "conv", "vision_patch_size": 16, "image_size": 64}),
        (
            "gr00t",
            {},
            {
                "downsample_ratio": 0.25,
                # the attention widths are tied (heads x head_dim): the companion field keeps them so
                "backbone_project_to_dim": {"backbone_project_to_dim": 32, "vl_self_attention_head_dim": 16},
                "llm_hidden_size": {"llm_hidden_size": 128, "vl_self_attention_head_dim": 64},
                "input_embedding_dim": {"input_embedding_dim": 64, "dit_head_dim": 32},
            },
        ),
        ("flow_mlp", {"state_dim": 4}, {}),
    ],
)
def test_each_architecture_field_shapes_the_weights(name, base, other):
    """check_overrides_fit_checkpoint refuses these fields on a checkpoint: each must change the weights' names or
    shapes (or a checkpoint override of it would load fine and be refused for nothing)."""
    cls = policy_class(name)
    reference = make_policy(name, size="tiny", action_dim=4, **base)
    for field in cls.config_class.architecture_fields:
        value = other.get(field, _another_value(getattr(reference.config, field)))
        changes = value if isinstance(value, dict) else {field: value}  # a dict: the field with its tied companions
        changed = make_policy(name, size="tiny", **{"action_dim": 4, **base, **changes})
        assert _weight_shapes(changed) != _weight_shapes(reference), field


def test_an_architecture_override_of_a_checkpoint_is_refused_from_its_config_json(tmp_path):
    """Before: policy.overrides.hidden_dim=128 on a checkpoint passed the start-up checks, and every worker failed
    while loading, naming a tensor and not the override."""
    from rlinf_embodied.policies.registry import check_overrides_fit_checkpoint

    make_policy("mlp", size="tiny", action_dim=4, state_dim=6).save_pretrained(tmp_path)
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"policy.overrides.hidden_dim=128, policy.overrides.num_layers=3: policy.checkpoint='{tmp_path}' was "
            "trained with hidden_dim=32, num_layers=2 (its config.json), which sets the shapes of its weights"
        ),
    ):
        check_overrides_fit_checkpoint("mlp", str(tmp_path), {"hidden_dim": 128, "num_layers": 3, "init_log_std": -1.0})
    with pytest.raises(ValueError, match=r"actor.0.bias has shape \(32,\)"):  # the load error it stands in for
        policy_class("mlp").from_pretrained(tmp_path, hidden_dim=128)
    # the checkpoint's own values, settings that shape no weight, and no checkpoint all pass
    check_overrides_fit_checkpoint("mlp", str(tmp_path), {"hidden_dim": 32, "state_dim": 6, "init_log_std": -1.0})
    check_overrides_fit_checkpoint("mlp", None, {"hidden_dim": 128})
    make_policy("cnn", size="tiny", action_dim=2).save_pretrained(tmp_path / "cnn")
    check_overrides_fit_checkpoint("cnn", str(tmp_path / "cnn"), {"conv_channels": (8, 16, 16), "image_size": 64})
    with pytest.raises(
        ValueError, match=r"policy.overrides.conv_channels=\[8, 16, 32\]: .*conv_channels=\[8, 16, 16\]"
    ):
        check_overrides_fit_checkpoint("cnn", str(tmp_path / "cnn"), {"conv_channels": (8, 16, 32)})
    # the flow policies too (before: they listed no architecture field, so nothing was checked)
    make_policy("flow_mlp", size="tiny", action_dim=2, state_dim=4).save_pretrained(tmp_path / "flow")
    with pytest.raises(ValueError, match=r"policy.overrides.max_state_dim=128: .*max_state_dim=64"):
        check_overrides_fit_checkpoint("flow_mlp", str(tmp_path / "flow"), {"max_state_dim": 128, "noise_level": 0.3})


def test_check_overrides_fit_checkpoint_reads_the_checkpoint_through_saved_policy_config(tmp_path, monkeypatch):
    """One reader of a checkpoint's config.json for the start-up checks (before: check_overrides_fit_checkpoint read
    it itself, beside workers/policy_loading.py's saved_policy_config)."""
    from rlinf_embodied.policies import registry
    from rlinf_embodied.workers import policy_loading

    assert policy_loading.saved_policy_config is registry.saved_policy_config
    read = []

    def saved(checkpoint):
        read.append(checkpoint)
        return {"policy": "mlp", "hidden_dim": 32}

    monkeypatch.setattr(registry, "saved_policy_config", saved)
    with pytest.raises(ValueError, match=r"policy.overrides.hidden_dim=128: .*trained with hidden_dim=32"):
        registry.check_overrides_fit_checkpoint("mlp", tmp_path, {"hidden_dim": 128})
    assert read == [str(tmp_path)]
    monkeypatch.setattr(registry, "saved_policy_config", lambda checkpoint: None)  # no config.json, or upstream
    registry.check_overrides_fit_checkpoint("mlp", tmp_path, {"hidden_dim": 128})
