"""OpenVLA under RL: autoregressive decoding of action_dim action tokens with the KV cache.

`act` runs the prompt once (filling a transformers DynamicCache), then decodes one token per action
dimension, sampling from the temperature-scaled softmax restricted to the 256 action tokens (argmax in
deterministic mode). `evaluate` recomputes all of them in one teacher-forced pass over
[prompt; tokens[:-1]]: the logits at the last prompt position and at each fed token are exactly the
ones `act` sampled from. Values: value head on the final hidden state of the last prompt token.

extras: "action_tokens" (N, 1, action_dim) long, the sampled token ids.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from ..base import ActOutput, EvalOutput, Obs
from ..common.imitation import as_action_chunk, padded_rows_mean
from ..vla_common.policy import PrismaticVLAPolicy, causal_mask, valid_positions
from .configuration import OPENVLA_PRESETS, OpenVLAConfig


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
        cfg = self.config
        embeds, valid = self.embed_prompt(obs)  # (N, L, W), (N, L)
        positions = valid_positions(valid)
        cache = DynamicCache(config=self.language_model.config)
        hidden = self.run_llm(embeds, causal_mask(valid), positions, cache)[:, -1]  # (N, W)
        values = self.values_from_hidden(hidden)
        tokens, log_probs = [], []
        for dim in range(cfg.action_dim):
            log_p = torch.log_softmax(self.action_logits(hidden), dim=-1)  # (N, n_bins)
            classes = log_p.argmax(-1) if deterministic else torch.multinomial(log_p.exp(), 1).squeeze(-1)
            log_probs.append(log_p.gather(-1, classes[:, None]).squeeze(-1))
            tokens.append(self.action_tokenizer.classes_to_tokens(classes))
            if dim + 1 < cfg.action_dim:
                valid = torch.cat([valid, valid.new_ones(valid.shape[0], 1)], dim=1)
                step_embeds = self.language_model.model.embed_tokens(tokens[-1][:, None])
                step_positions = positions[:, -1:] + dim + 1
                hidden = self.run_llm(step_embeds, valid[:, None, None, :], step_positions, cache)[:, -1]
        action_tokens = torch.stack(tokens, dim=1)[:, None]  # (N, 1, D)
        actions = self.unnormalize_actions(self.action_tokenizer.tokens_to_actions(action_tokens))
        return ActOutput(
            actions=actions,
            log_probs=torch.stack(log_probs, dim=1)[:, None],
            values=values,
            extras={"action_tokens": action_tokens},
        )

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
        prompt_len = embeds.shape[1]
        fed = self.language_model.model.embed_tokens(tokens[:, :-1])  # (N, D - 1, W)
        embeds = torch.cat([embeds, fed], dim=1)
        valid = torch.cat([valid, valid.new_ones(fed.shape[:2])], dim=1)
        hidden = self.run_llm(embeds, causal_mask(valid), valid_positions(valid))[:, prompt_len - 1 :]  # (N, D, W)
        log_p = torch.log_softmax(self.action_logits(hidden), dim=-1)
        return log_p, self.values_from_hidden(hidden[:, 0]), tokens

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
