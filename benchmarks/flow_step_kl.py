"""How far one optimizer step moves a flow policy's log-probs: approx_kl on the same batch after one Adam step.

PPO needs a step small enough that the next minibatch's ratio stays near 1. For flow policies the
log-prob sums Gaussian transitions over denoising steps, chunk rows and action dims, each with a small
std, so a small shift of the velocity moves it a lot. This prints, side by side, the KL after one
step for learning rates, trainable parts (all / action expert only), noise levels and stochastic steps.

    python benchmarks/flow_step_kl.py --size pi0-small --batch 8
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys

import torch

from rlinf_embodied.algorithms import AlgorithmConfig, policy_loss
from rlinf_embodied.policies import make_policy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_args import positive_int  # noqa: E402


def kl_after_one_step(
    args, lr: float, frozen_vlm: bool, noise_level: float, stochastic_steps: str
) -> tuple[float, float]:
    torch.manual_seed(0)
    policy = make_policy(
        "pi0",
        size=args.size,
        action_dim=7,
        state_dim=8,
        noise_level=noise_level,
        stochastic_steps=stochastic_steps,
        freeze_vision_encoder=frozen_vlm,
        freeze_language_model=frozen_vlm,
    )
    obs = policy.example_obs(args.batch)
    old = policy.act(obs)
    cfg = AlgorithmConfig(logprob_level=args.level)
    optimizer = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=lr, eps=1e-5)
    advantages = torch.randn(args.batch)

    def loss_and_metrics(evaluated):
        return policy_loss(
            new_log_probs=evaluated.log_probs,
            old_log_probs=old.log_probs,
            advantages=advantages,
            entropy=evaluated.entropy,
            new_values=evaluated.values,
            old_values=old.values,
            returns=advantages,
            cfg=cfg,
        )

    loss, metrics = loss_and_metrics(policy.evaluate(obs, old))
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        _, metrics_after = loss_and_metrics(policy.evaluate(obs, old))
    return float(metrics["approx_kl"]), float(metrics_after["approx_kl"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="pi0-small")
    parser.add_argument("--batch", type=positive_int, default=8)
    parser.add_argument("--level", default="action")
    parser.add_argument("--lrs", type=float, nargs="+", default=[5e-6, 1e-6])
    parser.add_argument("--noise-levels", type=float, nargs="+", default=[0.5, 1.0])
    parser.add_argument("--stochastic-steps", nargs="+", default=["all", "random_one"])
    args = parser.parse_args(argv)
    print(f"pi0 {args.size}, batch {args.batch}, log-prob level {args.level}: approx_kl before / after one Adam step")
    print("| lr | trainable | noise_level | stochastic_steps | kl before | kl after |")
    print("|---|---|---|---|---|---|")
    for lr, frozen, noise, steps in itertools.product(
        args.lrs, (False, True), args.noise_levels, args.stochastic_steps
    ):
        before, after = kl_after_one_step(args, lr, frozen, noise, steps)
        print(
            f"| {lr:g} | {'expert + heads' if frozen else 'all'} | {noise} | {steps} | {before:.2e} | {after:.3g} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
