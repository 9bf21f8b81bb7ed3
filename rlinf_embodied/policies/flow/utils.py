"""Helpers for flow policies: batch-row selection of cached contexts and init-free construction."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch


def select_rows(context: Any, rows: torch.Tensor) -> Any:
    """Index every batch-first tensor in a (nested) dict/list/tuple context by `rows`."""
    if isinstance(context, torch.Tensor):
        return context.index_select(0, rows)
    if isinstance(context, dict):
        return {key: select_rows(value, rows) for key, value in context.items()}
    if isinstance(context, (list, tuple)):
        return type(context)(select_rows(value, rows) for value in context)
    return context


@contextmanager
def skip_weight_init() -> Iterator[None]:
    """Build modules without running random initialisation (weights are uninitialised memory).

    Use it only when weights are loaded right afterwards (from_pretrained, converters) or when the
    values do not matter; it saves the minutes a 3B model spends in normal_() on a CPU.
    """
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4.x
        from transformers.modeling_utils import no_init_weights
    with no_init_weights():
        yield
