"""Demonstrations longer than an env's time limit: a policy imitating them is cut off before it can finish.

collect warns when it records episodes longer than env.max_episode_steps, and SFT when its evaluations would run
with a time limit below its dataset's longest episode (before: eval/episode_length 50 for demonstrations of 70-96
steps, without a word); both with the same words (warn_if_time_limit_short).
"""

from __future__ import annotations

import logging
from typing import Optional

from .lerobot_format import load_info, read_meta_rows


def longest_episode(root: str) -> int:
    """The length (frames) of the longest episode of the dataset at `root` (0 for none)."""
    rows = read_meta_rows(root, "episodes.jsonl", int(load_info(root)["total_episodes"]))
    return max((int(row["length"]) for row in rows), default=0)


def warn_if_time_limit_short(
    log: logging.Logger, longest: int, recorded: str, limit: Optional[int], consequence: str = ""
) -> bool:
    """Warn on `log` where `limit` (env.max_episode_steps; None: the env's own) is below `longest`, the steps of
    the longest demonstration; `recorded` says where they are ("were recorded", "are in sft.dataset=..."), and
    `consequence` (if given) what the short limit does here. Returns whether it warned."""
    if limit is None or longest <= limit:
        return False
    log.warning(
        "episodes of up to %d steps %s, but env.max_episode_steps=%d: a policy imitating them needs a longer time "
        "limit in its RL/eval env (env.max_episode_steps=%d or more)%s",
        longest,
        recorded,
        limit,
        longest,
        f"; {consequence}" if consequence else "",
    )
    return True
