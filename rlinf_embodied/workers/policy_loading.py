"""Build the policy a run asks for: from a local checkpoint, or randomly initialised from a preset."""

from __future__ import annotations

import dataclasses
import logging
import os
import typing
from typing import Any

import torch

from ..envs.action_settings import trained_env_note
from ..envs.batching import is_int
from ..config import PolicyConfig, wrong_type_message
from ..policies import Policy, make_policy, policy_class
from ..policies.registry import check_overrides_fit_checkpoint, saved_policy_config
from ..policies.base import check_saved_field_types, not_a_directory, read_json_file, reject_value_head_overrides
from ..policies.base import PolicyConfig as BasePolicyConfig
from ..unread_settings import field_default, ineffective_setting_error, override_key
from .mixed_precision import cast_floating_buffers

logger = logging.getLogger(__name__)


class MissingCheckpointError(ValueError):
    pass


def check_policy_config(cfg: PolicyConfig) -> None:
    """Fail at start-up, before any worker starts: an unknown policy name, size, override key or a bad
    override value (a dimension that is not a positive integer, ...), a bad precision, or a pre-trained
    policy with no weights to load. Builds the policy's config dataclass, never the model."""
    if cfg.precision not in ("float32", "bf16"):
        raise ValueError(f"policy.precision={cfg.precision!r}; valid: 'float32', 'bf16'")
    try:
        cls = policy_class(cfg.name)
    except ValueError as error:
        raise ValueError(f"policy.name={cfg.name!r}: {error} (or the config group: policy=<name>)") from None
    check_policy_overrides(cls, dict(cfg.overrides))
    add_value_head = predicted_policy_field(cfg, "add_value_head")
    reject_value_head_overrides(cls.config_class, add_value_head, dict(cfg.overrides), "policy.overrides")
    if cfg.checkpoint is not None:
        if not os.path.isdir(cfg.checkpoint):
            raise FileNotFoundError(
                f"policy.checkpoint={cfg.checkpoint!r} {not_a_directory(cfg.checkpoint)}; "
                "give a local checkpoint directory (nothing is downloaded)"
            )
        check_checkpoint_policy(cfg)
        check_overrides_fit_checkpoint(cfg.name, cfg.checkpoint, dict(cfg.overrides))
        check_checkpoint_config(cls, cfg)
        reject_frozen_new_adapters(cfg)
        return
    if dict(cfg.overrides).get("revealed_state_gain", 1.0) != 1.0:  # it scales dims a checkpoint hid
        raise ValueError(
            f"policy.overrides.revealed_state_gain={cfg.overrides['revealed_state_gain']} scales the state dims a "
            "policy.checkpoint hid and this run shows; without a checkpoint there are none: drop it"
        )
    if cfg.size not in cls.presets:
        raise ValueError(f"policy.size={cfg.size!r} is not a size of policy {cfg.name!r}; valid: {sorted(cls.presets)}")
    if cfg.require_checkpoint and cfg.size != "tiny":
        raise MissingCheckpointError(  # before: named every policy "a pre-trained VLA", mlp too
            f"policy {cfg.name!r} (size {cfg.size!r}) needs its weights (policy.require_checkpoint=true, as the VLA "
            f"configs set it: random weights would waste GPU hours): pass policy.checkpoint=<local directory with "
            f"the {cfg.name} checkpoint>, or policy.size=tiny to try the pipeline with a small randomly initialised "
            "model, or policy.require_checkpoint=false to train from random weights"
        )
    check_preset_config(cls, cfg.size, dict(cfg.overrides))
    reject_frozen_new_adapters(cfg)


def reject_frozen_new_adapters(cfg: PolicyConfig) -> None:
    """lora_rank > 0 adds new adapters where the weights hold none (a new policy, or a checkpoint saved with
    lora_rank=0), and freeze_language_model=true would keep them at zero (flow/config.py); the policy refuses that
    when it builds them, this before any worker starts. A checkpoint's trained adapters may be frozen. Policies
    without freeze_language_model pass (predicted_policy_field: None)."""
    from ..policies.flow.config import frozen_new_adapters_message

    lora_rank = predicted_policy_field(cfg, "lora_rank")
    if not lora_rank or predicted_policy_field(cfg, "freeze_language_model") is not True:
        return
    if cfg.checkpoint is not None and (saved_policy_config(cfg.checkpoint) or {}).get("lora_rank"):
        return  # the checkpoint's adapters, trained
    source = f"policy.checkpoint={cfg.checkpoint!r} holds no adapters" if cfg.checkpoint else "a new policy"
    raise ValueError(f"policy {cfg.name!r} ({source}): {frozen_new_adapters_message(lora_rank)}")


def reject_value_head_overrides_without_critic(policy_cfg: PolicyConfig, algorithm_cfg: Any) -> None:
    """A value-head setting (the config's value_head_fields) given in policy.overrides where the estimator trains no
    critic (algorithm.uses_critic, the registry's answer: GRPO, DAPO, Reinforce++): the head is built and never
    trained, so the setting changes nothing (before: value_hidden_dim=64 under algorithm=grpo gave metrics identical
    to the default's). An override equal to the value the policy has without it (the checkpoint's, the preset's, the
    config's default) passes, as reject_ineffective_setting lets defaults pass. For train.py's start-up checks."""
    if algorithm_cfg.uses_critic:
        return
    try:
        cls = policy_class(policy_cfg.name)
    except ValueError:  # check_policy_config names it
        return
    reason = (
        f"algorithm.adv_type={algorithm_cfg.adv_type!r} trains no critic, so the value head is never trained; drop "
        "the setting, or use an estimator that reads a critic (algorithm=ppo)"
    )
    for name in cls.config_class.value_head_fields:
        if name in policy_cfg.overrides and policy_cfg.overrides[name] != predicted_policy_field(
            policy_cfg, name, without_override=True
        ):
            raise ineffective_setting_error("policy.overrides", name, policy_cfg.overrides[name], reason)


def check_checkpoint_policy(cfg: PolicyConfig) -> None:
    """policy.checkpoint holds a config.json of policy.name, or an upstream layout the policy converts on load
    (before: each worker's from_pretrained error, after Ray had started; an upstream pi0 or GR00T directory too)."""
    from ..policies.base import checkpoint_config_path, upstream_layout_error

    try:
        config_path = checkpoint_config_path(cfg.checkpoint, cfg.name)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"policy.checkpoint={cfg.checkpoint!r}: {error}") from None
    data = read_json_file(config_path)
    if "policy" not in data and not policy_class(cfg.name).loads_unnamed_config(data):
        raise upstream_layout_error(cfg.checkpoint, cfg.name)
    saved_name = data.get("policy", cfg.name)
    if saved_name != cfg.name:
        raise ValueError(
            f"policy.checkpoint={cfg.checkpoint!r} holds policy {saved_name!r}, but policy={cfg.name}: select "
            f"policy={saved_name} (the config group), or a checkpoint of {cfg.name}"
        )


def check_checkpoint_config(cls: type[Policy], cfg: PolicyConfig) -> None:
    """Build the config from_pretrained will build (the checkpoint's config.json plus policy.overrides), so its own
    checks run in the driver (before: e.g. policy.overrides.lora_dropout=2.0 on a checkpoint failed in each worker,
    after Ray and the envs had started). An upstream layout is left to its converter."""
    data = saved_policy_config(cfg.checkpoint)
    if data is None:
        return
    data.pop("policy")
    overrides = dict(cfg.overrides)
    check_saved_field_types(cls.config_class, data, cfg.checkpoint, overrides, f"policy.checkpoint={cfg.checkpoint!r}")
    try:
        cls.config_class.from_dict({**data, **overrides})
    except (ValueError, TypeError) as error:
        raise ValueError(f"policy.checkpoint={cfg.checkpoint!r} with policy.overrides={overrides}: {error}") from None


def check_policy_overrides(cls: type[Policy], overrides: dict[str, Any]) -> None:
    """Every policy.overrides key is a field of the policy's config dataclass, with a value of its type."""
    known = {f.name: f for f in dataclasses.fields(cls.config_class)}
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ValueError(f"policy.overrides: unknown key(s) {unknown} for policy {cls.name!r}; valid: {sorted(known)}")
    hints = typing.get_type_hints(cls.config_class)
    for key, value in overrides.items():  # the policy configs' own type check (the items of list[int] too)
        message = wrong_type_message(f"policy.overrides.{key}", value, hints.get(key, Any))
        if message:
            raise ValueError(message)


def check_preset_config(cls: type[Policy], size: str, overrides: dict[str, Any]) -> None:
    """Build the config a randomly initialised policy would get (the preset plus overrides), so its own
    checks (dimensions >= 1, divisibility, ...) run in the driver. action_dim and state_dim come from the env
    later: the check uses the override or the length of the action (state) bounds when given, else the widest
    the model takes (max_action_dim / max_state_dim, where the policy has them)."""
    values = {**cls.presets[size], **overrides}
    # the env's state_dim is not known yet: state-dim checks (e.g. ignore_state_dims) use the widest
    # state the model accepts, and run again with the env's state_dim when the workers build it
    widest = values.get("max_state_dim", getattr(cls.config_class, "max_state_dim", None))
    if "state_dim" not in overrides and isinstance(widest, int):
        values["state_dim"] = widest
    elif "state_dim" not in overrides:  # the width is the env's (e.g. openvla_oft's proprio projector)
        values.pop("ignore_state_dims", None)
    # nor is its action_dim: the preset's is a placeholder (the workers pass the env's, or the SFT dataset's), so
    # checks against it use the widest action the model predicts (before: flow_mlp's max_action_dim=4 was refused on
    # PushCube's 4-D actions, "action_dim=7 exceeds max_action_dim=4", a 7 the user never gave)
    widest_action = values.get("max_action_dim", getattr(cls.config_class, "max_action_dim", None))
    if "action_dim" not in overrides and is_int(widest_action) and widest_action >= 1:
        values["action_dim"] = int(widest_action)
    for kind in ("action", "state"):  # statistics (e.g. SFT's, from the dataset) have the env's widths
        for bounds in (f"{kind}_low", f"{kind}_high"):
            if f"{kind}_dim" not in overrides and values.get(bounds) is not None:
                values[f"{kind}_dim"] = len(values[bounds])
    try:
        cls.config_class.from_dict(values)
    except (ValueError, TypeError) as error:
        raise ValueError(f"policy {cls.name!r} size {size!r} with policy.overrides={overrides}: {error}") from None


def resolved_policy_config(cfg: PolicyConfig, action_dim: int, state_dim: int) -> BasePolicyConfig | None:
    """The config `build_policy` will build the policy from (the checkpoint's config.json or the preset,
    plus overrides), without building the model. None for a checkpoint in an upstream layout (or of another
    policy), which build_policy converts or rejects itself."""
    cls = policy_class(cfg.name)
    overrides = dict(cfg.overrides)
    if cfg.checkpoint is None:
        if state_dim:
            overrides.setdefault("state_dim", state_dim)
        return cls.config_class.from_dict({**cls.presets[cfg.size], **overrides, "action_dim": action_dim})
    data = saved_policy_config(cfg.checkpoint)
    if data is None or data.pop("policy") != cfg.name:  # an upstream layout (e.g. Hugging Face OpenVLA's) or
        return None  # another policy's: build_policy converts or rejects it
    return cls.config_class.from_dict({**data, **overrides})


def warn_size_not_read(cfg: PolicyConfig, command_line: list[str]) -> list[str]:
    """policy.size given on the command line with policy.checkpoint is not read (the checkpoint's config.json sets
    the architecture): warn where the size's preset disagrees with the checkpoint (before: silently, e.g. size=tiny
    ran the 256-wide checkpoint). A warning, not an error: a recipe that names the size it trained at and sets some
    of the preset's fields by override at SFT only is right to. The keys that disagree, for tests."""
    if cfg.checkpoint is None or "policy.size" not in {override_key(o) for o in command_line}:
        return []
    try:
        presets = policy_class(cfg.name).presets
    except ValueError:  # check_policy_config names it
        return []
    saved = saved_policy_config(cfg.checkpoint) or {}
    ignored = {"action_dim", "state_dim", "action_chunk", *cfg.overrides}  # set per env or by override
    differ = sorted(
        key
        for key, value in presets.get(cfg.size, {}).items()
        if key not in ignored and key in saved and saved[key] != value
    )
    if differ:
        shown = ", ".join(f"{key}={saved[key]!r} (size {cfg.size!r}: {presets[cfg.size][key]!r})" for key in differ)
        logger.warning(
            "policy.size=%s is not read with policy.checkpoint: the checkpoint's config.json sets the architecture, "
            "%s; drop policy.size or train a policy of that size",
            cfg.size,
            shown,
        )
    return differ


def predicted_policy_dims(policy_cfg: PolicyConfig) -> dict[str, int | None]:
    """action_dim / action_chunk the run's policy will have, as far as the config tells before building
    it (overrides, then the checkpoint's config.json, then the size preset and its config's defaults); None where
    unknown."""
    dims: dict[str, int | None] = {}
    for key in ("action_dim", "action_chunk"):
        value = predicted_policy_field(policy_cfg, key)
        dims[key] = None if value is None else int(value)
    if policy_cfg.checkpoint is None and "action_dim" not in policy_cfg.overrides:
        dims["action_dim"] = None  # a fresh policy takes the dataset's (or env's) action_dim
    return dims


def predicted_policy_field(policy_cfg: PolicyConfig, name: str, without_override: bool = False) -> Any:
    """A policy config field as the run's policy will have it, before building it: the override, else the
    checkpoint's config.json (None where it is no saved config of ours: an upstream layout is read at load), else
    the size preset, else the config class's default; None where the policy's config has no such field (e.g.
    add_value_head of an mlp).

    without_override=True: the value the policy would have without its policy.overrides entry, to compare an
    override with (reject_value_head_overrides_without_critic): the override is skipped, and a field the checkpoint's
    config.json lacks (or an upstream layout) is the config's default, as from_pretrained builds it, not None."""
    if name in policy_cfg.overrides and not without_override:
        return policy_cfg.overrides[name]
    if policy_cfg.checkpoint is not None:
        saved = saved_policy_config(policy_cfg.checkpoint) or {}
        if name in saved or not without_override:
            return saved.get(name)
    cls = policy_class(policy_cfg.name)
    if policy_cfg.checkpoint is None and name in cls.presets.get(policy_cfg.size, {}):
        return cls.presets[policy_cfg.size][name]
    if name not in {item.name for item in dataclasses.fields(cls.config_class)}:
        return None
    return field_default(cls.config_class, name)


def check_checkpoint_action_dim(checkpoint: str, predicted: int | None, action_dim: int) -> None:
    """Raise where the checkpoint's policy predicts actions of another width than the env takes, naming the env it
    was trained on when it recorded one (e.g. a PickCube SFT checkpoint, 8-D joint deltas, given to the default
    train command's PushCube, 4-D end-effector deltas)."""
    if predicted is not None and predicted != action_dim:
        raise ValueError(
            f"checkpoint {checkpoint!r} predicts action_dim={predicted} but the env expects action_dim={action_dim}"
            f"{trained_env_note(checkpoint)}"
        )


def check_policy_cameras(cfg: PolicyConfig, spec: dict, env_id: str, dataset: str | None = None) -> None:
    """Fail before the policy is built when it reads a camera the env does not produce (e.g. an
    OpenVLA-OFT preset with a wrist camera on a task that has only a third-person one); with `dataset`, when the
    SFT dataset at that path holds no such camera (spec["obs_keys"]: the dataset's)."""
    policy_config = resolved_policy_config(cfg, spec["action_dim"], spec["state_dim"])
    cameras = policy_config.camera_keys() if policy_config is not None else ()
    missing = [key for key in cameras if key not in spec["obs_keys"]]
    if not missing:
        return
    present = [key for key in cameras if key in spec["obs_keys"]]
    if present and hasattr(policy_config, "num_images"):
        fix = f"set policy.overrides.num_images={len(present)}, or use an env that renders {missing}"
    elif dataset is not None:
        fix = f"collect the demonstrations where the env renders {missing} (env.obs_mode=rgb), or use a state policy"
    else:
        fix = f"use an env (or env.obs_mode) that renders {missing}"
    observer = f"sft.dataset={dataset!r} holds" if dataset is not None else f"env {env_id!r} observes"
    raise ValueError(
        f"policy {cfg.name!r} ({cfg.checkpoint or 'size ' + repr(cfg.size)}) reads cameras {list(cameras)} but "
        f"{observer} {spec['obs_keys']}: missing {missing}; {fix}"
    )


def compute_dtype(cfg: PolicyConfig, device: torch.device) -> torch.dtype:
    """The dtype the policy computes in: bf16 where asked for (on CPU too: slower, but what was asked), else float32."""
    return torch.bfloat16 if cfg.precision == "bf16" else torch.float32


def fresh_policy_overrides(overrides: Any, action_dim: int, state_dim: int) -> dict[str, Any]:
    """policy.overrides for a new policy, whose action_dim / state_dim are the env's (or the SFT dataset's): an
    override of either must equal it. Before, an action_dim override failed with a TypeError (make_policy got it
    twice) and a state_dim override unlike the env's built a policy that failed at its first forward."""
    overrides = dict(overrides)
    for key, value in (("action_dim", action_dim), ("state_dim", state_dim)):
        if value and key in overrides and overrides[key] != value:
            raise ValueError(
                f"policy.overrides.{key}={overrides[key]!r} but this run's env (or SFT dataset) has {key}={value}: "
                f"a new policy takes the env's; drop the override (or set it to {value})"
            )
    overrides.pop("action_dim", None)  # make_policy takes it as its own argument
    if state_dim:
        overrides["state_dim"] = state_dim
    return overrides


def build_policy(
    cfg: PolicyConfig, action_dim: int, state_dim: int, device: torch.device, master_weights: bool = False
) -> Policy:
    """The policy on `device` in its compute dtype; with master_weights the parameters stay float32
    (a trainer's master copy, see workers/mixed_precision.py) and only floating buffers take the dtype."""
    check_policy_config(cfg)
    if cfg.checkpoint is not None:
        # The named class loads its own save_pretrained layout and, where it has a converter, the
        # upstream layout (an HF OpenVLA directory has no "policy" key to dispatch on).
        policy = policy_class(cfg.name).from_pretrained(cfg.checkpoint, **dict(cfg.overrides))
        check_checkpoint_action_dim(cfg.checkpoint, policy.config.action_dim, action_dim)
    else:
        overrides = fresh_policy_overrides(cfg.overrides, action_dim, state_dim)
        # Random weights are drawn on the target device: initialising a 7B model on the host took most of a
        # minute of start-up and held 30 GB of host memory per process before the copy to the GPU.
        with torch.device(device):
            policy = make_policy(cfg.name, size=cfg.size, action_dim=action_dim, **overrides)
    dtype = compute_dtype(cfg, device)
    if master_weights:
        policy = policy.to(device=device, dtype=torch.float32)
        cast_floating_buffers(policy, dtype)
        return policy
    return policy.to(device=device, dtype=dtype)
