"""pi0 (openpi / LeRobot): PaliGemma prefix + Gemma action expert, flow matching; see modeling.py."""

from .configuration import PI0_PRESETS, Pi0Config

__all__ = ["PI0_PRESETS", "Pi0Config"]
