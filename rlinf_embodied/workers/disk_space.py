"""Refuse a checkpoint that the disk cannot hold, before writing any of it.

A real-size training state is large (pi0-3b: fp32 weights + Adam state in actor.pt, 34 GB, then the policy's
weights again for eval), and torch.save on a full disk fails half-way with an unhelpful
`unexpected pos ... vs ...` after minutes of work (stop 32, a 64 GiB device disk). Checking first turns
that into a message naming the directory, the bytes needed and the bytes free.
"""

from __future__ import annotations

import math
import os
import shutil
from typing import Any

from ..scheduler.channel import estimate_bytes

GIB = 1024**3


def state_nbytes(state: Any) -> int:
    """Bytes of every tensor in a nested dict / list / tuple (a state dict, an optimizer state): the channel's
    estimate_bytes, without its inline limit."""
    return estimate_bytes(state, limit=math.inf)


def existing_ancestor(directory: str) -> str:
    """`directory` or the nearest parent that exists (the checkpoint directory is created by the save)."""
    path = os.path.abspath(directory)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def check_free_space(directory: str, needed_bytes: int, what: str) -> None:
    """Raise OSError when the disk holding `directory` has less than `needed_bytes` (+2%) free."""
    free = shutil.disk_usage(existing_ancestor(directory)).free
    if free < needed_bytes * 1.02:
        raise OSError(
            f"saving {what} to {directory!r} needs about {needed_bytes / GIB:.1f} GiB, but its disk has "
            f"{free / GIB:.1f} GiB free: free space there, point the run's output_dir at a larger disk, "
            f"or save less often (runner.save_interval / sft.save_interval; runner.save_final=false skips the last)"
        )
