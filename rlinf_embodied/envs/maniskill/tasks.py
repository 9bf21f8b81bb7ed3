"""The ManiSkill3 tasks we register, with their instructions (no torch, no simulator: registration reads it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ManiSkillTask:
    maniskill_id: str
    instruction: str
    max_episode_steps: int  # ManiSkill's own limit for the task (its registry's; a test keeps them equal)
    # the reward modes ManiSkill implements for the task (its SUPPORTED_REWARD_MODES); the first is the default
    reward_modes: tuple[str, ...] = ("normalized_dense", "dense", "sparse", "none")


# Tasks whose assets ship in the mani-skill wheel (checked to build offline, without downloads).
TASKS: dict[str, ManiSkillTask] = {
    "PickCube": ManiSkillTask("PickCube-v1", "pick up the red cube and move it to the goal", 50),
    "PushCube": ManiSkillTask("PushCube-v1", "push the cube to the red and white target", 50),
    "StackCube": ManiSkillTask("StackCube-v1", "stack the red cube on top of the green cube", 50),
    "PullCube": ManiSkillTask("PullCube-v1", "pull the cube back to the red and white target", 50),
    "PegInsertionSide": ManiSkillTask(
        "PegInsertionSide-v1", "insert the peg into the hole in the box from the side", 100
    ),
    "LiftPegUpright": ManiSkillTask(
        "LiftPegUpright-v1", "lift the peg lying on the table so that it stands upright", 50
    ),
    "PlaceSphere": ManiSkillTask("PlaceSphere-v1", "pick up the blue ball and place it in the bin", 50),
    "PokeCube": ManiSkillTask("PokeCube-v1", "grasp the peg and use it to poke the cube to the goal", 50),
    "RollBall": ManiSkillTask("RollBall-v1", "push the ball so that it rolls into the goal region", 80),
    "PullCubeTool": ManiSkillTask("PullCubeTool-v1", "use the L-shaped tool to pull the cube closer", 100),
    "PlugCharger": ManiSkillTask("PlugCharger-v1", "plug the charger into the wall socket", 200, ("sparse", "none")),
    "StackPyramid": ManiSkillTask("StackPyramid-v1", "stack the three cubes into a pyramid", 250, ("sparse", "none")),
}


def task_spec(task: str) -> ManiSkillTask:
    if task not in TASKS:
        raise KeyError(f"unknown ManiSkill task {task!r}; registered tasks: {sorted(TASKS)}")
    return TASKS[task]
