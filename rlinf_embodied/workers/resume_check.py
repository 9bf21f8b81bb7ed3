"""Say why a training checkpoint cannot continue in this run before its weights are loaded.

`runner.resume` / `sft.resume` restore the actor's full state (weights and optimizer), so the run must build the
same model. A run whose settings changed (`policy.overrides.hidden_dim`, another env's state width) would otherwise
fail inside `load_state_dict` with "size mismatch for critic.6.weight", naming neither setting.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import torch

from ..policies.base import CONFIG_FILE, dirs_holding


def check_resume_directory(directory: str, setting: str) -> str:
    """`directory`'s actor.pt, or a FileNotFoundError naming `setting` (the config key that gave it) and the
    resumable checkpoints below `directory` (a run directory holds them at checkpoints/<name>)."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"{setting}={directory!r} does not exist: pass a checkpoints/<name> directory of an earlier run "
            "(iteration_XXXXXX, final, or the one Ctrl-C saved)"
        )
    path = os.path.join(directory, "actor.pt")
    if not os.path.isfile(path):
        hint = checkpoint_above(directory, setting) or resumable_below(directory)
        raise FileNotFoundError(f"{setting}={directory!r} holds no actor.pt checkpoint{hint}")
    return path


def checkpoint_above(directory: str, setting: str, files: tuple[str, ...] = ("actor.pt",)) -> str:
    """`"; ..."` naming the parent of `directory` where that is a checkpoint (it holds `files`), else "": a
    checkpoint's `policy` subdirectory (its weights alone, what policy.checkpoint takes) given to `setting`
    (before: only "holds no actor.pt checkpoint")."""
    parent = os.path.dirname(os.path.normpath(directory)) or "."
    if not all(os.path.isfile(os.path.join(parent, name)) for name in files):
        return ""
    return (
        f"; it is the policy directory inside the checkpoint {parent!r} (the weights alone, for policy.checkpoint): "
        f"pass the checkpoint itself, {setting}={parent}"
    )


def reject_sft_checkpoint(directory: str, setting: str) -> None:
    """An SFT checkpoint (sft.json beside its actor.pt) holds SFT's step and optimizer, not an RL run's: resumed as
    one, SFT's step 2000 read as RL iteration 2000. RL starts from its weights instead."""
    if os.path.isfile(os.path.join(directory, "sft.json")):
        raise ValueError(
            f"{setting}={directory!r} is an SFT checkpoint (it holds sft.json), and {setting} continues an RL run: "
            f"start RL from its weights with policy.checkpoint={os.path.join(directory, 'policy')}"
        )


def resumable_below(directory: str) -> str:
    """`"; checkpoints below it: ..."` for the actor.pt checkpoints under a run directory, else ""."""
    found = dirs_holding(directory, ("actor.pt",), max_depth=2)
    if not found:
        return ""
    shown = ", ".join(repr(path) for path in found[-4:])
    return f"; checkpoints below it: {shown}" + (f" (the last 4 of {len(found)})" if len(found) > 4 else "")


def check_same_model(directory: str, setting: str, saved: Mapping[str, torch.Tensor], policy: Any) -> None:
    """Raise unless `saved` (the checkpoint's full state dict) has this policy's keys and shapes; the error names
    the policy config fields that differ from the checkpoint's policy/config.json (its weights' settings)."""
    current = policy.state_dict()
    reshaped = [key for key in saved if key in current and tuple(saved[key].shape) != tuple(current[key].shape)]
    missing, unexpected = sorted(set(current) - set(saved)), sorted(set(saved) - set(current))
    if not (reshaped or missing or unexpected):
        return
    parts = [f"{key} {tuple(saved[key].shape)} -> {tuple(current[key].shape)}" for key in reshaped[:3]]
    parts += [f"missing {missing[:3]}"] if missing else []
    parts += [f"unexpected {unexpected[:3]}"] if unexpected else []
    raise ValueError(
        f"{setting}={directory!r} holds a different model than this run builds ({'; '.join(parts)})"
        f"{_config_differences(directory, policy)}: resume with the settings it was trained with, or start a new "
        f"run from its weights with policy.checkpoint={os.path.join(directory, 'policy')} where they still fit"
    )


def _config_differences(directory: str, policy: Any) -> str:
    path = os.path.join(directory, "policy", CONFIG_FILE)
    if not os.path.isfile(path):
        return ""
    with open(path) as f:
        saved = json.load(f)
    saved.pop("policy", None)
    current = policy.config.to_dict()
    differing = [
        f"{key}: checkpoint {saved[key]!r}, this run {current[key]!r}"
        for key in sorted(saved)
        if key in current and saved[key] != current[key]
    ]
    return f"; the policy settings that differ: {'; '.join(differing)}" if differing else ""
