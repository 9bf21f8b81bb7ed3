"""Policy registry: adding a policy is one module and one `register_policy` line in __init__."""

from __future__ import annotations

import importlib
import os

from .base import Policy, checkpoint_config_path, converter_module, read_json_file

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
        raise FileNotFoundError(f"no policy checkpoint at {os.fspath(path)!r} (no such directory)")
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
