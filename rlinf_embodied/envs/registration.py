"""gymnasium registration of our env ids: string entry points only, so registering imports neither
torch nor a simulator and `import rlinf_embodied` stays cheap (Ray worker processes import it too)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym


def register_env(env_id: str, entry_point: str, vector_entry_point: str, **kwargs: Any) -> None:
    """Register `env_id` with gymnasium with both a single-env and a vector entry point.

    Entry points are "module:callable" strings, so registering imports no simulator.
    `kwargs` become the spec's default kwargs (e.g. the backend task name).
    """
    if env_id in gym.registry:
        return
    gym.register(
        id=env_id,
        entry_point=entry_point,
        vector_entry_point=vector_entry_point,
        disable_env_checker=True,
        kwargs=kwargs,
    )
