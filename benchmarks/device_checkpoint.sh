#!/usr/bin/env bash
# Carry a policy checkpoint across the GPU device's limits: at most 64 MiB travels per call in either direction,
# and a single returned file must fit too. `pack` casts the weights to bf16, compresses the tar with xz (pi0-small's
# 44.4 MB of bf16 weights become 31.2 MB, so the checkpoint and the ray bundle fit one call) and cuts it into 15 MiB
# pieces with a manifest; `unpack` rebuilds the directory once every piece has arrived (pieces may come in different calls),
# checking the manifest's sha256, and creates the destination only when it is complete.
#   bash benchmarks/device_checkpoint.sh pack <ckpt>/policy $OUT/ckpt           # on the device, at the end of a run
#   bash benchmarks/device_checkpoint.sh unpack .device-deps/ckpt /tmp/ckpt_in  # exit 3 while pieces are missing
# `pack` runs $PYTHON (default python3), which needs torch and safetensors (the tests pass their own interpreter).
set -euo pipefail
stage=${1:-}; source=${2:-}; dest=${3:-}
[ -n "$source" ] && [ -n "$dest" ] || { echo "usage: $0 pack|unpack <source> <dest>"; exit 2; }
case $stage in
  pack)
    [ -f "$source/model.safetensors" ] || { echo "no $source/model.safetensors to pack"; exit 2; }
    work=$(mktemp -d); cp -r "$source"/. "$work"
    "${PYTHON:-python3}" - "$work/model.safetensors" <<'PY'
import sys, torch
from safetensors.torch import load_file, save_file
path = sys.argv[1]
tensors = load_file(path)
save_file({k: v.to(torch.bfloat16) if v.dtype == torch.float32 else v for k, v in tensors.items()}, path)
PY
    mkdir -p "$dest"
    tar -cf - -C "$work" . | xz -T0 -6 | split -b 15M - "$dest/ckpt.part."
    (cd "$dest" && sha256sum ckpt.part.* > SHA256SUMS)
    rm -rf "$work"; ls -la "$dest" ;;
  unpack)
    [ -f "$source/SHA256SUMS" ] || { echo "no $source/SHA256SUMS (the manifest travels with any piece)"; exit 3; }
    missing=$(cd "$source" && awk '{print $2}' SHA256SUMS | while read -r piece; do [ -f "$piece" ] || echo "$piece"; done)
    [ -z "$missing" ] || { echo "waiting for pieces:" $missing; exit 3; }
    (cd "$source" && sha256sum --quiet -c SHA256SUMS)
    rm -rf "$dest.partial" && mkdir -p "$dest.partial"
    # pieces packed before stop 33 hold a plain tar: xz only when the first piece starts with xz's magic bytes
    xz_magic=$(head -c 6 "$(ls "$source"/ckpt.part.* | head -1)" | od -An -tx1 | tr -d ' \n')
    if [ "$xz_magic" = fd377a585a00 ]; then cat "$source"/ckpt.part.* | xz -dc | tar -xf - -C "$dest.partial"
    else cat "$source"/ckpt.part.* | tar -xf - -C "$dest.partial"; fi
    rm -rf "$dest" && mv "$dest.partial" "$dest" && echo "unpacked $dest" ;;
  *) echo "unknown stage $stage: pack | unpack"; exit 2 ;;
esac
