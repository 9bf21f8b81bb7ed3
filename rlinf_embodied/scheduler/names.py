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
