"""`cnn`: NatureCNN Gaussian actor-critic on rgb (+ state) observations; see modeling.py."""

from .configuration import CNN_PRESETS, CNNConfig

__all__ = ["CNN_PRESETS", "CNNConfig"]
