"""A preallocated KV cache for OpenVLA's decoding: static shapes, so a CUDA graph can replay the decode."""

from __future__ import annotations

import torch


class StaticKVCache:
    """Stands in for a transformers Cache in the Llama layers. Each layer's K/V lives in one buffer
    (N, kv_heads, capacity, head_dim), made on the first write; `update` writes the new keys and values at
    `position` (a Python int, fixed for each decoding step) and returns the whole buffers. The attention
    mask (N, 1, q, capacity) hides the slots not written yet."""

    def __init__(self, num_layers: int, capacity: int) -> None:
        self.capacity = capacity
        self.position = 0
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        end = self.position + key.shape[2]
        if end > self.capacity:
            raise ValueError(f"writing slots {self.position}-{end - 1} of a cache of {self.capacity}")
        if self.keys[layer_idx] is None:
            shape = (*key.shape[:2], self.capacity, key.shape[-1])
            self.keys[layer_idx], self.values[layer_idx] = key.new_zeros(shape), value.new_zeros(shape)
        self.keys[layer_idx][:, :, self.position : end] = key
        self.values[layer_idx][:, :, self.position : end] = value
        return self.keys[layer_idx], self.values[layer_idx]
