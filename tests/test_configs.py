"""Every Hydra config group option composes onto the typed schema (a typo or wrong type would fail here)."""
from __future__ import annotations

import os

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from rlinf_embodied.config import COLLOCATED_PLACEMENT, RunnerConfig, TrainConfig, register_configs
from rlinf_embodied.paths import CONFIG_DIR
from rlinf_embodied.scheduler import ComponentPlacement

register_configs()


def options(group: str) -> list[str]:
    return sorted(name[:-5] for name in os.listdir(os.path.join(CONFIG_DIR, group)) if name.endswith(".yaml"))


@pytest.mark.parametrize("group", ["env", "policy", "algorithm", "cluster"])
def test_every_option_composes_onto_the_schema(group):
    for option in options(group):
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
            cfg = compose(config_name="config", overrides=[f"{group}={option}"])
        typed: TrainConfig = OmegaConf.to_object(cfg)
        assert isinstance(typed, TrainConfig), (group, option)
        if group == "cluster":
            placement = ComponentPlacement(dict(typed.cluster.component_placement or COLLOCATED_PLACEMENT),
                                           num_gpus=typed.cluster.num_gpus_per_node, num_nodes=typed.cluster.num_nodes)
            assert set(placement.components) == {"env", "rollout", "actor"}, option


def test_a_misspelled_override_names_the_key():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        with pytest.raises(Exception, match="max_iteration"):
            compose(config_name="config", overrides=["runner.max_iteration=3"])


@pytest.mark.parametrize("field_name, value", [("eval_rounds", 0), ("eval_interval", -1), ("save_interval", -2)])
def test_runner_config_rejects_out_of_range_intervals(field_name, value):
    with pytest.raises(ValueError, match=f"runner.{field_name}={value}"):
        RunnerConfig(**{field_name: value})
