"""OpenVLA under RL: autoregressive decoding of action_dim action tokens with the KV cache.

`act` runs the prompt once (filling a preallocated KV cache, static_cache.py), then decodes one token per
action dimension, sampling from the temperature-scaled softmax restricted to the 256 action tokens (argmax in
deterministic mode). Its shapes are static, so with `act_cuda_graphs` the whole decode (vision, prompt,
every token) replays from one CUDA graph per batch bucket. `evaluate` recomputes all of them in one
teacher-forced pass over [prompt; tokens[:-1]]: the logits at the last prompt position and at each fed token are
the ones `act` sampled from, up to rounding; with `rescore_log_probs` (the default) `act` takes its log-probs and
values from that same pass, so the rollout's and the actor's agree exactly. Values: value head on the final
hidden state of the last prompt token.

extras: "action_tokens" (N, 1, action_dim) long, the sampled token ids.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F

from ..base import ActOutput, EvalOutput, Obs
from ..common.cuda_graph import act_graph_cache
from ..common.imitation import as_action_chunk, padded_rows_mean
from ..vla_common.policy import PrismaticVLAPolicy, causal_mask, sample_categorical, valid_positions
from .configuration import OPENVLA_PRESETS, OpenVLAConfig
from .static_cache import StaticKVCache


class OpenVLAPolicy(PrismaticVLAPolicy):
    name = "openvla"
    config_class = OpenVLAConfig
    presets = OPENVLA_PRESETS
    config: OpenVLAConfig

    def __init__(self, config: OpenVLAConfig, apply_lora: bool = True):
        super().__init__(config, apply_lora)
        self.finish_init()

    @torch.no_grad()
    def act(self, obs: Obs, deterministic: bool = False) -> ActOutput:
        inputs = self.prompt_inputs(obs)
        decode = functools.partial(self.decode, deterministic=deterministic)
        graphs = act_graph_cache(self)
        if graphs is None:
            out = decode(inputs)
        else:  # the whole decode from one CUDA graph per batch bucket
            out = graphs.run(self, ("decode", deterministic), decode, inputs, inputs["token_ids"].shape[0])
        action_tokens = out["tokens"][:, None]  # (N, 1, D)
        actions = self.unnormalize_actions(self.action_tokenizer.tokens_to_actions(action_tokens))
        return ActOutput(
            actions=actions,
            log_probs=out["log_probs"][:, None],
            values=out.get("values"),
            extras={"action_tokens": action_tokens},
        )

    def decode(self, inputs: dict[str, Any], deterministic: bool) -> dict[str, torch.Tensor]:
        """The prompt once, then one token per action dimension over a static KV cache (static shapes):
        tokens (N, D) long, their log-probs (N, D) and the values (N,) if the policy has a value head."""
        cfg, model = self.config, self.language_model.model
        embeds, valid = self.embed_prompt_inputs(inputs)  # (N, L, W), (N, L)
        batch, length = valid.shape
        capacity = length + cfg.action_dim - 1  # the prompt and every fed action token but the last
        cache = StaticKVCache(len(model.layers), capacity)
        written = torch.cat([valid, valid.new_ones(batch, cfg.action_dim - 1)], dim=1)  # (N, capacity)
        slots = torch.arange(capacity, device=valid.device)
        positions = valid_positions(valid)
        prompt_mask = F.pad(causal_mask(valid), (0, capacity - length), value=False)  # (N, 1, L, capacity)
        hidden = self.run_layers(embeds, prompt_mask, positions, cache)[:, -1]  # (N, W)
        out = {} if self.value_head is None else {"values": self.values_from_hidden(hidden)}
        tokens, log_probs = [], []
        for dim in range(cfg.action_dim):
            log_p = torch.log_softmax(self.action_logits(hidden), dim=-1)  # (N, n_bins)
            if deterministic:
                classes = log_p.argmax(-1)
            else:
                classes = sample_categorical(log_p.exp())
            log_probs.append(log_p.gather(-1, classes[:, None]).squeeze(-1))
            tokens.append(self.action_tokenizer.classes_to_tokens(classes))
            if dim + 1 < cfg.action_dim:
                cache.position = length + dim
                step_mask = (written & (slots <= length + dim))[:, None, None, :]  # (N, 1, 1, capacity)
                step_embeds = model.embed_tokens(tokens[-1][:, None])
                hidden = self.run_layers(step_embeds, step_mask, positions[:, -1:] + dim + 1, cache)[:, -1]
        tokens = torch.stack(tokens, dim=1)  # (N, D)
        if cfg.rescore_log_probs and not deterministic:  # the training pass's numbers, not the decode's
            log_p, hidden_first = self.teacher_forced_log_p(embeds, valid, tokens)
            classes = self.action_tokenizer.tokens_to_classes(tokens)
            rescored = log_p.gather(-1, classes[..., None]).squeeze(-1)  # (N, D)
            values = {} if self.value_head is None else {"values": self.values_from_hidden(hidden_first)}
            return {**values, "tokens": tokens, "log_probs": rescored}
        return {**out, "tokens": tokens, "log_probs": torch.stack(log_probs, dim=1)}

    def evaluate(self, obs: Obs, act_output: ActOutput) -> EvalOutput:
        log_p, values, tokens = self.token_log_probs(obs, act_output.extras["action_tokens"])
        classes = self.action_tokenizer.tokens_to_classes(tokens)
        log_probs = log_p.gather(-1, classes[..., None]).squeeze(-1)  # (N, D)
        entropy = -(log_p.exp() * log_p).sum(-1)
        return EvalOutput(log_probs=log_probs[:, None], entropy=entropy[:, None], values=values)

    def token_log_probs(
        self, obs: Obs, action_tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Teacher-forced pass: log-softmax (N, D, n_bins) of every action position, values (N,), tokens (N, D)."""
        cfg = self.config
        tokens = torch.as_tensor(action_tokens).to(self.device).long().reshape(-1, cfg.action_dim)
        first = self.action_tokenizer.first_token_id
        if ((tokens < first) | (tokens >= first + cfg.n_action_bins)).any():
            raise ValueError(f"action_tokens must lie in the action-token range [{first}, {first + cfg.n_action_bins})")
        embeds, valid = self.embed_prompt(obs)
        log_p, hidden_first = self.teacher_forced_log_p(embeds, valid, tokens)
        return log_p, self.values_from_hidden(hidden_first), tokens

    def teacher_forced_log_p(
        self, embeds: torch.Tensor, valid: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass over [prompt (N, L, W); tokens[:, :-1]]: log-softmax (N, D, n_bins) at every action position
        and the last prompt position's hidden state (N, W). Shared by training and `act`'s rescoring, so both
        run the same kernels; run_layers rather than LlamaModel.forward, so a CUDA graph can hold it."""
        prompt_len = embeds.shape[1]
        fed = self.language_model.model.embed_tokens(tokens[:, :-1])  # (N, D - 1, W)
        embeds = torch.cat([embeds, fed], dim=1)
        valid = torch.cat([valid, valid.new_ones(fed.shape[:2])], dim=1)
        hidden = self.run_layers(embeds, causal_mask(valid), valid_positions(valid))[:, prompt_len - 1 :]  # (N, D, W)
        return torch.log_softmax(self.action_logits(hidden), dim=-1), hidden[:, 0]

    def sft_loss(self, obs: Obs, actions: torch.Tensor, is_pad: torch.Tensor | None = None) -> torch.Tensor:
        """OpenVLA fine-tuning's loss: cross-entropy of the expert action tokens (teacher-forced), averaged
        over the action dimensions. Actions in env units, (N, 1, D) or (N, D) (OpenVLA's chunk is 1);
        rows marked by `is_pad` (N, 1) are excluded."""
        cfg = self.config
        actions = as_action_chunk(actions, cfg.action_chunk, cfg.action_dim, self.name, self.device)
        tokens = self.action_tokenizer.actions_to_tokens(self.normalize_actions(actions).reshape(-1, cfg.action_dim))
        log_p, _, tokens = self.token_log_probs(obs, tokens)
        classes = self.action_tokenizer.tokens_to_classes(tokens)
        nll = -log_p.gather(-1, classes[..., None]).squeeze(-1)  # (N, D)
        return padded_rows_mean(nll[:, None], is_pad)

    @classmethod
    def convert_upstream(cls, path: str, **overrides) -> "OpenVLAPolicy":
        from .convert import convert_openvla_checkpoint

        return convert_openvla_checkpoint(path, None, **overrides)
