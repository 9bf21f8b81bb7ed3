"""random_shift: each image moves by its own offset within the bound, borders repeated."""

import pytest
import torch

from rlinf_embodied.datasets.augmentation import random_shift


def coordinate_images(batch: int, height: int, width: int) -> torch.Tensor:
    """(B, H, W, 2): channel 0 holds the row index, channel 1 the column index."""
    rows = torch.arange(height)[:, None].expand(height, width)
    cols = torch.arange(width)[None, :].expand(height, width)
    return torch.stack([rows, cols], dim=-1).expand(batch, height, width, 2).clone()


def test_each_image_is_one_bounded_shift_with_repeated_borders():
    images = coordinate_images(64, 12, 10)
    out = random_shift(images, 3, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == images.dtype
    offsets = set()
    for sample in out:
        dy, dx = int(sample[6, 5, 0]) - 6, int(sample[6, 5, 1]) - 5  # the centre never touches a border
        assert abs(dy) <= 3 and abs(dx) <= 3
        expected_rows = (torch.arange(12) + dy).clamp(0, 11)[:, None].expand(12, 10)
        expected_cols = (torch.arange(10) + dx).clamp(0, 9)[None, :].expand(12, 10)
        assert torch.equal(sample[..., 0], expected_rows) and torch.equal(sample[..., 1], expected_cols)
        offsets.add((dy, dx))
    assert len(offsets) > 10  # per-sample offsets, not one for the batch


def test_zero_shift_is_the_identity_and_a_seed_repeats_the_offsets():
    images = torch.randint(0, 255, (4, 8, 8, 3), dtype=torch.uint8)
    assert random_shift(images, 0) is images
    first = random_shift(images, 2, torch.Generator().manual_seed(5))
    again = random_shift(images, 2, torch.Generator().manual_seed(5))
    assert torch.equal(first, again)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"max_shift=-1 must be >= 0"):
        random_shift(torch.zeros(1, 4, 4, 3), -1)
    with pytest.raises(ValueError, match=r"\(B, H, W, C\), got shape \(4, 4, 3\)"):
        random_shift(torch.zeros(4, 4, 3), 1)
