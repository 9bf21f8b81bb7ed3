"""CUDA graphs of a flow policy's denoising loop: `act` without per-kernel Python and launch overhead.

At small batches a real-size pi0 `act` is launch-bound (issue 13: 59x its weight-reading floor at
batch 1, flat from batch 1 to 8): every denoising step runs the action expert's layers as dozens of
small kernels, each launched from Python. `DenoiseGraphs` captures the whole loop (all steps, the
Flow-SDE noise and the log-probs) once per (batch bucket, noisy-step pattern, context layout) and
replays it as one launch. The prefix (vision tower and VLM) still runs eagerly, once per `act`.

How replay stays correct:
- The graph reads static buffers: `run` copies the context (prefix K/V, state, ...), the initial
  noise and the stochastic mask into them, replays, and returns copies of the outputs.
- A graph holds the addresses of the weights it was captured with. Weights that are replaced rather
  than copied in place (an onload after an offload, a module moved between devices) change those
  addresses: every graph is then dropped and recaptured.
- Batches are padded to a power of two by repeating their last row (the padding rows' outputs are
  dropped), so a runner whose batch varies captures a few graphs, not one per size.
- Noise inside the graph comes from PyTorch's graph-safe CUDA generator: each replay draws fresh noise.
- `act` and `evaluate` still run the same transition formula on the same stored chain, so their
  log-probs agree as in eager mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from .sampler import ChainSample
from .utils import select_rows

# (context, x_init, stochastic, any_noisy) -> ChainSample, run eagerly inside the capture
DenoiseFn = Callable[[dict[str, Any], torch.Tensor, torch.Tensor, tuple[bool, ...]], ChainSample]


def batch_bucket(batch: int) -> int:
    """The padded batch a graph is captured for: the next power of two (1, 2, 4, 8, ...)."""
    if batch < 1:
        raise ValueError(f"batch={batch} must be >= 1")
    return 1 << (batch - 1).bit_length()


def pad_batch(tree: Any, batch: int, bucket: int, device: torch.device) -> Any:
    """Every batch-first tensor in `tree` padded from `batch` to `bucket` rows by repeating the last row."""
    if bucket == batch:
        return tree
    rows = torch.cat([torch.arange(batch, device=device), torch.full((bucket - batch,), batch - 1, device=device)])
    return select_rows(tree, rows)


def tensor_leaves(tree: Any) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [leaf for key in sorted(tree) for leaf in tensor_leaves(tree[key])]
    if isinstance(tree, (list, tuple)):
        return [leaf for item in tree for leaf in tensor_leaves(item)]
    return []


def layout(tree: Any) -> tuple:
    """Shapes and dtypes of the tensors in `tree`: a graph replays only on inputs of the same layout."""
    return tuple((tuple(leaf.shape), leaf.dtype) for leaf in tensor_leaves(tree))


def weight_addresses(module: nn.Module) -> tuple:
    return tuple((t.data_ptr(), t.dtype) for t in (*module.parameters(), *module.buffers()))


@dataclass
class CapturedDenoise:
    graph: torch.cuda.CUDAGraph
    static_inputs: dict[str, Any]  # {"context": ..., "x_init": ..., "stochastic": ...}
    output: ChainSample


class DenoiseGraphs:
    """Captured denoising loops of one policy, keyed by batch bucket, noisy-step pattern and layout."""

    def __init__(self, max_graphs: int = 8, warmup_runs: int = 2) -> None:
        self.max_graphs = max_graphs
        self.warmup_runs = warmup_runs
        self.graphs: dict[tuple, CapturedDenoise] = {}
        self.addresses: tuple = ()
        self.pool = None  # one memory pool shared by all graphs
        self.captures = 0  # how many graphs were captured (recaptures included)

    def run(
        self,
        module: nn.Module,
        denoise: DenoiseFn,
        context: dict[str, Any],
        x_init: torch.Tensor,
        stochastic: torch.Tensor,
    ) -> ChainSample:
        batch = x_init.shape[0]
        bucket = batch_bucket(batch)
        any_noisy = tuple(stochastic.any(dim=0).tolist())  # the one host sync, as in eager sampling
        addresses = weight_addresses(module)
        if addresses != self.addresses:  # weights moved: every graph points at stale memory
            self.graphs.clear()
            self.addresses = addresses
        inputs = pad_batch(dict(context=context, x_init=x_init, stochastic=stochastic), batch, bucket, x_init.device)
        key = (bucket, any_noisy, torch.is_inference_mode_enabled(), layout(inputs))
        captured = self.graphs.get(key)
        if captured is None:
            if len(self.graphs) >= self.max_graphs:  # a pathological mix of shapes: stay eager
                return denoise(context, x_init, stochastic, any_noisy)
            captured = self.graphs[key] = self.capture(denoise, inputs, any_noisy)
        for static, value in zip(tensor_leaves(captured.static_inputs), tensor_leaves(inputs)):
            static.copy_(value)
        captured.graph.replay()
        out = captured.output
        return ChainSample(
            chain=out.chain[:batch].clone(),
            log_probs=out.log_probs[:batch].clone(),
            entropy=out.entropy[:batch].clone(),
        )

    def capture(self, denoise: DenoiseFn, inputs: dict[str, Any], any_noisy: tuple[bool, ...]) -> CapturedDenoise:
        static = select_rows(inputs, torch.arange(inputs["x_init"].shape[0], device=inputs["x_init"].device))

        def run_static() -> ChainSample:
            return denoise(static["context"], static["x_init"], static["stochastic"], any_noisy)

        # Warm-up on a side stream (as PyTorch's capture recipe asks): library handles, workspaces and
        # lazily initialised kernels are set up outside the capture.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup_runs):
                run_static()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, pool=self.pool):
                output = run_static()
        except RuntimeError as error:  # e.g. a host sync or a host-to-device copy inside the loop
            raise RuntimeError(
                f"act_cuda_graphs: capturing the denoising loop failed ({error}); "
                "set policy.overrides.act_cuda_graphs=false to run it eagerly"
            ) from error
        self.pool = graph.pool()
        self.captures += 1
        return CapturedDenoise(graph=graph, static_inputs=static, output=output)
