"""Demonstration datasets in the LeRobotDataset v2.1 layout (see lerobot_format.py)."""

from .lerobot_format import (
    CODEBASE_VERSION,
    ControlModeMismatchError,
    DemoDataset,
    LeRobotDatasetWriter,
    camera_shapes,
    load_info,
)

__all__ = [
    "CODEBASE_VERSION",
    "ControlModeMismatchError",
    "DemoDataset",
    "LeRobotDatasetWriter",
    "camera_shapes",
    "load_info",
]
