"""OpenVLA-OFT under RL: one forward pass decodes the whole chunk (parallel decoding).

Sequence: [<BOS>, patches (each camera), proprio token, prompt, chunk * D action placeholders, </s>].
Placeholder embeddings are zero (as upstream); the placeholders and the stop token attend to the whole
valid prompt and to each other (bidirectional, `bidirectional_action_attention`), the prompt stays
causal. As upstream, the chunk * D hidden states read out start at the last prompt token
(positions L - 1 ... L + K - 2 for prompt length L and K = chunk * D).

Two heads (`action_head_type`):
* "discrete": logits over the 256 action tokens at each read-out position, sampled with temperature
  (argmax when deterministic). extras["action_tokens"] (N, chunk, D) long.
* "continuous": upstream's L1-regression MLP-ResNet gives the normalised mean; a learned per-dimension
  log-std makes it a Gaussian (mean when deterministic). extras["normalized_actions"] (N, chunk, D).
`evaluate` reruns the same single pass with gradients: it does not depend on the sampled actions.
With `act_cuda_graphs`, everything after the host work (vision, the pass, the sampling) replays from one
CUDA graph per batch bucket.
Values: value head on the final hidden state of the last prompt token (which sees no placeholder).
"""

from __future__ import annotations

import functools
import math
from typing import Any, ClassVar

import torch
from torch import nn

from ..base import ActOutput, EvalOutput, Obs
from ..common.cuda_graph import act_graph_cache
from ..common.imitation import as_action_chunk, padded_rows_mean
from ..common.state_dims import zero_state_dims
from ..vla_common.policy import PrismaticVLAPolicy, causal_mask, sample_categorical, valid_positions
from .configuration import OPENVLA_OFT_PRESETS, OpenVLAOFTConfig
from .heads import L1RegressionActionHead, ProprioProjector


class OpenVLAOFTPolicy(PrismaticVLAPolicy):
    name = "openvla_oft"
    config_class = OpenVLAOFTConfig
    presets = OPENVLA_OFT_PRESETS
    config: OpenVLAOFTConfig
    head_prefixes: ClassVar[tuple[str, ...]] = ("value_head.", "action_head.", "proprio_projector.", "action_log_std")
    hidden_state_dims_field = "ignore_state_dims"

    def __init__(self, config: OpenVLAOFTConfig, apply_lora: bool = True):
        super().__init__(config, apply_lora)
        cfg = config
        self.proprio_projector = ProprioProjector(cfg.state_dim, cfg.hidden_size) if cfg.use_proprio else None
        if cfg.action_head_type == "continuous":
            self.action_head = L1RegressionActionHead(cfg.hidden_size, cfg.action_dim, cfg.action_head_num_blocks)
            self.action_log_std = nn.Parameter(torch.full((cfg.action_dim,), cfg.init_log_std))
            self.language_model.lm_head.requires_grad_(False)  # the regression head replaces the token logits
        else:
            self.action_head, self.action_log_std = None, None
        self.finish_init()

    def state_input_layer(self) -> nn.Linear | None:
        return None if self.proprio_projector is None else self.proprio_projector.fc1

    @property
    def num_action_tokens(self) -> int:
        return self.config.action_chunk * self.config.action_dim

    # ---- inputs -----------------------------------------------------------------------------------
    def extra_prefix_tokens(self, obs: Obs) -> torch.Tensor | None:
        if self.proprio_projector is None:
            return None
        if obs.get("state") is None:
            raise KeyError(
                f"openvla_oft with use_proprio=True needs obs['state'] (N, {self.config.state_dim}); "
                f"got keys {sorted(obs)}"
            )
        state = torch.as_tensor(obs["state"]).to(self.device, torch.float32)
        if state.ndim != 2 or state.shape[1] != self.config.state_dim:
            raise ValueError(f"obs['state'] must be (N, {self.config.state_dim}), got {tuple(state.shape)}")
        cfg = self.config
        if cfg.state_low is not None and cfg.state_high is not None:
            low = torch.as_tensor(cfg.state_low, device=state.device)
            high = torch.as_tensor(cfg.state_high, device=state.device)
            state = ((state - low) / (high - low + 1e-8) * 2.0 - 1.0).clamp(-1.0, 1.0)
        state = zero_state_dims(state, cfg.ignore_state_dims)
        return self.proprio_projector(state.to(self.compute_dtype))[:, None]  # (N, 1, W)

    def action_hidden_states(self, obs: Obs) -> tuple[torch.Tensor, torch.Tensor]:
        """One parallel pass: read-out hidden states (N, K, W) and the last prompt token's (N, W)."""
        return self.action_hidden_states_from(self.prompt_inputs(obs))

    def action_hidden_states_from(self, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        embeds, valid = self.embed_prompt_inputs(inputs)  # (N, L, W)
        batch, prompt_len, width = embeds.shape
        block_len = self.num_action_tokens + 1  # placeholders + stop token
        stop_id = self.tokenizer.eos_token_id
        stop = self.language_model.model.embed_tokens(
            torch.full((batch, 1), stop_id, dtype=torch.long, device=embeds.device)
        )
        placeholders = embeds.new_zeros(batch, self.num_action_tokens, width)
        embeds = torch.cat([embeds, placeholders, stop], dim=1)
        valid = torch.cat([valid, valid.new_ones(batch, block_len)], dim=1)
        mask = causal_mask(valid)
        if self.config.bidirectional_action_attention:
            mask[:, :, prompt_len:, prompt_len:] = True
        hidden = self.run_layers(embeds, mask, valid_positions(valid))
        return hidden[:, prompt_len - 1 : prompt_len - 1 + self.num_action_tokens], hidden[:, prompt_len - 1]

    def gaussian(self, action_hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised mean (N, chunk, D) float32 and std (D,) float32 of the continuous head."""
        return self.action_head(action_hidden).float(), self.action_log_std.float().exp()

    # ---- RL interface -----------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: Obs, deterministic: bool = False) -> ActOutput:
        inputs = self.prompt_inputs(obs)
        sample = functools.partial(self.sample_chunk, deterministic=deterministic)
        graphs = act_graph_cache(self)
        if graphs is None:
            out = sample(inputs)
        else:  # the whole pass and the sampling from one CUDA graph per batch bucket
            out = graphs.run(self, ("act", deterministic), sample, inputs, inputs["token_ids"].shape[0])
        if self.config.action_head_type == "discrete":
            extras = {"action_tokens": out["action_tokens"]}
            normalized = self.action_tokenizer.tokens_to_actions(out["action_tokens"])
        else:
            extras = {"normalized_actions": out["normalized_actions"]}
            normalized = out["normalized_actions"]
        return ActOutput(
            actions=self.unnormalize_actions(normalized),
            log_probs=out["log_probs"],
            values=out.get("values"),
            extras=extras,
        )

    def sample_chunk(self, inputs: dict[str, Any], deterministic: bool) -> dict[str, torch.Tensor]:
        """One parallel pass and the chunk drawn from its head, with no host sync: log_probs (N, chunk, D),
        action_tokens (discrete) or normalized_actions (continuous) (N, chunk, D), values (N,) if any."""
        cfg = self.config
        action_hidden, last_hidden = self.action_hidden_states_from(inputs)
        shape = (action_hidden.shape[0], cfg.action_chunk, cfg.action_dim)
        out = {} if self.value_head is None else {"values": self.values_from_hidden(last_hidden)}
        if cfg.action_head_type == "discrete":
            log_p = torch.log_softmax(self.action_logits(action_hidden), dim=-1)  # (N, K, n_bins)
            classes = log_p.argmax(-1) if deterministic else sample_categorical(log_p.exp())
            out["log_probs"] = log_p.gather(-1, classes[..., None]).squeeze(-1).reshape(shape)
            out["action_tokens"] = self.action_tokenizer.classes_to_tokens(classes).reshape(shape)
        else:
            mean, std = self.gaussian(action_hidden)
            normalized = mean if deterministic else mean + std * torch.randn_like(mean)
            out["log_probs"] = gaussian_log_prob(normalized, mean, std)
            out["normalized_actions"] = normalized
        return out

    def evaluate(self, obs: Obs, act_output: ActOutput) -> EvalOutput:
        cfg = self.config
        action_hidden, last_hidden = self.action_hidden_states(obs)
        batch = action_hidden.shape[0]
        if cfg.action_head_type == "discrete":
            log_p = torch.log_softmax(self.action_logits(action_hidden), dim=-1)
            tokens = act_output.extras["action_tokens"].to(self.device).long().reshape(batch, -1)
            classes = self.action_tokenizer.tokens_to_classes(tokens)
            log_probs = log_p.gather(-1, classes[..., None]).squeeze(-1)
            entropy = -(log_p.exp() * log_p).sum(-1)
            log_probs = log_probs.reshape(batch, cfg.action_chunk, cfg.action_dim)
            entropy = entropy.reshape(batch, cfg.action_chunk, cfg.action_dim)
        else:
            mean, std = self.gaussian(action_hidden)
            normalized = act_output.extras["normalized_actions"].to(self.device, torch.float32)
            log_probs = gaussian_log_prob(normalized, mean, std)
            entropy = (0.5 + 0.5 * math.log(2 * math.pi) + std.log()).expand_as(mean)
        return EvalOutput(log_probs=log_probs, entropy=entropy, values=self.values_from_hidden(last_hidden))

    def sft_loss(self, obs: Obs, actions: torch.Tensor, is_pad: torch.Tensor | None = None) -> torch.Tensor:
        """OFT's fine-tuning loss on env-unit chunks (N, chunk, D), by `action_head_type`: "continuous" is
        upstream's L1 regression of the normalised actions by the head's mean (the learned std is left
        alone), "discrete" the cross-entropy of the action tokens at every chunk position. Averaged
        over the chunk rows `is_pad` (N, chunk) does not mark."""
        cfg = self.config
        actions = as_action_chunk(actions, cfg.action_chunk, cfg.action_dim, self.name, self.device)
        target = self.normalize_actions(actions)
        action_hidden, _ = self.action_hidden_states(obs)
        if cfg.action_head_type == "continuous":
            return padded_rows_mean((self.action_head(action_hidden).float() - target).abs(), is_pad)
        log_p = torch.log_softmax(self.action_logits(action_hidden), dim=-1)  # (N, chunk * D, n_bins)
        classes = self.action_tokenizer.tokens_to_classes(self.action_tokenizer.actions_to_tokens(target))
        nll = -log_p.gather(-1, classes.reshape(target.shape[0], -1, 1)).squeeze(-1)  # (N, chunk * D)
        return padded_rows_mean(nll.reshape(target.shape), is_pad)

    # ---- checkpoints ------------------------------------------------------------------------------
    def apply_overrides_to_weights(self, overrides: dict[str, Any]) -> None:
        """policy.overrides.init_log_std on a checkpoint sets RL's starting exploration std (after SFT, whose L1
        loss never trains it); before, the saved std was loaded over the override, which then did nothing."""
        if "init_log_std" in overrides and self.action_log_std is not None:
            with torch.no_grad():
                self.action_log_std.fill_(float(overrides["init_log_std"]))

    def reset_head(self, head: str) -> None:
        cfg = self.config
        fresh = {
            "value_head": lambda: super(OpenVLAOFTPolicy, self).reset_head("value_head"),
            "action_head": lambda: setattr(
                self,
                "action_head",
                L1RegressionActionHead(cfg.hidden_size, cfg.action_dim, cfg.action_head_num_blocks).to(
                    self.device, self.compute_dtype
                ),
            ),
            "proprio_projector": lambda: setattr(
                self,
                "proprio_projector",
                ProprioProjector(cfg.state_dim, cfg.hidden_size).to(self.device, self.compute_dtype),
            ),
            "action_log_std": lambda: self.action_log_std.data.fill_(cfg.init_log_std),
        }
        if head not in fresh:
            raise ValueError(f"openvla_oft cannot initialise missing head {head!r}; valid: {sorted(fresh)}")
        fresh[head]()

    @classmethod
    def convert_upstream(cls, path: str, **overrides) -> "OpenVLAOFTPolicy":
        from .convert import convert_openvla_oft_checkpoint

        return convert_openvla_oft_checkpoint(path, None, **overrides)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Element-wise N(mean, std^2) log-density, float32."""
    return -((x - mean) ** 2) / (2 * std**2) - std.log() - 0.5 * math.log(2 * math.pi)
