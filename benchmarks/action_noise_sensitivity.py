"""How much does exploration noise cost a policy? Success with Gaussian noise on chosen action dims.

RL explores by sampling around the policy's mean. A behaviour-cloned policy can sit so close to the edge of
its task's precision that the noise alone halves its success; then its own stochastic rollouts say little
about its mean. This evaluates one checkpoint deterministically and with noise of each std on all action
dims, on all but the last (the arm), and on the last alone (the gripper), on the same held-out seeds, and
prints one table.

    python benchmarks/action_noise_sensitivity.py <checkpoint>/policy --stds 0.03 0.08 -- \\
        env.kwargs.control_mode=pd_ee_delta_pos env.max_episode_steps=100

Arguments after `--` are Hydra overrides of the eval config (`python -m rlinf_embodied.eval`'s).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_args import positive_int  # noqa: E402


from rlinf_embodied.config import compose_config  # noqa: E402
from rlinf_embodied.envs.spec import env_spec  # noqa: E402
from rlinf_embodied.envs.metrics import episodes_from_info  # noqa: E402
from rlinf_embodied.runners.evaluator import make_eval_env  # noqa: E402
from rlinf_embodied.workers.policy_loading import build_policy  # noqa: E402


def success_rate(env, policy, noisy_dims: list[int], std: float, episodes: int, seed: int) -> float:
    """success_once over the first `episodes` episodes from env.reset(seed), noise on `noisy_dims`."""
    generator = torch.Generator().manual_seed(seed)
    obs, _ = env.reset(seed=seed)
    successes: list[bool] = []
    with torch.no_grad():
        while len(successes) < episodes:
            actions = policy.act(obs, deterministic=True).actions.float()  # (num_envs, [chunk,] action_dim)
            if noisy_dims:
                noise = torch.randn(actions.shape, generator=generator) * std
                mask = torch.zeros(actions.shape[-1])
                mask[noisy_dims] = 1.0
                actions = actions + noise * mask
            obs, _, _, _, info = env.step(actions)
            successes += [bool(episode["success_once"]) for episode in episodes_from_info(info)]
    return sum(successes[:episodes]) / episodes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a policy directory (save_pretrained), e.g. <run>/checkpoints/best/policy")
    parser.add_argument("--stds", type=float, nargs="+", default=[0.03, 0.08], help="noise stds (normalized units)")
    parser.add_argument("--episodes", type=positive_int, default=64)
    argv = sys.argv[1:] if argv is None else list(argv)
    overrides = argv[argv.index("--") + 1 :] if "--" in argv else []  # Hydra overrides of the eval config
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    cfg = compose_config("eval", overrides)
    cfg.policy.checkpoint, cfg.eval.video = args.checkpoint, False
    env = make_eval_env(cfg.env, cfg.eval, None, "/tmp")
    spec = env_spec(env)
    policy = build_policy(cfg.policy, spec["action_dim"], spec["state_dim"], torch.device("cpu")).eval()
    last = spec["action_dim"] - 1
    variants = {"none (deterministic)": [], "all dims": list(range(last + 1)), "all but the last": list(range(last))}
    variants["the last (gripper)"] = [last]
    rows = {}
    for name, dims in variants.items():
        stds = args.stds[:1] if not dims else args.stds
        rows[name] = {std: success_rate(env, policy, dims, std, args.episodes, cfg.eval.seed) for std in stds}
        print(f"{name}: {rows[name]}", flush=True)
    env.close()
    print(f"\n{cfg.env.id}, {args.episodes} episodes from seed {cfg.eval.seed}: success_once")
    print("| noise on | " + " | ".join(f"std {std}" for std in args.stds) + " |")
    print("|---|" + "---:|" * len(args.stds))
    for name, by_std in rows.items():
        cells = [f"{by_std.get(std, by_std[args.stds[0]]):.0%}" for std in args.stds]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
