"""Registries of advantage estimators and policy losses: adding one is one file + one decorator line.

    @register_advantage("my_adv")
    def my_advantage(*, rewards, dones, values, cfg, env_ids=None) -> tuple[Tensor, Tensor]: ...

    @register_loss("my_loss")
    def my_loss(*, new_log_probs, old_log_probs, advantages, entropy, new_values, old_values,
                returns, cfg, loss_mask=None) -> tuple[Tensor, dict[str, Tensor]]: ...
"""
from __future__ import annotations

from typing import Callable, TypeVar

Fn = TypeVar("Fn", bound=Callable)

_ADVANTAGES: dict[str, Callable] = {}
_LOSSES: dict[str, Callable] = {}


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


def register_advantage(name: str) -> Callable[[Fn], Fn]:
    return _register(_ADVANTAGES, "advantage estimator", name)


def get_advantage(name: str) -> Callable:
    return _get(_ADVANTAGES, "advantage estimator", name)


def advantage_names() -> list[str]:
    return sorted(_ADVANTAGES)


def register_loss(name: str) -> Callable[[Fn], Fn]:
    return _register(_LOSSES, "policy loss", name)


def get_loss(name: str) -> Callable:
    return _get(_LOSSES, "policy loss", name)


def loss_names() -> list[str]:
    return sorted(_LOSSES)
