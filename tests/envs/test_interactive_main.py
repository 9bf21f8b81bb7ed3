"""Vector envs from an interactive main: a script read on stdin, as a notebook or REPL feeds code."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TOY = """
from rlinf_embodied.envs.testing import ToyReachFactory
from rlinf_embodied.envs.vector import SubprocVectorEnv
venv = SubprocVectorEnv([ToyReachFactory()] * 4, num_workers=2, max_episode_steps=5)
obs, info = venv.reset(seed=0)
obs, reward, terminated, truncated, info = venv.step(venv.action_space.sample())
print("ok", tuple(obs["state"].shape), tuple(reward.shape))
venv.close()
"""

MANISKILL = """
import gymnasium as gym
import rlinf_embodied
venv = gym.make_vec("rlinf/ManiSkill-PickCube", num_envs=4, vectorization_mode="vector_entry_point")
obs, info = venv.reset(seed=0)
obs, reward, terminated, truncated, info = venv.step(venv.action_space.sample())
print("ok", tuple(obs["state"].shape), tuple(reward.shape))
venv.close()
"""


@pytest.mark.parametrize(
    "script, expected", [(TOY, "ok (4, 4) (4,)"), (MANISKILL, "ok (4, 42) (4,)")], ids=["toy", "maniskill"]
)
def test_vector_env_from_a_script_on_stdin(tmp_path, script, expected):
    result = subprocess.run(
        [sys.executable, "-"],
        input=script,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": REPO_ROOT},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert expected in result.stdout
