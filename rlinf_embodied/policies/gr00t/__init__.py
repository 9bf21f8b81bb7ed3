"""GR00T-N1.5: Eagle-style VLM backbone (intermediate layer) + DiT flow-matching action head; see modeling.py."""

from .configuration import GR00T_PRESETS, Gr00tConfig

__all__ = ["GR00T_PRESETS", "Gr00tConfig"]
