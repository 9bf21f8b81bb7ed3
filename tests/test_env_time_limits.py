"""The env configs' time limits (configs/env/*.yaml): none cuts a task's episodes below the limit its env registers,
and `max_episode_steps: null` reaches the env workers as the env's own limit."""

from __future__ import annotations

import os

import gymnasium as gym
import pytest
import yaml

import rlinf_embodied.envs  # noqa: F401  (registers the ids)
from rlinf_embodied.config import compose_config
from rlinf_embodied.paths import CONFIG_DIR

ENV_CONFIGS = sorted(name[:-5] for name in os.listdir(os.path.join(CONFIG_DIR, "env")) if name.endswith(".yaml"))


def env_config(name: str) -> dict:
    with open(os.path.join(CONFIG_DIR, "env", f"{name}.yaml")) as f:
        return yaml.safe_load(f)


@pytest.mark.parametrize("name", ENV_CONFIGS)
def test_no_env_config_undercuts_its_envs_registered_time_limit(name):
    """Before: libero_{object,goal,10,90}.yaml set 220 steps, below their suites' 280/300/520/400: long-horizon
    tasks were truncated without a word."""
    config = env_config(name)
    limit, registered = config["max_episode_steps"], gym.spec(config["id"]).max_episode_steps
    if limit is not None and registered is not None:
        assert limit >= registered, (
            f"configs/env/{name}.yaml: max_episode_steps={limit} < {config['id']}'s {registered}"
        )


@pytest.mark.parametrize("name", [n for n in ENV_CONFIGS if env_config(n)["id"].startswith("rlinf/LIBERO")])
def test_an_unset_time_limit_reaches_the_env_as_the_suites_own(name, monkeypatch):
    import rlinf_embodied.envs.libero.vector_env as vector_env
    from rlinf_embodied.workers.env_worker import make_vector_env

    built: dict = {}

    class Recorder:  # SubprocVectorEnv's stand-in: no LIBERO simulator started
        metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

        def __init__(self, factories, **kwargs):
            built.update(kwargs)
            self.unwrapped = self

    monkeypatch.setattr(vector_env, "SubprocVectorEnv", Recorder)
    monkeypatch.setattr(vector_env, "single_spaces", lambda *args, **kwargs: (None, None))
    cfg = compose_config("config", [f"env={name}", "policy=pi0"])
    make_vector_env(cfg, 1)
    expected = cfg.env.max_episode_steps or gym.spec(cfg.env.id).max_episode_steps
    assert built["max_episode_steps"] == expected == gym.spec(cfg.env.id).max_episode_steps
