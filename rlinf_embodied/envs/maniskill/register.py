"""Registers `rlinf/ManiSkill-<Task>` ids (no simulator import: entry points are strings)."""

from ..registration import register_env
from .tasks import TASKS


def register_envs() -> None:
    for task, spec in TASKS.items():
        register_env(
            f"rlinf/ManiSkill-{task}",
            entry_point="rlinf_embodied.envs.maniskill.env:make_single_env",
            vector_entry_point="rlinf_embodied.envs.maniskill.env:make_vector_env",
            options_check="rlinf_embodied.envs.maniskill.env:check_options",
            max_episode_steps=spec.max_episode_steps,
            fixed={"task": task},
            reward_mode=spec.reward_modes[0],
        )
