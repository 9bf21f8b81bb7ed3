"""Registries of advantage estimators and policy losses: adding one is one file + one decorator line.

@register_advantage("my_adv", grouped=False, normalized=False, critic=False, settings=("gamma",))  # AdvantageTraits
def my_advantage(*, rewards, dones, values, cfg, env_ids=None) -> tuple[Tensor, Tensor]: ...

@register_loss("my_loss", clip_settings=("clip_ratio",))  # the AlgorithmConfig clip fields it reads
def my_loss(*, new_log_probs, old_log_probs, advantages, entropy, new_values, old_values,
            returns, cfg, loss_mask=None, totals=None) -> tuple[Tensor, dict[str, Tensor]]: ...
# totals: a MinibatchTotals where the batch is one micro-batch (pass it to clipped_policy_loss / aggregate)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, TypeVar

Fn = TypeVar("Fn", bound=Callable)

_ADVANTAGES: dict[str, Callable] = {}
_LOSSES: dict[str, Callable] = {}


@dataclass(frozen=True)
class AdvantageTraits:
    """What the other layers ask of an advantage estimator; set at registration, read through
    AlgorithmConfig (env_group_size, normalize_in_loss, ...), never by comparing names."""

    # Envs run in groups of algorithm.group_size that reset to the same task and seed, and the
    # estimator compares episodes within a group (GRPO): the env workers seed per group, the rollout
    # workers keep groups whole on one actor rank, and dynamic sampling can drop uninformative groups.
    grouped: bool = False
    # The estimator normalises its advantages itself (per group / per batch): the loss does not
    # normalise them again per minibatch (algorithm.normalize_advantages applies to the others).
    normalized: bool = False
    # The estimator reads the critic's values (GAE): the loss trains the critic (algorithm.vf_coef) and the
    # rollout bootstraps time-limit truncations with V(final obs). A critic-free estimator (GRPO, Reinforce++)
    # gets neither: an untrained value head folded into its outcomes would only add noise to them.
    critic: bool = False
    # The ESTIMATOR_SETTINGS it reads (e.g. GAE: gamma, gae_lambda); the config refuses the others away from
    # their defaults, since they would change nothing.
    settings: tuple[str, ...] = ()


# AlgorithmConfig fields that only some estimators read (each names its own at registration)
ESTIMATOR_SETTINGS = ("gamma", "gae_lambda", "group_size", "grpo_eps")
_TRAITS: dict[str, AdvantageTraits] = {}


def _register(table: dict[str, Callable], kind: str, name: str) -> Callable[[Fn], Fn]:
    def decorator(fn: Fn) -> Fn:
        if name in table and table[name] is not fn:
            raise ValueError(f"{kind} {name!r} is already registered as {table[name].__qualname__}")
        table[name] = fn
        return fn

    return decorator


def _get(table: dict[str, Callable], kind: str, name: str) -> Callable:
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; valid: {sorted(table)}")
    return table[name]


def register_advantage(
    name: str,
    *,
    grouped: bool = False,
    normalized: bool = False,
    critic: bool = False,
    settings: tuple[str, ...] = (),
) -> Callable[[Fn], Fn]:
    """Register an estimator under `name`, with its AdvantageTraits."""
    _check_settings(name, "estimator", settings, ESTIMATOR_SETTINGS)
    register = _register(_ADVANTAGES, "advantage estimator", name)

    def decorator(fn: Fn) -> Fn:
        _TRAITS[name] = AdvantageTraits(grouped=grouped, normalized=normalized, critic=critic, settings=tuple(settings))
        return register(fn)

    return decorator


def advantage_traits(name: str) -> AdvantageTraits:
    get_advantage(name)  # an unknown name fails with the valid ones
    return _TRAITS[name]


def get_advantage(name: str) -> Callable:
    return _get(_ADVANTAGES, "advantage estimator", name)


def advantage_names() -> list[str]:
    return sorted(_ADVANTAGES)


# AlgorithmConfig fields that set a loss's ratio clip; a loss names those it reads when it registers, and the
# config refuses the others away from their defaults (they would change nothing).
CLIP_SETTINGS = ("clip_ratio", "clip_ratio_low", "clip_ratio_high")
_LOSS_CLIP_SETTINGS: dict[str, tuple[str, ...]] = {}


def register_loss(name: str, *, clip_settings: tuple[str, ...] = ()) -> Callable[[Fn], Fn]:
    """Register a policy loss under `name`; `clip_settings`: the CLIP_SETTINGS it reads."""
    _check_settings(name, "policy loss", clip_settings, CLIP_SETTINGS)
    register = _register(_LOSSES, "policy loss", name)

    def decorator(fn: Fn) -> Fn:
        _LOSS_CLIP_SETTINGS[name] = tuple(clip_settings)
        return register(fn)

    return decorator


def _check_settings(name: str, kind: str, settings: tuple[str, ...], valid: tuple[str, ...]) -> None:
    unknown = [setting for setting in settings if setting not in valid]
    if unknown:
        raise ValueError(f"{kind} {name!r}: unknown settings {unknown}; valid: {list(valid)}")


def loss_clip_settings(name: str) -> tuple[str, ...]:
    get_loss(name)  # an unknown name fails with the valid ones
    return _LOSS_CLIP_SETTINGS[name]


def get_loss(name: str) -> Callable:
    return _get(_LOSSES, "policy loss", name)


def loss_names() -> list[str]:
    return sorted(_LOSSES)
