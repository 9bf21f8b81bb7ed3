"""Pieces several policies share: tokenizers, heads."""
