"""PPO / DAPO losses: clipping, value clipping, reduction levels, masks, metrics."""

from __future__ import annotations

import pytest
import torch

from rlinf_embodied.algorithms import AlgorithmConfig, aggregate, get_loss, policy_loss, reduce_log_probs

METRICS = {"policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "ratio_mean", "ratio_max"}


def config(**overrides) -> AlgorithmConfig:
    """GAE (vf_coef > 0: a critic it reads must train); losses given no new_values add no value loss."""
    return AlgorithmConfig(**{"normalize_advantages": False, "vf_coef": 0.5, "entropy_coef": 0.0, **overrides})


def ratio_gradients(cfg: AlgorithmConfig, ratios: list[float], advantages: list[float]):
    """Gradient of the loss w.r.t. each sample's new log-prob (B samples, chunk 1, act_dim 1)."""
    new_log_probs = torch.log(torch.tensor(ratios)).reshape(-1, 1, 1).requires_grad_(True)
    old_log_probs = torch.zeros_like(new_log_probs)
    loss, metrics = policy_loss(
        new_log_probs=new_log_probs,
        old_log_probs=old_log_probs,
        advantages=torch.tensor(advantages),
        entropy=None,
        new_values=None,
        old_values=None,
        returns=torch.zeros(len(ratios)),
        cfg=cfg,
    )
    loss.backward()
    return new_log_probs.grad.flatten(), metrics


def test_ppo_clip_zeroes_the_gradient_only_where_the_clip_binds():
    ratios = [1.5, 0.5, 1.5, 0.5, 1.1]
    advantages = [1.0, 1.0, -1.0, -1.0, 1.0]
    grad, metrics = ratio_gradients(config(clip_ratio=0.2), ratios, advantages)
    # A > 0 and ratio > 1.2: clipped, no gradient. A > 0, ratio < 0.8: the unclipped term is the min.
    # A < 0 and ratio < 0.8: clipped. A < 0, ratio > 1.2: unclipped. Ratio inside the clip: gradient.
    assert grad[0] == 0 and grad[3] == 0
    for i in (1, 2, 4):
        expected = -advantages[i] * ratios[i] / len(ratios)  # d(-A * r)/d log r = -A * r, mean over B
        torch.testing.assert_close(grad[i], torch.tensor(expected))
    assert metrics.keys() >= METRICS
    torch.testing.assert_close(metrics["clip_fraction"], torch.tensor(0.8))
    torch.testing.assert_close(metrics["ratio_max"], torch.tensor(1.5))
    assert metrics["approx_kl"] > 0


def test_dapo_decoupled_clip_is_asymmetric():
    ratios, advantages = [1.25, 0.75, 1.35], [1.0, -1.0, 1.0]
    ppo_grad, _ = ratio_gradients(config(clip_ratio=0.2), ratios, advantages)
    dapo_cfg = config(loss_type="dapo", clip_ratio_low=0.2, clip_ratio_high=0.28)
    dapo_grad, dapo_metrics = ratio_gradients(dapo_cfg, ratios, advantages)
    assert ppo_grad[0] == 0 and dapo_grad[0] != 0  # 1.25: outside PPO's 1.2, inside DAPO's 1.28
    assert ppo_grad[1] == 0 and dapo_grad[1] == 0  # 0.75 < 0.8 with A < 0: both clip low at 0.2
    assert dapo_grad[2] == 0  # 1.35 > 1.28
    torch.testing.assert_close(dapo_metrics["clip_fraction"], torch.tensor(2 / 3))
    assert get_loss("dapo") is not get_loss("ppo")


def value_case(new: float, old: float, ret: float, value_clip: float | None):
    new_values = torch.tensor([new], requires_grad=True)
    loss, metrics = policy_loss(
        new_log_probs=torch.zeros(1, 1, 1),
        old_log_probs=torch.zeros(1, 1, 1),
        advantages=torch.zeros(1),
        entropy=None,
        new_values=new_values,
        old_values=torch.tensor([old]),
        returns=torch.tensor([ret]),
        cfg=config(vf_coef=1.0, value_clip=value_clip),
    )
    loss.backward()
    return float(metrics["value_loss"]), float(new_values.grad)


def test_value_clipping_takes_the_pessimistic_term():
    # new 1, old 0, clip 0.2 -> clipped value 0.2. Return 2: clipped error 1.8 > 1: constant in new.
    assert value_case(1.0, 0.0, 2.0, 0.2) == pytest.approx((0.5 * 1.8**2, 0.0))
    # Return -1: unclipped error 2 > clipped 1.2: the usual gradient (new - ret) = 2.
    assert value_case(1.0, 0.0, -1.0, 0.2) == pytest.approx((0.5 * 4.0, 2.0))
    assert value_case(1.0, 0.0, 2.0, None) == pytest.approx((0.5, -1.0))


def test_reduce_log_probs_levels_shapes_and_sums():
    log_probs = torch.randn(5, 4, 3)
    token, action, chunk = (reduce_log_probs(log_probs, level) for level in ("token", "action", "chunk"))
    assert token.shape == (5, 12) and action.shape == (5, 4) and chunk.shape == (5,)
    torch.testing.assert_close(token.sum(1), chunk)
    torch.testing.assert_close(action.sum(1), chunk)
    torch.testing.assert_close(action[:, 1], log_probs[:, 1].sum(-1))
    with pytest.raises(ValueError, match="unknown log-prob level 'step'"):
        reduce_log_probs(log_probs, "step")


@pytest.mark.parametrize("level", ["token", "action", "chunk"])
def test_loss_at_each_level_broadcasts_advantages(level):
    gen = torch.Generator().manual_seed(0)
    old = torch.randn(6, 4, 3, generator=gen)
    new = (old + 0.01 * torch.randn(6, 4, 3, generator=gen)).requires_grad_(True)
    advantages = torch.randn(6, generator=gen)
    cfg = config(logprob_level=level, clip_ratio=0.9)  # ratios within 1 +- 0.9: loss = -mean(A * ratio)
    loss, _ = policy_loss(
        new_log_probs=new,
        old_log_probs=old,
        advantages=advantages,
        entropy=None,
        new_values=None,
        old_values=None,
        returns=torch.zeros(6),
        cfg=cfg,
    )
    ratio = torch.exp(reduce_log_probs(new - old, level))
    expected = -(advantages.reshape(6, *([1] * (ratio.dim() - 1))) * ratio).mean()
    torch.testing.assert_close(loss, expected)


def test_entropy_bonus_and_normalisation():
    cfg = config(entropy_coef=0.1, normalize_advantages=True, logprob_level="action")
    log_probs = torch.zeros(4, 2, 3)
    entropy = torch.full((1, 1, 3), 0.5)  # broadcast per token
    loss, metrics = policy_loss(
        new_log_probs=log_probs,
        old_log_probs=log_probs,
        advantages=torch.tensor([1.0, 2.0, 3.0, 4.0]),
        entropy=entropy,
        new_values=None,
        old_values=None,
        returns=torch.zeros(4),
        cfg=cfg,
    )
    torch.testing.assert_close(metrics["entropy"], torch.tensor(1.5))  # summed over act_dim
    torch.testing.assert_close(metrics["policy_loss"], torch.tensor(0.0), atol=1e-6, rtol=0)  # normalised A
    torch.testing.assert_close(loss, torch.tensor(-0.15), atol=1e-6, rtol=0)


def test_action_mask_leaves_masked_actions_out_and_dapo_is_token_mean():
    old = torch.zeros(2, 3, 1)
    new = torch.log(torch.tensor([[1.1, 1.1, 9.0], [1.1, 9.0, 9.0]])).reshape(2, 3, 1)
    mask = torch.tensor([[True, True, False], [True, False, False]])  # e.g. credited_steps(dones)
    args = dict(
        new_log_probs=new,
        old_log_probs=old,
        advantages=torch.tensor([1.0, 3.0]),
        entropy=None,
        new_values=None,
        old_values=None,
        returns=torch.zeros(2),
        loss_mask=mask,
    )
    ppo, ppo_metrics = policy_loss(**args, cfg=config(logprob_level="action"))
    dapo, _ = policy_loss(**args, cfg=config(loss_type="dapo", logprob_level="action"))
    torch.testing.assert_close(ppo, torch.tensor(-(1.1 + 3.3) / 2))  # per-sample mean, then mean
    torch.testing.assert_close(dapo, torch.tensor(-(1.1 + 1.1 + 3.3) / 3))  # mean over kept tokens
    torch.testing.assert_close(ppo_metrics["ratio_max"], torch.tensor(1.1))  # masked 9.0s ignored
    chunk, _ = policy_loss(**args, cfg=config(logprob_level="chunk", clip_ratio=0.9))
    torch.testing.assert_close(chunk, torch.tensor(-(1.0 * 1.21 + 3.0 * 1.1) / 2))


def test_aggregate_modes():
    losses = torch.tensor([[1.0, 3.0], [5.0, 0.0]])
    mask = torch.tensor([[True, True], [True, False]])
    assert float(aggregate(losses, mask, "token-mean")) == pytest.approx(3.0)
    assert float(aggregate(losses, mask, "sample-mean")) == pytest.approx(3.5)


def test_explained_variance_scores_the_critic_against_the_returns():
    from rlinf_embodied.algorithms import explained_variance

    returns = torch.tensor([0.0, 1.0, 2.0, 5.0])
    assert explained_variance(returns.clone(), returns) == pytest.approx(1.0)
    assert explained_variance(torch.full((4,), float(returns.mean())), returns) == pytest.approx(0.0)
    assert explained_variance(-returns, returns) < 0  # worse than predicting the mean
    assert explained_variance(torch.zeros(4), torch.ones(4)) is None  # returns that do not vary say nothing


@pytest.mark.parametrize("loss_type", ["ppo", "dapo"])
@pytest.mark.parametrize("level", ["token", "action", "chunk"])
def test_micro_batches_with_the_minibatch_totals_sum_to_the_minibatch_loss_gradient_and_metrics(loss_type, level):
    """Gradient accumulation (algorithm.micro_batch_size) is exact: with MinibatchTotals, the micro-batches'
    losses and gradients sum to the whole minibatch's, advantages normalised over the minibatch, whatever the
    mask (a sample with nothing kept included), and the metrics combine to the minibatch's own."""
    from rlinf_embodied.algorithms import accumulate_metrics, minibatch_totals, reference_kl

    torch.manual_seed(0)
    batch_size, chunk, act_dim = 10, 3, 2
    cfg = AlgorithmConfig(
        loss_type=loss_type, logprob_level=level, normalize_advantages=True, entropy_coef=0.01, value_clip=0.2
    )
    new_log_probs = (torch.randn(batch_size, chunk, act_dim) * 0.1).requires_grad_(True)
    new_values = torch.randn(batch_size).requires_grad_(True)
    inputs = {
        "old_log_probs": new_log_probs.detach() + 0.3 * torch.randn(batch_size, chunk, act_dim),
        "advantages": torch.randn(batch_size) * 3 + 1,
        "entropy": torch.rand(batch_size, chunk, act_dim),
        "old_values": torch.randn(batch_size),
        "returns": torch.randn(batch_size),
        "loss_mask": torch.rand(batch_size, chunk) > 0.4,
    }
    inputs["loss_mask"][3] = False  # a sample keeping nothing
    ref_log_probs = new_log_probs.detach() + 0.2 * torch.randn(batch_size, chunk, act_dim)

    def loss_of(index, totals=None):
        part = {key: value[index] for key, value in inputs.items()}
        loss, metrics = policy_loss(
            new_log_probs=new_log_probs[index], new_values=new_values[index], cfg=cfg, totals=totals, **part
        )
        kl = reference_kl(new_log_probs[index], ref_log_probs[index], part["loss_mask"], level, totals)
        return loss + kl, metrics | {"ref_kl": kl.detach()}

    whole, whole_metrics = loss_of(torch.arange(batch_size))
    whole_grads = torch.autograd.grad(whole, [new_log_probs, new_values])
    totals = minibatch_totals(inputs["old_log_probs"], inputs["advantages"], inputs["loss_mask"], cfg)
    summed, metrics = 0.0, {}
    for index in torch.tensor_split(torch.arange(batch_size), 3):
        micro, micro_metrics = loss_of(index, totals)
        summed = summed + micro
        accumulate_metrics(metrics, micro_metrics)
    grads = torch.autograd.grad(summed, [new_log_probs, new_values])
    assert float(summed.detach()) == pytest.approx(float(whole.detach()), rel=1e-5)
    for grad, whole_grad in zip(grads, whole_grads):
        torch.testing.assert_close(grad, whole_grad, rtol=1e-5, atol=1e-7)
    assert metrics.keys() == whole_metrics.keys()
    for key, value in whole_metrics.items():
        assert float(metrics[key]) == pytest.approx(float(value), rel=1e-5, abs=1e-7), key
    # the micro-batches' own normalisation (no totals) is a different loss
    unshared = sum(loss_of(index)[0] for index in torch.tensor_split(torch.arange(batch_size), 3)) / 3
    assert abs(float(unshared.detach()) - float(whole.detach())) > 1e-4
