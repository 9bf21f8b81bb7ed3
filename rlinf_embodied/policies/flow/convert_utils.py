"""Pieces the pi0 and GR00T converters share: reading upstream weights, turning dataset statistics
into this package's [-1, 1] normalisation bounds, and writing the converted directory."""

from __future__ import annotations

import json
import logging
import os
from typing import Iterable

import torch

from ..common.tokenizer import load_tokenizer

logger = logging.getLogger(__name__)

# How a statistics dict maps to (low, high) with norm = (x - low) / (high - low) * 2 - 1:
#   mean_std: low = mean - std, high = mean + std  ->  norm = (x - mean) / std   (openpi pi0, LeRobot MEAN_STD)
#   quantile: low = q01, high = q99                 ->  openpi's quantile normalisation (pi0.5, FAST)
#   min_max:  low = min, high = max                 ->  GR00T's default min_max normaliser
NORM_MODES = {"mean_std", "quantile", "min_max"}


def load_safetensors_dir(path: str, skip: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory: model.safetensors, or the shards its index lists."""
    from safetensors.torch import load_file

    index_path = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(index_path):
        with open(index_path) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    elif os.path.isfile(os.path.join(path, "model.safetensors")):
        files = ["model.safetensors"]
    else:
        raise FileNotFoundError(f"{path!r} has neither model.safetensors nor model.safetensors.index.json")
    state: dict[str, torch.Tensor] = {}
    for name in files:
        if not any(marker in name for marker in skip):
            state.update(load_file(os.path.join(path, name)))
    return state


def stats_to_bounds(stats: dict, mode: str, dim: int, what: str) -> tuple[list[float], list[float]]:
    """Per-dimension (low, high) for the first `dim` dimensions of one statistics entry."""
    if mode not in NORM_MODES:
        raise ValueError(f"norm_mode={mode!r}; valid: {sorted(NORM_MODES)}")
    if mode == "mean_std":
        mean, std = _vector(stats, "mean", what), _vector(stats, "std", what)
        low, high = [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)]
    elif mode == "quantile":
        low, high = _vector(stats, "q01", what), _vector(stats, "q99", what)
    else:
        low, high = _vector(stats, "min", what), _vector(stats, "max", what)
    if len(low) < dim:
        raise ValueError(f"{what} statistics have {len(low)} dimensions, the policy needs {dim}")
    check_dropped_dims_are_padding(low[dim:], high[dim:], dim, what)
    low, high = low[:dim], high[:dim]
    # A constant dimension (high == low) would divide by zero; give it unit width around its value.
    high = [h if h > lo else lo + 1.0 for lo, h in zip(low, high)]
    return low, high


def check_dropped_dims_are_padding(low: list[float], high: list[float], dim: int, what: str) -> None:
    """Statistics wider than the policy may only drop zero padding (openpi pads actions and states to the model's
    width before computing them: mean = std = 0 there); dropping a real dimension would mis-normalise every
    action (state) without a word."""
    real = [dim + i for i, (lo, hi) in enumerate(zip(low, high)) if lo != 0.0 or hi != 0.0]
    if real:
        width = dim + len(low)
        raise ValueError(
            f"{what} statistics have {width} dimensions but the policy's {what}_dim={dim}: dims {real} hold real "
            f"statistics, not zero padding; set {what}_dim={width} (the converter's --{what}-dim), or use statistics "
            f"of {dim} dimensions"
        )


def preset_settings(presets: dict[str, dict], size: str) -> dict:
    """The size preset a converter starts from; an unknown size is named with the valid ones."""
    if size not in presets:
        raise ValueError(f"unknown size {size!r}; valid: {sorted(presets)}")
    return dict(presets[size])


def check_tokenizer_path(tokenizer_path: str | None) -> None:
    """An explicit tokenizer directory must hold a tokenizer (before: a wrong path fell back to byte-level tokens,
    which the pretrained language model does not understand, with only a warning)."""
    if tokenizer_path is None:
        return
    if not os.path.isdir(tokenizer_path):
        raise FileNotFoundError(f"tokenizer path {tokenizer_path!r} does not exist or is not a directory")
    if not os.path.isfile(os.path.join(tokenizer_path, "tokenizer_config.json")):
        raise FileNotFoundError(
            f"tokenizer path {tokenizer_path!r} holds no tokenizer_config.json; give a directory with the tokenizer "
            "files (e.g. the upstream checkpoint's)"
        )


def _vector(stats: dict, key: str, what: str) -> list[float]:
    if key not in stats:
        raise ValueError(f"{what} statistics have no {key!r} (keys: {sorted(stats)})")
    return [float(v) for v in torch.as_tensor(stats[key], dtype=torch.float64).flatten().tolist()]


def attach_tokenizer(policy, tokenizer_path: str | None, source: str) -> None:
    """Use the given tokenizer (or the source checkpoint's); warn when falling back to byte level. The converters
    check `tokenizer_path` (check_tokenizer_path) before they read any weights."""
    for candidate in (tokenizer_path, source):
        if candidate and os.path.isfile(os.path.join(candidate, "tokenizer_config.json")):
            tokenizer = load_tokenizer(candidate)
            vocab = getattr(policy.config, "vocab_size", None)
            if vocab is not None and len(tokenizer) > vocab:
                raise ValueError(f"tokenizer at {candidate!r} has {len(tokenizer)} tokens, the model only {vocab}")
            policy.tokenizer = tokenizer
            return
    logger.warning(
        "no tokenizer found (pass tokenizer_path=<local dir with tokenizer_config.json>); the converted "
        "checkpoint uses the byte-level fallback, which the pretrained language model does not understand"
    )


def unknown_keys_error(kind: str, keys: list[str]) -> ValueError:
    return ValueError(f"{kind} checkpoint has {len(keys)} keys this converter does not know, e.g. {keys[:5]}")


def finish_conversion(policy, state: dict, src: str, tokenizer_path: str | None, dst: str | None):
    """The last steps every converter shares: load the mapped weights and the tokenizer, add LoRA adapters on top
    of the loaded weights if the config asks (lora_rank > 0; build the policy with apply_lora=False), and save when
    `dst` is given."""
    policy.load_checkpoint_state(state, src)
    attach_tokenizer(policy, tokenizer_path, src)
    if policy.config.lora_rank:
        policy.apply_lora()
    if dst is not None:
        policy.save_pretrained(dst)
    return policy
