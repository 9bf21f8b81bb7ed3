"""The env settings that give an action its meaning, recorded beside a saved policy and checked where it acts.

A policy trained with `env.kwargs.control_mode=pd_ee_delta_pos` and evaluated with `pd_ee_target_delta_pos` (or
RL started from it with the env group's default mode of the same width) meets an action space of the same shape,
so nothing failed: the arm moved otherwise, and the run reported a worse policy. Train and SFT save these settings
(`env_actions.json` beside the weights); eval, collect and RL from `policy.checkpoint` compare them with their env
before any episode, for the same env id.

- `control_mode` differs: an error (the same numbers command other motions).
- `binarize_gripper` differs: a warning (the same motions, the gripper snapped to fully open or closed; playing a
  policy both ways is a fair experiment, e.g. `benchmarks/failure_stages.py --binarize-gripper both`).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Optional

logger = logging.getLogger(__name__)

ACTION_SETTINGS_FILE = "env_actions.json"
# env.kwargs key -> whether a difference is an error (else a warning); read with its default when unset
ACTION_SETTINGS = {"control_mode": True, "binarize_gripper": False}
DEFAULTS: dict[str, Any] = {"control_mode": None, "binarize_gripper": False}


def action_settings(env_id: str, env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """{"env_id": ..., <each ACTION_SETTINGS key>: its value in env_kwargs, or its default}."""
    return {"env_id": env_id, **{key: env_kwargs.get(key, DEFAULTS[key]) for key in ACTION_SETTINGS}}


def write_action_settings(policy_dir: str, env_id: str, env_kwargs: dict[str, Any]) -> None:
    with open(os.path.join(policy_dir, ACTION_SETTINGS_FILE), "w", encoding="utf-8") as f:
        json.dump(action_settings(env_id, env_kwargs), f)


def read_action_settings(policy_dir: Optional[str]) -> Optional[dict[str, Any]]:
    """What write_action_settings recorded in `policy_dir`, or None (no checkpoint, or saved before the record)."""
    path = None if policy_dir is None else os.path.join(policy_dir, ACTION_SETTINGS_FILE)
    if path is None or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def env_groups_of(env_id: str) -> list[str]:
    """The env config groups (configs/env/*.yaml) whose `id` is env_id, e.g. ["maniskill_pickcube", ...]."""
    from omegaconf import OmegaConf

    from ..paths import CONFIG_DIR

    folder = os.path.join(CONFIG_DIR, "env")
    names = sorted(name[: -len(".yaml")] for name in os.listdir(folder) if name.endswith(".yaml"))
    return [name for name in names if OmegaConf.load(os.path.join(folder, f"{name}.yaml")).get("id") == env_id]


def trained_env_note(policy_dir: Optional[str]) -> str:
    """Where the checkpoint in policy_dir was trained, for an error about its env ("" without a record)."""
    record = read_action_settings(policy_dir)
    if record is None:
        return ""
    env_id = record.get("env_id")
    groups = " or ".join(f"env={name}" for name in env_groups_of(env_id)) or f"an env of id {env_id}"
    return (
        f" (it was trained on {env_id} with control_mode={record.get('control_mode')!r}, per its "
        f"{ACTION_SETTINGS_FILE}: run it there, {groups})"
    )


def check_action_settings(
    policy_dir: Optional[str], env_id: str, env_kwargs: dict[str, Any], named_by: Optional[str] = None
) -> None:
    """Raise (control_mode) or warn (binarize_gripper) where the env acts otherwise than the policy was trained.
    Nothing to check without a record; another env id is a warning (a policy may be tried on a new task, e.g. a
    LIBERO suite it was not trained on; build_policy refuses one whose action width differs). `named_by`: the
    setting that named the policy, for the messages (default `policy.checkpoint=<policy_dir>`; a resume names
    runner.resume, which the user gave)."""
    record = read_action_settings(policy_dir)
    if record is None:
        return
    named_by = named_by or f"policy.checkpoint={policy_dir!r}"
    trained_env = record.get("env_id")
    if trained_env != env_id:
        logger.warning(
            "%s was trained on %s, and this env is %s: a new task for it, where its actions "
            "and observations must mean what they meant there (env groups of %s: %s)",
            named_by,
            trained_env,
            env_id,
            trained_env,
            ", ".join(env_groups_of(trained_env)) or "none",
        )
        return
    current = action_settings(env_id, env_kwargs)
    for key, strict in ACTION_SETTINGS.items():
        trained = record.get(key, DEFAULTS[key])
        if trained == current[key]:
            continue
        message = (
            f"{named_by} was trained on {env_id} with env.kwargs.{key}={trained!r}, but this "
            f"env has env.kwargs.{key}={current[key]!r}"
        )
        if strict:
            raise ValueError(f"{message}: the same actions would command other motions; set env.kwargs.{key}={trained}")
        logger.warning(
            "%s: the policy acts in an env it was not trained in (set env.kwargs.%s=%s to match)", message, key, trained
        )
