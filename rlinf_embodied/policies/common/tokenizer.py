"""Tokenizers for VLA policies.

Real checkpoints ship their tokenizer (Llama-2 for OpenVLA, Gemma for pi0) and it is loaded from the
checkpoint directory with `AutoTokenizer.from_pretrained(local_path)`. Randomly initialised tiny
models have no tokenizer to load and nothing may be downloaded, so `byte_level_tokenizer()` builds a
self-contained byte-level tokenizer (256 byte tokens + specials, no merges): any string encodes,
deterministically, with no training data. It is saved next to the weights like a real one.
"""

from __future__ import annotations

import os

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    """A 260-token byte-level tokenizer: ids 0-3 are specials, then the 256 byte symbols."""
    specials = list(SPECIAL_TOKENS.values())
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(specials + sorted(alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=SPECIAL_TOKENS["unk_token"]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, **SPECIAL_TOKENS)
    tokenizer.padding_side = "left"  # so the last position is the last prompt token for every row
    return tokenizer


def load_tokenizer(path: str | os.PathLike | None) -> PreTrainedTokenizerBase:
    """The checkpoint's own tokenizer when `path` has one, else the byte-level fallback."""
    if path is not None and os.path.isfile(os.path.join(path, "tokenizer_config.json")):
        tokenizer = AutoTokenizer.from_pretrained(os.fspath(path), local_files_only=True)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        return tokenizer
    return byte_level_tokenizer()
