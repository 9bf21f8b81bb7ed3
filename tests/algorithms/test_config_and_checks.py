"""AlgorithmConfig validation and the NaN/inf guard."""

from __future__ import annotations

import math

import pytest
import torch

from rlinf_embodied.algorithms import (
    AlgorithmConfig,
    NonFiniteError,
    annealed_lr,
    check_finite,
    get_advantage,
    get_loss,
)


def test_defaults_are_valid_and_match_registries():
    cfg = AlgorithmConfig()
    assert cfg.adv_type == "gae" and cfg.loss_type == "ppo"
    get_advantage(cfg.adv_type), get_loss(cfg.loss_type)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"adv_type": "gea"},
            r"adv_type='gea' is not a known advantage estimator; valid: \['gae', 'grpo', 'reinforce_pp'\]",
        ),
        ({"loss_type": "trpo"}, r"loss_type='trpo' is not a known policy loss; valid: \['dapo', 'ppo'\]"),
        ({"logprob_level": "step"}, r"logprob_level='step'.*valid: \['action', 'chunk', 'token'\]"),
        ({"gamma": 1.5}, r"gamma=1.5 must lie in \[0.0, 1.0\]"),
        ({"clip_ratio": 0.0}, r"clip_ratio=0.0 must be > 0"),
        ({"clip_ratio_low": 1.0}, r"clip_ratio_low=1.0 must lie in \(0.0, 1.0\)"),
        ({"value_clip": -1.0}, r"value_clip=-1.0 must be > 0"),
        ({"adv_type": "grpo", "group_size": 1}, r"group_size=1: GRPO .* group_size >= 2"),
        ({"dynamic_sampling": True}, r"dynamic_sampling=True .* adv_type='grpo'"),
        ({"num_minibatches": 0}, r"num_minibatches=0 must be >= 1"),
        ({"lr": 0.0}, r"lr=0.0 must be > 0"),
    ],
)
def test_invalid_values_fail_with_the_key_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        AlgorithmConfig(**overrides)


def test_validate_after_mutation():
    cfg = AlgorithmConfig()
    cfg.adv_type = "nope"
    with pytest.raises(ValueError, match="adv_type='nope'"):
        cfg.validate()


def test_check_finite_names_the_quantity_and_iteration():
    check_finite({"loss": torch.tensor(1.0), "grad_norm": 3.0, "values": None}, iteration=1)
    bad = torch.tensor([1.0, math.nan, math.inf, 2.0])
    with pytest.raises(NonFiniteError, match=r"non-finite 'advantages' at iteration 7: 1 NaN and 1 inf among 4"):
        check_finite({"loss": torch.tensor(0.5), "advantages": bad}, iteration=7)
    with pytest.raises(NonFiniteError, match="'grad_norm' at iteration 2") as info:
        check_finite({"grad_norm": float("inf")}, iteration=2)
    assert info.value.name == "grad_norm" and info.value.iteration == 2
    check_finite({"actions": torch.tensor([1, 2])}, iteration=0)  # integer tensors are always finite


def test_annealed_lr_decays_linearly_to_zero_only_when_asked():
    constant = AlgorithmConfig(lr=1e-3)
    assert [annealed_lr(constant, i, 4) for i in range(4)] == [1e-3] * 4
    annealed = AlgorithmConfig(lr=1e-3, anneal_lr=True)
    assert [annealed_lr(annealed, i, 4) for i in range(4)] == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])
    assert annealed_lr(annealed, 9, 4) == 0.0  # past the end (a resumed run with a lower max): never negative
