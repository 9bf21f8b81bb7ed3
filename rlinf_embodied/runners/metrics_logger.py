"""Per-iteration metrics: one JSON line per iteration in metrics.jsonl, plus TensorBoard scalars."""

from __future__ import annotations

import json
import math
import os
from typing import Any

from torch.utils.tensorboard import SummaryWriter

INDEX_KEYS = ("iteration", "step")  # the record's x-axis (SFT's optimizer steps), not scalars of their own


class MetricsLogger:
    """`resume_after=N` continues a run resumed from a checkpoint of iteration (or step) N: the lines it had
    logged after N are dropped from metrics.jsonl and TensorBoard, so every iteration appears once."""

    def __init__(self, output_dir: str, resume_after: int | None = None):
        os.makedirs(output_dir, exist_ok=True)
        self.path = os.path.join(output_dir, "metrics.jsonl")
        kept = [] if resume_after is None else _records_up_to(self.path, resume_after)
        self._file = open(self.path, "w")
        self._file.writelines(kept)
        self._file.flush()
        purge = None if resume_after is None else resume_after + 1
        self._writer = SummaryWriter(log_dir=os.path.join(output_dir, "tensorboard"), purge_step=purge)

    def log(self, iteration: int, metrics: dict[str, Any]) -> None:
        record = {"iteration": iteration, **{k: _plain(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        for key, value in record.items():
            if key not in INDEX_KEYS and isinstance(value, (int, float)) and math.isfinite(value):
                self._writer.add_scalar(key.replace(".", "/"), value, iteration)
        self._writer.flush()

    def close(self) -> None:
        self._file.close()
        self._writer.close()


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return value


def _records_up_to(path: str, last: int) -> list[str]:
    """The lines of metrics.jsonl at `path` whose iteration is <= last (none if the file does not exist)."""
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [line for line in f if line.strip() and json.loads(line)["iteration"] <= last]
