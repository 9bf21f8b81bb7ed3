"""Pieces the pi0 and GR00T converters share: reading upstream weights, turning dataset statistics
into this package's [-1, 1] normalisation bounds, and writing the converted directory."""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import shutil
from typing import Iterable

import torch

from ..base import CONFIG_FILE, WEIGHTS_FILE, dirs_holding, read_json_file
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


# ---- the converters' command lines ----------------------------------------------------------------------------------
# What each converter's main() reads, by policy name: how its upstream checkpoints are called in messages.
UPSTREAM_LABELS = {
    "pi0": "pi0 (LeRobot / openpi)",
    "gr00t": "GR00T-N1.5",
    "openvla": "OpenVLA",
    "openvla_oft": "OpenVLA-OFT",
}
# The upstream kinds (upstream_kind) each converter reads; None: a config.json that names no known model (or none).
ACCEPTED_KINDS = {
    "pi0": {"pi0", None},
    "gr00t": {"gr00t", None},
    "openvla": {"openvla", None},
    "openvla_oft": {"openvla", "openvla_oft", None},
}


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """The source / output arguments every converter's command line shares."""
    parser.add_argument("src", help="local folder of the upstream checkpoint")
    parser.add_argument("dst", help="folder to write the converted checkpoint to (new or empty; see --overwrite)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a non-empty output folder: its previous files are removed before the checkpoint is written",
    )


def check_converter_paths(parser: argparse.ArgumentParser, args: argparse.Namespace, policy_name: str) -> None:
    """parser.error (exit 2, with the usage line) for a source that is no upstream checkpoint of `policy_name` or an
    output that cannot take the converted checkpoint; checked before any weights are read."""
    error = source_error(args.src, policy_name) or output_error(args.dst, args.src, args.overwrite)
    if error:
        parser.error(error)


def upstream_kind(src: str, config: dict | None) -> str | None:
    """Which model's upstream layout `src` (with config.json `config`, None if it has none) holds: "pi0", "gr00t",
    "openvla", "openvla_oft", "lerobot:<type>" for another LeRobot policy, or None where it does not say."""
    if not config:
        return None
    architectures = config.get("architectures") or []
    if "OpenVLAForActionPrediction" in architectures or config.get("model_type") == "openvla":
        oft = glob.glob(os.path.join(glob.escape(src), "action_head--*checkpoint.pt"))
        return "openvla_oft" if oft else "openvla"
    if str(config.get("model_type", "")).startswith("gr00t") or "action_head_cfg" in config:
        return "gr00t"
    if isinstance(config.get("type"), str):  # LeRobot's policy configs name their policy type
        return "pi0" if config["type"] == "pi0" else f"lerobot:{config['type']}"
    return None


def source_error(src: str, policy_name: str) -> str | None:
    """Why `src` cannot be converted by `policy_name`'s converter (None: it looks like its upstream checkpoint)."""
    label = UPSTREAM_LABELS[policy_name]
    if not os.path.exists(src):
        return f"policy source {src} does not exist; give the local folder of an upstream {label} checkpoint"
    if not os.path.isdir(src):
        return f"policy source {src} is a file, not a folder; give the folder of an upstream {label} checkpoint"
    config = None
    if os.path.isfile(os.path.join(src, CONFIG_FILE)):
        try:
            config = read_json_file(os.path.join(src, CONFIG_FILE))
        except ValueError as error:
            return f"policy source {src}: {error}"
        if not isinstance(config, dict):
            return f"policy source {src}: its {CONFIG_FILE} holds no JSON object; not an upstream {label} checkpoint"
    if config is not None and "policy" in config:
        return (
            f"policy source {src} holds this package's {config['policy']} checkpoint, not an upstream {label} one; it "
            f"loads as it is (policy.checkpoint={src}), no conversion needed"
        )
    kind = upstream_kind(src, config)
    if kind not in ACCEPTED_KINDS[policy_name]:
        if kind.startswith("lerobot:"):
            return (
                f"policy source {src} holds a LeRobot {kind.split(':', 1)[1]!r} policy, not an upstream {label} "
                "checkpoint; this package has no converter for it"
            )
        hint = " (which keeps its action head and proprio projector)" if kind == "openvla_oft" else ""
        return (
            f"policy source {src} holds an upstream {UPSTREAM_LABELS[kind]} checkpoint, not an upstream {label} one; "
            f"convert it with python -m rlinf_embodied.policies.{kind}.convert {src} <dst>{hint}"
        )
    if policy_name.startswith("openvla") and config is None:
        return f"policy source {src} has no {CONFIG_FILE}; an upstream {label} checkpoint holds config.json and weights"
    if not any(os.path.isfile(os.path.join(src, name)) for name in (WEIGHTS_FILE, "model.safetensors.index.json")):
        found = dirs_holding(src, (CONFIG_FILE, WEIGHTS_FILE), max_depth=3)
        hint = f"; saved policies of this package below it (they load as they are): {found[:4]}" if found else ""
        return (
            f"policy source {src} holds neither {WEIGHTS_FILE} nor model.safetensors.index.json, so it is no upstream "
            f"{label} checkpoint{hint}"
        )
    return None


def output_error(dst: str, src: str, overwrite: bool) -> str | None:
    """Why the converted checkpoint cannot be written to `dst` (None: a new or empty folder, or --overwrite)."""
    if os.path.exists(dst) and not os.path.isdir(dst):
        return f"output {dst} is a file, not a folder; give a folder to write the converted checkpoint to"
    if not os.path.isdir(dst):
        return None
    real_dst, real_src = os.path.realpath(dst), os.path.realpath(src)
    if real_src == real_dst or real_src.startswith(real_dst.rstrip(os.sep) + os.sep):
        return f"output folder {dst} is (or holds) the policy source {src}; write the converted checkpoint elsewhere"
    entries = sorted(os.listdir(dst))
    if entries and not overwrite:
        shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
        return (
            f"output folder {dst} is not empty (it holds {shown}); pass --overwrite to replace its contents, or give "
            "a new or empty folder"
        )
    return None


def save_converted(policy, dst: str, overwrite: bool) -> None:
    """Write the converted `policy` to `dst`; with `overwrite`, the folder's previous files go first, so none of an
    older checkpoint's (env_actions.json, demonstrations.json, ...) stays beside the new one."""
    if overwrite and os.path.isdir(dst):
        for entry in os.scandir(dst):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.remove(entry.path)
    policy.save_pretrained(dst)
