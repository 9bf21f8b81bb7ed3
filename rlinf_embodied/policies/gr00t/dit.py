"""GR00T's action-head transformers: the DiT (AdaLayerNorm on the flow time, alternating cross- and
self-attention) and the plain self-attention transformer over the VLM tokens.

Built from torch pieces (nn.Linear projections + F.scaled_dot_product_attention, nn.LayerNorm,
nn.GELU): GR00T uses diffusers' Attention/FeedForward, which this package does not depend on, and
the projections are kept one Linear each (to_q, to_k, to_v, to_out) so the converter maps the
upstream weights one to one. No dropout (see configuration.py). Unlike upstream, cross-attention
honours the VLM tokens' padding mask; with unpadded inputs the two agree.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class Attention(nn.Module):
    """Multi-head attention; cross-attention when `context_dim` is given (keys/values from the context)."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None = None):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.to_q = nn.Linear(dim, inner)
        self.to_k = nn.Linear(context_dim or dim, inner)
        self.to_v = nn.Linear(context_dim or dim, inner)
        self.to_out = nn.Linear(inner, dim)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, context_valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x (N, L, dim); context (N, S, context_dim) or None (self-attention); context_valid (N, S) bool."""
        source = x if context is None else context
        query, key, value = self._split(self.to_q(x)), self._split(self.to_k(source)), self._split(self.to_v(source))
        mask = None if context_valid is None else context_valid[:, None, None, :]
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
        return self.to_out(out.transpose(1, 2).flatten(2))

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)  # (N, heads, L, head_dim)


def feed_forward(dim: int) -> nn.Sequential:
    """GELU(tanh) MLP with 4x expansion (diffusers' "gelu-approximate" FeedForward)."""
    return nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim))


def timestep_sinusoid(timesteps: torch.Tensor, dim: int = 256) -> torch.Tensor:
    """diffusers Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=1): (n,) -> (n, dim) [cos, sin]."""
    half = dim // 2
    exponent = -math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / (half - 1)
    angles = timesteps.float()[:, None] * torch.exp(exponent)[None, :]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class TimestepEncoder(nn.Module):
    """Bucketed flow time -> conditioning vector: sinusoid(256) -> Linear -> SiLU -> Linear."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(256, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        embedding = timestep_sinusoid(timesteps).to(self.linear_1.weight.dtype)
        return self.linear_2(F.silu(self.linear_1(embedding)))


class AdaLayerNorm(nn.Module):
    """LayerNorm (no affine) scaled and shifted by a projection of the time embedding."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, 2 * dim)
        self.norm = nn.LayerNorm(dim, eps=1e-5, elementwise_affine=False)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.linear(F.silu(temb)).chunk(2, dim=-1)
        return self.norm(x) * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None):
        super().__init__()
        self.is_cross_attention = context_dim is not None
        self.norm1 = AdaLayerNorm(dim)
        self.attn1 = Attention(dim, heads, head_dim, context_dim)
        self.norm3 = nn.LayerNorm(dim, eps=1e-5, elementwise_affine=False)
        self.ff = feed_forward(dim)

    def forward(
        self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor, context_valid: torch.Tensor
    ) -> torch.Tensor:
        normed = self.norm1(x, temb)
        if self.is_cross_attention:
            x = x + self.attn1(normed, context, context_valid)
        else:
            x = x + self.attn1(normed)
        return x + self.ff(self.norm3(x))


class CheckpointableStack(nn.Module):
    """Gives a block stack transformers' activation_checkpointing_enable() switch (non-reentrant checkpoints)."""

    gradient_checkpointing = False

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs: dict | None = None) -> None:
        self.gradient_checkpointing = True

    def run_block(self, block: nn.Module, *args: torch.Tensor) -> torch.Tensor:
        if self.gradient_checkpointing and self.training:
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)


class DiT(CheckpointableStack):
    """Diffusion transformer over [state; future tokens; action tokens], conditioned on the flow time.

    Even blocks cross-attend to the VLM tokens, odd blocks self-attend (GR00T's
    interleave_self_attention); the output is modulated by the time once more (shift, scale).
    """

    def __init__(self, num_layers: int, heads: int, head_dim: int, output_dim: int, context_dim: int):
        super().__init__()
        dim = heads * head_dim
        self.timestep_encoder = TimestepEncoder(dim)
        self.transformer_blocks = nn.ModuleList(
            DiTBlock(dim, heads, head_dim, context_dim if index % 2 == 0 else None) for index in range(num_layers)
        )
        self.norm_out = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.proj_out_1 = nn.Linear(dim, 2 * dim)
        self.proj_out_2 = nn.Linear(dim, output_dim)

    def forward(
        self, tokens: torch.Tensor, context: torch.Tensor, context_valid: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """tokens (n, L, dim), context (n, S, context_dim), context_valid (n, S), timesteps (n,) -> (n, L, output_dim)."""
        temb = self.timestep_encoder(timesteps)
        for block in self.transformer_blocks:
            tokens = self.run_block(block, tokens, temb, context, context_valid)
        shift, scale = self.proj_out_1(F.silu(temb)).chunk(2, dim=-1)
        return self.proj_out_2(self.norm_out(tokens) * (1 + scale[:, None]) + shift[:, None])


class SelfAttentionBlock(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn1 = Attention(dim, heads, head_dim)
        self.norm3 = nn.LayerNorm(dim, eps=1e-5)
        self.ff = feed_forward(dim)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        normed = self.norm1(x)
        x = x + self.attn1(normed, normed, valid)
        return x + self.ff(self.norm3(x))


class SelfAttentionTransformer(CheckpointableStack):
    """GR00T's vl_self_attention: pre-LN transformer blocks refining the VLM tokens."""

    def __init__(self, num_layers: int, heads: int, head_dim: int):
        super().__init__()
        dim = heads * head_dim
        self.transformer_blocks = nn.ModuleList(SelfAttentionBlock(dim, heads, head_dim) for _ in range(num_layers))

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        for block in self.transformer_blocks:
            tokens = self.run_block(block, tokens, valid)
        return tokens
