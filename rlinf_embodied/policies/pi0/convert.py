"""Convert a local pi0 checkpoint in the PyTorch layout of LeRobot (`lerobot/pi0`) or openpi into a
save_pretrained directory of this package.

Upstream layout (model.safetensors, optionally sharded with an index):

    [model.]paligemma_with_expert.paligemma.model.vision_tower.vision_model.*   -> vision_tower.*
    [model.]paligemma_with_expert.paligemma.model.multi_modal_projector.linear.* -> multi_modal_projector.*
    [model.]paligemma_with_expert.paligemma.model.language_model.*              -> language_model.*
    [model.]paligemma_with_expert.gemma_expert.model.*                          -> action_expert.*
    [model.]state_proj / action_in_proj / action_out_proj / action_time_mlp_{in,out}  (same names)

The leading `model.` is LeRobot's (openpi's own PyTorch port has none). Older LeRobot releases nest
`paligemma.vision_tower`, `paligemma.multi_modal_projector` and `paligemma.language_model.model`
(transformers < 4.52 PaliGemma); both are accepted. `lm_head` weights are tied to the token
embedding and dropped. Normalisation statistics come from, in this order: an explicit openpi
`norm_stats.json`, one inside the source directory (e.g. assets/<robot>/norm_stats.json),
LeRobot's normaliser buffers in the weights (`normalize_inputs.buffer_observation_state.mean`, ...),
or LeRobot's processor files (`policy_preprocessor*normalizer_processor.safetensors`).

    python -m rlinf_embodied.policies.pi0.convert SRC DST [--tokenizer DIR] [--norm-stats FILE] [--overwrite]
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os

import torch

from ..flow.convert_utils import (
    add_output_arguments,
    check_converter_paths,
    check_tokenizer_path,
    finish_conversion,
    load_safetensors_dir,
    preset_settings,
    save_converted,
    stats_to_bounds,
    unknown_keys_error,
)
from ..flow.utils import skip_weight_init
from .configuration import PI0_PRESETS, Pi0Config
from .modeling import Pi0Policy

logger = logging.getLogger(__name__)

# (upstream prefix after the optional leading "model.", our prefix); the first match wins.
KEY_PREFIXES: list[tuple[str, str]] = [
    ("paligemma_with_expert.paligemma.model.vision_tower.", "vision_tower."),
    ("paligemma_with_expert.paligemma.vision_tower.", "vision_tower."),
    ("paligemma_with_expert.paligemma.model.multi_modal_projector.linear.", "multi_modal_projector."),
    ("paligemma_with_expert.paligemma.multi_modal_projector.linear.", "multi_modal_projector."),
    ("paligemma_with_expert.paligemma.model.language_model.", "language_model."),
    ("paligemma_with_expert.paligemma.language_model.model.", "language_model."),
    ("paligemma_with_expert.gemma_expert.model.", "action_expert."),
    ("state_proj.", "state_proj."),
    ("action_in_proj.", "action_in_proj."),
    ("action_out_proj.", "action_out_proj."),
    ("action_time_mlp_in.", "action_time_mlp_in."),
    ("action_time_mlp_out.", "action_time_mlp_out."),
]
LM_HEAD_KEYS = (
    "paligemma_with_expert.paligemma.lm_head.weight",
    "paligemma_with_expert.paligemma.language_model.lm_head.weight",
)
DROPPED_PREFIXES = (
    "paligemma_with_expert.gemma_expert.lm_head.",
    "normalize_inputs.",
    "normalize_targets.",
    "unnormalize_outputs.",
)
EMBED_KEY = "language_model.embed_tokens.weight"


def map_lerobot_key(key: str, nested_vision_model: bool) -> str | None:
    """Our key for an upstream key; None for keys that are dropped (tied heads, buffers, stats)."""
    key = key.removeprefix("model.")
    if key in LM_HEAD_KEYS or key.startswith(DROPPED_PREFIXES) or key.endswith("inv_freq"):
        return None
    for upstream, ours in KEY_PREFIXES:
        if key.startswith(upstream):
            mapped = ours + key[len(upstream) :]
            if ours == "vision_tower." and not nested_vision_model:
                mapped = "vision_tower." + mapped[len("vision_tower.") :].removeprefix("vision_model.")
            return mapped
    raise unknown_keys_error("pi0", [key])


def convert_state_dict(upstream: dict[str, torch.Tensor], nested_vision_model: bool) -> dict[str, torch.Tensor]:
    state = {}
    for key, value in upstream.items():
        mapped = map_lerobot_key(key, nested_vision_model)
        if mapped is not None:
            state[mapped] = value
    if EMBED_KEY not in state:  # PaliGemma ties the embedding to lm_head; some exports keep only the head
        for key in upstream:
            if key.removeprefix("model.") in LM_HEAD_KEYS:
                state[EMBED_KEY] = upstream[key]
    return state


def config_from_lerobot(src: str) -> dict:
    """Config overrides from LeRobot's config.json (chunk, padding, steps, tokens, I/O dims)."""
    path = os.path.join(src, "config.json")
    if not os.path.isfile(path):
        logger.warning("%s has no config.json; using the preset's settings", src)
        return {}
    with open(path) as f:
        upstream = json.load(f)
    if upstream.get("type", "pi0") != "pi0":
        raise ValueError(f"{src!r} holds a {upstream.get('type')!r} policy, not pi0")
    for field, expected in (("paligemma_variant", "gemma_2b"), ("action_expert_variant", "gemma_300m")):
        if upstream.get(field, expected) not in (expected, expected + "_lora"):
            raise ValueError(f"{field}={upstream[field]!r} is not supported (expected {expected})")
    overrides = {}
    renames = {
        "chunk_size": "action_chunk",
        "max_action_dim": "max_action_dim",
        "max_state_dim": "max_state_dim",
        "num_steps": "num_denoise_steps",
        "num_inference_steps": "num_denoise_steps",
        "tokenizer_max_length": "max_token_len",
    }
    for theirs, ours in renames.items():
        if theirs in upstream:
            overrides[ours] = int(upstream[theirs])
    resolution = upstream.get("image_resolution") or upstream.get("resize_imgs_with_padding")
    if resolution:
        overrides["image_size"] = int(resolution[0])
    action_feature = (upstream.get("output_features") or {}).get("action")
    if action_feature:
        overrides["action_dim"] = int(action_feature["shape"][0])
    state_feature = (upstream.get("input_features") or {}).get("observation.state")
    if state_feature:
        overrides["state_dim"] = int(state_feature["shape"][0])
    return overrides


def find_norm_stats(src: str, upstream: dict[str, torch.Tensor], norm_stats_path: str | None) -> dict:
    """{"state": stats, "actions": stats} from the first source that has them (see module docstring)."""
    candidates = [norm_stats_path] if norm_stats_path else []
    candidates += sorted(glob.glob(os.path.join(src, "**", "norm_stats.json"), recursive=True))
    for path in candidates:
        with open(path) as f:
            data = json.load(f)
        return data.get("norm_stats", data)
    stats = _stats_from_tensors(
        upstream, "normalize_inputs.buffer_observation_state.", "unnormalize_outputs.buffer_action."
    )
    if stats:
        return stats
    from safetensors.torch import load_file

    processor_state: dict[str, torch.Tensor] = {}
    for path in sorted(glob.glob(os.path.join(src, "*normalizer_processor*.safetensors"))):
        processor_state.update(load_file(path))
    return _stats_from_tensors(processor_state, "observation.state.", "action.")


def _stats_from_tensors(tensors: dict[str, torch.Tensor], state_prefix: str, action_prefix: str) -> dict:
    plain = {key.removeprefix("model."): value for key, value in tensors.items()}
    stats = {}
    for name, prefix in (("state", state_prefix), ("actions", action_prefix)):
        entry = {key[len(prefix) :]: value for key, value in plain.items() if key.startswith(prefix)}
        if entry:
            stats[name] = entry
    return stats


def check_dims_match_config(saved: dict, overrides: dict, src: str) -> None:
    """An action_dim / state_dim override must equal the width LeRobot's config.json gives its features: another
    width would cut the checkpoint's statistics (and the env's actions) to the wrong dimensions."""
    for key in ("action_dim", "state_dim"):
        if key in overrides and key in saved and overrides[key] != saved[key]:
            raise ValueError(
                f"{key}={overrides[key]} (--{key.replace('_', '-')}) but {os.path.join(src, 'config.json')} gives "
                f"the checkpoint's {key.split('_')[0]} feature {saved[key]} dimensions: drop the override, or pass "
                f"{saved[key]}"
            )


def convert_pi0(
    src: str,
    dst: str | None = None,
    *,
    size: str = "pi0-3b",
    tokenizer_path: str | None = None,
    norm_stats_path: str | None = None,
    norm_mode: str = "mean_std",
    **overrides,
) -> Pi0Policy:
    """Read an upstream pi0 directory, return the Pi0Policy and (if dst) save_pretrained it to dst.

    The architecture comes from the size preset (LeRobot's config only names the Gemma variants),
    with chunk/padding/steps/I-O dims from config.json; `overrides` win over both. Every upstream
    tensor must land on a parameter of the same shape, and every parameter must be filled.
    """
    check_tokenizer_path(tokenizer_path)
    preset = preset_settings(PI0_PRESETS, size)
    upstream = load_safetensors_dir(src, skip=("processor",))
    saved = config_from_lerobot(src)
    check_dims_match_config(saved, overrides, src)
    settings = {**preset, **saved, **overrides}
    stats = find_norm_stats(src, upstream, norm_stats_path)
    dims = Pi0Config.from_dict(settings)
    if dims.vision_stem != "patch":
        raise ValueError(
            f"vision_stem={dims.vision_stem!r}: upstream pi0 checkpoints hold SigLIP's patchify convolution; "
            "convert with vision_stem='patch' (the conv stem is for towers trained from scratch)"
        )
    bounds = {}
    if "actions" in stats:
        bounds |= dict(
            zip(("action_low", "action_high"), stats_to_bounds(stats["actions"], norm_mode, dims.action_dim, "action"))
        )
    if "state" in stats and dims.state_dim:
        bounds |= dict(
            zip(("state_low", "state_high"), stats_to_bounds(stats["state"], norm_mode, dims.state_dim, "state"))
        )
    settings = {**settings, **bounds, **overrides}  # explicit overrides win
    if not stats:
        logger.warning("no normalisation statistics found in %s: actions and states pass through unnormalised", src)
    with skip_weight_init():
        policy = Pi0Policy(Pi0Config.from_dict(settings), apply_lora=False)
    nested = any(k.startswith("vision_tower.vision_model.") for k in policy.state_dict())
    return finish_conversion(policy, convert_state_dict(upstream, nested), src, tokenizer_path, dst)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_output_arguments(parser)
    parser.add_argument("--size", default="pi0-3b", choices=sorted(PI0_PRESETS))
    parser.add_argument("--tokenizer", default=None, help="local directory with the PaliGemma tokenizer")
    parser.add_argument("--norm-stats", default=None, help="openpi norm_stats.json")
    parser.add_argument("--norm-mode", default="mean_std", choices=["mean_std", "quantile", "min_max"])
    parser.add_argument("--action-dim", type=int, default=None)
    args = parser.parse_args(argv)
    check_converter_paths(parser, args, "pi0")
    extra = {} if args.action_dim is None else {"action_dim": args.action_dim}
    policy = convert_pi0(
        args.src,
        None,
        size=args.size,
        tokenizer_path=args.tokenizer,
        norm_stats_path=args.norm_stats,
        norm_mode=args.norm_mode,
        **extra,
    )
    save_converted(policy, args.dst, args.overwrite)


if __name__ == "__main__":
    main()
