"""The typed configs check their fields' types and derived ranges at creation, from the Python API as from the
command line (probe 62: AlgorithmConfig(update_epochs=2.5), EnvConfig(num_envs=2.5) and RunnerConfig(max_iterations=1.5)
were accepted, and a large sft.seed failed at SFT's first evaluation, in a worker, naming eval.seed)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from rlinf_embodied.algorithms.config import AlgorithmConfig
from rlinf_embodied.config import (
    CONFIG_NAMES,
    CollectConfig,
    EnvConfig,
    EvalConfig,
    RunnerConfig,
    SFTConfig,
    SFTRunConfig,
    compose_config,
)
from rlinf_embodied.envs.batching import MAX_SEED
from rlinf_embodied.paths import CONFIG_DIR


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: AlgorithmConfig(update_epochs=2.5), r"^algorithm.update_epochs=2.5 \(float\) is not a valid int$"),
        (lambda: AlgorithmConfig(num_minibatches=True), r"^algorithm.num_minibatches=True \(bool\) is not a valid int"),
        (lambda: AlgorithmConfig(gamma="0.9"), r"^algorithm.gamma='0.9' \(str\) is not a valid float$"),
        (
            lambda: AlgorithmConfig(micro_batch_size=1.5),
            r"^algorithm.micro_batch_size=1.5 \(float\) is not a valid int",
        ),
        (lambda: EnvConfig(num_envs=2.5), r"^env.num_envs=2.5 \(float\) is not a valid int$"),
        (lambda: EnvConfig(kwargs=None), r"^env.kwargs=None \(NoneType\) is not a valid dict\[str, Any\]$"),
        (lambda: RunnerConfig(max_iterations=1.5), r"^runner.max_iterations=1.5 \(float\) is not a valid int$"),
        (lambda: EvalConfig(seed=1.5), r"^eval.seed=1.5 \(float\) is not a valid int$"),
        (lambda: SFTConfig(max_steps=True), r"^sft.max_steps=True \(bool\) is not a valid int"),
        (lambda: CollectConfig(num_episodes=2.5), r"^collect.num_episodes=2.5 \(float\) is not a valid int$"),
    ],
)
def test_wrongly_typed_settings_are_refused_at_creation_naming_them(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_validate_after_mutation_checks_the_types_too():
    cfg = AlgorithmConfig()
    cfg.update_epochs = 2.5  # the module docstring: call validate() after mutating a config in code
    with pytest.raises(ValueError, match=r"algorithm.update_epochs=2.5 \(float\) is not a valid int"):
        cfg.validate()


def test_valid_values_of_other_numeric_types_stay_accepted():
    assert AlgorithmConfig(update_epochs=np.int64(2), gamma=1, lr=np.float32(1e-4)).update_epochs == 2
    assert EnvConfig(num_envs=np.int32(4)).num_envs == 4
    assert RunnerConfig(max_iterations=np.int64(3)).max_iterations == 3
    assert EvalConfig(task_ids=(0, np.int64(1)), num_envs=2, num_episodes=2).task_ids == (0, 1)


def test_the_command_line_composes_as_before():
    cfg = compose_config("config", ["algorithm.update_epochs=2", "env.num_envs=4", "runner.max_iterations=3"])
    assert (cfg.algorithm.update_epochs, cfg.env.num_envs, cfg.runner.max_iterations) == (2, 4, 3)


def sft_run(seed: int, num_envs: int = 3, eval_episodes: int = 5, eval_interval: int = 10) -> SFTRunConfig:
    return SFTRunConfig(
        env=EnvConfig(num_envs=num_envs),
        sft=SFTConfig(
            seed=seed, eval_interval=eval_interval, eval_episodes=eval_episodes, max_steps=20, warmup_steps=0
        ),
    )


def test_a_seed_whose_sft_evaluation_seeds_exceed_the_simulators_limit_is_refused_naming_sft_seed():
    largest = MAX_SEED - 1000 - 3 + 1  # 3 eval envs (min(env.num_envs=3, sft.eval_episodes=5)): seeds +1000 .. +1002
    assert sft_run(largest).sft.seed == largest
    with pytest.raises(
        ValueError,
        match=rf"^sft.seed={largest + 1}: SFT's evaluations .* up to {MAX_SEED + 1} with their 3 envs "
        rf"\(min\(env.num_envs=3, sft.eval_episodes=5\)\), above the largest seed {MAX_SEED}; valid: -1000 <= "
        rf"sft.seed <= {largest}$",
    ):
        sft_run(largest + 1)
    no_evaluation = SFTRunConfig(sft=SFTConfig(seed=MAX_SEED, eval_interval=0))
    assert no_evaluation.sft.seed == MAX_SEED
    with pytest.raises(ValueError, match=r"^sft.seed=4294967295: SFT's evaluations"):  # the probe's command line
        compose_config(
            "sft",
            ["sft.seed=4294967295", "sft.eval_interval=4", "sft.max_steps=4", "sft.warmup_steps=0", "env.num_envs=1"],
        )


def test_compose_config_names_the_valid_config_names():
    assert set(CONFIG_NAMES) == {name[:-5] for name in os.listdir(CONFIG_DIR) if name.endswith(".yaml")}
    with pytest.raises(
        ValueError, match=r"compose_config\('train'\): no such config; valid: 'config' \(train\), 'eval'"
    ):
        compose_config("train", [])
    with pytest.raises(ValueError, match=r"did you mean 'eval'\?"):
        compose_config("evl", [])
    assert '"place"' not in compose_config.__doc__
