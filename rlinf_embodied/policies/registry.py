"""Policy registry: adding a policy is one module and one `register_policy` line in __init__."""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Any

from .base import CONFIG_FILE, Policy, checkpoint_config_path, converter_module, not_a_directory, read_json_file

# name -> "module:Class", imported on first use so `import rlinf_embodied` stays light.
_POLICIES: dict[str, str] = {}


def register_policy(name: str, target: str) -> None:
    if name in _POLICIES and _POLICIES[name] != target:
        raise ValueError(f"policy {name!r} is already registered as {_POLICIES[name]!r}")
    _POLICIES[name] = target


def available_policies() -> list[str]:
    return sorted(_POLICIES)


def policy_class(name: str) -> type[Policy]:
    if name not in _POLICIES:
        raise ValueError(f"unknown policy {name!r}; available: {available_policies()}")
    module_name, class_name = _POLICIES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def make_policy(name: str, size: str = "tiny", action_dim: int | None = None, **overrides) -> Policy:
    """Build a randomly initialised policy from a size preset ("tiny" fits CPU tests)."""
    cls = policy_class(name)
    if action_dim is not None:
        overrides["action_dim"] = action_dim
    return cls.from_preset(size, **overrides)


def load_policy(path: str | os.PathLike, **overrides) -> Policy:
    """Load any policy saved with save_pretrained; the policy name is read from config.json."""
    if not os.path.isdir(path):
        reason = "no such directory" if not os.path.exists(path) else not_a_directory(os.fspath(path))
        raise FileNotFoundError(f"no policy checkpoint at {os.fspath(path)!r} ({reason})")
    name = read_json_file(checkpoint_config_path(os.fspath(path), None)).get("policy")
    if name is None:
        raise upstream_checkpoint_error(os.fspath(path))
    return policy_class(name).from_pretrained(path, **overrides)


def upstream_checkpoint_error(path: str) -> ValueError:
    """load_policy's error for a config.json that names no policy: an upstream layout, which only the converter of
    the policy it belongs to can read (listed, as the directory does not say which)."""
    commands = [f"python -m {module} {path} <dst>" for module in map(converter_module, available_policies()) if module]
    return ValueError(
        f"{path!r}: its config.json names no policy, so it is an upstream layout, not a directory written by "
        f"save_pretrained; convert it with its policy's converter first, one of: {'; '.join(commands)}"
    )


def check_overrides_fit_checkpoint(
    name: str, checkpoint: str | os.PathLike | None, overrides: dict, section: str = "policy.overrides"
) -> None:
    """Refuse overrides of the fields that shape a checkpoint's weights (the config class's `architecture_fields`,
    e.g. mlp's hidden_dim) with a value other than its config.json's: the weights would not load. Reads only the
    config.json (read_json_file's cached parse), so entry points run it before any env, worker or model is built.
    Before: the workers failed while loading, naming a tensor ("actor.0.bias has shape (256,), this mlp config
    needs (128,)") and not the override, after Ray and every env had started (minutes, for a 7B VLA)."""
    if checkpoint is None:
        return
    fields = getattr(policy_class(name).config_class, "architecture_fields", ())
    saved = saved_policy_config(os.fspath(checkpoint)) if fields else None
    # no config.json (the start-up checks name it), an upstream layout (converted at load) or another policy's
    # (refused by name elsewhere)
    if saved is None or saved["policy"] != name:
        return
    changed = [
        key
        for key in fields
        if key in overrides and key in saved and plain_config_value(overrides[key]) != plain_config_value(saved[key])
    ]
    if changed:
        given = ", ".join(f"{section}.{key}={plain_config_value(overrides[key])!r}" for key in changed)
        trained = ", ".join(f"{key}={saved[key]!r}" for key in changed)
        raise ValueError(
            f"{given}: policy.checkpoint={os.fspath(checkpoint)!r} was trained with {trained} (its {CONFIG_FILE}), "
            f"which sets the shapes of its weights, so they would not load; drop the override (the checkpoint's "
            f"{CONFIG_FILE} sets the architecture), or train a new policy (no policy.checkpoint) to change it"
        )


def saved_policy_config(checkpoint: str) -> dict[str, Any] | None:
    """The checkpoint's config.json as save_pretrained wrote it (it names its "policy"); None without one, or for
    an upstream layout, which build_policy converts at load. The one reader of a checkpoint's config.json for the
    start-up checks (check_overrides_fit_checkpoint, workers/policy_loading.py)."""
    path = os.path.join(checkpoint, CONFIG_FILE)
    if not os.path.isfile(path):
        return None
    data = read_json_file(path)
    return data if "policy" in data else None


def plain_config_value(value: Any) -> Any:
    """A config value as config.json holds it: Hydra's ListConfig (an override's) and tuples as plain lists, inside
    mappings too, so an override or a built config compares equal to config.json's value."""
    if isinstance(value, Mapping):
        return {key: plain_config_value(item) for key, item in value.items()}
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return value
    return [plain_config_value(item) for item in value]
