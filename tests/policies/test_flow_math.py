"""Unit tests of the shared flow-matching RL math (rlinf_embodied/policies/flow)."""

import math

import pytest
import torch

from rlinf_embodied.policies.flow import (
    StepDistribution,
    chain_log_probs,
    choose_stochastic_steps,
    flow_sde_step,
    gaussian_entropy,
    gaussian_log_prob,
    ode_step_mean,
    sample_chain,
    timestep_grid,
)


def test_gaussian_log_prob_and_entropy_match_torch_normal():
    generator = torch.Generator().manual_seed(0)
    mean = torch.randn(4, 5, 3, generator=generator)
    std = torch.rand(4, 5, 3, generator=generator) + 0.05
    x = mean + std * torch.randn(4, 5, 3, generator=generator)
    normal = torch.distributions.Normal(mean, std)
    torch.testing.assert_close(gaussian_log_prob(x, mean, std), normal.log_prob(x), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gaussian_entropy(std), normal.entropy(), rtol=1e-6, atol=1e-6)


def test_timestep_grid_runs_from_noise_to_data():
    grid = timestep_grid(4)
    assert grid.tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]


def test_flow_sde_without_noise_is_the_ode_step():
    x, velocity = torch.randn(3, 2, 4), torch.randn(3, 2, 4)
    tau = torch.full((3,), 0.6)
    mean, std = flow_sde_step(x, velocity, tau, dt=0.2, noise_level=0.0)
    torch.testing.assert_close(mean, ode_step_mean(x, velocity, 0.2))
    assert torch.all(std == 0)


def test_flow_sde_first_step_is_finite():
    mean, std = flow_sde_step(torch.randn(2, 1, 1), torch.randn(2, 1, 1), torch.ones(2), dt=0.1, noise_level=0.5)
    assert torch.isfinite(mean).all() and torch.isfinite(std).all()
    # tau = 1 uses the next grid point in the denominator: sigma = 0.5 * sqrt(1 / 0.1)
    torch.testing.assert_close(std.flatten(), torch.full((2,), 0.5 * math.sqrt(10.0) * math.sqrt(0.1)))


def gaussian_data_velocity(data_mean: float, data_std: float):
    """Exact velocity E[noise - x0 | x_tau] when x0 ~ N(m, s^2): lets us check the sampler's marginals."""

    def velocity(x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        tau = tau.reshape(-1, *([1] * (x.dim() - 1)))
        variance = tau**2 + (1 - tau) ** 2 * data_std**2
        covariance = tau - (1 - tau) * data_std**2
        return -data_mean + covariance / variance * (x - (1 - tau) * data_mean)

    return velocity


@pytest.mark.parametrize("noise_level", [0.0, 0.7])
def test_flow_sde_sampler_keeps_the_data_distribution(noise_level):
    """The score correction makes the SDE sample the same data distribution as the ODE."""
    torch.manual_seed(0)
    data_mean, data_std, num_steps = 1.5, 0.5, 100
    velocity = gaussian_data_velocity(data_mean, data_std)
    grid = timestep_grid(num_steps)

    def step(rows, x, k):
        tau = grid[k].expand(x.shape[0])
        u = velocity(x, tau)
        sde_mean, std = flow_sde_step(x, u, tau, 1.0 / num_steps, noise_level)
        return StepDistribution(ode_mean=ode_step_mean(x, u, 1.0 / num_steps), sde_mean=sde_mean, std=std)

    x_init = torch.randn(20000, 1, 1)
    stochastic = torch.ones(20000, num_steps, dtype=torch.bool)
    samples = sample_chain(step, x_init, stochastic, action_dim=1).chain[:, -1].flatten()
    assert abs(samples.mean().item() - data_mean) < 0.03
    assert abs(samples.std().item() - data_std) < 0.03


def test_choose_stochastic_steps():
    assert choose_stochastic_steps("all", 3, 4).all()
    one = choose_stochastic_steps("random_one", 50, 4)
    assert one.shape == (50, 4) and torch.all(one.sum(dim=1) == 1)
    fixed = choose_stochastic_steps("0, 3", 2, 4)
    assert fixed.tolist() == [[True, False, False, True]] * 2
    for bad in ("4", "-1", "first", ""):
        with pytest.raises(ValueError):
            choose_stochastic_steps(bad, 2, 4)


class ToyVelocity(torch.nn.Module):
    """A learnable velocity field and noise std, standing in for a policy network."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = torch.nn.Linear(dim + 1, dim)
        self.log_std = torch.nn.Parameter(torch.full((dim,), -1.5))

    def step_fn(self, num_steps: int, method: str):
        grid = timestep_grid(num_steps)

        def step(rows, x, k):
            tau = grid[k].expand(x.shape[0])
            u = self.linear(torch.cat([x, tau[:, None, None].expand(*x.shape[:2], 1)], dim=-1))
            ode = ode_step_mean(x, u, 1.0 / num_steps)
            if method == "flow_sde":
                sde_mean, std = flow_sde_step(x, u, tau, 1.0 / num_steps, 0.5)
            else:
                sde_mean, std = ode, self.log_std.exp().expand_as(x)
            return StepDistribution(ode_mean=ode, sde_mean=sde_mean, std=std)

        return step


@pytest.mark.parametrize("method", ["flow_sde", "flow_noise"])
@pytest.mark.parametrize("spec", ["all", "random_one", "1,2"])
def test_sampled_chain_log_probs_are_recomputed_exactly(method, spec):
    torch.manual_seed(0)
    model, num_steps, action_dim = ToyVelocity(dim=5), 4, 3
    stochastic = choose_stochastic_steps(spec, 6, num_steps)
    with torch.no_grad():
        sample = sample_chain(model.step_fn(num_steps, method), torch.randn(6, 2, 5), stochastic, action_dim)
    log_probs, entropy, per_step = chain_log_probs(
        model.step_fn(num_steps, method), sample.chain, stochastic, action_dim
    )
    torch.testing.assert_close(log_probs, sample.log_probs, rtol=0, atol=1e-5)
    torch.testing.assert_close(entropy, sample.entropy, rtol=0, atol=1e-5)
    assert torch.all(per_step[~stochastic] == 0) and torch.all(per_step[stochastic] != 0)
    log_probs.sum().backward()
    assert model.linear.weight.grad.abs().sum() > 0
    if method == "flow_noise":
        assert model.log_std.grad[:action_dim].abs().sum() > 0


def test_padded_dimensions_follow_the_ode_without_noise():
    torch.manual_seed(0)
    model, num_steps, action_dim = ToyVelocity(dim=5), 3, 2
    step = model.step_fn(num_steps, "flow_sde")
    with torch.no_grad():
        sample = sample_chain(step, torch.randn(4, 2, 5), torch.ones(4, num_steps, dtype=torch.bool), action_dim)
        for k in range(num_steps):
            ode_mean = step(None, sample.chain[:, k], k).ode_mean
            torch.testing.assert_close(sample.chain[:, k + 1, :, action_dim:], ode_mean[..., action_dim:])
            assert not torch.allclose(sample.chain[:, k + 1, :, :action_dim], ode_mean[..., :action_dim])


def test_deterministic_steps_are_ode_steps_and_carry_no_log_prob():
    torch.manual_seed(0)
    model, num_steps = ToyVelocity(dim=3), 4
    step = model.step_fn(num_steps, "flow_sde")
    stochastic = choose_stochastic_steps("2", 3, num_steps)
    with torch.no_grad():
        sample = sample_chain(step, torch.randn(3, 2, 3), stochastic, 3)
        for k in (0, 1, 3):
            torch.testing.assert_close(sample.chain[:, k + 1], step(None, sample.chain[:, k], k).ode_mean)
        manual = gaussian_log_prob(
            sample.chain[:, 3],
            *(lambda d: (d.sde_mean, d.std.expand_as(d.sde_mean)))(step(None, sample.chain[:, 2], 2)),
        )
    torch.testing.assert_close(sample.log_probs, manual, rtol=0, atol=1e-6)
