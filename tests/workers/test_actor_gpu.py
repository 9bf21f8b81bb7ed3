"""GPU: offload round trips keep the actor's optimizer stepping the tensors the policy computes with."""

from __future__ import annotations

import pytest
import torch

from rlinf_embodied.policies import ActOutput, make_policy
from rlinf_embodied.scheduler import offload

pytestmark = pytest.mark.gpu


def train_step(policy, optimizer, obs, act_output) -> None:
    evaluated = policy.evaluate(obs, act_output)
    loss = -evaluated.log_probs.sum() + evaluated.values.pow(2).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("offload_between_steps", [False, True])
def test_optimizer_keeps_updating_the_policy(offload_between_steps, fused):
    torch.manual_seed(0)
    policy = make_policy("mlp", size="tiny", action_dim=8, state_dim=42).to("cuda")
    # fused Adam keeps its step counters on the GPU: they must come back there after an offload
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2, fused=fused or None)
    parameter_ids = [id(p) for p in policy.parameters()]
    obs = {"state": torch.randn(32, 42, device="cuda")}
    raw = torch.randn(32, 1, 8, device="cuda")
    act_output = ActOutput(
        actions=raw, log_probs=torch.zeros_like(raw), values=torch.zeros(32, device="cuda"), extras={"raw_actions": raw}
    )
    before = {name: p.detach().clone() for name, p in policy.named_parameters()}
    for _ in range(3):
        if offload_between_steps:
            offload.offload_module(policy)
            offload.offload_optimizer_state(optimizer)
            assert all(p.device.type == "cpu" for p in policy.parameters())
            offload.onload_module(policy, torch.device("cuda", 0))
            offload.onload_optimizer_state(optimizer, torch.device("cuda", 0))
        train_step(policy, optimizer, obs, act_output)
    assert [id(p) for p in policy.parameters()] == parameter_ids, "offload replaced Parameter objects"
    unchanged = [name for name, p in policy.named_parameters() if torch.equal(p.detach(), before[name])]
    assert not unchanged, f"parameters the optimizer never moved: {unchanged}"


@pytest.mark.parametrize("name", ["mlp", "pi0", "gr00t", "openvla", "openvla_oft"])
def test_random_init_is_drawn_on_the_gpu_and_the_policy_acts(name):
    """build_policy draws random weights on the target device (no host copy of a 7B model at start-up)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from rlinf_embodied.config import TrainConfig
    from rlinf_embodied.workers.policy_loading import build_policy

    cfg = TrainConfig()
    cfg.policy.name, cfg.policy.precision = name, "bf16"
    device = torch.device("cuda", 0)
    policy = build_policy(cfg.policy, 7, 8, device, master_weights=True)
    assert all(t.device == device for t in policy.state_dict().values())
    out = policy.act(policy.example_obs(2))
    assert torch.isfinite(out.actions).all() and out.actions.device.type in ("cuda", "cpu")
