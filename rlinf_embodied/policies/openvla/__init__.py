"""OpenVLA: Prismatic VLM decoding one action token per action dimension."""
