"""Refusing nan and inf in typed configs. A comparison with nan is False, so a range check written as
`value < low` lets it through (algorithm.gamma=nan passed "must lie in [0, 1]"), and inf passes any lower bound."""

from __future__ import annotations

import dataclasses
import math
from typing import Any


def reject_non_finite(config: Any, prefix: str = "") -> None:
    """Raise, naming the field, where a float field of the dataclass `config` (or an entry of a list field) is
    nan or inf. `prefix` names the config group in the message, e.g. "algorithm."."""
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        numbers = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(number, float) and not math.isfinite(number) for number in numbers):
            raise ValueError(f"{prefix}{item.name}={value!r} must be finite (no nan or inf)")
