"""Build the policy a run asks for: from a local checkpoint, or randomly initialised from a preset."""
from __future__ import annotations

import os

import torch

from ..config import PolicyConfig
from ..policies import Policy, make_policy, policy_class
from .mixed_precision import cast_floating_buffers


class MissingCheckpointError(ValueError):
    pass


def check_policy_config(cfg: PolicyConfig) -> None:
    """Fail at start-up, before any worker starts, when a pre-trained policy has no weights to load."""
    if cfg.checkpoint is not None:
        if not os.path.isdir(cfg.checkpoint):
            raise FileNotFoundError(
                f"policy.checkpoint={cfg.checkpoint!r} does not exist or is not a directory; "
                "give a local checkpoint directory (nothing is downloaded)"
            )
        return
    if cfg.require_checkpoint and cfg.size != "tiny":
        raise MissingCheckpointError(
            f"policy {cfg.name!r} (size {cfg.size!r}) is a pre-trained VLA and needs its weights: "
            f"pass policy.checkpoint=<local directory with the {cfg.name} checkpoint>, "
            "or policy.size=tiny to try the pipeline with a small randomly initialised model"
        )
    if cfg.precision not in ("float32", "bf16"):
        raise ValueError(f"policy.precision={cfg.precision!r}; valid: 'float32', 'bf16'")


def compute_dtype(cfg: PolicyConfig, device: torch.device) -> torch.dtype:
    """The dtype the policy computes in: bf16 where asked for (on CPU too: slower, but what was asked), else float32."""
    return torch.bfloat16 if cfg.precision == "bf16" else torch.float32


def build_policy(cfg: PolicyConfig, action_dim: int, state_dim: int, device: torch.device,
                 master_weights: bool = False) -> Policy:
    """The policy on `device` in its compute dtype; with master_weights the parameters stay float32
    (a trainer's master copy, see workers/mixed_precision.py) and only floating buffers take the dtype."""
    check_policy_config(cfg)
    if cfg.checkpoint is not None:
        # The named class loads its own save_pretrained layout and, where it has a converter, the
        # upstream layout (an HF OpenVLA directory has no "policy" key to dispatch on).
        policy = policy_class(cfg.name).from_pretrained(cfg.checkpoint, **dict(cfg.overrides))
        if policy.config.action_dim != action_dim:
            raise ValueError(
                f"checkpoint {cfg.checkpoint!r} predicts action_dim={policy.config.action_dim} but the env "
                f"expects action_dim={action_dim}"
            )
    else:
        overrides = dict(cfg.overrides)
        if state_dim:
            overrides.setdefault("state_dim", state_dim)
        policy = make_policy(cfg.name, size=cfg.size, action_dim=action_dim, **overrides)
    dtype = compute_dtype(cfg, device)
    if master_weights:
        policy = policy.to(device=device, dtype=torch.float32)
        cast_floating_buffers(policy, dtype)
        return policy
    return policy.to(device=device, dtype=dtype)
