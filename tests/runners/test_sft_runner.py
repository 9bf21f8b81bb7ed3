"""SFT's start-up checks of its dataset (runners/sft_runner.py), before any worker starts."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from rlinf_embodied.config import SFTRunConfig
from rlinf_embodied.datasets import LeRobotDatasetWriter
from rlinf_embodied.runners.sft_runner import check_sft_config


def _one_episode_dataset(root: str) -> str:
    writer = LeRobotDatasetWriter(root, fps=20, state_dim=42, action_dim=8, camera_shapes={})
    states = np.zeros((3, 42), np.float32)
    writer.add_episode("pick up the cube", states, np.zeros((3, 8), np.float32), {}, np.zeros(3, np.float32), True, 0)
    return root


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda features: features.pop("action"), "features['action'] is missing"),
        (lambda features: features["observation.state"].update(shape=[]), "features['observation.state'] has shape []"),
    ],
)
def test_a_dataset_without_its_action_or_state_feature_is_refused_naming_it(tmp_path, damage, message):
    """SFT reads the dims through the reader's own layout check (datasets.dataset_layout): the error names the
    setting, the file and the feature (before: its own parse, reporting a KeyError's bare key)."""
    root = _one_episode_dataset(str(tmp_path / "demos"))
    info_path = os.path.join(root, "meta", "info.json")
    info = json.load(open(info_path))
    damage(info["features"])
    json.dump(info, open(info_path, "w"))
    cfg = SFTRunConfig()
    cfg.sft.dataset = root
    with pytest.raises(ValueError, match=re.escape(f"sft.dataset={root!r}: {info_path}: {message}")):
        check_sft_config(cfg)


def test_more_env_worker_processes_than_the_evaluations_envs_is_refused_naming_the_settings(tmp_path):
    """Before: the vector env's own error inside SFT's evaluation, after Ray had started ("num_workers=8 >
    num_envs=4"), naming neither env.kwargs.num_workers nor where the 4 came from."""
    cfg = SFTRunConfig()
    cfg.sft.dataset = _one_episode_dataset(str(tmp_path / "demos"))
    cfg.sft.eval_interval, cfg.sft.eval_episodes = 10, 4
    cfg.env.kwargs["num_workers"] = 8
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"env.kwargs.num_workers=8 > the 4 envs of the evaluation (min(env.num_envs={cfg.env.num_envs}, "
            "sft.eval_episodes=4))"
        ),
    ):
        check_sft_config(cfg)
