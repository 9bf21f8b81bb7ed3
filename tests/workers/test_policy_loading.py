"""The driver's start-up check of policy configs (workers/policy_loading.py), before any worker exists."""

import pytest

from rlinf_embodied.config import PolicyConfig
from rlinf_embodied.policies import make_policy
from rlinf_embodied.workers.policy_loading import check_policy_cameras, check_policy_config, resolved_policy_config


def _pi0_small(**overrides) -> PolicyConfig:
    return PolicyConfig(name="pi0", size="pi0-small", require_checkpoint=False, overrides=overrides)


def test_state_dims_of_the_env_pass_before_the_env_is_known():
    """pi0-small's preset has state_dim 8, but PickCube's state has 42 dims: hiding its joint velocities
    (9-17) must pass the driver's check, which runs before the env reports its state_dim."""
    check_policy_config(_pi0_small(ignore_state_dims=list(range(9, 18))))


def test_state_dims_beyond_the_widest_state_are_rejected():
    # pi0-small accepts states of up to max_state_dim=64 dims
    with pytest.raises(ValueError, match=r"ignore_state_dims \[64\] are not state dims \(state_dim=64: 0-63\)"):
        check_policy_config(_pi0_small(ignore_state_dims=[64]))


def test_driver_check_leaves_state_dims_of_env_width_policies_to_the_workers():
    """openvla_oft's state width is the env's (no max_state_dim): ignore_state_dims beyond the preset's
    state_dim must pass the driver check; its other checks still run there."""

    def oft(**overrides) -> PolicyConfig:
        return PolicyConfig(name="openvla_oft", size="openvla-oft-small", require_checkpoint=False, overrides=overrides)

    check_policy_config(oft(ignore_state_dims=list(range(9, 18))))
    with pytest.raises(ValueError, match="openvla-oft-small"):
        check_policy_config(oft(image_size=100))  # not a multiple of its 8 px patches


PICKCUBE_RGB_SPEC = {"action_dim": 4, "state_dim": 8, "obs_keys": ["rgb", "state"]}


def test_a_camera_the_env_lacks_fails_before_the_policy_is_built():
    """openvla-oft-7b reads a wrist camera; PickCube renders one camera. The driver names the missing key and
    the override that fixes it (on the H200 this took 108 s of worker start-up before an act KeyError)."""
    oft_7b = PolicyConfig(name="openvla_oft", size="openvla-oft-7b")
    with pytest.raises(ValueError, match=r"missing \['wrist_rgb'\]; set policy.overrides.num_images=1"):
        check_policy_cameras(oft_7b, PICKCUBE_RGB_SPEC, "rlinf/ManiSkill-PickCube")
    one_camera = PolicyConfig(name="openvla_oft", size="openvla-oft-7b", overrides={"num_images": 1})
    check_policy_cameras(one_camera, PICKCUBE_RGB_SPEC, "rlinf/ManiSkill-PickCube")


def test_an_rgb_policy_on_a_state_env_is_rejected_and_a_state_policy_passes():
    state_spec = {"action_dim": 4, "state_dim": 42, "obs_keys": ["state"]}
    with pytest.raises(ValueError, match=r"reads cameras \['rgb'\] .* observes \['state'\]"):
        check_policy_cameras(PolicyConfig(name="pi0"), state_spec, "rlinf/ManiSkill-PickCube")
    check_policy_cameras(PolicyConfig(name="mlp"), state_spec, "rlinf/ManiSkill-PickCube")


def test_the_camera_check_reads_a_checkpoints_config_with_overrides(tmp_path):
    """A checkpoint's saved num_images decides, and policy.overrides still win (as in build_policy)."""
    make_policy("openvla_oft", size="tiny", action_dim=4).save_pretrained(tmp_path)  # tiny: 2 cameras
    saved = PolicyConfig(name="openvla_oft", checkpoint=str(tmp_path))
    assert resolved_policy_config(saved, 4, 8).camera_keys() == ("rgb", "wrist_rgb")
    with pytest.raises(ValueError, match="wrist_rgb"):
        check_policy_cameras(saved, PICKCUBE_RGB_SPEC, "rlinf/ManiSkill-PickCube")
    overridden = PolicyConfig(name="openvla_oft", checkpoint=str(tmp_path), overrides={"num_images": 1})
    check_policy_cameras(overridden, PICKCUBE_RGB_SPEC, "rlinf/ManiSkill-PickCube")


def test_the_camera_check_leaves_upstream_checkpoints_to_their_converter(tmp_path):
    """A Hugging Face OpenVLA directory has a config.json of its own (no "policy" key): not ours to read."""
    (tmp_path / "config.json").write_text('{"architectures": ["OpenVLAForActionPrediction"], "n_action_bins": 256}')
    upstream = PolicyConfig(name="openvla", checkpoint=str(tmp_path))
    assert resolved_policy_config(upstream, 7, 0) is None
    check_policy_cameras(upstream, PICKCUBE_RGB_SPEC, "rlinf/ManiSkill-PickCube")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"action_dim": 3}, r"policy.overrides.action_dim=3 but this run's env \(or SFT dataset\) has action_dim=4"),
        ({"state_dim": 5}, r"policy.overrides.state_dim=5 but this run's env \(or SFT dataset\) has state_dim=9"),
    ],
)
def test_a_new_policy_takes_the_envs_dims_and_an_override_must_match(overrides, message):
    """Before: an action_dim override failed in the rollout worker with make_policy's TypeError (the keyword given
    twice), after Ray had started; a state_dim override unlike the env's built a policy of the wrong input width."""
    import torch

    from rlinf_embodied.workers.policy_loading import build_policy

    with pytest.raises(ValueError, match=message):
        build_policy(PolicyConfig(name="mlp", size="tiny", overrides=overrides), 4, 9, torch.device("cpu"))
    same = build_policy(
        PolicyConfig(name="mlp", size="tiny", overrides={"action_dim": 4, "state_dim": 9}), 4, 9, torch.device("cpu")
    )
    assert (same.config.action_dim, same.config.state_dim) == (4, 9)


def test_a_size_named_with_a_checkpoint_warns_where_the_checkpoint_differs(tmp_path, caplog):
    """Before: `policy.size=tiny policy.checkpoint=<a 256-wide mlp>` ran the checkpoint's architecture, without a
    word. Only a size given on the command line is checked (the config groups name one by default)."""
    from rlinf_embodied.workers.policy_loading import warn_size_not_read

    make_policy("mlp", size="default", action_dim=2, state_dim=4).save_pretrained(tmp_path / "policy")
    cfg = PolicyConfig(name="mlp", size="tiny", checkpoint=str(tmp_path / "policy"))
    with caplog.at_level("WARNING"):
        assert warn_size_not_read(cfg, ["policy.size=tiny", "env.num_envs=2"]) == ["hidden_dim", "num_layers"]
    assert "policy.size=tiny is not read with policy.checkpoint" in caplog.text and "hidden_dim=256" in caplog.text
    assert warn_size_not_read(cfg, ["env.num_envs=2"]) == []  # the config's own size: not the user's choice
    cfg.size = "default"
    assert warn_size_not_read(cfg, ["policy.size=default"]) == []  # the size it was trained at
    cfg.size, cfg.overrides = "tiny", {"hidden_dim": 256, "num_layers": 3}
    assert warn_size_not_read(cfg, ["policy.size=tiny"]) == []  # what differs is set by override


def test_require_checkpoint_on_a_policy_that_is_not_a_vla_says_what_to_set():
    from rlinf_embodied.workers.policy_loading import MissingCheckpointError

    cfg = PolicyConfig(name="mlp", size="default", require_checkpoint=True)
    with pytest.raises(
        MissingCheckpointError,
        match=r"'mlp' \(size 'default'\) needs its weights .*"
        r"or policy.require_checkpoint=false to train from random weights",
    ):
        check_policy_config(cfg)  # before: "is a pre-trained VLA"


def test_a_revealed_dims_gain_without_a_checkpoint_is_refused():
    with pytest.raises(ValueError, match=r"revealed_state_gain=30.0 scales the state dims a policy.checkpoint hid"):
        check_policy_config(_pi0_small(revealed_state_gain=30.0))


def test_value_head_overrides_without_a_value_head_are_refused_before_any_worker_starts(tmp_path):
    """Before: policy.overrides.add_value_head=false with value_hidden_dim=64 ran without a word. The switch may come
    from the checkpoint's config.json; the preset's own value_hidden_dim is no one's choice and passes."""
    no_head = {"add_value_head": False}
    check_policy_config(PolicyConfig(name="flow_mlp", overrides=no_head))  # tiny preset: value_hidden_dim=32
    with pytest.raises(ValueError, match=r"^policy.overrides.value_hidden_dim=64 would change nothing: .*set "):
        check_policy_config(PolicyConfig(name="flow_mlp", overrides={**no_head, "value_hidden_dim": 64}))
    make_policy("flow_mlp", size="tiny", add_value_head=False).save_pretrained(tmp_path)
    saved = PolicyConfig(name="flow_mlp", checkpoint=str(tmp_path), overrides={"detach_value_input": False})
    with pytest.raises(ValueError, match=r"policy.overrides.detach_value_input=False would change nothing"):
        check_policy_config(saved)
    saved.overrides["add_value_head"] = True  # a fresh value head, which reads it
    check_policy_config(saved)


UPSTREAM_CONFIGS = {  # what the layout check reads: a config.json naming no policy
    "pi0": {"type": "pi0", "chunk_size": 50, "n_action_steps": 50},  # LeRobot's (openpi's PyTorch port: alike)
    "gr00t": {"architectures": ["GR00T_N1_5"], "model_type": "gr00t_n1_5", "action_horizon": 16},
}


@pytest.mark.parametrize("name", sorted(UPSTREAM_CONFIGS))
def test_an_upstream_checkpoint_is_named_with_its_converter_before_ray_starts(name, tmp_path):
    """Before: an upstream pi0 or GR00T directory passed the start-up check and failed in each worker."""
    import json
    import re

    (tmp_path / "config.json").write_text(json.dumps(UPSTREAM_CONFIGS[name]))
    (tmp_path / "model.safetensors").write_bytes(b"")
    command = re.escape(f"python -m rlinf_embodied.policies.{name}.convert {tmp_path} <dst>")
    with pytest.raises(ValueError, match=f"config.json names no policy, so it is an upstream layout.*{command}"):
        check_policy_config(PolicyConfig(name=name, checkpoint=str(tmp_path)))


def test_an_upstream_openvla_checkpoint_still_passes_as_it_is_converted_on_load(tmp_path):
    (tmp_path / "config.json").write_text('{"architectures": ["OpenVLAForActionPrediction"], "n_action_bins": 256}')
    check_policy_config(PolicyConfig(name="openvla", checkpoint=str(tmp_path)))


def test_value_head_overrides_under_a_critic_free_estimator_are_refused(tmp_path):
    """Before: algorithm=grpo with policy.overrides.value_hidden_dim=64 (or detach_value_input=false) ran with
    metrics identical to the default's: the head is built but never trained. Which estimators train a critic is the
    registry's answer (AlgorithmConfig.uses_critic); a value the policy has anyway (the preset's) passes."""
    from rlinf_embodied.algorithms.config import AlgorithmConfig
    from rlinf_embodied.algorithms.registry import advantage_names
    from rlinf_embodied.workers.policy_loading import reject_value_head_overrides_without_critic

    wider = PolicyConfig(name="flow_mlp", overrides={"value_hidden_dim": 64})  # the tiny preset: 32
    for adv_type in advantage_names():
        algorithm = AlgorithmConfig(adv_type=adv_type)
        if algorithm.uses_critic:
            reject_value_head_overrides_without_critic(wider, algorithm)
        else:
            with pytest.raises(
                ValueError,
                match=rf"^policy.overrides.value_hidden_dim=64 would change nothing: algorithm.adv_type='{adv_type}' "
                r"trains no critic",
            ):
                reject_value_head_overrides_without_critic(wider, algorithm)
    grpo = AlgorithmConfig(adv_type="grpo")
    for setting in ({"detach_value_input": False}, {"value_reads_state": False}, {"value_state_clip": 2.0}):
        with pytest.raises(ValueError, match=rf"^policy.overrides.{next(iter(setting))}="):
            reject_value_head_overrides_without_critic(PolicyConfig(name="pi0", overrides=setting), grpo)
    for unchanged in ({"value_hidden_dim": 32}, {"detach_value_input": True}):  # the preset's and the default
        reject_value_head_overrides_without_critic(PolicyConfig(name="flow_mlp", overrides=unchanged), grpo)
    make_policy("flow_mlp", size="tiny", value_hidden_dim=48).save_pretrained(tmp_path)
    saved = PolicyConfig(name="flow_mlp", checkpoint=str(tmp_path), overrides={"value_hidden_dim": 48})
    reject_value_head_overrides_without_critic(saved, grpo)  # the checkpoint's own value
    saved.overrides["value_hidden_dim"] = 32  # the preset's, but not the checkpoint's
    with pytest.raises(ValueError, match=r"^policy.overrides.value_hidden_dim=32 would change nothing"):
        reject_value_head_overrides_without_critic(saved, grpo)
    reject_value_head_overrides_without_critic(PolicyConfig(name="mlp", overrides={"hidden_dim": 8}), grpo)


def test_predicted_policy_field_without_override_gives_the_value_an_override_would_replace(tmp_path):
    """One function for both questions (before: value_without_override duplicated predicted_policy_field): the value
    the run's policy gets, and, for comparing an override with, the value it would have without it. They differ only
    where a field is missing from the checkpoint's config.json: unknown (None) for the former, the config's default
    (as from_pretrained builds it) for the latter."""
    import json

    from rlinf_embodied.policies import policy_class
    from rlinf_embodied.unread_settings import field_default
    from rlinf_embodied.workers import policy_loading
    from rlinf_embodied.workers.policy_loading import predicted_policy_field

    assert not hasattr(policy_loading, "value_without_override")
    fresh = PolicyConfig(name="flow_mlp", overrides={"value_hidden_dim": 64})
    assert predicted_policy_field(fresh, "value_hidden_dim") == 64
    assert predicted_policy_field(fresh, "value_hidden_dim", without_override=True) == 32  # the tiny preset's
    default = field_default(policy_class("flow_mlp").config_class, "detach_value_input")
    assert predicted_policy_field(fresh, "detach_value_input", without_override=True) == default
    assert predicted_policy_field(PolicyConfig(name="mlp"), "add_value_head", without_override=True) is None

    make_policy("flow_mlp", size="tiny", value_hidden_dim=48).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["detach_value_input"]  # a checkpoint saved before the field existed
    (tmp_path / "config.json").write_text(json.dumps(config))
    saved = PolicyConfig(name="flow_mlp", checkpoint=str(tmp_path), overrides={"value_hidden_dim": 32})
    assert predicted_policy_field(saved, "value_hidden_dim") == 32
    assert predicted_policy_field(saved, "value_hidden_dim", without_override=True) == 48  # the checkpoint's
    assert predicted_policy_field(saved, "detach_value_input") is None
    assert predicted_policy_field(saved, "detach_value_input", without_override=True) == default


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"lora_rank": 2, "lora_alpha": 0}, r"lora_alpha=0 must be > 0"),
        ({"lora_rank": 2, "lora_dropout": 2.0}, r"lora_dropout=2.0 must lie in \[0, 1\)"),
        ({"noise_level": 100.0}, r"noise_level=100.0 must lie in \(0, sqrt\(2\)"),
        ({"value_reads_state": False, "value_state_clip": 3.0}, r"value_state_clip=3.0 would change nothing"),
    ],
)
def test_flow_settings_the_policy_cannot_use_are_refused_before_any_worker_starts(overrides, message):
    """Before: lora_dropout=2.0 failed in each worker, after Ray and the envs had started; the others ran."""
    with pytest.raises(ValueError, match=message):
        check_policy_config(PolicyConfig(name="pi0", overrides=overrides))


@pytest.mark.parametrize("name", ["pi0", "gr00t"])
def test_frozen_new_adapters_are_refused_before_any_worker_starts(name, tmp_path):
    """freeze_language_model=true freezes LoRA adapters too: new ones would never train. A checkpoint's trained
    adapters may be frozen."""
    frozen_lora = {"lora_rank": 4, "freeze_language_model": True}
    with pytest.raises(ValueError, match=rf"^policy '{name}' \(a new policy\): lora_rank=4 adds new LoRA adapters"):
        check_policy_config(PolicyConfig(name=name, overrides=frozen_lora))
    make_policy(name, size="tiny").save_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match=r"holds no adapters\): lora_rank=4 adds new LoRA adapters"):
        check_policy_config(PolicyConfig(name=name, checkpoint=str(tmp_path / "plain"), overrides=frozen_lora))
    check_policy_config(PolicyConfig(name=name, overrides={"lora_rank": 4}))  # adapters that train
    make_policy(name, size="tiny", lora_rank=4).save_pretrained(tmp_path / "lora")
    lora = PolicyConfig(name=name, checkpoint=str(tmp_path / "lora"), overrides={"freeze_language_model": True})
    check_policy_config(lora)  # trained adapters, frozen with the language model


def test_a_checkpoints_config_with_its_overrides_is_checked_before_any_worker_starts(tmp_path):
    """Before: policy.overrides.lora_dropout=2.0 on a checkpoint passed the start-up check and failed in each worker
    with torch's message."""
    make_policy("pi0", size="tiny").save_pretrained(tmp_path)
    saved = PolicyConfig(name="pi0", checkpoint=str(tmp_path), overrides={"lora_rank": 2, "lora_dropout": 2.0})
    with pytest.raises(ValueError, match=r"policy.checkpoint=.* with policy.overrides=.*lora_dropout=2.0 must lie in"):
        check_policy_config(saved)
    saved.overrides["lora_dropout"] = 0.1
    check_policy_config(saved)
