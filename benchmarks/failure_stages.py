"""Where do a policy's failures happen? Per ManiSkill stage (grasped, placed, success), the share of episodes that
ever reached it, for one or more checkpoints on the same held-out seeds.

Success alone does not tell an RL run that plateaus what to fix: a policy that never grasps needs a different remedy
from one that grasps and then misses the goal. ManiSkill tasks report their stages in `evaluate()` (PickCube:
is_grasped, is_obj_placed, is_robot_static, success); this steps single CPU-physics envs (state obs) with each
checkpoint's deterministic actions and records them after every step. A VLA needs its cameras: --obs-mode rgb
(where SAPIEN can render, i.e. a GPU host) with the policy on the GPU.

    python benchmarks/failure_stages.py <bc>/policy <rl>/policy --task PickCube --episodes 64 --max-steps 150
    python benchmarks/failure_stages.py <sft>/policy --policy pi0 --obs-mode rgb --camera-size 96   # GPU host
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rlinf_embodied.config import PolicyConfig  # noqa: E402
from rlinf_embodied.datasets.demo_seeds import check_checkpoint_held_out  # noqa: E402
from rlinf_embodied.envs.maniskill.env import ManiSkillSingleEnv  # noqa: E402
from rlinf_embodied.workers.policy_loading import build_policy  # noqa: E402


def episode_stages(env: ManiSkillSingleEnv, policy, seed: int, max_steps: int, stages: list[str]) -> dict[str, bool]:
    """Whether each stage flag was ever true in one deterministic episode from `seed`."""
    obs, _ = env.reset(seed=seed)
    reached = dict.fromkeys(stages, False)
    steps = 0
    with torch.no_grad():
        while steps < max_steps:
            batch = {key: torch.as_tensor(value)[None] for key, value in obs.items()}
            batch["instruction"] = [env.instruction]
            chunk = policy.act(batch, deterministic=True).actions[0].float().cpu().numpy()  # (chunk, action_dim)
            for action in chunk:
                obs, _, terminated, _, _ = env.step(action)
                info = env.maniskill_env.get_info()
                for stage in stages:
                    reached[stage] |= bool(np.asarray(info[stage].cpu()).reshape(-1)[0])
                steps += 1
                if terminated or steps >= max_steps:
                    return reached
    return reached


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="policy directories (save_pretrained)")
    parser.add_argument("--policy", default="mlp")
    parser.add_argument("--task", default="PickCube")
    parser.add_argument("--control-mode", default="pd_ee_delta_pos")
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--max-steps", type=int, default=150)
    parser.add_argument("--seed", type=int, default=1000, help="first held-out seed (eval's default)")
    parser.add_argument("--obs-mode", default="state", choices=["state", "rgb"])
    parser.add_argument("--camera-size", type=int, default=None, help="rgb: camera height = width in pixels")
    args = parser.parse_args()
    camera = {"camera_size": args.camera_size} if args.camera_size else {}
    env = ManiSkillSingleEnv(
        args.task, obs_mode=args.obs_mode, control_mode=args.control_mode, reward_mode="sparse", **camera
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    env.reset(seed=0)
    info = env.maniskill_env.get_info()
    stages = [key for key, value in info.items() if torch.as_tensor(value).dtype == torch.bool]
    state_dim, action_dim = env.observation_space["state"].shape[0], env.action_space.shape[0]
    rows = []
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
        results = [episode_stages(env, policy, args.seed + i, args.max_steps, stages) for i in range(args.episodes)]
        rows.append((path, {stage: np.mean([r[stage] for r in results]) for stage in stages}))
        print(path, {stage: f"{share:.0%}" for stage, share in rows[-1][1].items()}, flush=True)
    env.close()
    print(
        f"\n{args.task}, {args.episodes} episodes from seed {args.seed}, deterministic; share of episodes that ever reached:"
    )
    print("| checkpoint | " + " | ".join(stages) + " |")
    print("|---|" + "---:|" * len(stages))
    for path, shares in rows:
        print(f"| {path} | " + " | ".join(f"{shares[stage]:.0%}" for stage in stages) + " |")


if __name__ == "__main__":
    main()
