"""The ManiSkill3 tasks we register, with their instructions (no torch, no simulator: registration reads it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ManiSkillTask:
    maniskill_id: str
    instruction: str


# Tasks whose assets ship in the mani-skill wheel (checked to build offline, without downloads).
TASKS: dict[str, ManiSkillTask] = {
    "PickCube": ManiSkillTask("PickCube-v1", "pick up the red cube and move it to the goal"),
    "PushCube": ManiSkillTask("PushCube-v1", "push the cube to the red and white target"),
    "StackCube": ManiSkillTask("StackCube-v1", "stack the red cube on top of the green cube"),
    "PullCube": ManiSkillTask("PullCube-v1", "pull the cube back to the red and white target"),
    "PegInsertionSide": ManiSkillTask("PegInsertionSide-v1", "insert the peg into the hole in the box from the side"),
    "LiftPegUpright": ManiSkillTask("LiftPegUpright-v1", "lift the peg lying on the table so that it stands upright"),
    "PlaceSphere": ManiSkillTask("PlaceSphere-v1", "pick up the blue ball and place it in the bin"),
    "PokeCube": ManiSkillTask("PokeCube-v1", "grasp the peg and use it to poke the cube to the goal"),
    "RollBall": ManiSkillTask("RollBall-v1", "push the ball so that it rolls into the goal region"),
    "PullCubeTool": ManiSkillTask("PullCubeTool-v1", "use the L-shaped tool to pull the cube closer"),
    "PlugCharger": ManiSkillTask("PlugCharger-v1", "plug the charger into the wall socket"),
    "StackPyramid": ManiSkillTask("StackPyramid-v1", "stack the three cubes into a pyramid"),
}


def task_spec(task: str) -> ManiSkillTask:
    if task not in TASKS:
        raise KeyError(f"unknown ManiSkill task {task!r}; registered tasks: {sorted(TASKS)}")
    return TASKS[task]
