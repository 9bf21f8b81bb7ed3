"""Shared pieces of the Prismatic-based VLAs (OpenVLA, OpenVLA-OFT)."""

from .action_tokenizer import ActionTokenizer
from .config import PROMPT_TEMPLATE, TINY_PRISMATIC, PrismaticVLAConfig
from .policy import PrismaticVLAPolicy

__all__ = ["ActionTokenizer", "PROMPT_TEMPLATE", "PrismaticVLAConfig", "PrismaticVLAPolicy", "TINY_PRISMATIC"]
