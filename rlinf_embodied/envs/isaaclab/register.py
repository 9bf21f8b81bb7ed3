"""Registers this backend's gymnasium ids (placeholder until the backend lands)."""


def register_envs() -> None:
    pass
