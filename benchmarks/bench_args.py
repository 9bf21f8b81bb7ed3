"""Argument types shared by the benchmark scripts (imported as a sibling module: each script puts its own folder on
sys.path first, so this works both for `python benchmarks/<name>.py` and for a script loaded by file path)."""

from __future__ import annotations

import argparse


def int_at_least(minimum: int):
    """An argparse `type` for an int >= `minimum`; anything else is an argparse error naming the flag, e.g.
    `argument --episodes: must be an integer >= 1, got '-1'`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value

    parse.__name__ = f"int_at_least_{minimum}"
    return parse


positive_int = int_at_least(1)
"""A count or size: an int >= 1."""

non_negative_int = int_at_least(0)
"""A count where 0 means 'none' / 'skip': an int >= 0."""


def positive_float(text: str) -> float:
    """A size in a unit (GB, seconds): a finite float > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def strict_bool(text: str) -> bool:
    """true/false (also 1/0, yes/no, on/off, any case); anything else is an argparse error rather than False."""
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
