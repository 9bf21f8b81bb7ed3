"""Flow-matching RL math: the denoising ODE as a chain of Gaussian transitions.

Convention (openpi's; GR00T maps into it in its own folder): `tau = 1` is pure noise, `tau = 0` is
data, `x_tau = tau * noise + (1 - tau) * action`, and the network predicts the velocity
`u = dx/dtau = noise - action`. Sampling integrates from tau = 1 to 0 in K Euler steps of size
`dt = 1 / K`; step k goes from `tau_k = 1 - k / K` to `tau_{k+1}`.

Why Gaussian transitions: PPO/GRPO need the log-probability of the sampled action. A deterministic
ODE has none, so RL replaces some steps by stochastic ones whose density is known exactly:

* Flow-SDE (Flow-GRPO / RLinf "flow_sde"): the reverse-time SDE with the same marginals as the ODE,
  `dx = [u - sigma^2 / 2 * score] dtau + sigma dW`, with the score of the linear-interpolation path
  derived from the velocity, `score(x, tau) = -(x + (1 - tau) * u) / tau`. One Euler-Maruyama step is
  `N(mean, (sigma_tau * sqrt(dt))^2)` with `mean = x - dt * (u + sigma_tau^2 / (2 tau) * (x + (1 - tau) u))`
  and `sigma_tau = noise_level * sqrt(tau / (1 - tau))` (tau = 1 in the denominator is replaced by the
  next grid point, as Flow-GRPO does, so the first step stays finite).
* Flow-Noise (ReinFlow / RLinf "flow_noise"): the plain Euler mean `x - dt * u` plus a learned,
  bounded standard deviation predicted by a noise head (see heads.FlowNoiseHead).

Deterministic steps use the ODE mean and no noise.
"""

from __future__ import annotations

import math

import torch

NOISE_METHODS = ("flow_sde", "flow_noise")
LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def timestep_grid(num_steps: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(K + 1,) float32 values of tau from 1 (noise) to 0 (data), evenly spaced."""
    steps = torch.arange(num_steps + 1, dtype=torch.float64, device=device)
    return ((num_steps - steps) / num_steps).to(torch.float32)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Element-wise log N(x; mean, std^2); same value as torch.distributions.Normal(mean, std).log_prob(x)."""
    z = (x - mean) / std
    return -0.5 * z.square() - torch.log(std) - LOG_SQRT_2PI


def gaussian_entropy(std: torch.Tensor) -> torch.Tensor:
    """Element-wise entropy of N(., std^2): 0.5 * log(2 pi e std^2)."""
    return 0.5 + LOG_SQRT_2PI + torch.log(std)


def ode_step_mean(x: torch.Tensor, velocity: torch.Tensor, dt: float) -> torch.Tensor:
    """One Euler step of dx/dtau = u from tau to tau - dt."""
    return x - dt * velocity


def flow_sde_sigma(tau: torch.Tensor, tau_cap: float, noise_level: float) -> torch.Tensor:
    """sigma_tau = noise_level * sqrt(tau / (1 - tau)); tau >= tau_cap uses tau_cap in the denominator.

    `tau_cap` is the grid's second point (1 - dt): at tau = 1 the formula diverges, and Flow-GRPO
    evaluates the denominator at the next grid point instead.
    """
    denominator = 1.0 - torch.clamp(tau, max=tau_cap)
    return noise_level * torch.sqrt(tau / denominator)


def flow_sde_step(
    x: torch.Tensor, velocity: torch.Tensor, tau: torch.Tensor, dt: float, noise_level: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of the Flow-SDE transition from tau to tau - dt.

    x, velocity: (N, ...); tau: (N,) (one time per sample). Returns mean (N, ...) and std (N, 1, ...)
    broadcastable to x. The score term pulls x toward the data the ODE is heading for, which exactly
    compensates the injected noise so that the marginals match the ODE's.
    """
    tau_b = tau.reshape(-1, *([1] * (x.dim() - 1)))
    sigma = flow_sde_sigma(tau_b, tau_cap=1.0 - dt, noise_level=noise_level)
    noise_prediction = x + (1.0 - tau_b) * velocity  # E[noise | x_tau]
    mean = x - dt * (velocity + sigma.square() / (2.0 * tau_b) * noise_prediction)
    std = sigma * math.sqrt(dt)
    return mean, std


def choose_stochastic_steps(
    spec: str, batch_size: int, num_steps: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """(N, K) bool: which denoising steps of each sample are stochastic.

    spec: "all" (every step), "random_one" (one uniformly chosen step per sample, the "mixed"
    ODE/SDE sampling of Flow-GRPO-Fast / RLinf: cheaper training, lower-variance ratios), or a
    comma-separated list of step indices such as "0" or "0,3" (the same steps for every sample).
    """
    spec = spec.strip()
    if spec == "all":
        return torch.ones(batch_size, num_steps, dtype=torch.bool, device=device)
    if spec == "random_one":
        chosen = torch.randint(num_steps, (batch_size,), device=device)
        return torch.nn.functional.one_hot(chosen, num_steps).bool()
    steps = parse_step_list(spec, num_steps)
    mask = torch.zeros(batch_size, num_steps, dtype=torch.bool, device=device)
    mask[:, steps] = True
    return mask


def parse_step_list(spec: str, num_steps: int) -> list[int]:
    try:
        steps = sorted({int(part) for part in spec.split(",") if part.strip()})
    except ValueError:
        steps = []
    if not steps or steps[0] < 0 or steps[-1] >= num_steps:
        raise ValueError(
            f"stochastic_steps={spec!r}: use 'all', 'random_one' or comma-separated step indices in "
            f"[0, {num_steps - 1}]"
        )
    return steps


def validate_stochastic_steps(spec: str, num_steps: int) -> None:
    if spec.strip() not in ("all", "random_one"):
        parse_step_list(spec, num_steps)
