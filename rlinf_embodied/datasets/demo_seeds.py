"""Keep evaluation off the demonstrations' initial states.

A demonstration is an episode from one env seed. A policy cloned from a few dozen of them succeeds far more
often from those exact initial states than from new ones, so an evaluation whose seeds include them measures
memory, not the policy. Found the hard way: the CPU recipe collected its demos from seed 1000, where
`eval.seed` also starts, and the BC policy scored 9-12% there against 4% on held-out seeds.

SFT checkpoints record the seeds they were trained on (`demonstrations.json` beside the weights; RL
checkpoints started from one carry it on), and every evaluation that seeds episodes explicitly checks its
seeds against them before it starts.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Iterable, Optional

SEEDS_FILE = "demonstrations.json"


def dataset_seeds(root: str) -> list[int]:
    """The env seeds of a collected dataset's episodes (meta/episodes.jsonl; episodes without one are skipped)."""
    from .lerobot_format import read_meta_rows

    if not os.path.isfile(os.path.join(root, "meta", "info.json")):
        return []
    rows = read_meta_rows(root, "episodes.jsonl")  # the committed episodes (info.json's total)
    return sorted({int(row["seed"]) for row in rows if row.get("seed") is not None})


def dataset_env_id(root: str) -> Optional[str]:
    path = os.path.join(root, "meta", "info.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f).get("env_id")


def write_demo_seeds(policy_dir: str, dataset_root: str) -> None:
    """Record the dataset's env and seeds in a saved policy directory, added to what is recorded there already
    (SFT continued from a checkpoint trained on other demonstrations carries that record in first)."""
    earlier = read_demo_seeds(policy_dir) or {"datasets": [], "seeds": [], "env_id": None}
    env_id = dataset_env_id(dataset_root) or earlier.get("env_id")
    payload = {
        "datasets": sorted({*earlier["datasets"], os.path.abspath(dataset_root)}),
        "env_id": env_id,
        "seeds": sorted({*earlier["seeds"], *dataset_seeds(dataset_root)}),
    }
    with open(os.path.join(policy_dir, SEEDS_FILE), "w", encoding="utf-8") as f:
        json.dump(payload, f)


def read_demo_seeds(policy_dir: Optional[str]) -> Optional[dict]:
    """What write_demo_seeds recorded in `policy_dir`, or None (no checkpoint, or not trained on our demos)."""
    path = None if policy_dir is None else os.path.join(policy_dir, SEEDS_FILE)
    if path is None or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def carry_demo_seeds(source_dir: Optional[str], target_dir: str) -> None:
    """A checkpoint trained on from `source_dir` (e.g. RL from SFT) keeps its record of the demonstrations."""
    if read_demo_seeds(source_dir) is not None:
        shutil.copyfile(os.path.join(source_dir, SEEDS_FILE), os.path.join(target_dir, SEEDS_FILE))


def check_held_out(
    eval_seeds: Iterable[int], demo_seeds: Iterable[int], env_id: str, demo_env_id: Optional[str], fix: str
) -> None:
    """ValueError when evaluation seeds of `env_id` include demonstration seeds of the same env."""
    if demo_env_id is not None and demo_env_id != env_id:
        return
    eval_seeds = list(eval_seeds)
    overlap = sorted(set(eval_seeds) & set(demo_seeds))
    if overlap:
        raise ValueError(
            f"evaluation seeds {eval_seeds[0]}-{eval_seeds[-1]} of {env_id} include {len(overlap)} seeds the "
            f"policy's demonstrations were collected from ({overlap[:5]}{' ...' if len(overlap) > 5 else ''}): "
            f"success there measures memory, not the policy; {fix}"
        )


def check_checkpoint_held_out(policy_dir: Optional[str], eval_seeds: Iterable[int], env_id: str, fix: str) -> None:
    """check_held_out against what a checkpoint recorded (nothing to check when it recorded nothing)."""
    record = read_demo_seeds(policy_dir)
    if record is not None:
        check_held_out(eval_seeds, record["seeds"], env_id, record.get("env_id"), fix)
