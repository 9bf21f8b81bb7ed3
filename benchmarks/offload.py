"""Offload + onload bandwidth of a model with Adam state vs a plain pinned-memory copy of the same bytes.

On a GPU: builds a stack of Linear layers of about --gb GB of parameters, takes one Adam step (state =
2x the parameters), then times Worker.offload_model/offload_optimizer + onload_* against copying the
same number of bytes GPU -> pinned CPU -> GPU with plain tensor copies. Without CUDA it runs the same
code on CPU, where offload is a no-op: the numbers then only show the bookkeeping overhead (noted).

    python benchmarks/offload.py --gb 2            # on a GPU
    python benchmarks/offload.py --device cpu      # CPU smoke run (small default size)
    python benchmarks/offload.py --gb 15 --dtype bfloat16 --no-optimizer   # one 7B copy (a rollout worker's)

Per round it also times copying the weights into freshly pinned host memory while the previous rounds' copies
are still referenced: what an offload cost before modules kept their host buffers (scheduler/offload.py).
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

from rlinf_embodied.scheduler import Worker  # noqa: E402


def build(
    gb: float, width: int, device: torch.device, dtype: torch.dtype = torch.float32, with_optimizer: bool = True
) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """About `gb` GB of Linear weights in `dtype`; Adam state materialised unless with_optimizer is False
    (a frozen base like a LoRA run's 7B weights or a rollout worker's copy: the optimizer stays empty)."""
    per_layer = width * width * torch.empty((), dtype=dtype).element_size()
    layers = max(1, int(gb * 1e9 / per_layer))
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width, bias=False) for _ in range(layers)])
    model = model.to(device=device, dtype=dtype)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    if with_optimizer:
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        optimizer.step()  # materialise exp_avg / exp_avg_sq
        # the actor drops a finished update's gradients before it offloads (ActorWorker.offload); stop 25's
        # fp32 + Adam rows kept them, moved 4/3 of the bytes counted, and read 0.69 of a plain copy
        optimizer.zero_grad(set_to_none=True)
    return model, optimizer


def state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """The bytes an offload moves: weights and optimizer state (`build` leaves no gradients, like the actor)."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    optim = sum(
        v.numel() * v.element_size()
        for s in optimizer.state.values()
        for v in s.values()
        if isinstance(v, torch.Tensor) and v.dim() > 0
    )
    return params + optim


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_offload(worker: Worker, model, optimizer, device, together: bool = True) -> tuple[float, float]:
    """One round trip. together: Worker.offload_state (what the actor does: all copies queued, one synchronize
    and one cache release); otherwise offload_model then offload_optimizer, each waiting and releasing."""
    sync(device)
    start = time.perf_counter()
    if together:
        worker.offload_state(modules=[model], optimizers=[optimizer])
    else:
        worker.offload_model(model)
        worker.offload_optimizer(optimizer)
    sync(device)
    mid = time.perf_counter()
    if together:
        worker.onload_state(modules=[model], optimizers=[optimizer])
    else:
        worker.onload_model(model)
        worker.onload_optimizer(optimizer)
    sync(device)
    return mid - start, time.perf_counter() - mid


def time_plain_copy(num_bytes: int, device: torch.device) -> tuple[float, float]:
    chunk = 256 << 20
    sources = [
        torch.empty(min(chunk, num_bytes - i) // 4, dtype=torch.float32, device=device)
        for i in range(0, num_bytes, chunk)
    ]
    pin = device.type == "cuda"
    hosts = [torch.empty(s.shape, dtype=s.dtype, pin_memory=pin) for s in sources]
    sync(device)
    start = time.perf_counter()
    for s, h in zip(sources, hosts):
        h.copy_(s, non_blocking=True)
    sync(device)
    mid = time.perf_counter()
    for s, h in zip(sources, hosts):
        s.copy_(h, non_blocking=True)
    sync(device)
    return mid - start, time.perf_counter() - mid


def time_fresh_pinned_copy(model: torch.nn.Module, device: torch.device, held: list) -> float:
    """Device -> host into freshly pinned memory, the old copies still referenced (`held`): what every offload
    cost before each module kept its own host buffers, whenever anything held the previous host copies."""
    if device.type != "cuda":
        return float("nan")
    sync(device)
    start = time.perf_counter()
    copies = []
    for p in model.parameters():
        host = torch.empty_like(p, device="cpu", pin_memory=True)
        host.copy_(p.detach(), non_blocking=True)
        copies.append(host)
    sync(device)
    held.append(copies)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--gb", type=positive_float, default=None, help="parameter GB (default 2 on GPU, 0.05 on CPU)")
    parser.add_argument("--width", type=positive_int, default=4096)
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument(
        "--no-optimizer", action="store_true", help="weights only (a frozen base or a rollout copy), no Adam state"
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here; use --device cpu")
    gb = args.gb if args.gb is not None else (2.0 if device.type == "cuda" else 0.05)
    worker = Worker()
    worker.device = device
    width = args.width if device.type == "cuda" else min(args.width, 1024)
    model, optimizer = build(gb, width, device, getattr(torch, args.dtype), not args.no_optimizer)
    num_bytes = state_bytes(model, optimizer)
    reference = [p.detach().clone() for p in list(model.parameters())[:2]]
    kinds = ("offload", "onload", "plain d2h", "plain h2d", "fresh pin d2h", "one by one offload")
    results: dict[str, list[float]] = {kind: [] for kind in kinds}
    held: list = []  # the fresh-pinned copies, kept alive like bookkeeping that holds old host copies
    for _ in range(args.repeats):
        results["fresh pin d2h"].append(time_fresh_pinned_copy(model, device, held))
        off, on = time_offload(worker, model, optimizer, device)
        results["one by one offload"].append(time_offload(worker, model, optimizer, device, together=False)[0])
        d2h, h2d = time_plain_copy(num_bytes, device)
        results["offload"].append(off)
        results["onload"].append(on)
        results["plain d2h"].append(d2h)
        results["plain h2d"].append(h2d)
    exact = all(torch.equal(r, p) for r, p in zip(reference, model.parameters()))
    held.clear()
    best = {k: min(v) for k, v in results.items() if k not in ("fresh pin d2h", "one by one offload")}
    gbs = {k: num_bytes / 1e9 / max(v, 1e-9) for k, v in best.items()}
    what = "model + Adam state" if optimizer.state else "model (no optimizer state)"
    print(f"device {device}, {what} {num_bytes / 1e9:.2f} GB, bit-exact after round trips: {exact}")
    if device.type == "cpu":
        print("note: on CPU offload is a no-op; these numbers only show its overhead, not a transfer")
    print(f"{'direction':>10} {'offload GB/s':>13} {'plain copy GB/s':>16} {'offload/plain':>14}")
    print(
        f"{'to CPU':>10} {gbs['offload']:>13.2f} {gbs['plain d2h']:>16.2f} {gbs['offload'] / gbs['plain d2h']:>14.2f}"
    )
    print(
        f"{'to device':>10} {gbs['onload']:>13.2f} {gbs['plain h2d']:>16.2f} {gbs['onload'] / gbs['plain h2d']:>14.2f}"
    )
    # the first offload pins the module's host buffers (cudaHostAlloc); later ones reuse them. "fresh pin d2h":
    # the weights copied into newly pinned memory while the old copies are held (the cost without kept buffers)
    print("\nseconds per round trip (the first offload pins the kept host buffers):")
    # "one by one offload": the model, then the optimizer, each synchronizing and releasing the GPU cache
    columns = ("offload", "one by one offload", "onload", "plain d2h", "plain h2d", "fresh pin d2h")
    print("| round | " + " | ".join(f"{k} s" for k in columns) + " | fresh pin / offload |")
    print("|---:|" + "---:|" * (len(columns) + 1))
    for i in range(args.repeats):
        row = " | ".join(f"{results[k][i]:.3f}" for k in columns)
        ratio = results["fresh pin d2h"][i] / max(results["offload"][i], 1e-9)
        print(f"| {i + 1} | {row} | {ratio:.1f}x |")


if __name__ == "__main__":
    main()
