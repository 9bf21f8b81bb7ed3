"""Reject settings that nothing reads: command-line keys an entry point composes but never uses
(reject_unread_settings), and config values or explicit overrides whose feature is off (reject_ineffective_setting,
reject_ineffective_overrides).

The entry points share config groups (`env`, `policy`) with training, so Hydra accepts every key of them; a few
of those keys mean nothing to a given command (an evaluation steps `eval.num_envs` envs, not `env.num_envs`). A user
who sets one would otherwise run with a default they did not choose, without a word.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Iterable, Mapping


def override_key(override: str) -> str:
    """`+policy.overrides.x=1` -> `policy.overrides.x`; `policy=pi0` -> `policy`."""
    return override.lstrip("+~").split("=", 1)[0]


def reject_unread_settings(overrides: list[str], unread: Mapping[str, str]) -> None:
    """Raise for the first override whose key is one of `unread` or lies under one (`policy` covers
    `policy=pi0` and `policy.size=...`); `unread` maps each such key to why it is unread and what to set instead."""
    for override in overrides:
        key = override_key(override)
        for unread_key, reason in unread.items():
            if key == unread_key or key.startswith(unread_key + "."):
                raise ValueError(f"{override}: {reason}")


def reject_ineffective_setting(config: Any, section: str, name: str, reason: str) -> None:
    """`config.name` (a dataclass field) away from its default where nothing reads it would change nothing: an error
    naming it as `section.name` ("" for no section: a policy config, set by override or by a checkpoint), with
    `reason` (why it is unread and what would read it). Defaults pass, so a saved config, holding every field, loads."""
    value = getattr(config, name)
    if value != field_default(config, name):
        raise ineffective_setting_error(section, name, value, reason)


def reject_ineffective_overrides(overrides: Mapping[str, Any], section: str, names: Iterable[str], reason: str) -> None:
    """reject_ineffective_setting for settings whose config value may come from elsewhere than the user (a size
    preset, a checkpoint's config.json): the first of `names` given in `overrides`, whatever its value, is an error."""
    for name in names:
        if name in overrides:
            raise ineffective_setting_error(section, name, overrides[name], reason)


def ineffective_setting_error(section: str, name: str, value: Any, reason: str) -> ValueError:
    """The error both reject_ineffective_* raise: `section.name=value would change nothing: reason`."""
    return ValueError(f"{section + '.' if section else ''}{name}={value} would change nothing: {reason}")


def field_default(config: Any, name: str) -> Any:
    """The default of the dataclass field `name` of `config` (an instance or the class)."""
    return next(item.default for item in fields(config) if item.name == name)
