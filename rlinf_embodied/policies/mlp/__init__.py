"""`mlp`: Gaussian actor-critic on state observations; see modeling.py and gaussian.py."""

from .configuration import MLP_PRESETS, MLPConfig

__all__ = ["MLP_PRESETS", "MLPConfig"]
