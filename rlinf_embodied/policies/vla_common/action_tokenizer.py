"""OpenVLA's action tokenizer: 256 uniform bins over [-1, 1] on the last ids of the text vocabulary.

Upstream encodes a normalised action a as bin d = digitize(clip(a, -1, 1), linspace(-1, 1, 256)) in
1..256 and token = V - d, with V the text vocabulary (32000 for Llama-2): the 256 least used Llama ids
31744..31999. Decoding maps a token back to d = V - token and to the centre of bin clip(d - 1, 0, 254)
of the 255 bin centres (so ids V - 256 and V - 255 decode alike, exactly as upstream).
"""

from __future__ import annotations

import torch


class ActionTokenizer:
    def __init__(self, n_bins: int, token_vocab_size: int):
        self.n_bins = n_bins
        self.token_vocab_size = token_vocab_size
        self.bins = torch.linspace(-1.0, 1.0, n_bins, dtype=torch.float64)
        self.bin_centers = ((self.bins[:-1] + self.bins[1:]) / 2.0).float()  # (n_bins - 1,)

    @property
    def first_token_id(self) -> int:
        """The smallest action token id; class index k of a restricted softmax is token first + k."""
        return self.token_vocab_size - self.n_bins

    def actions_to_tokens(self, actions: torch.Tensor) -> torch.Tensor:
        """Normalised actions (...,) in [-1, 1] -> token ids (...,) long, upstream's digitize rule."""
        clipped = actions.double().clamp(-1.0, 1.0)
        bins = torch.bucketize(clipped, self.bins.to(clipped.device), right=True)  # np.digitize: 1..n_bins
        return self.token_vocab_size - bins.clamp(1, self.n_bins)

    def tokens_to_actions(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (...,) -> normalised actions (...,) float32 (bin centres)."""
        index = (self.token_vocab_size - tokens - 1).clamp(0, self.n_bins - 2)
        return self.bin_centers.to(tokens.device)[index]

    def classes_to_tokens(self, classes: torch.Tensor) -> torch.Tensor:
        return classes + self.first_token_id

    def tokens_to_classes(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens - self.first_token_id
