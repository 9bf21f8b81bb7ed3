"""GPU fp32 weights into an offloaded bf16 model: `load_state_dict` vs `copy_weights_into`, side by side.

What a collocated rollout does at each sync over CUDA IPC while it is offloaded (workers/weight_copy.py says
why the two differ). The model is --mb MB of bf16 1024x1024 layers in pinned host memory (as
scheduler/offload.py keeps an offloaded model); the weights arrive as fp32 tensors on the GPU.

    python benchmarks/weight_copy.py --mb 6400 --repeats 3      # pi0-3b-sized (3.2B parameters)
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_args import positive_float, positive_int  # noqa: E402

import torch  # noqa: E402

from rlinf_embodied.workers.weight_copy import copy_weights_into  # noqa: E402

WIDTH = 1024


def offloaded_bf16_model(mb: float) -> torch.nn.Module:
    layers = max(1, int(mb * 1e6 / (WIDTH * WIDTH * 2)))
    model = torch.nn.Sequential(*[torch.nn.Linear(WIDTH, WIDTH, bias=False) for _ in range(layers)]).to(torch.bfloat16)
    for parameter in model.parameters():
        parameter.data = parameter.data.pin_memory()
    return model


def timed(fn) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=positive_float, default=2048, help="size of the bf16 model in MB")
    parser.add_argument("--repeats", type=positive_int, default=3)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("weight_copy.py measures GPU -> host copies and needs CUDA")
    model = offloaded_bf16_model(args.mb)
    weights = {name: tensor.float().cuda() for name, tensor in model.state_dict().items()}
    gb = sum(t.numel() for t in weights.values()) * 2 / 1e9
    print(f"# {torch.cuda.get_device_name()}: {len(weights)} tensors, {gb:.2f} GB in bf16 on the host side")
    print("| round | load_state_dict s | copy_weights_into s | speed-up | copy_weights_into GB/s |")
    print("|---:|---:|---:|---:|---:|")
    for round_index in range(1, args.repeats + 1):
        plain = timed(lambda: model.load_state_dict(weights))
        fast = timed(lambda: copy_weights_into(model, weights))
        print(f"| {round_index} | {plain:.3f} | {fast:.3f} | {plain / fast:.1f}x | {gb / fast:.1f} |")
    for name, tensor in model.state_dict().items():  # the copies agree
        assert torch.equal(tensor, weights[name].to(torch.bfloat16).cpu()), name


if __name__ == "__main__":
    main()
