"""GR00T-N1.5: an Eagle-style VLM backbone read at an intermediate layer, and a DiT flow-matching action head.

Backbone: SigLIP patches -> pixel shuffle (x0.5 per side) -> MLP connector -> Qwen3, whose first
`select_layer` (12) layers are all that is built; the final-normed output of that layer is the
VLM representation, as GR00T-N1.5 uses it. The VLM sequence is [image tokens of each camera;
instruction tokens] (right-padded); GR00T's chat template around them is left out.

Action head: vlln (LayerNorm) + vl_self_attention over the VLM tokens, then a DiT over
[state token; learned future tokens; action tokens] cross-attending to them (dit.py).

Time convention: GR00T's own inside this folder -- t in [0, 1] with t = 1 the data,
x_t = (1 - t) * noise + t * action, the network predicts v = action - noise from the bucketed
time floor(t * 1000), and training draws t = (s - Beta(1.5, 1)) / s. The shared RL code (flow/)
works in openpi's tau convention (tau = 1 noise); `predict_velocity` converts: t = 1 - tau (the
same x), u = -v. Inference then matches GR00T's Euler loop x += v / K with t = 0, 1/K, ...

Value head: masked mean of the action head's processed VLM tokens (after vl_self_attention).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Qwen3Config, Qwen3Model, SiglipVisionConfig, SiglipVisionModel

from ..base import Obs
from ..common.imitation import as_action_chunk, padded_rows_mean
from ..flow.heads import masked_mean
from ..flow.policy import FlowPolicy
from ..flow.processing import images_to_model_input, pad_last_dim, tokenize_instructions
from .configuration import GR00T_PRESETS, Gr00tConfig
from .dit import DiT, SelfAttentionTransformer


class TwoLayerMLP(nn.Module):
    """GR00T's state encoder / action decoder for one embodiment: Linear -> ReLU -> Linear."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int):
        super().__init__()
        self.layer1 = nn.Linear(input_dim, hidden_dim)
        self.layer2 = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer2(F.relu(self.layer1(x)))


def action_time_sinusoid(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """GR00T's action-encoder time encoding: (n,) bucketed times -> (n, dim) [sin, cos]."""
    half = dim // 2
    exponent = -torch.arange(half, dtype=torch.float32, device=timesteps.device) * (math.log(10000.0) / half)
    angles = timesteps.float()[:, None] * exponent.exp()[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class ActionEncoder(nn.Module):
    """Noisy action + flow time -> action tokens: W3(swish(W2([W1 a; sinusoid(t)])))."""

    def __init__(self, action_dim: int, width: int):
        super().__init__()
        self.W1 = nn.Linear(action_dim, width)
        self.W2 = nn.Linear(2 * width, width)
        self.W3 = nn.Linear(width, width)

    def forward(self, actions: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        action_embedding = self.W1(actions)  # (n, chunk, width)
        time_embedding = action_time_sinusoid(timesteps, action_embedding.shape[-1]).to(action_embedding.dtype)
        time_embedding = time_embedding[:, None].expand_as(action_embedding)
        return self.W3(F.silu(self.W2(torch.cat([action_embedding, time_embedding], dim=-1))))


def pixel_shuffle(patches: torch.Tensor, ratio: float) -> torch.Tensor:
    """Eagle's space-to-depth: (n, P, C) on a square grid -> (n, P * ratio^2, C / ratio^2), same ordering."""
    n, num_patches, channels = patches.shape
    side = int(num_patches**0.5)
    x = patches.reshape(n, side, side, channels)
    x = x.reshape(n, side, int(side * ratio), int(channels / ratio)).permute(0, 2, 1, 3)
    x = x.reshape(n, int(side * ratio), int(side * ratio), int(channels / ratio**2)).permute(0, 2, 1, 3)
    return x.reshape(n, -1, x.shape[-1])


def siglip_config(cfg: Gr00tConfig) -> SiglipVisionConfig:
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


def qwen3_config(cfg: Gr00tConfig) -> Qwen3Config:
    config = Qwen3Config(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.llm_hidden_size,
        intermediate_size=cfg.llm_intermediate_size,
        num_hidden_layers=cfg.select_layer,
        num_attention_heads=cfg.llm_num_heads,
        num_key_value_heads=cfg.llm_num_kv_heads,
        head_dim=cfg.llm_head_dim,
        max_position_embeddings=40960,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.llm_rope_theta},
        tie_word_embeddings=True,
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
    )
    config._attn_implementation = "sdpa"
    return config


class Gr00tPolicy(FlowPolicy):
    name = "gr00t"
    config_class = Gr00tConfig
    presets = GR00T_PRESETS
    config: Gr00tConfig

    def __init__(self, config: Gr00tConfig, apply_lora: bool = True):
        super().__init__(config, apply_lora)
        cfg = config
        shuffled_dim = cfg.vision_hidden_size * round(1 / cfg.downsample_ratio) ** 2
        self.vision_tower = SiglipVisionModel(siglip_config(cfg))
        self.mlp1 = nn.Sequential(
            nn.LayerNorm(shuffled_dim),
            nn.Linear(shuffled_dim, cfg.llm_hidden_size),
            nn.GELU(),
            nn.Linear(cfg.llm_hidden_size, cfg.llm_hidden_size),
        )
        self.language_model = Qwen3Model(qwen3_config(cfg))
        self.eagle_linear = (
            nn.Linear(cfg.llm_hidden_size, cfg.backbone_project_to_dim) if cfg.backbone_project_to_dim else None
        )
        self.vlln = nn.LayerNorm(cfg.backbone_width)
        self.vl_self_attention = SelfAttentionTransformer(
            cfg.vl_self_attention_layers, cfg.vl_self_attention_heads, cfg.vl_self_attention_head_dim
        )
        self.state_encoder = TwoLayerMLP(cfg.max_state_dim, cfg.hidden_size, cfg.input_embedding_dim)
        self.action_encoder = ActionEncoder(cfg.max_action_dim, cfg.input_embedding_dim)
        self.action_decoder = TwoLayerMLP(cfg.hidden_size, cfg.hidden_size, cfg.max_action_dim)
        self.future_tokens = nn.Embedding(cfg.num_target_vision_tokens, cfg.input_embedding_dim)
        self.position_embedding = nn.Embedding(cfg.max_seq_len, cfg.input_embedding_dim)
        self.dit = DiT(cfg.dit_layers, cfg.dit_heads, cfg.dit_head_dim, cfg.hidden_size, cfg.backbone_width)
        self.finish_init(pooled_dim=cfg.backbone_width, action_feature_dim=cfg.hidden_size)

    # ---- FlowPolicy contract ------------------------------------------------------------------------
    def state_input_layer(self) -> nn.Linear:
        return self.state_encoder.layer1

    def vision_modules(self) -> list[nn.Module]:
        return [self.vision_tower, self.mlp1]

    def backbone_language_model(self) -> nn.Module:
        return self.language_model

    def fsdp_units(self) -> list[nn.Module]:
        vision = getattr(self.vision_tower, "vision_model", self.vision_tower)  # transformers 4.x nests it
        return [
            *vision.encoder.layers,
            *self.language_model.layers,
            *self.vl_self_attention.transformer_blocks,
            *self.dit.transformer_blocks,
        ]

    def checkpointing_models(self) -> list[nn.Module]:
        return [self.vision_tower, self.language_model, self.vl_self_attention, self.dit]

    def encode_observation(self, obs: Obs) -> dict[str, Any]:
        """VLM tokens processed by vlln + vl_self_attention, their mask, the state token, the pooled vector."""
        tokens, valid = self.backbone_features(obs)
        tokens = self.vl_self_attention(self.vlln(tokens), valid)
        state = self.normalized_state(obs).to(self.compute_dtype)
        return {
            "vl_tokens": tokens,  # (N, L, backbone_width)
            "vl_valid": valid,  # (N, L) bool
            "state_tokens": self.state_encoder(state)[:, None],  # (N, 1, input_embedding_dim)
            "pooled": masked_mean(tokens, valid),
        }

    def backbone_features(self, obs: Obs) -> tuple[torch.Tensor, torch.Tensor]:
        """Eagle: [image tokens; text tokens] through the truncated Qwen3 -> (N, L, W), valid (N, L)."""
        cfg, device, dtype = self.config, self.device, self.compute_dtype
        cameras = self.camera_images(obs)
        pixels = torch.cat([images_to_model_input(c, cfg.image_size, dtype, device) for c in cameras])
        patches = self.vision_tower(pixel_values=pixels).last_hidden_state  # (C * N, P, Dv)
        image_tokens = self.mlp1(pixel_shuffle(patches, cfg.downsample_ratio))  # (C * N, T, H)
        batch = cameras[0].shape[0]
        image_tokens = image_tokens.reshape(len(cameras), batch, -1, cfg.llm_hidden_size).transpose(0, 1)
        image_tokens = image_tokens.reshape(batch, -1, cfg.llm_hidden_size)
        token_ids, token_valid = tokenize_instructions(
            self.tokenizer, list(obs["instruction"]), cfg.max_token_len, device, self.prompt_trim()
        )
        text_tokens = self.language_model.embed_tokens(token_ids)
        image_valid = torch.ones(image_tokens.shape[:2], dtype=torch.bool, device=device)
        valid = torch.cat([image_valid, token_valid], dim=1)
        hidden = self.language_model(
            inputs_embeds=torch.cat([image_tokens, text_tokens], dim=1), attention_mask=valid.long()
        ).last_hidden_state
        hidden = torch.where(valid[..., None], hidden, 0.0)  # padding rows carry nothing downstream
        if self.eagle_linear is not None:
            hidden = self.eagle_linear(hidden)
        return hidden, valid

    def predict_velocity(
        self, context: dict[str, Any], x: torch.Tensor, tau: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """tau convention in/out (see module docstring): t = 1 - tau, u = -v."""
        buckets = self.config.num_timestep_buckets
        # The small epsilon keeps grid times such as t = 0.25 in their bucket despite float rounding.
        timesteps = torch.floor((1.0 - tau.double()) * buckets + 1e-6).long()
        velocity, features = self.gr00t_velocity(context, x, timesteps)
        return -velocity.float(), features

    def gr00t_velocity(
        self, context: dict[str, Any], x: torch.Tensor, timesteps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """GR00T's action head: x_t (n, chunk, A_pad), bucketed t (n,) -> v = action - noise, DiT features."""
        dtype, chunk = self.compute_dtype, x.shape[1]
        action_tokens = self.action_encoder(x.to(dtype), timesteps)
        action_tokens = action_tokens + self.position_embedding.weight[:chunk][None]
        future = self.future_tokens.weight[None].expand(x.shape[0], -1, -1)
        tokens = torch.cat([context["state_tokens"], future, action_tokens], dim=1)
        features = self.dit(tokens, context["vl_tokens"], context["vl_valid"], timesteps)[:, -chunk:]
        return self.action_decoder(features), features

    def sft_loss(
        self,
        obs: Obs,
        actions: torch.Tensor,
        is_pad: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        t: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """GR00T's flow-matching loss: t = (s - Beta(1.5, 1)) / s, x_t = (1 - t) noise + t a, target a - noise,
        on the used action dims; mean squared error over the chunk rows `is_pad` (N, chunk) does not mark.
        `noise` (N, chunk, max_action_dim) and `t` (N,) may be fixed by the caller."""
        cfg = self.config
        context = self.encode_observation(obs)
        actions = as_action_chunk(actions, cfg.action_chunk, cfg.action_dim, self.name, self.device)
        target = pad_last_dim(self.normalize_actions(actions), cfg.max_action_dim)
        noise = torch.randn_like(target) if noise is None else noise.to(target)
        if t is None:
            beta = torch.distributions.Beta(torch.tensor(cfg.noise_beta_alpha), torch.tensor(cfg.noise_beta_beta))
            t = (cfg.noise_s - beta.sample((target.shape[0],))) / cfg.noise_s
        t = t.to(target)
        x_t = (1.0 - t[:, None, None]) * noise + t[:, None, None] * target
        velocity, _ = self.gr00t_velocity(context, x_t, (t * cfg.num_timestep_buckets).long())
        error = (velocity.float() - (target - noise))[..., : cfg.action_dim]
        return padded_rows_mean(error.square(), is_pad)
