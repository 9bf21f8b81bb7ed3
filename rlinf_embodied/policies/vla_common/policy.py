"""PrismaticVLAPolicy: the Prismatic VLM (fused vision, projector, Llama) under the RL interface.

OpenVLA (autoregressive action tokens) and OpenVLA-OFT (parallel decoding of a chunk) subclass it and
implement `act` / `evaluate`. This class builds the network, turns observations into the LLM input
sequence, runs the LLM with explicit boolean masks, and owns checkpoints, LoRA, FSDP units and
activation checkpointing.

Input sequence per row (upstream order: image tokens right after <BOS>):

    [<BOS>] [image patches of each camera] [extra tokens, e.g. OFT's proprio] [pad ... pad prompt tokens]

The prompt tokens are left-padded *inside* the sequence, so the last position is the last prompt token
of every row; padding is masked out as keys, and positions count valid tokens only, so a padded row
computes exactly what the unpadded sequence would.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from ..base import (
    Obs,
    Policy,
    check_saved_field_types,
    check_weight_shapes,
    hidden_state_dims,
    checkpoint_config_path,
    read_checkpoint_weights,
    read_json_file,
    reject_value_head_overrides,
    upstream_layout_error,
)
from ..common.tokenizer import load_tokenizer
from ..flow.heads import ValueHead
from ..flow.policy import enable_activation_checkpointing
from ..flow.utils import skip_weight_init
from .action_tokenizer import ActionTokenizer
from .config import PROMPT_TEMPLATE, PrismaticVLAConfig
from .vision import FusedVisionBackbone, PrismaticProjector, match_dino_attention_names, vit_layers

LORA_MARKER = "lora_"
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
UPSTREAM_ARCHITECTURE = "OpenVLAForActionPrediction"
DEFAULT_INSTRUCTIONS = ("pick up the red cube", "open the top drawer", "put the bowl on the plate")


def llama_config(cfg: PrismaticVLAConfig) -> LlamaConfig:
    config = LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        rms_norm_eps=cfg.rms_norm_eps,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        pad_token_id=cfg.pad_token_id,
        bos_token_id=None,
        eos_token_id=None,
        tie_word_embeddings=False,
    )
    config._attn_implementation = "sdpa"  # takes our boolean masks as they are
    return config


def causal_mask(valid: torch.Tensor) -> torch.Tensor:
    """valid (N, L) bool -> (N, 1, L, L) bool: causal, padding masked as keys (row 0 is always valid)."""
    length = valid.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=valid.device).tril()
    return (causal[None] & valid[:, None, :])[:, None]


def valid_positions(valid: torch.Tensor) -> torch.Tensor:
    """Position ids that count valid tokens only: (N, L) long."""
    return valid.long().cumsum(dim=1).sub(1).clamp(min=0)


def prompt_ids(tokenizer, cfg: PrismaticVLAConfig, instruction: str) -> list[int]:
    """Token ids of the OpenVLA prompt around `instruction` (after <BOS>); longer than max_token_len: error."""
    text = instruction.strip().replace("\n", " ")
    prompt = PROMPT_TEMPLATE.format(instruction=text.lower() if cfg.lowercase_instruction else text)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if cfg.empty_token_id is not None and (not ids or ids[-1] != cfg.empty_token_id):
        ids.append(cfg.empty_token_id)
    if len(ids) > cfg.max_token_len:
        raise ValueError(
            f"prompt for instruction {text!r} has {len(ids)} tokens > max_token_len={cfg.max_token_len}; "
            "raise the policy's max_token_len (policy.overrides.max_token_len=...)"
        )
    return ids


class PrismaticVLAPolicy(Policy):
    """Base of OpenVLA / OpenVLA-OFT; subclasses add heads in __init__ and call finish_init() last."""

    config: PrismaticVLAConfig
    # Trainable next to LoRA adapters (prefixes of parameter names); upstream checkpoints may lack them.
    head_prefixes: ClassVar[tuple[str, ...]] = ("value_head.",)
    default_rl_lr = 1e-5  # a 7B pre-trained VLA; the fresh value head learns at default_value_lr
    default_value_lr = 1e-4
    normalizes_with_dataset_stats = True

    def __init__(self, config: PrismaticVLAConfig, apply_lora: bool = True):
        super().__init__(config)
        cfg = config
        self.tokenizer = load_tokenizer(None)
        self.action_tokenizer = ActionTokenizer(cfg.n_action_bins, cfg.action_token_vocab_size)
        self.vision_backbone = FusedVisionBackbone(cfg)
        self.projector = PrismaticProjector(cfg.vision_dim, cfg.hidden_size)
        self.language_model = LlamaForCausalLM(llama_config(cfg))
        self.value_head = ValueHead(cfg.hidden_size, cfg.value_hidden_dim) if cfg.add_value_head else None
        self._apply_lora_on_init = apply_lora
        self._prompt_cache: tuple[Any, dict] = (None, {})  # (tokenizer, {(instruction, settings...): ids})

    def finish_init(self) -> None:
        """Freezing, LoRA and activation checkpointing; subclasses call it after adding their heads."""
        cfg = self.config
        if cfg.freeze_vision_encoder:
            self.vision_backbone.requires_grad_(False)
        if cfg.lora_rank > 0 and self._apply_lora_on_init:
            self.apply_lora()
        if cfg.gradient_checkpointing:
            for model in (self.vision_backbone.featurizer, self.vision_backbone.fused_featurizer, self.language_model):
                enable_activation_checkpointing(model)

    def apply_lora(self) -> None:
        """peft LoRA on the Llama projections; everything but the adapters and the RL heads freezes."""
        from peft import LoraConfig, inject_adapter_in_model

        cfg = self.config
        lora = LoraConfig(
            r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=LORA_TARGETS
        )
        inject_adapter_in_model(lora, self.language_model.model)
        for name, param in self.named_parameters():
            param.requires_grad_(LORA_MARKER in name or name.startswith(self.head_prefixes))

    # ---- properties -------------------------------------------------------------------------------
    @property
    def has_critic(self) -> bool:
        return self.value_head is not None

    @property
    def compute_dtype(self) -> torch.dtype:
        if self.forced_compute_dtype is not None:
            return self.forced_compute_dtype
        return self.language_model.model.embed_tokens.weight.dtype

    def fsdp_units(self) -> list[nn.Module]:
        """Transformer blocks of both ViTs and of Llama, to be sharded one by one."""
        return [
            *vit_layers(self.vision_backbone.featurizer),
            *vit_layers(self.vision_backbone.fused_featurizer),
            *self.language_model.model.layers,
        ]

    # ---- observations -----------------------------------------------------------------------------
    def camera_images(self, obs: Obs) -> list[torch.Tensor]:
        keys = ["rgb", "wrist_rgb"][: self.config.num_images]
        cameras = []
        for key in keys:
            if obs.get(key) is None:
                raise KeyError(
                    f"{self.name} needs obs[{key!r}] ((N, H, W, 3) uint8) with num_images={self.config.num_images}; "
                    f"got keys {sorted(obs)}"
                )
            image = torch.as_tensor(obs[key])
            if image.ndim != 4 or image.shape[-1] != 3:
                raise ValueError(f"obs[{key!r}] must be (N, H, W, 3) uint8, got shape {tuple(image.shape)}")
            cameras.append(image)
        return cameras

    def example_obs(self, batch_size: int) -> Obs:
        """Random uint8 cameras at the model's resolution, cycled instructions, a random state if used."""
        cfg = self.config
        generator = torch.Generator(device="cpu").manual_seed(batch_size)
        shape = (batch_size, cfg.image_size, cfg.image_size, 3)
        obs: Obs = {
            "rgb": torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator, device="cpu"),
            "instruction": [DEFAULT_INSTRUCTIONS[i % len(DEFAULT_INSTRUCTIONS)] for i in range(batch_size)],
        }
        if cfg.num_images > 1:
            obs["wrist_rgb"] = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator, device="cpu")
        if cfg.state_dim:
            obs["state"] = torch.randn(batch_size, cfg.state_dim, generator=generator, device="cpu")
        return obs

    def prompt_token_ids(self, instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prompt ids after <BOS> (N, T) and their validity (N, T) bool."""
        cfg = self.config
        if self._prompt_cache[0] is not self.tokenizer:  # a loaded checkpoint brings its own tokenizer
            self._prompt_cache = (self.tokenizer, {})
        cache = self._prompt_cache[1]  # a batch repeats a few instructions: tokenize each once
        settings = (cfg.max_token_len, cfg.lowercase_instruction, cfg.empty_token_id)
        for text in set(instructions):
            if (text, *settings) not in cache:
                cache[(text, *settings)] = prompt_ids(self.tokenizer, cfg, text)
        rows = [cache[(text, *settings)] for text in instructions]
        length = max(len(ids) for ids in rows)
        token_ids = torch.full((len(rows), length), cfg.pad_token_id, dtype=torch.long)
        valid = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, ids in enumerate(rows):
            if ids:
                token_ids[i, length - len(ids) :] = torch.tensor(ids)
                valid[i, length - len(ids) :] = True
        return token_ids.to(self.device), valid.to(self.device)

    def extra_prefix_tokens(self, obs: Obs) -> torch.Tensor | None:
        """(N, E, W) tokens placed after the image patches (OFT's proprio token); none by default."""
        return None

    def embed_prompt(self, obs: Obs) -> tuple[torch.Tensor, torch.Tensor]:
        """Input embeddings (N, L, W) of [BOS, patches, extras, prompt] and their validity (N, L) bool."""
        return self.embed_prompt_inputs(self.prompt_inputs(obs))

    def prompt_inputs(self, obs: Obs) -> dict[str, Any]:
        """The prompt's host work: cameras onto the device (N, H, W, 3) uint8, prompt token ids and validity
        (N, T), and the extra prefix tokens if any; `embed_prompt_inputs` does the rest on the device."""
        if "instruction" not in obs:
            raise KeyError(f"{self.name} needs obs['instruction'] (list[str]); got keys {sorted(obs)}")
        cameras = [camera.to(self.device) for camera in self.camera_images(obs)]
        instructions = list(obs["instruction"])
        if len(instructions) != cameras[0].shape[0]:
            raise ValueError(
                f"obs['instruction'] has {len(instructions)} entries for a batch of {cameras[0].shape[0]} images"
            )
        token_ids, token_valid = self.prompt_token_ids(instructions)
        inputs = {"cameras": cameras, "token_ids": token_ids, "token_valid": token_valid}
        extra = self.extra_prefix_tokens(obs)
        if extra is not None:
            inputs["extra"] = extra
        return inputs

    def embed_prompt_inputs(self, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = self.compute_dtype
        patches = self.projector(self.vision_backbone(inputs["cameras"], dtype))  # (N, C * P, W)
        batch = patches.shape[0]
        token_ids, token_valid = inputs["token_ids"], inputs["token_valid"]
        embed = self.language_model.model.embed_tokens
        bos_id = self.tokenizer.bos_token_id
        bos = embed(torch.full((batch, 1), bos_id, dtype=torch.long, device=patches.device))
        parts = [bos, patches]
        if inputs.get("extra") is not None:
            parts.append(inputs["extra"].to(dtype))
        prefix = torch.cat(parts, dim=1)
        prefix_valid = torch.ones(prefix.shape[:2], dtype=torch.bool, device=prefix.device)
        return torch.cat([prefix, embed(token_ids)], dim=1), torch.cat([prefix_valid, token_valid], dim=1)

    # ---- LLM helpers ------------------------------------------------------------------------------
    def run_layers(
        self, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any = None
    ) -> torch.Tensor:
        """Final normed hidden states (N, L, W) of the Llama decoder under a (N, 1, L, K) bool mask: its layers
        called one by one (what LlamaModel.forward does), with nothing between them that a CUDA graph cannot
        hold (a static cache such as openvla's StaticKVCache, or none)."""
        model = self.language_model.model
        position_embeddings = model.rotary_emb(embeds, positions)
        hidden = embeds
        for layer in model.layers:
            hidden = layer(
                hidden,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=cache is not None,
                position_embeddings=position_embeddings,
            )
        return model.norm(hidden)

    def action_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., W) -> temperature-scaled float32 logits (..., n_bins) over the action tokens only."""
        first = self.action_tokenizer.first_token_id
        weight = self.language_model.lm_head.weight[first : first + self.config.n_action_bins]
        return F.linear(hidden, weight).float() / self.config.temperature

    def values_from_hidden(self, hidden_last: torch.Tensor) -> torch.Tensor | None:
        return None if self.value_head is None else self.value_head(hidden_last)

    # ---- checkpoints ------------------------------------------------------------------------------
    def save_pretrained(self, path: str | os.PathLike, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """config.json + model.safetensors (base class) + the tokenizer, so the directory is self-contained."""
        super().save_pretrained(path, state_dict)
        self.tokenizer.save_pretrained(os.fspath(path))

    @classmethod
    def convert_upstream(cls, path: str, **overrides) -> "PrismaticVLAPolicy":
        raise NotImplementedError

    @classmethod
    def loads_unnamed_config(cls, config_data: dict[str, Any]) -> bool:
        """Only an upstream HF OpenVLA(-OFT) directory, which from_pretrained converts on the fly."""
        return UPSTREAM_ARCHITECTURE in (config_data.get("architectures") or [])

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **overrides) -> "PrismaticVLAPolicy":
        """Load a save_pretrained directory, or convert an upstream HF OpenVLA(-OFT) directory on the fly."""
        path = os.fspath(path)
        data = read_config_json(path)
        if UPSTREAM_ARCHITECTURE in (data.get("architectures") or []):
            return cls.convert_upstream(path, **overrides)
        saved_name = data.pop("policy", None)
        if saved_name is None:
            raise upstream_layout_error(path, cls.name)
        if saved_name != cls.name:
            raise ValueError(f"checkpoint {path!r} holds policy {saved_name!r}, not {cls.name!r}")
        check_saved_field_types(cls.config_class, data, path, overrides)
        config = cls.config_class.from_dict({**data, **overrides})
        reject_value_head_overrides(cls.config_class, config.add_value_head, overrides)
        state = read_checkpoint_weights(path)
        checkpoint_has_lora = any(LORA_MARKER in key for key in state)
        with skip_weight_init():
            model = cls(config, apply_lora=checkpoint_has_lora)
        model.load_checkpoint_state(state, path)
        model.apply_overrides_to_weights(overrides)
        if config.lora_rank > 0 and not checkpoint_has_lora:
            model.apply_lora()  # fresh adapters (B = 0) on the loaded base weights
        model.reveal_state_dims(hidden_state_dims(data, cls.hidden_state_dims_field))
        model.tokenizer = load_tokenizer(path)
        return model

    def load_checkpoint_state(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Strict load, except that heads the checkpoint lacks (upstream has no value head) start fresh. DINOv2's
        attention weights load under either transformers layout (match_dino_attention_names)."""
        state = match_dino_attention_names(state, set(self.state_dict()))
        check_weight_shapes(self.state_dict(), state, source, self.name)
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [key for key in missing if key != "vision_backbone.featurizer.embeddings.mask_token"]
        other_missing = [key for key in missing if not key.startswith(self.head_prefixes)]
        if other_missing or unexpected:
            raise ValueError(
                f"checkpoint {source!r} does not match {self.name}: missing={other_missing[:5]} "
                f"unexpected={unexpected[:5]}"
            )
        for head in sorted({key.split(".")[0] for key in missing}):
            self.reset_head(head)

    def reset_head(self, head: str) -> None:
        """Fresh random weights for a head the checkpoint lacks."""
        if head != "value_head":
            raise ValueError(f"{self.name} cannot initialise missing head {head!r}")
        module = ValueHead(self.config.hidden_size, self.config.value_hidden_dim)
        self.value_head = module.to(self.device, self.compute_dtype)


def read_config_json(path: str) -> dict:
    """config.json of a save_pretrained directory or of an upstream HF checkpoint (converted on the fly, so the
    missing-file error names no converter)."""
    expected = "a save_pretrained directory or an upstream HF OpenVLA checkpoint"
    return read_json_file(checkpoint_config_path(path, None, expected))


def sample_categorical(probs: torch.Tensor) -> torch.Tensor:
    """One class per row of probs (..., C): the exponential race argmax(p / E), E ~ Exp(1) (how torch.multinomial
    draws one sample), with no host sync, so a CUDA graph can hold it."""
    return (probs / torch.empty_like(probs).exponential_()).argmax(-1)
