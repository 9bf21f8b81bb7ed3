"""Registers the LIBERO suites' gymnasium ids (no simulator import: entry points are strings)."""

from ..registration import register_env
from .suites import LIBERO_SUITES


def register_envs() -> None:
    for env_id, spec in LIBERO_SUITES.items():
        register_env(
            env_id,
            entry_point="rlinf_embodied.envs.libero.env:make_single_env",
            vector_entry_point="rlinf_embodied.envs.libero.vector_env:make_libero_vector_env",
            options_check="rlinf_embodied.envs.libero.vector_env:check_options",
            task_suite=True,
            max_episode_steps=spec.max_episode_steps,
            fixed={"suite": env_id},
        )
