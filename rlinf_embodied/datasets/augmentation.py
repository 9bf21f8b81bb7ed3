"""Image augmentation for imitation learning from pixels.

Behaviour cloning from a few dozen demonstrations overfits the exact pixels of its cameras; a random
shift of a few pixels per sample (DrQ's augmentation, the random crop of robomimic and Diffusion
Policy) is the standard remedy. Only training batches are augmented; the env's frames never are.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..transfer import host_to_device


def random_shift(images: torch.Tensor, max_shift: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Shift each image by its own random (dy, dx) in [-max_shift, max_shift], repeating the border.

    images: (B, H, W, C) of any dtype (the datasets' uint8 frames); returns the same shape and dtype.
    """
    if max_shift < 0:
        raise ValueError(f"max_shift={max_shift} must be >= 0")
    if images.dim() != 4:
        raise ValueError(f"images must be (B, H, W, C), got shape {tuple(images.shape)}")
    if max_shift == 0 or images.shape[0] == 0:
        return images
    batch, height, width = images.shape[:3]

    def shifted(size: int) -> torch.Tensor:  # (B, size): each sample's source row (column) indices
        offsets = torch.randint(-max_shift, max_shift + 1, (batch, 1), generator=generator)
        return host_to_device((torch.arange(size)[None, :] + offsets).clamp_(0, size - 1), images.device)

    rows, cols = shifted(height), shifted(width)
    samples = torch.arange(batch, device=images.device)[:, None, None]
    return images[samples, rows[:, :, None], cols[:, None, :]]
