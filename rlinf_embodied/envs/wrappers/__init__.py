"""Wrappers around the batched torch vector envs."""

from .video import VideoRecorder

__all__ = ["VideoRecorder"]
