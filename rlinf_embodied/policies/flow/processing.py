"""Observation preprocessing shared by the flow VLAs: images to [-1, 1], instructions to token ids, padding."""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from ...transfer import host_to_device


def pad_last_dim(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad the last dimension to `size` (the padded state/action width the network expects)."""
    if x.shape[-1] > size:
        raise ValueError(f"vector of width {x.shape[-1]} does not fit the model's padded width {size}")
    return F.pad(x, (0, size - x.shape[-1]))


def resize_with_pad(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> (N, 3, size, size), aspect ratio kept, centred on black (as openpi)."""
    height, width = images.shape[-2:]
    if (height, width) == (size, size):
        return images
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    resized = F.interpolate(images, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
    pad_h, pad_w = size - new_h, size - new_w
    return F.pad(resized, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))


def images_to_model_input(rgb: torch.Tensor, size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, size, size) in [-1, 1], the SigLIP input range."""
    images = rgb.to(device).permute(0, 3, 1, 2).float() / 255.0
    images = resize_with_pad(images, size).clamp(0.0, 1.0)
    return (images * 2.0 - 1.0).to(dtype)


def clean_instruction(text: str) -> str:
    return text.strip().replace("_", " ").replace("\n", " ")


# tokenizer -> {(cleaned text, max_len): (ids (max_len,), mask (max_len,) bool)}; weak keys, so a
# policy's tokenizer and its cache go together. Batches repeat a handful of instructions (one per
# task), and a tokenizer call per sample cost about as much host time as a small model's SFT step.
_TOKEN_CACHE: "weakref.WeakKeyDictionary[PreTrainedTokenizerBase, dict]" = weakref.WeakKeyDictionary()


def tokenize_instructions(
    tokenizer: PreTrainedTokenizerBase, instructions: list[str], max_len: int, device: torch.device, trim_to: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded token ids (N, max_len) and their validity mask (N, max_len) bool.

    Right padding keeps every valid token's position equal to its index and gives causal
    language models no fully masked rows (which would produce NaNs in the padding positions).
    Each distinct instruction is tokenized once per tokenizer and cached.
    `trim_to` > 0 drops the padding columns no row uses, keeping the longest row's length rounded up to a
    multiple of `trim_to` (at most max_len): (N, L) with L <= max_len, decided on the host before the copy.
    """
    try:
        cache = _TOKEN_CACHE.setdefault(tokenizer, {})
    except TypeError:  # a tokenizer that cannot be weakly referenced: no cache
        cache = {}
    texts = [clean_instruction(text) + "\n" for text in instructions]
    missing = sorted({text for text in texts if (text, max_len) not in cache})
    if missing:
        ids, mask = _tokenize(tokenizer, missing, max_len)
        for text, row_ids, row_mask in zip(missing, ids, mask):
            cache[(text, max_len)] = (row_ids, row_mask)
    if not texts:
        return torch.zeros(0, max_len, dtype=torch.long, device=device), torch.zeros(
            0, max_len, dtype=torch.bool, device=device
        )
    rows = [cache[(text, max_len)] for text in texts]
    ids = torch.stack([row[0] for row in rows])
    mask = torch.stack([row[1] for row in rows])
    if trim_to > 0:
        longest = int(mask.sum(dim=1).max())
        width = min(max_len, -(-longest // trim_to) * trim_to)
        ids, mask = ids[:, :width], mask[:, :width]
    return host_to_device(ids, device), host_to_device(mask, device)


def _tokenize(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    for text in texts:
        length = len(tokenizer(text)["input_ids"])
        if length > max_len:
            raise ValueError(
                f"instruction {text.strip()!r} has {length} tokens > max_token_len={max_len}; "
                f"raise the policy's max_token_len (policy.overrides.max_token_len=...)"
            )
    previous_side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=max_len, return_tensors="pt")
    finally:
        tokenizer.padding_side = previous_side
    return encoded["input_ids"], encoded["attention_mask"].bool()
