"""Spans of work (what ran, in which worker, when) for the per-iteration timeline picture."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator


class SpanRecorder:
    """Mixin for workers: `with self.span("sim stage0"): ...` records wall-clock start/end times.

    Wall-clock (time.time) is comparable across the processes of one host, which is what the
    timeline needs; spans are kept only for the current iteration and cost two clock reads each.
    """

    def _spans(self) -> list[tuple[str, float, float]]:
        if not hasattr(self, "_span_list"):
            self._span_list = []
        return self._span_list

    @contextmanager
    def span(self, label: str) -> Iterator[None]:
        start = time.time()
        try:
            yield
        finally:
            self._spans().append((label, start, time.time()))

    def pop_spans(self) -> list[tuple[str, float, float]]:
        spans, self._span_list = self._spans(), []
        return spans
