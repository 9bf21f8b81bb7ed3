"""The IsaacLab tasks we register: our gymnasium id -> IsaacLab task id and the instruction we report.

No IsaacLab import here: registration must stay cheap on machines without Isaac Sim.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IsaacLabTask:
    env_id: str  # our gymnasium id
    isaaclab_id: str  # the id IsaacLab registers with gymnasium when `isaaclab_tasks` is imported
    instruction: str


ISAACLAB_TASKS: dict[str, IsaacLabTask] = {
    task.env_id: task
    for task in (
        IsaacLabTask("rlinf/IsaacLab-Lift-Cube-Franka", "Isaac-Lift-Cube-Franka-v0", "lift the cube to the target"),
        IsaacLabTask("rlinf/IsaacLab-Reach-Franka", "Isaac-Reach-Franka-v0", "move the end effector to the target"),
        IsaacLabTask("rlinf/IsaacLab-Open-Drawer-Franka", "Isaac-Open-Drawer-Franka-v0", "open the drawer"),
        IsaacLabTask("rlinf/IsaacLab-Stack-Cube-Franka", "Isaac-Stack-Cube-Franka-v0", "stack the cubes"),
        IsaacLabTask("rlinf/IsaacLab-Cartpole", "Isaac-Cartpole-v0", "balance the pole"),
    )
}


def get_task(env_id: str) -> IsaacLabTask:
    if env_id not in ISAACLAB_TASKS:
        raise ValueError(f"unknown IsaacLab task {env_id!r}; valid: {sorted(ISAACLAB_TASKS)}")
    return ISAACLAB_TASKS[env_id]
