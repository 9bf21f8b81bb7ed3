"""Per-iteration metrics: one JSON line per iteration in metrics.jsonl, plus TensorBoard scalars."""

from __future__ import annotations

import json
import math
import os
from typing import Any

from torch.utils.tensorboard import SummaryWriter


class MetricsLogger:
    def __init__(self, output_dir: str, resume: bool = False):
        os.makedirs(output_dir, exist_ok=True)
        self.path = os.path.join(output_dir, "metrics.jsonl")
        self._file = open(self.path, "a" if resume else "w")
        self._writer = SummaryWriter(log_dir=os.path.join(output_dir, "tensorboard"))

    def log(self, iteration: int, metrics: dict[str, Any]) -> None:
        record = {"iteration": iteration, **{k: _plain(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        for key, value in record.items():
            if key != "iteration" and isinstance(value, (int, float)) and math.isfinite(value):
                self._writer.add_scalar(key.replace(".", "/"), value, iteration)
        self._writer.flush()

    def close(self) -> None:
        self._file.close()
        self._writer.close()


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return value
