"""Instruction tokenization of the flow VLAs: the per-tokenizer cache returns exactly what a fresh
tokenizer call returns, and tokenizes each distinct instruction once."""

from __future__ import annotations

import pytest
import torch

from rlinf_embodied.policies import make_policy
from rlinf_embodied.policies.flow import processing


def test_cached_tokenization_matches_a_fresh_call_and_tokenizes_each_text_once(monkeypatch):
    tokenizer = make_policy("pi0", size="tiny").tokenizer
    max_len = 32
    calls = []
    original = processing._tokenize

    def counting(tokenizer, texts, max_len):
        calls.append(list(texts))
        return original(tokenizer, texts, max_len)

    monkeypatch.setattr(processing, "_tokenize", counting)
    batch = ["pick up the cube", "open_the drawer", "pick up the cube", "stack the blocks\n"] * 3
    ids, valid = processing.tokenize_instructions(tokenizer, batch, max_len, "cpu")
    again, valid_again = processing.tokenize_instructions(tokenizer, list(reversed(batch)), max_len, "cpu")

    assert len(calls) == 1 and len(calls[0]) == 3  # three distinct texts, tokenized once, never again
    texts = [processing.clean_instruction(text) + "\n" for text in batch]
    tokenizer.padding_side = "right"  # what tokenize_instructions asks of it (and restores)
    fresh = tokenizer(texts, padding="max_length", truncation=True, max_length=max_len, return_tensors="pt")
    assert torch.equal(ids, fresh["input_ids"]) and torch.equal(valid, fresh["attention_mask"].bool())
    assert torch.equal(again, ids.flip(0)) and torch.equal(valid_again, valid.flip(0))
    assert valid.dtype == torch.bool and ids.shape == (len(batch), max_len)
    with pytest.raises(ValueError, match="max_token_len=4"):  # the length check still runs on new texts
        processing.tokenize_instructions(tokenizer, ["a much longer instruction than four tokens"], 4, "cpu")

    longest = int(valid.sum(dim=1).max())  # trimmed: the columns no row uses go, to a multiple of 8
    trimmed, trimmed_valid = processing.tokenize_instructions(tokenizer, batch, max_len, "cpu", trim_to=8)
    assert trimmed.shape[1] == -(-longest // 8) * 8 < max_len
    assert torch.equal(trimmed, ids[:, : trimmed.shape[1]]) and torch.equal(trimmed_valid, valid[:, : trimmed.shape[1]])
    assert not valid[:, trimmed.shape[1] :].any()  # only padding was dropped
    long = processing.tokenize_instructions(tokenizer, batch, longest + 1, "cpu", trim_to=8)[0]
    assert long.shape[1] == longest + 1  # never wider than max_len
