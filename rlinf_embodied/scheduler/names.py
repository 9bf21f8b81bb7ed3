"""The one check of the names a user gives channels and worker groups (imported by channel actor processes:
no dependencies)."""

from __future__ import annotations

from typing import Any


def check_name(name: Any, kind: str, example: str) -> None:
    """Raise unless `name` is a str with a non-blank character; `kind` ("channel", "worker group") and
    `example` (a valid name) go into the message."""
    if not isinstance(name, str):
        raise TypeError(f"{kind} name {name!r} of type {type(name).__name__} is not a str; e.g. {example!r}")
    if not name.strip():
        state = "empty" if not name else "blank"
        raise ValueError(f"{kind} name {name!r} is {state}; give a name such as {example!r}")


class NameInUseError(ValueError):
    """Worker groups or channels a run needs are held by another run (another Ray job) on the same Ray cluster. A
    ValueError, as the refusal of a group name this process holds is."""


def _quoted(names: list[str]) -> str:
    return ", ".join(repr(name) for name in names)


def in_use_message(groups: list[str], channels: list[str], address: str, holders: list[str]) -> str:
    """The refusal a command-line user reads where another run on the Ray cluster at `address` holds `groups` and
    `channels`; `holders` describe that run (its Ray job, driver process)."""
    parts = []
    if groups:
        parts.append(f"worker group{'s' if len(groups) > 1 else ''} {_quoted(groups)}")
    if channels:
        parts.append(f"channel{'s' if len(channels) > 1 else ''} {_quoted(channels)}")
    who = f" ({'; '.join(holders)})" if holders else ""
    return (
        f"another run{who} is using {' and '.join(parts)} on this Ray cluster (cluster.address={address}); wait for it "
        "to end, or run this one on another Ray cluster (another cluster.address, or leave cluster.address unset to "
        "start a local one). Nothing of the other run was changed"
    )
