"""pi0: PaliGemma (SigLIP + projector + Gemma) prefix and a Gemma action expert, trained by flow matching.

Joint attention, as in openpi: at every layer l the action expert's tokens attend to the VLM
prefix's keys/values of layer l and to the suffix (state + action tokens); the prefix never
attends to the suffix. Because of that one-way mask the prefix can be run first, recording each
layer's (post-RoPE) K/V, and the expert layers then run with attention over [prefix K/V; suffix K/V]
-- the same computation as openpi's layer-interleaved forward, with the prefix computed once per
`act`/`evaluate` call instead of once per denoising step. Both passes call whole transformers
`GemmaDecoderLayer`s (their q/k/v/o projections, RoPE, RMSNorms and MLP); the prefix K/V goes in
through the layer's `past_key_values` argument (a read-only cache object), so no transformer block is
rewritten here and FSDP2 can shard the layers one by one.

Attention masks (openpi's prefix-LM scheme): prefix tokens (images, then language) attend to every
valid prefix token; the state token attends to the prefix and itself; action tokens attend to the
prefix, the state and all action tokens. Positions are counted over valid tokens only.

Value head: masked mean of the VLM's final (normed) hidden states over the valid prefix tokens.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GemmaConfig, GemmaModel, SiglipVisionConfig, SiglipVisionModel

from ..base import Obs
from ..common.conv_stem import ConvStem
from ..flow.heads import masked_mean
from ..flow.losses import OpenpiSFTLoss, sincos_time_embedding
from ..flow.policy import FlowPolicy
from ..flow.processing import images_to_model_input, tokenize_instructions
from .configuration import PI0_PRESETS, Pi0Config


class LayerKV:
    """Stands in for a transformers Cache in one layer's call: keeps the K/V the layer computed and, with `prefix`
    (the VLM layer's K/V), returns [prefix; own] for the expert layer to attend over. One object per layer, so no
    layer index reaches traced code and torch.compile'd layers of a stack share one graph (sft.compile)."""

    def __init__(self, prefix: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        self.prefix = prefix
        self.key: torch.Tensor | None = None
        self.value: torch.Tensor | None = None

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        self.key, self.value = key, value
        if self.prefix is None:
            return key, value
        return torch.cat([self.prefix[0], key], dim=2), torch.cat([self.prefix[1], value], dim=2)


def gemma_config(cfg: Pi0Config, width: int, mlp_dim: int, num_heads: int, vocab_size: int) -> GemmaConfig:
    config = GemmaConfig(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=mlp_dim,
        num_hidden_layers=cfg.vlm_depth,
        num_attention_heads=num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim,
        hidden_act="gelu_pytorch_tanh",
        max_position_embeddings=8192,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        pad_token_id=0 if vocab_size > 1 else None,
        bos_token_id=2 if vocab_size > 2 else None,
        eos_token_id=1 if vocab_size > 1 else None,
    )
    config._attn_implementation = "sdpa"  # takes our boolean prefix-LM masks as they are
    return config


def siglip_config(cfg: Pi0Config) -> SiglipVisionConfig:
    config = SiglipVisionConfig(
        hidden_size=cfg.vision_hidden_size,
        intermediate_size=cfg.vision_intermediate_size,
        num_hidden_layers=cfg.vision_num_layers,
        num_attention_heads=cfg.vision_num_heads,
        image_size=cfg.image_size,
        patch_size=cfg.vision_patch_size,
        hidden_act="gelu_pytorch_tanh",
        layer_norm_eps=1e-6,
        vision_use_head=False,
    )
    config._attn_implementation = "sdpa"
    return config


def suffix_block_mask(chunk: int, device: torch.device) -> torch.Tensor:
    """(1 + chunk, 1 + chunk) bool: the state token sees itself, action tokens see state + all actions."""
    # No `tensor[i] = value`: it copies a host scalar to the device, which a CUDA graph capture rejects.
    index = torch.arange(1 + chunk, device=device)
    return (index[None, :] == 0) | (index[:, None] > 0)


class Pi0Policy(OpenpiSFTLoss, FlowPolicy):
    name = "pi0"
    config_class = Pi0Config
    presets = PI0_PRESETS
    config: Pi0Config

    def __init__(self, config: Pi0Config, apply_lora: bool = True):
        super().__init__(config, apply_lora)
        cfg = config
        self.vision_tower = SiglipVisionModel(siglip_config(cfg))
        if cfg.vision_stem == "conv":
            vision = getattr(self.vision_tower, "vision_model", self.vision_tower)  # transformers 4.x nests it
            vision.embeddings.patch_embedding = ConvStem(cfg.vision_hidden_size, cfg.vision_patch_size)
        self.multi_modal_projector = nn.Linear(cfg.vision_hidden_size, cfg.vlm_width)
        self.language_model = GemmaModel(
            gemma_config(cfg, cfg.vlm_width, cfg.vlm_mlp_dim, cfg.vlm_num_heads, cfg.vocab_size)
        )
        # The expert takes embeddings, never token ids: build it with a 1-row vocabulary, then drop it.
        self.action_expert = GemmaModel(
            gemma_config(cfg, cfg.expert_width, cfg.expert_mlp_dim, cfg.expert_num_heads, 1)
        )
        self.action_expert.embed_tokens = None
        self.state_proj = nn.Linear(cfg.max_state_dim, cfg.expert_width)
        self.action_in_proj = nn.Linear(cfg.max_action_dim, cfg.expert_width)
        self.action_time_mlp_in = nn.Linear(2 * cfg.expert_width, cfg.expert_width)
        self.action_time_mlp_out = nn.Linear(cfg.expert_width, cfg.expert_width)
        self.action_out_proj = nn.Linear(cfg.expert_width, cfg.max_action_dim)
        for layer in [*self.language_model.layers, *self.action_expert.layers]:
            layer._can_checkpoint_with_cache = True  # the K/V objects above are safe to replay
        self.finish_init(pooled_dim=cfg.vlm_width, action_feature_dim=cfg.expert_width)

    # ---- FlowPolicy contract ------------------------------------------------------------------------
    def state_input_layer(self) -> nn.Linear:
        return self.state_proj

    def vision_modules(self) -> list[nn.Module]:
        return [self.vision_tower, self.multi_modal_projector]

    def backbone_language_model(self) -> nn.Module:
        return self.language_model

    def fsdp_units(self) -> list[nn.Module]:
        vision = getattr(self.vision_tower, "vision_model", self.vision_tower)  # transformers 4.x nests it
        return [*vision.encoder.layers, *self.language_model.layers, *self.action_expert.layers]

    def checkpointing_models(self) -> list[nn.Module]:
        return [self.vision_tower, self.language_model, self.action_expert]

    def encode_observation(self, obs: Obs) -> dict[str, Any]:
        """Run the VLM prefix once (from a CUDA graph in a graphed `act`), plus the normalised state."""
        inputs = self.prefix_inputs(obs)
        graphs = self.act_graphs()
        if graphs is None:
            prefix = self.encode_prefix(inputs)
        else:
            prefix = graphs.run(self, ("prefix",), self.encode_prefix, inputs, inputs["token_ids"].shape[0])
        return {**prefix, "state": self.normalized_state(obs)}

    def prefix_inputs(self, obs: Obs) -> dict[str, Any]:
        """The prefix's host work: cameras onto the device, instructions to token ids (N, Lt) and validity."""
        device = self.device
        token_ids, token_valid = tokenize_instructions(
            self.tokenizer, list(obs["instruction"]), self.config.max_token_len, device, self.prompt_trim()
        )
        cameras = [torch.as_tensor(camera).to(device) for camera in self.camera_images(obs)]  # (N, H, W, 3) uint8
        return {"cameras": cameras, "token_ids": token_ids, "token_valid": token_valid}

    def encode_prefix(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The prefix's device work: per-layer K/V, validity mask and pooled output of the VLM."""
        tokens, valid = self.embed_prefix_inputs(inputs)  # (N, Lp, W), (N, Lp)
        positions = valid.long().cumsum(dim=1).sub(1).clamp(min=0)
        attention_mask = valid[:, None, None, :].expand(-1, 1, tokens.shape[1], -1)
        position_embeddings = self.language_model.rotary_emb(tokens, positions)
        recorded = [LayerKV() for _ in self.language_model.layers]
        hidden = tokens
        for layer, cache in zip(self.language_model.layers, recorded):
            hidden = layer(
                hidden,
                attention_mask=attention_mask,
                position_ids=positions,
                past_key_values=cache,
                position_embeddings=position_embeddings,
            )
        hidden = self.language_model.norm(hidden)
        return {
            "prefix_keys": [cache.key for cache in recorded],  # (N, kv_heads, Lp, head_dim) each
            "prefix_values": [cache.value for cache in recorded],
            "prefix_valid": valid,
            "pooled": masked_mean(hidden, valid),
        }

    def embed_prefix(self, obs: Obs) -> tuple[torch.Tensor, torch.Tensor]:
        """[image tokens of each camera; language tokens] (N, Lp, W) and their validity (N, Lp) bool."""
        return self.embed_prefix_inputs(self.prefix_inputs(obs))

    def embed_prefix_inputs(self, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, device, dtype = self.config, self.device, self.compute_dtype
        cameras = inputs["cameras"]
        pixels = torch.cat([images_to_model_input(c, cfg.image_size, dtype, device) for c in cameras])
        patches = self.vision_tower(pixel_values=pixels).last_hidden_state  # (C * N, P, Dv)
        image_tokens = self.multi_modal_projector(patches)
        batch = cameras[0].shape[0]
        image_tokens = image_tokens.reshape(len(cameras), batch, -1, cfg.vlm_width).transpose(0, 1)
        image_tokens = image_tokens.reshape(batch, -1, cfg.vlm_width)
        token_valid = inputs["token_valid"]
        text_tokens = self.language_model.embed_tokens(inputs["token_ids"])  # Gemma scales by sqrt(width)
        image_valid = torch.ones(image_tokens.shape[:2], dtype=torch.bool, device=device)
        return torch.cat([image_tokens, text_tokens], dim=1), torch.cat([image_valid, token_valid], dim=1)

    def predict_velocity(
        self, context: dict[str, Any], x: torch.Tensor, tau: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Action expert pass over [state token; action-time tokens] attending to the cached prefix."""
        suffix = self.embed_suffix(context["state"], x, tau)  # (n, 1 + chunk, We)
        prefix_valid = context["prefix_valid"]
        batch, suffix_len = suffix.shape[:2]
        positions = prefix_valid.sum(dim=1, keepdim=True) + torch.arange(suffix_len, device=suffix.device)
        prefix_part = prefix_valid[:, None, None, :].expand(-1, 1, suffix_len, -1)
        suffix_part = suffix_block_mask(suffix_len - 1, suffix.device).expand(batch, 1, -1, -1)
        attention_mask = torch.cat([prefix_part, suffix_part], dim=-1)
        position_embeddings = self.language_model.rotary_emb(suffix, positions)
        prefixes = zip(context["prefix_keys"], context["prefix_values"])
        hidden = suffix
        for layer, prefix in zip(self.action_expert.layers, prefixes):
            hidden = layer(
                hidden,
                attention_mask=attention_mask,
                position_ids=positions,
                past_key_values=LayerKV(prefix),
                position_embeddings=position_embeddings,
            )
        features = self.action_expert.norm(hidden)[:, 1:]  # the action tokens
        return self.action_out_proj(features).float(), features

    def embed_suffix(self, state: torch.Tensor, x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """State token + action tokens fused with the flow time by openpi's action-time MLP."""
        cfg, dtype = self.config, self.compute_dtype
        state_token = self.state_proj(state.to(dtype))[:, None]
        action_embedding = self.action_in_proj(x.to(dtype))
        time_embedding = sincos_time_embedding(tau, cfg.expert_width, cfg.time_min_period, cfg.time_max_period)
        time_embedding = time_embedding.to(dtype)[:, None].expand_as(action_embedding)
        fused = self.action_time_mlp_in(torch.cat([action_embedding, time_embedding], dim=-1))
        action_tokens = self.action_time_mlp_out(F.silu(fused))
        return torch.cat([state_token, action_tokens], dim=1)
