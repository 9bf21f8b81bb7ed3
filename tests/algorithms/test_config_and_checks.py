"""AlgorithmConfig validation and the NaN/inf guard."""

from __future__ import annotations

import math

import pytest
import torch

from rlinf_embodied.algorithms import (
    AlgorithmConfig,
    NonFiniteError,
    adapted_lr_scale,
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
        ({"clip_ratio": 0.0}, r"clip_ratio=0.0 must lie in \(0.0, 1.0\)"),
        ({"clip_ratio": 1.5}, r"clip_ratio=1.5 must lie in \(0.0, 1.0\)"),  # was accepted: no lower clip left
        # vf_coef=0 trains no critic: its settings were accepted and changed nothing (a warmup trained nothing)
        ({"vf_coef": 0.0, "value_lr": 0.01}, r"value_lr=0.01: algorithm.vf_coef=0 trains no critic"),
        ({"vf_coef": 0.0, "critic_warmup_iterations": 1}, r"critic_warmup_iterations=1: algorithm.vf_coef=0 trains"),
        ({"vf_coef": 0.0, "value_clip": 0.2}, r"value_clip=0.2: algorithm.vf_coef=0 trains no critic"),
        ({"clip_ratio_low": 1.0}, r"clip_ratio_low=1.0 must lie in \(0.0, 1.0\)"),
        ({"value_clip": -1.0}, r"value_clip=-1.0 must be > 0"),
        ({"adv_type": "grpo", "group_size": 1}, r"group_size=1: GRPO .* group_size >= 2"),
        ({"dynamic_sampling": True}, r"dynamic_sampling=True .* adv_type='grpo'"),
        ({"adv_type": "grpo", "vf_coef": 0.5}, r"vf_coef=0.5: adv_type='grpo' reads no critic.*\(\['gae'\]\)"),
        ({"adv_type": "reinforce_pp", "critic_warmup_iterations": 2}, r"critic_warmup_iterations=2: .*no critic"),
        ({"adv_type": "grpo", "value_lr": 1e-4}, r"value_lr=0.0001: .*no critic.*set algorithm.value_lr=null"),
        ({"adv_type": "grpo", "value_clip": 0.2}, r"value_clip=0.2: .*no critic"),
        ({"num_minibatches": 0}, r"num_minibatches=0 must be >= 1"),
        ({"lr": 0.0}, r"lr=0.0 must be > 0"),
        ({"entropy_coef": -0.01}, r"entropy_coef=-0.01 must be >= 0.0"),  # was accepted: rewarded collapsing noise
        # accepted before and read by nothing: a clip setting of the other loss, and GRPO's own normalisation
        ({"clip_ratio_high": 0.5}, r"clip_ratio_high=0.5: loss_type='ppo' clips with clip_ratio.*loss_type='dapo'"),
        ({"loss_type": "dapo", "clip_ratio": 0.3}, r"clip_ratio=0.3: loss_type='dapo' clips with clip_ratio_low / "),
        ({"adv_type": "grpo", "normalize_advantages": False}, r"normalize_advantages=False: adv_type='grpo' norm"),
        # an estimator's settings with another estimator (GRPO reads no discount; GAE groups no envs)
        ({"adv_type": "grpo", "gamma": 0.99}, r"gamma=0.99: adv_type='grpo' reads only group_size / grpo_eps"),
        ({"adv_type": "reinforce_pp", "gae_lambda": 0.95}, r"gae_lambda=0.95: .*that reads it: \['gae'\]"),
        ({"grpo_eps": 1e-3}, r"grpo_eps=0.001: adv_type='gae' reads only gamma / gae_lambda"),
        ({"max_sampling_rounds": 8}, r"max_sampling_rounds=8 would change nothing: .*dynamic sampling"),
        ({"adaptive_lr_max_scale": 3.0}, r"adaptive_lr_max_scale=3.0 would change nothing: .*desired_kl"),
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


def test_adapted_lr_scale_follows_the_measured_kl_within_its_bounds():
    off = AlgorithmConfig(lr=1e-3)
    assert adapted_lr_scale(off, 1.0, approx_kl=5.0) == 1.0  # desired_kl unset: no adaptation
    cfg = AlgorithmConfig(lr=1e-3, desired_kl=0.01, target_kl=None, adaptive_lr_max_scale=2.0)
    assert adapted_lr_scale(cfg, 1.0, approx_kl=0.001) == pytest.approx(1.5)  # step too small: larger
    assert adapted_lr_scale(cfg, 1.0, approx_kl=0.05) == pytest.approx(1 / 1.5)  # too large: smaller
    assert adapted_lr_scale(cfg, 1.2, approx_kl=0.01) == 1.2  # within [desired / 2, 2 * desired]: kept
    assert adapted_lr_scale(cfg, 1.5, approx_kl=0.0) == 2.0  # clamped at adaptive_lr_max_scale
    assert adapted_lr_scale(cfg, 0.6, approx_kl=1.0) == 0.5  # and at its inverse


def test_desired_kl_must_be_below_target_kl():
    with pytest.raises(ValueError, match=r"desired_kl=0.2 is not below algorithm.target_kl=0.1"):
        AlgorithmConfig(desired_kl=0.2, target_kl=0.1)
    with pytest.raises(ValueError, match="adaptive_lr_max_scale"):
        AlgorithmConfig(desired_kl=0.01, adaptive_lr_max_scale=0.5)
    AlgorithmConfig(desired_kl=0.01, target_kl=0.1)


def test_desired_kl_must_leave_room_for_the_lr_to_shrink_below_target_kl():
    """Probe 59 #15: the lr shrinks only above 2 x desired_kl, and updates end at target_kl, so a desired_kl in
    [target_kl / 2, target_kl) could practically only grow the lr."""
    with pytest.raises(ValueError, match=r"desired_kl=0.09 is not below algorithm.target_kl / 2 = 0.05: .*only grow"):
        AlgorithmConfig(desired_kl=0.09, target_kl=0.1)
    with pytest.raises(ValueError, match=r"desired_kl=0.05 is not below .* = 0.05: .*e.g. target_kl / 5 = 0.02"):
        AlgorithmConfig(desired_kl=0.05, target_kl=0.1)
    AlgorithmConfig(desired_kl=0.049, target_kl=0.1)
    AlgorithmConfig(desired_kl=0.09, target_kl=None)  # no early stop: both branches reachable


def test_an_estimator_that_reads_the_critic_refuses_vf_coef_zero():
    """Probe 59 #1: GAE reads V(s) every step, and vf_coef=0 never trains it (also what algorithm=grpo
    algorithm.adv_type=gae gave: the grpo group sets vf_coef 0)."""
    with pytest.raises(ValueError, match=r"vf_coef=0.0: adv_type='gae' reads the critic.*vf_coef > 0 .*'grpo'"):
        AlgorithmConfig(adv_type="gae", vf_coef=0.0)
    cfg = AlgorithmConfig(adv_type="gae")
    cfg.vf_coef = 0.0
    with pytest.raises(ValueError, match=r"vf_coef=0.0: .*randomly initialised value head"):
        cfg.validate()
    AlgorithmConfig(adv_type="gae", vf_coef=0.01)
    AlgorithmConfig(adv_type="grpo", vf_coef=0.0)  # critic-free: 0 is its own value


def test_one_optimizer_step_per_update_refuses_desired_kl_and_a_set_target_kl():
    """Probe 59 #2: approx_kl is measured before each minibatch's step, so with one step per update desired_kl
    reads ~0 (the lr grew x1.5 per iteration) and target_kl can stop nothing. The default target_kl and null pass,
    so `algorithm.num_minibatches=1 algorithm.update_epochs=1` stays usable."""
    one_step = {"update_epochs": 1, "num_minibatches": 1}
    with pytest.raises(ValueError, match=r"desired_kl=0.01: algorithm.update_epochs=1 x .*num_minibatches=1 .*x1.5"):
        AlgorithmConfig(**one_step, desired_kl=0.01, target_kl=None)
    with pytest.raises(ValueError, match=r"target_kl=1e-09 would change nothing: .*one optimizer step per update"):
        AlgorithmConfig(**one_step, target_kl=1e-9)
    AlgorithmConfig(**one_step)  # the default target_kl
    AlgorithmConfig(**one_step, target_kl=None)
    for two_steps in ({"update_epochs": 1, "num_minibatches": 2}, {"update_epochs": 2, "num_minibatches": 1}):
        AlgorithmConfig(**two_steps, desired_kl=0.01, target_kl=0.1)
        AlgorithmConfig(**two_steps, target_kl=1e-9)


def test_a_loss_registers_only_known_clip_settings():
    from rlinf_embodied.algorithms.registry import register_loss

    with pytest.raises(ValueError, match=r"loss 'test_mid_clip': unknown settings \['clip_ratio_mid'\]; valid: "):
        register_loss("test_mid_clip", clip_settings=("clip_ratio_mid",))


def test_an_estimator_registers_only_known_settings():
    from rlinf_embodied.algorithms.registry import register_advantage

    with pytest.raises(ValueError, match=r"estimator 'test_lam': unknown settings \['lam'\]; valid: \['gamma', "):
        register_advantage("test_lam", settings=("lam",))


def test_each_loss_and_estimator_accepts_its_own_settings():
    AlgorithmConfig(clip_ratio=0.3, gamma=0.99, gae_lambda=0.95)
    AlgorithmConfig(loss_type="dapo", clip_ratio_low=0.1, clip_ratio_high=0.4)
    AlgorithmConfig(adv_type="grpo", group_size=4, grpo_eps=1e-3, dynamic_sampling=True, max_sampling_rounds=8)
    AlgorithmConfig(adv_type="reinforce_pp", gamma=0.9, desired_kl=0.01, adaptive_lr_max_scale=3.0)


def test_dapo_rejects_an_upper_clip_below_the_lower_one():
    AlgorithmConfig(loss_type="dapo", clip_ratio_low=0.2, clip_ratio_high=0.2)  # equal bounds: PPO's clip
    with pytest.raises(ValueError, match=r"clip_ratio_high=0.1 is below algorithm.clip_ratio_low=0.2: 'dapo'"):
        AlgorithmConfig(loss_type="dapo", clip_ratio_low=0.2, clip_ratio_high=0.1)


@pytest.mark.parametrize("field, value", [("gamma", math.nan), ("vf_coef", math.inf), ("gae_lambda", math.nan)])
def test_nan_and_inf_settings_are_refused(field, value):
    """A comparison with nan is False: algorithm.gamma=nan passed "must lie in [0, 1]", and inf passes any lower
    bound (vf_coef=inf: an infinite loss from the first update)."""
    with pytest.raises(ValueError, match=rf"algorithm.{field}={value} must be finite"):
        AlgorithmConfig(**{field: value})


def test_sft_refuses_nan_and_inf_settings():
    from rlinf_embodied.config import SFTConfig

    for field in ("lr", "grad_clip", "weight_decay"):
        with pytest.raises(ValueError, match=rf"sft.{field}=nan must be finite"):
            SFTConfig(**{field: math.nan})
    SFTConfig(lr=3e-4, grad_clip=1.0)  # finite ones pass


def test_non_finite_error_survives_pickling():
    """Raised in a Ray worker, it is pickled to the driver: with its three-argument __init__ it could not be
    unpickled, and the driver saw Ray's "Failed to deserialize exception" instead of the worker's error."""
    import pickle

    error = pickle.loads(pickle.dumps(NonFiniteError("loss", 3, "1 NaN and 0 inf among 1 elements")))
    assert (error.name, error.iteration) == ("loss", 3)
    assert str(error) == "non-finite 'loss' at iteration 3: 1 NaN and 0 inf among 1 elements"
