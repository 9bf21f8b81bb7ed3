"""OpenVLA-OFT: Prismatic VLM decoding a whole action chunk in one parallel pass."""
