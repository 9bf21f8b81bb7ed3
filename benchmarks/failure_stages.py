"""Where do a policy's failures happen? Per ManiSkill stage (grasped, placed, success), the share of episodes that
ever reached it, for one or more checkpoints on the same held-out seeds.

Success alone does not tell an RL run that plateaus what to fix: a policy that never grasps needs a different remedy
from one that grasps and then misses the goal. ManiSkill tasks report their stages in `evaluate()` (PickCube:
is_grasped, is_obj_placed, is_robot_static, success); this steps single CPU-physics envs (state obs) with each
checkpoint's deterministic actions and records them after every step. A VLA needs its cameras: --obs-mode rgb
(where SAPIEN can render, i.e. a GPU host) with the policy on the GPU.

A second table sorts the failed episodes of grasping tasks by how they ended: never grasped, grasped and then
lost (dropped or let go), or still held at the last step. For tasks with an object and a goal (PickCube, PushCube, ...)
it gives the failures' median final object-goal distance against the task's threshold (a near miss is a precision
problem; a far one is not) and the success rate for the lower and upper half of goal heights.

    python benchmarks/failure_stages.py <bc>/policy <rl>/policy --task PickCube --episodes 64 --max-steps 150
    python benchmarks/failure_stages.py <sft>/policy --policy pi0 --obs-mode rgb --camera-size 96   # GPU host

`--binarize-gripper both` plays every checkpoint twice on the same seeds, as trained and with the env's
`binarize_gripper` (the gripper fully open or closed by the sign of the policy's gripper action), one row each.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_args import positive_int  # noqa: E402

from rlinf_embodied.config import PolicyConfig  # noqa: E402
from rlinf_embodied.datasets.demo_seeds import check_checkpoint_held_out  # noqa: E402
from rlinf_embodied.envs.maniskill.env import ManiSkillSingleEnv  # noqa: E402
from rlinf_embodied.workers.policy_loading import build_policy  # noqa: E402


OBJECT_NAMES, GOAL_NAMES = ("cube", "obj"), ("goal_site", "goal_region")


GRIPPER_MODES = {"off": (False,), "on": (True,), "both": (False, True)}  # --binarize-gripper: the envs to play


def object_and_goal(env: ManiSkillSingleEnv) -> tuple[np.ndarray, np.ndarray] | None:
    """The task's object and goal positions (3,) each, for tasks that have both; else None."""
    task = env.maniskill_env.unwrapped
    obj = next((getattr(task, name) for name in OBJECT_NAMES if hasattr(task, name)), None)
    goal = next((getattr(task, name) for name in GOAL_NAMES if hasattr(task, name)), None)
    if obj is None or goal is None:
        return None
    return obj.pose.p[0].cpu().numpy(), goal.pose.p[0].cpu().numpy()


def stage_flags(env: ManiSkillSingleEnv, stages: list[str]) -> dict[str, bool]:
    info = env.maniskill_env.get_info()
    return {stage: bool(np.asarray(info[stage].cpu()).reshape(-1)[0]) for stage in stages}


def episode_stages(env: ManiSkillSingleEnv, policy, seed: int, max_steps: int, stages: list[str]) -> dict:
    """One deterministic episode from `seed`: `reached` (each stage flag ever true), `last` (the flags at the last
    step), and for tasks with an object and a goal the last object-goal `distance` and the goal's `goal_height`."""
    obs, _ = env.reset(seed=seed)
    reached = dict.fromkeys(stages, False)
    last = dict(reached)
    steps, done = 0, False
    with torch.no_grad():
        while not done:
            batch = {key: torch.as_tensor(value)[None] for key, value in obs.items()}
            batch["instruction"] = [env.instruction]
            chunk = policy.act(batch, deterministic=True).actions[0].float().cpu().numpy()  # (chunk, action_dim)
            for action in chunk:
                obs, _, terminated, _, _ = env.step(action)
                last = stage_flags(env, stages)
                reached = {stage: reached[stage] or last[stage] for stage in stages}
                steps += 1
                done = bool(terminated) or steps >= max_steps
                if done:
                    break
    episode = {"reached": reached, "last": last}
    positions = object_and_goal(env)
    if positions is not None:
        obj, goal = positions
        episode.update(distance=float(np.linalg.norm(goal - obj)), goal_height=float(goal[2]))
    return episode


def failure_breakdown(episodes: list[dict]) -> dict[str, float | None]:
    """Shares of all episodes, from per-episode results of `episode_stages` (which need `success`)."""
    failed = [e for e in episodes if not e["reached"]["success"]]
    row: dict[str, float | None] = {"success": 1 - len(failed) / len(episodes)}
    if "is_grasped" in episodes[0]["reached"]:
        row["never grasped"] = sum(not e["reached"]["is_grasped"] for e in failed) / len(episodes)
        row["grasped, then lost"] = sum(
            e["reached"]["is_grasped"] and not e["last"]["is_grasped"] for e in failed
        ) / len(episodes)
        row["held at the end"] = sum(e["last"]["is_grasped"] for e in failed) / len(episodes)
    if "distance" in episodes[0]:
        row["failures' median final distance (m)"] = (
            float(np.median([e["distance"] for e in failed])) if failed else None
        )
        heights = np.array([e["goal_height"] for e in episodes])
        success = np.array([e["reached"]["success"] for e in episodes])
        low = heights <= np.median(heights)
        row["success, lower half of goal heights"] = float(success[low].mean())
        row["success, upper half of goal heights"] = float(success[~low].mean()) if (~low).any() else None
    return row


def format_cell(column: str, value: float | None) -> str:
    """Distances (columns marked "(m)") in metres, everything else as a share of episodes."""
    if value is None:
        return "-"
    return f"{value:.3f}" if "(m)" in column else f"{value:.0%}"


def print_table(title: str, rows: list[tuple[str, dict]]) -> None:
    columns = list(rows[0][1])
    print(f"\n{title}")
    print("| checkpoint | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for path, values in rows:
        print(f"| {path} | " + " | ".join(format_cell(column, values[column]) for column in columns) + " |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="policy directories (save_pretrained)")
    parser.add_argument("--policy", default="mlp")
    parser.add_argument("--task", default="PickCube")
    parser.add_argument("--control-mode", default="pd_ee_delta_pos")
    parser.add_argument("--episodes", type=positive_int, default=64)
    parser.add_argument("--max-steps", type=positive_int, default=150)
    parser.add_argument("--seed", type=int, default=1000, help="first held-out seed (eval's default)")
    parser.add_argument("--obs-mode", default="state", choices=["state", "rgb"])
    parser.add_argument("--camera-size", type=positive_int, default=None, help="rgb: camera height = width in pixels")
    parser.add_argument(
        "--binarize-gripper",
        default="off",
        choices=list(GRIPPER_MODES),
        help="the env's binarize_gripper: off, on, or both (two rows per checkpoint, same seeds)",
    )
    args = parser.parse_args(argv)
    camera = {"camera_size": args.camera_size} if args.camera_size else {}
    envs = {
        binarized: ManiSkillSingleEnv(
            args.task,
            obs_mode=args.obs_mode,
            control_mode=args.control_mode,
            reward_mode="sparse",
            binarize_gripper=binarized,
            **camera,
        )
        for binarized in GRIPPER_MODES[args.binarize_gripper]
    }
    env = next(iter(envs.values()))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    env.reset(seed=0)
    info = env.maniskill_env.get_info()
    stages = [key for key, value in info.items() if torch.as_tensor(value).dtype == torch.bool]
    state_dim, action_dim = env.observation_space["state"].shape[0], env.action_space.shape[0]
    threshold = getattr(env.maniskill_env.unwrapped, "goal_thresh", None)
    rows, breakdowns = [], []
    for path in args.checkpoints:  # every episode is seeded: none may be a demonstration's
        check_checkpoint_held_out(
            path, range(args.seed, args.seed + args.episodes), f"rlinf/ManiSkill-{args.task}", fix="pass a later --seed"
        )
    for path in args.checkpoints:
        policy_cfg = PolicyConfig(
            name=args.policy, checkpoint=path, precision="bf16" if device.type == "cuda" else "float32"
        )
        policy = build_policy(policy_cfg, action_dim, state_dim, device)
        policy.eval()
        for binarized, played in envs.items():
            seeds = range(args.seed, args.seed + args.episodes)
            episodes = [episode_stages(played, policy, seed, args.max_steps, stages) for seed in seeds]
            name = f"{path} (binarized gripper)" if binarized else path
            rows.append((name, {stage: float(np.mean([e["reached"][stage] for e in episodes])) for stage in stages}))
            print(name, {stage: f"{share:.0%}" for stage, share in rows[-1][1].items()}, flush=True)
            if "success" in stages:
                breakdowns.append((name, failure_breakdown(episodes)))
    for played in envs.values():
        played.close()
    where = f"{args.task}, {args.episodes} episodes from seed {args.seed}, deterministic"
    print_table(f"{where}; share of episodes that ever reached:", rows)
    if breakdowns:
        goal = "" if threshold is None else f"; the task counts the object placed within {float(threshold):.3f} m"
        print_table(f"How the episodes ended (shares of all episodes{goal}):", breakdowns)


if __name__ == "__main__":
    main()
