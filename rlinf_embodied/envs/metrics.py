"""Episode metrics from the vector envs' `info` (the contract is in envs/vector.py and envs/README.md).

At a step where some envs' episodes ended, `info["episode"]` holds `(N,)` tensors "return",
"length", "success_once", "success", and `info["_episode"]` `(N,)` bool marks the envs that ended.
A chunked step ends at most one episode per env (the rest of its chunk is dropped), so one info
contributes at most N episodes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

EPISODE_KEYS = {
    "return": "episode_return",
    "length": "episode_length",
    "success_once": "success_once",
    "success": "success",
}


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def episodes_from_info(info: dict[str, Any]) -> list[dict[str, float]]:
    """Stats of the episodes that ended at this step, in env order.

    Returns a list of `{"episode_return", "episode_length", "success_once", "success"}` dicts
    (floats; the success values are 0.0/1.0), one per env whose `info["_episode"]` is True.
    """
    ended = ended_env_indices(info)
    if not ended:
        return []
    episode = info["episode"]
    missing = set(EPISODE_KEYS) - set(episode)
    if missing:
        raise KeyError(f"info['episode'] lacks {sorted(missing)}; it must hold {sorted(EPISODE_KEYS)}")
    columns = {
        name: _to_numpy(episode[key]).reshape(-1)[ended].astype(np.float64) for key, name in EPISODE_KEYS.items()
    }
    return [{name: float(values[i]) for name, values in columns.items()} for i in range(len(ended))]


def ended_env_indices(info: dict[str, Any]) -> list[int]:
    """The indices of the envs whose episode ended at this step (`info["_episode"]`), in env order."""
    if "episode" not in info or "_episode" not in info:
        return []
    return np.flatnonzero(_to_numpy(info["_episode"]).astype(bool).reshape(-1)).tolist()


class EpisodeMetrics:
    """Accumulates finished episodes across steps; `summary()` gives means over them."""

    def __init__(self) -> None:
        self.episodes: list[dict[str, float]] = []

    def update(self, info: dict[str, Any]) -> int:
        """Add the episodes that ended in this step's `info`; returns how many were added."""
        new = episodes_from_info(info)
        self.episodes.extend(new)
        return len(new)

    def update_first(self, info: dict[str, Any], pending: torch.Tensor) -> torch.Tensor:
        """Add only the episodes of envs still `pending` ((N,) bool: their first episode since a reset has not
        ended yet); returns the new mask. Counting every ended episode leans towards short ones when the envs are
        reset at a fixed point (an iteration's start, an evaluation round): an env whose first episode ended
        quickly, often a success, can end a second one before the reset, and a slow one cannot."""
        ended = torch.as_tensor(_to_numpy(info.get("_episode", np.zeros(len(pending), bool)))).reshape(-1).bool()
        ended = ended & pending
        self.update({**info, "_episode": ended.numpy()})
        return pending & ~ended

    def summary(self) -> dict[str, float]:
        """`num_episodes` and means of success_rate (final-step success), episode_return,
        episode_length and success_once; NaN means when no episode finished."""
        count = len(self.episodes)
        if count == 0:
            return {
                "num_episodes": 0,
                "success_rate": math.nan,
                "episode_return": math.nan,
                "episode_length": math.nan,
                "success_once": math.nan,
            }

        def mean(key: str) -> float:
            return float(sum(e[key] for e in self.episodes) / count)

        return {
            "num_episodes": count,
            "success_rate": mean("success"),
            "episode_return": mean("episode_return"),
            "episode_length": mean("episode_length"),
            "success_once": mean("success_once"),
        }

    def clear(self) -> None:
        self.episodes.clear()


def action_rows(actions: Any) -> int:
    """The action rows each env gets from `actions`: (N, chunk, act_dim) a chunk, (N, act_dim) one."""
    return int(actions.shape[1]) if len(actions.shape) == 3 else 1


class ClippedActionMetrics:
    """The mean of the vector envs' `info["action_clipped"]` ((N,) per step: each env's fraction of the action
    elements it was given outside its action space, which it clips) over the envs and steps seen since `clear()`:
    the fraction of all action elements clipped. 0 in normal training (Gaussian policies clip their own samples);
    above 0, a policy's actions overshoot the env's bounds (an action scaling bug shows here). Envs that do not
    report it (IsaacLabVectorEnv, which clips nothing itself) add nothing, and `summary()` is then empty."""

    KEY = "clipped_action_fraction"

    def __init__(self) -> None:
        self.clipped, self.rows = 0.0, 0  # sum of fraction x rows; env rows seen

    def update(self, info: dict[str, Any], rows: int = 1) -> None:
        """Add one step's `info`; `rows`: the action rows each env was given (its chunk), which weigh its fraction."""
        value = info.get("action_clipped")
        if value is None:
            return
        fractions = _to_numpy(value).reshape(-1)
        self.clipped += float(fractions.sum()) * rows
        self.rows += fractions.size * rows

    def summary(self) -> dict[str, float]:
        """{"clipped_action_fraction": the mean} where an env reported it, else {}."""
        return {self.KEY: self.clipped / self.rows} if self.rows else {}

    def clear(self) -> None:
        self.clipped, self.rows = 0.0, 0  # sum of fraction x rows; env rows seen
