"""Read an upstream HF OpenVLA checkpoint (`OpenVLAForActionPrediction`, e.g. openvla/openvla-7b) from a local
directory: config, action statistics and the state dict mapped onto PrismaticVLAPolicy's names.

Upstream names (timm featurizers, Prismatic projector, Llama):

    vision_backbone.featurizer.{cls_token, reg_token, pos_embed, patch_embed.proj.*, blocks.i.*, norm.*}
    vision_backbone.fused_featurizer.{pos_embed, patch_embed.proj.*, blocks.i.*, norm.*, attn_pool.*}
    projector.fc1 / fc2 / fc3, language_model.model.*, language_model.lm_head.weight

timm block i: norm1, attn.qkv (fused q|k|v), attn.proj, ls1.scale_factor (LayerScale; `gamma` in plain
timm), norm2, mlp.fc1, mlp.fc2, ls2.scale_factor. The fused qkv is split into q/k/v projections; the last
block and the final norms/pooling head are dropped (features are read at the second-to-last block).
DINOv2-reg has no position embedding for the CLS token (timm `no_embed_class`), so it gets a zero row.
"""

from __future__ import annotations

import logging
import re

import torch

from ..flow.convert_utils import load_safetensors_dir, unknown_keys_error
from .policy import read_config_json

logger = logging.getLogger(__name__)

DINO_BLOCK = {
    "norm1": "norm1",
    "attn.proj": "attention.o_proj",
    "ls1.scale_factor": "layer_scale1.lambda1",
    "ls1.gamma": "layer_scale1.lambda1",
    "norm2": "norm2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    "ls2.scale_factor": "layer_scale2.lambda1",
    "ls2.gamma": "layer_scale2.lambda1",
}
SIGLIP_BLOCK = {
    "norm1": "layer_norm1",
    "attn.proj": "self_attn.out_proj",
    "norm2": "layer_norm2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
BLOCK_KEY = re.compile(r"blocks\.(\d+)\.(.+)\.(weight|bias|scale_factor|gamma)$")
VISION_DROPPED = ("norm.", "fc_norm.", "head.", "attn_pool.")


def num_blocks(state: dict[str, torch.Tensor], prefix: str) -> int:
    indices = {
        int(m.group(1)) for key in state if key.startswith(prefix) and (m := BLOCK_KEY.match(key[len(prefix) :]))
    }
    return max(indices) + 1 if indices else 0


def convert_vit(state: dict[str, torch.Tensor], prefix: str, ours: str, kind: str) -> dict[str, torch.Tensor]:
    """One timm ViT (DINOv2-reg when kind == "dino", SigLIP otherwise) -> transformers names under `ours`."""
    depth = num_blocks(state, prefix)
    block_map, layers = (DINO_BLOCK, "encoder.layer") if kind == "dino" else (SIGLIP_BLOCK, "encoder.layers")
    attn = "attention" if kind == "dino" else "self_attn"
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        block = BLOCK_KEY.match(name)
        if block:
            index, module, param = int(block.group(1)), block.group(2), block.group(3)
            if index == depth - 1:
                continue  # the last block does not feed the second-to-last block's output
            if module == "attn.qkv":
                for proj, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                    out[f"{ours}{layers}.{index}.{attn}.{proj}.{param}"] = part.clone()
                continue
            full = f"{module}.{param}" if param in ("scale_factor", "gamma") else module
            if full not in block_map:
                raise unknown_keys_error("OpenVLA vision", [key])
            suffix = "" if param in ("scale_factor", "gamma") else f".{param}"
            out[f"{ours}{layers}.{index}.{block_map[full]}{suffix}"] = value
        elif name.startswith(VISION_DROPPED):
            continue
        elif name.startswith("patch_embed.proj."):
            target = "embeddings.patch_embeddings.projection." if kind == "dino" else "embeddings.patch_embedding."
            out[ours + target + name.rsplit(".", 1)[1]] = value
        elif name == "pos_embed" and kind == "dino":
            pos = (
                value if value.shape[1] != num_patch_tokens(state, prefix) else torch.cat([value[:, :1] * 0, value], 1)
            )
            out[ours + "embeddings.position_embeddings"] = pos
        elif name == "pos_embed":
            out[ours + "embeddings.position_embedding.weight"] = value[0]
        elif name == "cls_token" and kind == "dino":
            out[ours + "embeddings.cls_token"] = value
        elif name == "reg_token" and kind == "dino":
            out[ours + "embeddings.register_tokens"] = value
        else:
            raise unknown_keys_error("OpenVLA vision", [key])
    if kind == "dino":
        width = out[ours + "embeddings.cls_token"].shape[-1]
        out[ours + "embeddings.mask_token"] = torch.zeros(1, width, dtype=out[ours + "embeddings.cls_token"].dtype)
    return out


def num_patch_tokens(state: dict[str, torch.Tensor], prefix: str) -> int:
    """Patches per image, from the patch embedding and the position table (square images)."""
    pos = state[prefix + "pos_embed"]
    side = int(round(pos.shape[1] ** 0.5))
    return pos.shape[1] if side * side == pos.shape[1] else pos.shape[1] - 1


def convert_prismatic_state(upstream: dict[str, torch.Tensor], siglip_nested: bool) -> dict[str, torch.Tensor]:
    """The whole upstream OpenVLA state dict -> PrismaticVLAPolicy names (no RL heads)."""
    state = convert_vit(upstream, "vision_backbone.featurizer.", "vision_backbone.featurizer.", "dino")
    siglip_prefix = "vision_backbone.fused_featurizer." + ("vision_model." if siglip_nested else "")
    state |= convert_vit(upstream, "vision_backbone.fused_featurizer.", siglip_prefix, "siglip")
    known = ("vision_backbone.featurizer.", "vision_backbone.fused_featurizer.")
    for key, value in upstream.items():
        if key.startswith(known) or key.endswith("rotary_emb.inv_freq"):
            continue
        if key.startswith(("projector.fc", "language_model.model.", "language_model.lm_head.")):
            state[key] = value
        else:
            raise unknown_keys_error("OpenVLA", [key])
    return state


def config_from_upstream(src: str, upstream: dict[str, torch.Tensor]) -> dict:
    """PrismaticVLAConfig fields from config.json (Llama, bins, pad) and the weights (vision widths/depths)."""
    data = read_config_json(src)
    if not data.get("use_fused_vision_backbone", True):
        raise ValueError(f"{src!r}: only the fused DINOv2 + SigLIP backbone (dinosiglip) is supported")
    text = data.get("text_config") or {}
    fields = {
        "vocab_size": "vocab_size",
        "hidden_size": "hidden_size",
        "intermediate_size": "intermediate_size",
        "num_hidden_layers": "num_layers",
        "num_attention_heads": "num_heads",
        "num_key_value_heads": "num_kv_heads",
        "rms_norm_eps": "rms_norm_eps",
        "rope_theta": "rope_theta",
        "max_position_embeddings": "max_position_embeddings",
    }
    settings = {ours: text[theirs] for theirs, ours in fields.items() if theirs in text}
    if "pad_token_id" in data:
        settings["pad_token_id"] = int(data["pad_token_id"])
    if "n_action_bins" in data:
        settings["n_action_bins"] = int(data["n_action_bins"])
    vocab = int(settings.get("vocab_size", upstream["language_model.lm_head.weight"].shape[0]))
    settings["vocab_size"] = vocab
    settings["action_token_vocab_size"] = vocab - int(data.get("pad_to_multiple_of", 0))
    if data.get("image_sizes"):
        settings["image_size"] = int(data["image_sizes"][0])
    for prefix, name in (("vision_backbone.featurizer.", "dino"), ("vision_backbone.fused_featurizer.", "siglip")):
        patch = upstream[prefix + "patch_embed.proj.weight"]  # (width, 3, p, p)
        settings[f"{name}_hidden_size"] = patch.shape[0]
        settings[f"{name}_num_layers"] = num_blocks(upstream, prefix)
        settings[f"{name}_intermediate_size"] = upstream[prefix + "blocks.0.mlp.fc1.weight"].shape[0]
        settings["patch_size"] = patch.shape[-1]
    if "vision_backbone.featurizer.reg_token" in upstream:
        settings["dino_num_register_tokens"] = upstream["vision_backbone.featurizer.reg_token"].shape[1]
    return settings


def select_norm_stats(src: str, unnorm_key: str | None, policy_name: str, extra_stats: dict | None = None) -> dict:
    """The {"action": ..., "proprio": ...} statistics of one dataset from config.json["norm_stats"]; with several
    datasets' the error names `policy_name`'s converter, whose --unnorm-key picks one (a training run's
    policy.overrides cannot: unnorm_key is no config field)."""
    stats = dict(read_config_json(src).get("norm_stats") or {})
    stats |= extra_stats or {}
    if not stats:
        logger.warning("%s has no norm_stats: actions stay in the normalised [-1, 1] range", src)
        return {}
    if unnorm_key is None:
        if len(stats) != 1:
            raise ValueError(
                f"{src!r} has statistics of several datasets, {sorted(stats)}: convert it with the one its actions "
                f"should follow, python -m rlinf_embodied.policies.{policy_name}.convert {src} <dst> --unnorm-key "
                "<dataset>, and load <dst>"
            )
        unnorm_key = next(iter(stats))
    if unnorm_key not in stats:
        raise ValueError(f"unnorm_key={unnorm_key!r} not in the checkpoint's norm_stats; valid: {sorted(stats)}")
    return stats[unnorm_key]


def q99_bounds(stats: dict, what: str) -> tuple[list[float], list[float]]:
    """OpenVLA's BOUNDS_Q99 as (low, high): q01/q99 where mask is true, the identity (-1, 1) elsewhere."""
    for key in ("q01", "q99"):
        if key not in stats:
            raise ValueError(f"{what} statistics have no {key!r} (keys: {sorted(stats)})")
    low, high = [float(v) for v in stats["q01"]], [float(v) for v in stats["q99"]]
    mask = [bool(m) for m in stats.get("mask", [True] * len(low))]
    low = [lo if m else -1.0 for lo, m in zip(low, mask)]
    high = [h if m else 1.0 for h, m in zip(high, mask)]
    high = [h if h > lo else lo + 1.0 for lo, h in zip(low, high)]  # constant dims: avoid dividing by zero
    return low, high


def load_upstream(src: str) -> dict[str, torch.Tensor]:
    return load_safetensors_dir(src)
