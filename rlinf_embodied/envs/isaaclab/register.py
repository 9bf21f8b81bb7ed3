"""Registers `rlinf/IsaacLab-*` ids (no IsaacLab import: entry points are strings)."""

from ..registration import register_env
from .tasks import ISAACLAB_TASKS


def register_envs() -> None:
    for env_id in ISAACLAB_TASKS:
        register_env(
            env_id,
            entry_point="rlinf_embodied.envs.isaaclab.launch:single_env_entry_point",
            vector_entry_point="rlinf_embodied.envs.isaaclab.launch:make_isaaclab_vector_env",
            fixed={"task": env_id},
        )
