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
