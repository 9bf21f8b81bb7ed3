"""The one interface every policy offers to the RL algorithms.

`act` samples (no grad) and records in `ActOutput.extras` whatever `evaluate` needs to recompute the
same log-probs with gradients: sampled tokens for autoregressive VLAs, the noise/latent path for
flow-matching policies, the raw pre-squash sample for Gaussians. PPO's ratio is only meaningful if
`evaluate(obs, act(obs))` reproduces `act`'s log-probs exactly (1e-5 in float32) on the same weights.
"""

from __future__ import annotations

import abc
import copy
import functools
import json
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Mapping

import torch
from torch import nn

from ..config import field_hints, reject_wrong_types, wrong_type_message
from ..finite import reject_non_finite
from ..unread_settings import reject_ineffective_overrides, reject_ineffective_setting

Obs = dict[str, Any]  # "state": (N, D) f32, "rgb": (N, H, W, 3) u8, "instruction": list[str], ...


@dataclass
class ActOutput:
    actions: torch.Tensor  # (N, chunk, act_dim), env units
    log_probs: torch.Tensor  # (N, chunk, act_dim): per token / per action dimension
    values: torch.Tensor | None = None  # (N,)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # what evaluate() needs

    def to(self, device: torch.device | str) -> "ActOutput":
        return ActOutput(
            actions=self.actions.to(device),
            log_probs=self.log_probs.to(device),
            values=None if self.values is None else self.values.to(device),
            extras={k: v.to(device) for k, v in self.extras.items()},
        )


@dataclass
class EvalOutput:
    log_probs: torch.Tensor  # (N, chunk, act_dim), with grad
    entropy: torch.Tensor  # (N, chunk, act_dim) or broadcastable to it
    values: torch.Tensor | None = None  # (N,)


@dataclass
class PolicyConfig:
    """Fields every policy config has; each policy subclasses this next to its model."""

    action_dim: int = 7
    action_chunk: int = 1
    state_dim: int = 0
    # Per-dimension action normalisation: env_action = low + (norm_action + 1) / 2 * (high - low).
    # They travel with the checkpoint (saved in config.json).
    action_low: list[float] | None = None
    action_high: list[float] | None = None
    # Fields only the value head reads (configs with an add_value_head switch): see reject_value_head_overrides.
    value_head_fields: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        self.check_types()
        self.check_dims()
        self.check_finite()
        self.check_bounds()
        self.check_act_compile()

    def check_act_compile(self) -> None:
        """act_compile compiles the parts that act_cuda_graphs captures; alone it would do nothing."""
        if getattr(self, "act_compile", False) and not getattr(self, "act_cuda_graphs", False):
            raise ValueError(
                "act_compile=true compiles the parts act replays as CUDA graphs, but act_cuda_graphs=false; "
                "set act_cuda_graphs=true as well, or act_compile=false"
            )

    def check_types(self) -> None:
        """Every field holds a value of its annotated type (config.matches_type: no bool for an int, no 2.5 for an
        int, a list[int] of ints), named: before, make_policy('mlp', hidden_dim=2.5) failed in torch.empty,
        hidden_dim='32' (a checkpoint's config.json) in a comparison, and num_layers=True built one layer. The same
        check as policy.overrides' on the command line (workers/policy_loading.check_policy_overrides)."""
        reject_wrong_types(self)

    def check_dims(self) -> None:
        """action_dim and action_chunk >= 1, state_dim >= 0: every policy's shapes are built from them."""
        for name in ("action_dim", "action_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.state_dim < 0:
            raise ValueError(f"state_dim={self.state_dim} must be >= 0")

    def check_finite(self) -> None:
        """Every number in the config (and in its lists) is finite: policy.overrides.init_log_std=nan made NaN
        actions, and the run hung in its first rollout instead of failing."""
        reject_non_finite(self)

    def check_bounds(self) -> None:
        """Normalisation bounds (action_low/high, and state_low/high where the config has them) hold one entry per
        dimension, each low < its high: a short list would broadcast or fail deep in a forward pass, swapped
        bounds would flip every action without a word, and equal ones divide by a zero width."""
        for kind, dim in (("action", self.action_dim), ("state", self.state_dim)):
            low, high = getattr(self, f"{kind}_low", None), getattr(self, f"{kind}_high", None)
            for name, bounds in ((f"{kind}_low", low), (f"{kind}_high", high)):
                if bounds is not None and len(bounds) != dim:
                    raise ValueError(
                        f"{kind}_dim={dim} but {name} has {len(bounds)} entries: give one per dimension, or "
                        f"{kind}_dim={len(bounds)} (a checkpoint's saved statistics fix its dimensions)"
                    )
            if low is not None and high is not None:
                flipped = [i for i, (lo, hi) in enumerate(zip(low, high)) if lo >= hi]
                if flipped:
                    i = flipped[0]
                    relation = ">" if low[i] > high[i] else "=="
                    raise ValueError(
                        f"{kind}_low[{i}]={low[i]} {relation} {kind}_high[{i}]={high[i]} (dimensions {flipped}): each "
                        f"low must be < its high (a zero width cannot be normalised)"
                    )

    def camera_keys(self) -> tuple[str, ...]:
        """The image observations the policy cannot act without: the runner checks them against the env's
        observation keys before it builds the model (a 7B model takes minutes to build)."""
        return ()

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PolicyConfig":
        if not isinstance(data, Mapping):
            raise TypeError(f"{cls.__name__}.from_dict takes a mapping of config fields, not {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown config keys {unknown}; valid keys: {sorted(known)}")
        return cls(**data)


def require_at_least(config: Any, minimum: int, *names: str) -> None:
    """ValueError naming the first of the fields `names` of `config` below `minimum`."""
    for name in names:
        value = getattr(config, name)
        if value < minimum:
            raise ValueError(f"{name}={value} must be >= {minimum}")


def require_positive(config: Any, *names: str) -> None:
    """ValueError naming the first of the fields `names` of `config` that is not > 0."""
    for name in names:
        value = getattr(config, name)
        if not value > 0:
            raise ValueError(f"{name}={value} must be > 0")


def reject_value_head_overrides(
    config_class: type[PolicyConfig], add_value_head: Any, overrides: Mapping[str, Any], section: str = ""
) -> None:
    """A value-head field (config_class.value_head_fields) given in `overrides` where add_value_head is False: no
    value head reads it. Explicit overrides only: a size preset sets value_hidden_dim and a checkpoint's config.json
    holds every field, so the config's own values cannot tell the user's choice from theirs."""
    if add_value_head is False:
        switch = f"{section}.add_value_head" if section else "add_value_head"
        reason = f"add_value_head=false builds no value head; set {switch}=true, or drop the setting"
        reject_ineffective_overrides(overrides, section, config_class.value_head_fields, reason)


def check_lora_settings(config: Any) -> None:
    """The LoRA settings of a config with lora_rank / lora_alpha / lora_dropout (the flow VLAs', the Prismatic ones'),
    refused where peft cannot use them (before: lora_alpha=0 made the adapters' scale lora_alpha / lora_rank 0, so
    they never got a gradient and the frozen language model never trained, and a negative one flipped every adapter
    update; lora_dropout=2.0 passed every start-up check and failed in each worker with torch's message), and
    lora_alpha / lora_dropout where no adapter reads them (lora_rank=0; defaults pass, so saved configs load)."""
    if not config.lora_alpha > 0:
        raise ValueError(
            f"lora_alpha={config.lora_alpha} must be > 0: the adapters' output is scaled by lora_alpha / lora_rank, "
            "so 0 leaves them without a gradient and a negative value flips every update (peft's usual: 2 * lora_rank)"
        )
    if not 0.0 <= config.lora_dropout < 1.0:
        raise ValueError(
            f"lora_dropout={config.lora_dropout} must lie in [0, 1): the probability of dropping each adapter input "
            "(0 = no dropout)"
        )
    if config.lora_rank == 0:
        for name in ("lora_alpha", "lora_dropout"):
            reject_ineffective_setting(config, "", name, "lora_rank=0 adds no LoRA adapters; set lora_rank > 0")


CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def dirs_holding(root: str, names: tuple[str, ...], max_depth: int) -> list[str]:
    """The directories 1..max_depth levels below `root` that hold every file of `names`, sorted: what an error
    about a wrong checkpoint path can offer instead (a run directory holds them at checkpoints/<name>/...)."""
    import glob

    return sorted(
        os.path.dirname(path)
        for depth in range(1, max_depth + 1)
        for path in glob.glob(os.path.join(root, *["*"] * depth, names[0]))
        if all(os.path.isfile(os.path.join(os.path.dirname(path), name)) for name in names[1:])
    )


SAVED_DIRECTORY = "a directory written by save_pretrained"
CHECKPOINT_FILES = (CONFIG_FILE, WEIGHTS_FILE, "actor.pt", "sft.json")  # files of a policy or training checkpoint


def not_a_directory(path: str) -> str:
    """Why `path`, given where a directory is expected, is none: "does not exist", or "is a file, not a directory"
    (naming the directory that holds it where it is one of a checkpoint's files). Before: an existing file was
    reported as "does not exist"."""
    if not os.path.exists(path):
        return "does not exist"
    if not os.path.isfile(path):
        return "is not a directory"
    if os.path.basename(path) in CHECKPOINT_FILES:
        return (
            f"is a file, not a directory (the checkpoint is the directory holding it, {os.path.dirname(path) or '.'})"
        )
    return "is a file, not a directory"


def checkpoint_config_path(path: str, policy_name: str | None, expected: str = SAVED_DIRECTORY) -> str:
    """`path`'s config.json; FileNotFoundError if `path` is no directory or holds none (missing_config_error,
    saying `expected`: what a checkpoint directory should be)."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"checkpoint directory {path!r} {not_a_directory(path)}")
    config_path = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise missing_config_error(path, policy_name, expected)
    return config_path


def read_json_file(json_path: str) -> dict:
    """A checkpoint's JSON file, a copy of its own (callers pop keys); a malformed one is named (json's own error
    says only the line and column). Parsed once per version of the file: start-up read config.json 5 times."""
    stat = os.stat(json_path)
    return copy.deepcopy(_parsed_json_file(os.path.abspath(json_path), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=32)
def _parsed_json_file(json_path: str, mtime_ns: int, size: int) -> dict:
    """read_json_file's parse, cached per path, modification time and size (a rewritten file is read again)."""
    with open(json_path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{json_path!r} is not valid JSON ({error}); re-save the checkpoint") from error
    if not isinstance(data, dict):  # before: 'list' object has no attribute 'get', or "pop expected at most 1 argument"
        kind = {list: "list", str: "string", bool: "boolean", type(None): "null"}.get(type(data), "number")
        raise ValueError(
            f"{json_path!r} holds a JSON {kind}, not an object of config settings: the checkpoint is damaged; "
            "re-save it"
        )
    return data


def check_saved_field_types(
    config_class: type[PolicyConfig],
    data: Mapping[str, Any],
    path: str,
    overrides: Mapping[str, Any] | None = None,
    source: str | None = None,
) -> None:
    """ValueError naming the checkpoint's config.json and the first of its fields (those not overridden) whose value
    is not of the field's type (a hand-edited or foreign file): before, hidden_dim "32" failed in a comparison,
    "'<' not supported between instances of 'str' and 'int'", which named neither. `source` names the checkpoint
    in the message (default: "checkpoint '<path>'")."""
    hints = field_hints(config_class)
    for item in fields(config_class):
        if item.name in data and item.name not in (overrides or {}):
            message = wrong_type_message(item.name, data[item.name], hints.get(item.name, Any))
            if message:
                raise ValueError(
                    f"{source or f'checkpoint {path!r}'}: its {CONFIG_FILE} is damaged: {message}; re-save the "
                    "checkpoint, or correct that field"
                )


def read_checkpoint_weights(path: str) -> dict[str, torch.Tensor]:
    """`path`'s model.safetensors, with errors that name the file (safetensors' say 'header too small')."""
    from safetensors.torch import load_file

    weights_path = os.path.join(path, WEIGHTS_FILE)
    if not os.path.isfile(weights_path):
        raise FileNotFoundError(
            f"checkpoint {path!r} has {CONFIG_FILE} but no {WEIGHTS_FILE} (save_pretrained writes both: an "
            f"interrupted save or copy?)"
        )
    try:
        return load_file(weights_path)
    except Exception as error:  # safetensors raises its own SafetensorError for truncated or foreign files
        raise ValueError(
            f"{weights_path!r} is not a readable safetensors file ({error}); re-save the checkpoint"
        ) from error


def check_weight_shapes(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], source: str, name: str) -> None:
    """Raise, naming the first tensor, where the checkpoint's weights have other shapes than the config builds
    (torch's size-mismatch error lists every tensor and names no setting)."""
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise ValueError(
                f"checkpoint {source!r}: {key} has shape {tuple(value.shape)}, this {name} config needs "
                f"{tuple(own[key].shape)} (action_dim / action_chunk / state_dim and the size settings must match "
                f"the checkpoint's {CONFIG_FILE})"
            )


def missing_config_error(path: str, policy_name: str | None, expected: str = SAVED_DIRECTORY) -> FileNotFoundError:
    """The error for a checkpoint directory without config.json, naming the saved policies found below it (a
    training run's directory holds them at checkpoints/<name>/policy) and the policy's converter if it has one."""
    found = dirs_holding(path, (CONFIG_FILE, WEIGHTS_FILE), max_depth=3)
    hint = ""
    if found:
        shown = ", ".join(repr(p) for p in found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
        hint = f"; saved policies below it: {shown}"
    converter = converter_module(policy_name) if policy_name is not None else None
    if converter is not None:
        hint += f" (an upstream checkpoint needs converting first: python -m {converter})"
    return FileNotFoundError(f"{path!r} has no {CONFIG_FILE}; expected {expected}{hint}")


def converter_module(policy_name: str) -> str | None:
    """The module converting `policy_name`'s upstream checkpoints (`python -m` it), None where it has none."""
    import importlib.util

    module = f"rlinf_embodied.policies.{policy_name}.convert"
    try:
        return module if importlib.util.find_spec(module) is not None else None
    except ModuleNotFoundError:  # no such policy package
        return None


def upstream_layout_error(path: str, policy_name: str) -> ValueError:
    """The error for a checkpoint whose config.json names no policy: an upstream layout (LeRobot's, openpi's, Hugging
    Face's), which the policy's converter turns into a save_pretrained directory."""
    converter = converter_module(policy_name)
    fix = (
        f"convert it first: python -m {converter} {path} <dst>, then load <dst>"
        if converter is not None
        else f"{policy_name} has no converter; give a directory written by save_pretrained"
    )
    return ValueError(
        f"checkpoint {path!r}: its {CONFIG_FILE} names no policy, so it is an upstream layout, not a directory "
        f"written by save_pretrained; {fix}"
    )


def hidden_state_dims(config_data: dict[str, Any], field_name: str | None) -> list[int]:
    """The state dims a saved config hides (its `field_name` list), [] where it hides none."""
    return [int(dim) for dim in (config_data.get(field_name) or [])] if field_name else []


class Policy(nn.Module, abc.ABC):
    """Base class: subclasses set `name`, `config_class` and implement act/evaluate/example_obs."""

    name: ClassVar[str]
    config_class: ClassVar[type[PolicyConfig]]
    # size name -> config overrides; "tiny" must exist and be small enough for CPU tests.
    presets: ClassVar[dict[str, dict]] = {}
    # RL learning rates when algorithm.lr / algorithm.value_lr are unset. Small policies train from
    # scratch at PPO's usual 3e-4; pre-trained VLAs override these with fine-tuning rates.
    default_rl_lr: ClassVar[float] = 3e-4
    default_value_lr: ClassVar[float | None] = None  # None: same as the lr
    # SFT sets action_low/high (and state_low/high where the config has them) from the dataset's percentiles
    # when the config has none. The Gaussian policies (mlp, cnn) keep the env's [-1, 1] action convention:
    # percentile bounds would also become the range they clip actions to.
    normalizes_with_dataset_stats: ClassVar[bool] = False
    # Parameters whose names start with one of these train at the value lr.
    value_parameter_prefixes: ClassVar[tuple[str, ...]] = ("value_head.",)
    # Set by an FSDP mixed-precision trainer, whose sharded parameters read float32 while the layers
    # compute in this dtype; policies that cast inputs to their parameters' dtype consult it first.
    forced_compute_dtype: torch.dtype | None = None
    # The config field listing state dims hidden from the model (zeroed before its first state layer); None: none.
    hidden_state_dims_field: ClassVar[str | None] = None

    def __init__(self, config: PolicyConfig):
        super().__init__()
        self.config = config
        self._host_constants: dict[str, tuple] = {}  # device_constants: name -> (key, tensors)

    @classmethod
    def from_preset(cls, size: str = "tiny", **overrides) -> "Policy":
        if size not in cls.presets:
            raise ValueError(f"unknown size {size!r} for policy {cls.name!r}; available: {sorted(cls.presets)}")
        config = cls.config_class.from_dict({**cls.presets[size], **overrides})
        reject_value_head_overrides(cls.config_class, getattr(config, "add_value_head", None), overrides)
        return cls(config)

    @classmethod
    def loads_unnamed_config(cls, config_data: dict[str, Any]) -> bool:
        """Whether from_pretrained loads a checkpoint whose config.json (`config_data`) names no policy: the base
        class's reads it as its own; policies with converters refuse such an upstream layout (upstream_layout_error),
        which the start-up check then names before any worker starts."""
        return True

    # ---- RL interface -------------------------------------------------------------------------
    @abc.abstractmethod
    def act(self, obs: Obs, deterministic: bool = False) -> ActOutput:
        """Sample actions (no grad). Returns actions (N, chunk, act_dim) in env units."""

    @abc.abstractmethod
    def evaluate(self, obs: Obs, act_output: ActOutput) -> EvalOutput:
        """Recompute log-probs, entropy and values of `act_output`'s actions, with gradients."""

    @abc.abstractmethod
    def example_obs(self, batch_size: int) -> Obs:
        """A valid observation batch for this policy (for tests, benchmarks and shape checks)."""

    @property
    def has_critic(self) -> bool:
        return True

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ---- checkpoints ----------------------------------------------------------------------------
    def save_pretrained(self, path: str | os.PathLike, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """config.json + model.safetensors; `state_dict` (default: this module's) lets a trainer save gathered or
        averaged weights under this policy's config without building a second model."""
        from safetensors.torch import save_file

        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, CONFIG_FILE), "w") as f:
            json.dump({"policy": self.name, **self.config.to_dict()}, f, indent=2)
        weights = self.state_dict() if state_dict is None else state_dict
        state = {k: v.detach().contiguous().cpu() for k, v in weights.items()}
        save_file(state, os.path.join(path, WEIGHTS_FILE))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **overrides) -> "Policy":
        path = os.fspath(path)
        data = read_json_file(checkpoint_config_path(path, cls.name))
        saved_name = data.pop("policy", cls.name)
        if saved_name != cls.name:
            raise ValueError(f"checkpoint {path!r} holds policy {saved_name!r}, not {cls.name!r}")
        check_saved_field_types(cls.config_class, data, path, overrides)
        model = cls(cls.config_class.from_dict({**data, **overrides}))  # data stays as trained
        state = read_checkpoint_weights(path)
        check_weight_shapes(model.state_dict(), state, path, cls.name)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"checkpoint {path!r} does not match {cls.name}: missing={missing[:5]} unexpected={unexpected[:5]}"
            )
        model.apply_overrides_to_weights(overrides)
        model.reveal_state_dims(hidden_state_dims(data, cls.hidden_state_dims_field))
        return model

    def state_input_layer(self) -> nn.Linear | None:
        """The first layer reading the normalised state, one input column per state dim (None: not known)."""
        return None

    def reveal_state_dims(self, saved_hidden: list[int]) -> None:
        """Zero the state layer's input columns of the dims the checkpoint hid and this config no longer does.

        A hidden dim reached that layer as 0 in training, so its columns kept their random initial values: shown to
        the trained model as they were, it would add noise to every state embedding. Zeroed, the loaded policy acts
        exactly as saved, and training (RL from an SFT checkpoint) grows the columns from there."""
        field_name = self.hidden_state_dims_field
        shown = sorted(set(saved_hidden) - set(getattr(self.config, field_name) or [])) if field_name else []
        gain = getattr(self.config, "revealed_state_gain", 1.0)
        if not shown:
            if gain != 1.0 and not self.config.revealed_state_dims:  # nothing it could act on
                raise ValueError(
                    f"revealed_state_gain={gain} scales the state dims this policy shows and its checkpoint hid, but "
                    f"it shows none ({field_name}={getattr(self.config, field_name)}, as the checkpoint); drop it"
                )
            return
        layer = self.state_input_layer()
        if layer is None:
            raise ValueError(
                f"{self.name} cannot show state dims {shown} that its checkpoint hid: it names no state layer to "
                f"start their weights at zero; keep {field_name}={sorted(saved_hidden)}"
            )
        with torch.no_grad():
            layer.weight[:, shown] = 0
        if hasattr(self.config, "revealed_state_dims"):  # recorded: a later load keeps the gain on them
            self.config.revealed_state_dims = sorted(set(self.config.revealed_state_dims or []) | set(shown))

    def apply_overrides_to_weights(self, overrides: dict[str, Any]) -> None:
        """Make config overrides that describe initial weights act on a loaded checkpoint too (e.g. a
        Gaussian policy's `init_log_std`: the exploration noise RL starts from after behaviour cloning).
        Without this such an override would be accepted by the config and silently do nothing."""

    # ---- helpers shared by policies -------------------------------------------------------------
    def unnormalize_actions(self, norm_actions: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> env units, per the checkpoint's action statistics (identity if none)."""
        cfg = self.config
        if cfg.action_low is None or cfg.action_high is None:
            return norm_actions
        low, high = self.action_bounds(norm_actions.device, norm_actions.dtype)
        return low + (norm_actions + 1.0) * 0.5 * (high - low)

    def normalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if cfg.action_low is None or cfg.action_high is None:
            return actions
        low, high = self.action_bounds(actions.device, actions.dtype)
        return (actions - low) / (high - low) * 2.0 - 1.0

    def action_bounds(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """action_low / action_high as `dtype` tensors on `device` (device_constants: made once)."""
        return self.device_constants("action_bounds", device, dtype, self.config.action_low, self.config.action_high)

    def device_constants(
        self, name: str, device: torch.device, dtype: torch.dtype, *values
    ) -> tuple[torch.Tensor, ...]:
        """Host lists `values` as `dtype` tensors on `device`, made once per name, device, dtype and values: a host
        list turned into a device tensor is a blocking copy, and every SFT step and `act` call needs these."""
        key = (device, dtype, *(tuple(value) for value in values))
        cached = self._host_constants.get(name)
        if cached is None or cached[0] != key:
            tensors = tuple(torch.tensor(value, dtype=dtype, device=device) for value in key[2:])
            self._host_constants[name] = cached = (key, tensors)
        return cached[1]
