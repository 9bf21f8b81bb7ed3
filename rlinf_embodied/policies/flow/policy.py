"""FlowPolicy: the RL interface (act / evaluate / checkpoints) shared by pi0 and GR00T.

A subclass builds its network and implements three things:

* `encode_observation(obs) -> dict`: everything the velocity network conditions on (e.g. the VLM
  prefix's key/value cache), as batch-first tensors so rows can be selected, plus `"pooled"` (N, F)
  for the value head. It runs once per `act`/`evaluate` call, not once per denoising step.
* `predict_velocity(context, x, tau) -> (u, features)`: the velocity `u = noise - action` in the
  shared tau convention (tau = 1 noise) as float32 (n, chunk, max_action_dim), and the action tokens'
  features (n, chunk, F) for the Flow-Noise head.
* `sft_loss(obs, actions)`: the policy's own flow-matching training loss.

RL sampling (`act`): the chain x_{tau_0 = 1} -> ... -> x_{tau_K = 0} is integrated with the steps
chosen by `stochastic_steps` made Gaussian (Flow-SDE or Flow-Noise, see sde.py), the rest plain ODE.
`ActOutput.extras` holds

* `"denoise_chain"` (N, K + 1, chunk, max_action_dim) float32: x at every grid point, the first being
  the initial noise and the last the normalised action before un-padding;
* `"stochastic_steps"` (N, K) bool: which steps were stochastic for each sample;

and `log_probs` (N, chunk, action_dim) sums the Gaussian transition log-densities of the stochastic
steps. `evaluate` re-encodes the observation with gradients and recomputes exactly those transitions
from the stored chain. In deterministic mode no step is stochastic: log_probs are zero.
"""

from __future__ import annotations

import abc
import logging
import os
from typing import Any

import torch
from torch import nn

from ...transfer import host_to_device
from ..base import (
    ActOutput,
    EvalOutput,
    Obs,
    Policy,
    check_saved_field_types,
    check_weight_shapes,
    checkpoint_config_path,
    hidden_state_dims,
    read_checkpoint_weights,
    read_json_file,
    reject_value_head_overrides,
    upstream_layout_error,
)
from ..common.state_dims import zero_state_dims
from ..common.tokenizer import load_tokenizer
from .config import FlowPolicyConfig
from .heads import FlowNoiseHead, ValueHead
from .processing import pad_last_dim
from ..common.cuda_graph import GraphCache, act_graph_cache
from .sampler import ChainSample, StepDistribution, StepFn, chain_log_probs, sample_chain
from .sde import choose_stochastic_steps, flow_sde_step, ode_step_mean, timestep_grid
from .utils import select_rows, skip_weight_init

logger = logging.getLogger(__name__)

LORA_MARKER = "lora_"
PROMPT_TRIM_MULTIPLE = 8  # trim_prompt_padding keeps prompt widths a multiple of this (tensor-core friendly)
RL_HEADS = ("value_head.", "noise_head.")
DEFAULT_INSTRUCTIONS = ("pick up the red cube", "open the top drawer", "put the bowl on the plate")


class FlowPolicy(Policy):
    """Base class of the flow-matching VLAs; see the module docstring for the subclass contract."""

    config: FlowPolicyConfig
    # Full fine-tuning of a pre-trained VLA: the order of RLinf's pi0 PPO recipes (actor 5e-6, critic 1e-4).
    default_rl_lr = 5e-6
    default_value_lr = 1e-4
    normalizes_with_dataset_stats = True
    hidden_state_dims_field = "ignore_state_dims"

    def __init__(self, config: FlowPolicyConfig, apply_lora: bool = True):
        super().__init__(config)
        self.tokenizer = load_tokenizer(None)
        self._apply_lora_on_init = apply_lora
        self._graph_cache: GraphCache | None = None  # act_cuda_graphs: captured on first use

    # ---- subclass contract ------------------------------------------------------------------------
    @abc.abstractmethod
    def encode_observation(self, obs: Obs) -> dict[str, Any]:
        """Conditioning context (batch-first tensors) with "pooled" (N, F) for the value head."""

    @abc.abstractmethod
    def predict_velocity(
        self, context: dict[str, Any], x: torch.Tensor, tau: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (n, chunk, A_pad) at times tau (n,) -> (u float32 (n, chunk, A_pad), features (n, chunk, F))."""

    @abc.abstractmethod
    def sft_loss(self, obs: Obs, actions: torch.Tensor) -> torch.Tensor:
        """Flow-matching loss on env-unit actions (N, chunk, action_dim); scalar. Subclasses accept the
        noise and the flow time as optional keyword arguments, in their own time convention."""

    @abc.abstractmethod
    def vision_modules(self) -> list[nn.Module]:
        """Modules frozen by freeze_vision_encoder."""

    @abc.abstractmethod
    def backbone_language_model(self) -> nn.Module:
        """The backbone language model: frozen by freeze_language_model, LoRA-adapted by lora_rank."""

    @abc.abstractmethod
    def fsdp_units(self) -> list[nn.Module]:
        """Transformer layers to shard one by one (each is called through its own forward)."""

    @abc.abstractmethod
    def checkpointing_models(self) -> list[nn.Module]:
        """Models with activation_checkpointing_enable() (transformers models, gr00t's block stacks)."""

    # ---- construction helpers for subclasses --------------------------------------------------------
    def finish_init(self, pooled_dim: int, action_feature_dim: int) -> None:
        """Add the RL heads and apply freezing / LoRA / gradient checkpointing; call last in __init__."""
        cfg = self.config
        self._pooled_dim, self._action_feature_dim = pooled_dim, action_feature_dim
        self.value_head = ValueHead(self._value_input_dim(), cfg.value_hidden_dim) if cfg.add_value_head else None
        self.noise_head = (
            FlowNoiseHead(action_feature_dim, cfg.max_action_dim, cfg.noise_std_min, cfg.noise_std_max)
            if cfg.noise_method == "flow_noise"
            else None
        )
        if cfg.freeze_vision_encoder:
            for module in self.vision_modules():
                module.requires_grad_(False)
        if cfg.freeze_language_model:
            self.backbone_language_model().requires_grad_(False)
        if cfg.lora_rank > 0 and self._apply_lora_on_init:
            self.apply_lora()
        if cfg.gradient_checkpointing:
            for model in self.checkpointing_models():
                enable_activation_checkpointing(model)

    def apply_lora(self, new_adapters: bool = True) -> None:
        """peft LoRA on the language model's attention and MLP projections; its base weights freeze, and with
        freeze_language_model the adapters too (the whole language model is frozen). `new_adapters`: False where a
        checkpoint's trained adapters are loaded into them next; new ones start as the identity, so freezing them is
        refused (FlowPolicyConfig.reject_frozen_new_adapters)."""
        from peft import LoraConfig, inject_adapter_in_model

        cfg = self.config
        if new_adapters:
            cfg.reject_frozen_new_adapters()
        lora = LoraConfig(
            r=cfg.lora_rank,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        )
        language_model = self.backbone_language_model()
        inject_adapter_in_model(lora, language_model)
        for name, param in language_model.named_parameters():
            param.requires_grad_(LORA_MARKER in name and not cfg.freeze_language_model)

    @property
    def has_critic(self) -> bool:
        return self.value_head is not None

    @property
    def compute_dtype(self) -> torch.dtype:
        if self.forced_compute_dtype is not None:
            return self.forced_compute_dtype
        return next(p for p in self.parameters() if p.is_floating_point()).dtype

    # ---- observation helpers ----------------------------------------------------------------------
    def normalized_state(self, obs: Obs, hide_ignored: bool = True) -> torch.Tensor:
        """obs["state"] (N, D) -> normalised, zero-padded (N, max_state_dim) float32; ignore_state_dims
        zeroed unless hide_ignored=False (the value head's view)."""
        state = torch.as_tensor(obs["state"]).to(self.device, torch.float32)
        cfg = self.config
        if cfg.state_low is not None and cfg.state_high is not None:
            low, high = self.state_bounds(state.device)
            state = (state - low) / (high - low) * 2.0 - 1.0
        if hide_ignored:
            state = zero_state_dims(state, cfg.ignore_state_dims)
            if cfg.revealed_state_dims and cfg.revealed_state_gain != 1.0:
                state = state.clone()
                state[:, cfg.revealed_state_dims] *= cfg.revealed_state_gain
        return pad_last_dim(state, cfg.max_state_dim)

    def state_bounds(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """state_low / state_high as float32 tensors on `device` (device_constants: made once; `act` normalises the
        state twice, for the policy and the value head)."""
        cfg = self.config
        return self.device_constants("state_bounds", device, torch.float32, cfg.state_low, cfg.state_high)

    def prompt_trim(self) -> int:
        """tokenize_instructions' trim_to: 8 with trim_prompt_padding (a multiple of 8 tokens), else 0 (no trim)."""
        return PROMPT_TRIM_MULTIPLE if self.config.trim_prompt_padding else 0

    def camera_images(self, obs: Obs) -> list[torch.Tensor]:
        """The (N, H, W, 3) uint8 cameras the model sees: main camera, then the wrist camera if used."""
        cameras = [obs["rgb"]]
        if self.config.use_wrist_image and obs.get("wrist_rgb") is not None:
            cameras.append(obs["wrist_rgb"])
        return cameras

    def example_obs(self, batch_size: int) -> Obs:
        """Random uint8 cameras at the model's resolution (those camera_keys() names, plus the wrist camera with
        use_wrist_image), a random state and cycled instructions."""
        cfg = self.config
        # Explicit CPU tensors: callers may sit inside `with torch.device("cuda")`, which a CPU generator refuses.
        generator = torch.Generator(device="cpu").manual_seed(batch_size)
        image_shape = (batch_size, cfg.image_size, cfg.image_size, 3)
        random_image = lambda: torch.randint(0, 256, image_shape, dtype=torch.uint8, generator=generator, device="cpu")  # noqa: E731
        obs: Obs = {
            "state": torch.randn(batch_size, cfg.state_dim or cfg.max_state_dim, generator=generator, device="cpu")
        }
        for camera in cfg.camera_keys() + (("wrist_rgb",) if cfg.use_wrist_image else ()):
            obs[camera] = random_image()
        obs["instruction"] = [DEFAULT_INSTRUCTIONS[i % len(DEFAULT_INSTRUCTIONS)] for i in range(batch_size)]
        return obs

    # ---- RL interface -----------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: Obs, deterministic: bool = False) -> ActOutput:
        cfg = self.config
        context = self.encode_observation(obs)
        batch = context["pooled"].shape[0]
        x_init = self.initial_noise(batch, deterministic)
        if deterministic:
            stochastic = torch.zeros(batch, cfg.num_denoise_steps, dtype=torch.bool, device=self.device)
        else:
            stochastic = choose_stochastic_steps(cfg.stochastic_steps, batch, cfg.num_denoise_steps, self.device)
        sample = self.denoise(context, x_init, stochastic)
        actions = self.unnormalize_actions(sample.chain[:, -1, :, : cfg.action_dim])
        return ActOutput(
            actions=actions,
            log_probs=sample.log_probs,
            values=self.values_from_context(context, obs),
            extras={"denoise_chain": sample.chain, "stochastic_steps": stochastic},
        )

    def act_graphs(self) -> GraphCache | None:
        """The CUDA graphs `act` replays its parts from (act_cuda_graphs, no autograd, a CUDA device); else None."""
        return act_graph_cache(self)

    def denoise(self, context: dict[str, Any], x_init: torch.Tensor, stochastic: torch.Tensor) -> ChainSample:
        """The sampled chain, eagerly or (act_cuda_graphs on a CUDA device) from a captured CUDA graph."""
        graphs = self.act_graphs()
        if graphs is None:
            return self.denoise_eager(context, x_init, stochastic)
        any_noisy = tuple(stochastic.any(dim=0).tolist())  # the one host sync, as in eager sampling

        def loop(inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
            sample = self.denoise_eager(inputs["context"], inputs["x_init"], inputs["stochastic"], any_noisy)
            return {"chain": sample.chain, "log_probs": sample.log_probs, "entropy": sample.entropy}

        inputs = {"context": context, "x_init": x_init, "stochastic": stochastic}
        return ChainSample(**graphs.run(self, ("denoise", any_noisy), loop, inputs, x_init.shape[0]))

    def denoise_eager(
        self,
        context: dict[str, Any],
        x_init: torch.Tensor,
        stochastic: torch.Tensor,
        any_noisy: tuple[bool, ...] | None = None,
    ) -> ChainSample:
        return sample_chain(self.step_function(context), x_init, stochastic, self.config.action_dim, any_noisy)

    def evaluate(self, obs: Obs, act_output: ActOutput) -> EvalOutput:
        log_probs, entropy, _, values = self.evaluate_steps(obs, act_output)
        return EvalOutput(log_probs=log_probs, entropy=entropy, values=values)

    def evaluate_steps(
        self, obs: Obs, act_output: ActOutput
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """evaluate() plus the per-step log-probs (N, K, chunk, action_dim), zero on deterministic steps."""
        context = self.encode_observation(obs)
        chain = act_output.extras["denoise_chain"].to(self.device)
        stochastic = act_output.extras["stochastic_steps"].to(self.device).bool()
        log_probs, entropy, per_step = chain_log_probs(
            self.step_function(context), chain, stochastic, self.config.action_dim
        )
        return log_probs, entropy, per_step, self.values_from_context(context, obs)

    def values_from_context(self, context: dict[str, Any], obs: Obs) -> torch.Tensor | None:
        """(N,) float32 values from the pooled prefix embedding (detached by default) and the state."""
        if self.value_head is None:
            return None
        cfg = self.config
        features = context["pooled"]  # (N, F)
        if cfg.detach_value_input:
            features = features.detach()
        if cfg.value_reads_state:  # (N, F + max_state_dim), the ignored dims included
            state = self.normalized_state(obs, hide_ignored=False)  # (N, max_state_dim)
            if cfg.value_state_clip is not None:
                state = state.clamp(-cfg.value_state_clip, cfg.value_state_clip)
            features = torch.cat([features, state.to(features.dtype)], -1)
        return self.value_head(features)

    def _value_input_dim(self) -> int:
        return self._pooled_dim + (self.config.max_state_dim if self.config.value_reads_state else 0)

    def initial_noise(self, batch: int, deterministic: bool) -> torch.Tensor:
        """x at tau = 1: fresh N(0, I) for sampling, a fixed draw (or zeros) for deterministic mode."""
        cfg = self.config
        shape = (cfg.action_chunk, cfg.max_action_dim)
        if not deterministic:
            return torch.randn(batch, *shape, device=self.device)
        if cfg.deterministic_noise == "zero":
            return torch.zeros(batch, *shape, device=self.device)
        generator = torch.Generator(device="cpu").manual_seed(cfg.deterministic_seed)
        noise = torch.randn(shape, generator=generator, device="cpu")
        return host_to_device(noise, self.device).expand(batch, *shape).clone()

    def step_function(self, context: dict[str, Any]) -> StepFn:
        """The per-step Gaussian transition for sampler.sample_chain / chain_log_probs."""
        cfg = self.config
        grid = timestep_grid(cfg.num_denoise_steps, self.device)
        dt = 1.0 / cfg.num_denoise_steps

        def step(rows: torch.Tensor | None, x: torch.Tensor, k: int) -> StepDistribution:
            rows_context = context if rows is None else select_rows(context, rows)
            tau = grid[k].expand(x.shape[0])
            velocity, features = self.predict_velocity(rows_context, x, tau)
            ode_mean = ode_step_mean(x, velocity, dt)
            if cfg.noise_method == "flow_sde":
                sde_mean, std = flow_sde_step(x, velocity, tau, dt, cfg.noise_level)
            else:
                sde_mean, std = ode_mean, self.noise_head(features)
            return StepDistribution(ode_mean=ode_mean, sde_mean=sde_mean, std=std)

        return step

    # ---- checkpoints ------------------------------------------------------------------------------
    def save_pretrained(self, path: str | os.PathLike, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """config.json + model.safetensors (base class) + the tokenizer, so the directory is self-contained."""
        super().save_pretrained(path, state_dict)
        self.tokenizer.save_pretrained(os.fspath(path))

    @classmethod
    def loads_unnamed_config(cls, config_data: dict[str, Any]) -> bool:
        """No: a config.json naming no policy is an upstream layout (LeRobot's, openpi's, GR00T's) to convert."""
        return False

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **overrides) -> "FlowPolicy":
        """Load a save_pretrained directory; LoRA may be switched on by override on a non-LoRA checkpoint."""
        path = os.fspath(path)
        saved = _read_checkpoint_config(path, cls.name)
        check_saved_field_types(cls.config_class, saved, path, overrides)
        config = cls.config_class.from_dict({**saved, **overrides})
        reject_value_head_overrides(cls.config_class, config.add_value_head, overrides)
        state = read_checkpoint_weights(path)
        checkpoint_has_lora = any(LORA_MARKER in key for key in state)
        with skip_weight_init():
            model = cls(config, apply_lora=False)
        if config.lora_rank > 0 and checkpoint_has_lora:
            model.apply_lora(new_adapters=False)  # the checkpoint's trained adapters are loaded into them
        model.load_checkpoint_state(state, path)
        if config.lora_rank > 0 and not checkpoint_has_lora:
            model.apply_lora()  # fresh adapters (B = 0) on top of the loaded base weights
        model.reveal_state_dims(hidden_state_dims(saved, cls.hidden_state_dims_field))
        model.tokenizer = load_tokenizer(path)
        return model

    def load_checkpoint_state(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Load weights strictly, except for the RL heads: upstream checkpoints have none, and switching
        noise_method adds or drops the noise head. Heads the checkpoint lacks start freshly initialised."""
        own = self.state_dict()
        for key in [k for k, v in state.items() if k.startswith(RL_HEADS) and k in own and v.shape != own[k].shape]:
            # e.g. a value head saved before value_reads_state: a fresh one replaces it (SFT never trains it)
            logger.warning(
                f"{source}: {key} has shape {tuple(state[key].shape)}, the policy's {tuple(own[key].shape)}; fresh head"
            )
            del state[key]
        state = {k: v for k, v in state.items() if k in own or not k.startswith(RL_HEADS)}
        check_weight_shapes(own, state, source, self.name)
        missing, unexpected = self.load_state_dict(state, strict=False)
        other_missing = [key for key in missing if not key.startswith(RL_HEADS)]
        if other_missing or unexpected:
            raise ValueError(
                f"checkpoint {source!r} does not match {self.name}: missing={other_missing[:5]} unexpected={unexpected[:5]}"
            )
        for head in sorted({key.split(".")[0] for key in missing if key.startswith(RL_HEADS)}):
            self.reset_rl_head(head)

    def reset_rl_head(self, head: str) -> None:
        """Re-create `value_head` or `noise_head` with fresh random weights, on the policy's device/dtype."""
        cfg = self.config
        if head == "value_head":
            module = ValueHead(self._value_input_dim(), cfg.value_hidden_dim)
        else:
            module = FlowNoiseHead(self._action_feature_dim, cfg.max_action_dim, cfg.noise_std_min, cfg.noise_std_max)
        setattr(self, head, module.to(self.device, self.compute_dtype))


def enable_activation_checkpointing(model: nn.Module) -> None:
    """Per-layer activation checkpointing (non-reentrant) on a transformers model or a CheckpointableStack."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _read_checkpoint_config(path: str, policy_name: str) -> dict:
    """The checkpoint's saved config (without its "policy" name), as it was trained."""
    data = read_json_file(checkpoint_config_path(path, policy_name))
    saved_name = data.pop("policy", None)
    if saved_name is None:
        raise upstream_layout_error(path, policy_name)
    if saved_name != policy_name:
        raise ValueError(f"checkpoint {path!r} holds policy {saved_name!r}, not {policy_name!r}")
    return data
