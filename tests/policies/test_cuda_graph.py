"""CUDA graphs of `act` (policies/common/cuda_graph.py): the flow policies' denoising loop, pi0's prefix and
OpenVLA's whole decode over its static KV cache and OpenVLA-OFT's whole pass.

The padding and keying logic runs on CPU; capture and replay need CUDA (the `gpu` tests): the replayed
loop must give what the eager loop gives, keep `act` and `evaluate` in agreement, and recapture when
the weights move."""

import logging

import pytest
import torch

from rlinf_embodied.policies import make_policy
from rlinf_embodied.policies.common.cuda_graph import (
    CapturedGraph,
    GraphCache,
    batch_bucket,
    compiled_part,
    first_rows_copy,
    layout,
    pad_batch,
    release_act_graphs,
    weight_addresses,
)


def test_batch_buckets_are_powers_of_two():
    assert [batch_bucket(batch) for batch in (1, 2, 3, 4, 5, 8, 9, 64, 65)] == [1, 2, 4, 4, 8, 8, 16, 64, 128]
    with pytest.raises(ValueError, match="batch=0"):
        batch_bucket(0)


def test_padding_repeats_the_last_row_of_every_tensor():
    tree = {"keys": [torch.arange(3.0).view(3, 1)], "mask": torch.tensor([[True], [False], [True]]), "scale": 2.0}
    padded = pad_batch(tree, 3, 4, torch.device("cpu"))
    assert padded["keys"][0].flatten().tolist() == [0.0, 1.0, 2.0, 2.0]
    assert padded["mask"].flatten().tolist() == [True, False, True, True]
    assert padded["scale"] == 2.0
    assert layout(padded) == (((4, 1), torch.float32), ((4, 1), torch.bool))


def test_outputs_are_copied_and_cut_to_the_real_batch():
    static = {"chain": torch.arange(4.0), "parts": [torch.ones(4, 2)]}
    out = first_rows_copy(static, 3)
    assert out["chain"].tolist() == [0.0, 1.0, 2.0] and out["parts"][0].shape == (3, 2)
    static["chain"].zero_()  # the next replay overwrites the graph's outputs
    assert out["chain"].tolist() == [0.0, 1.0, 2.0]


def test_weight_addresses_change_when_weights_are_replaced():
    module = torch.nn.Linear(2, 2)
    before = weight_addresses(module)
    with torch.no_grad():
        module.weight.copy_(torch.ones(2, 2))  # in place: a captured graph still reads the right memory
    assert weight_addresses(module) == before
    module.weight = torch.nn.Parameter(torch.zeros(2, 2))  # replaced: graphs must be recaptured
    assert weight_addresses(module) != before


def test_on_cpu_the_flag_warns_once_and_acts_eagerly(caplog):
    eager = make_policy("pi0", size="tiny", action_dim=4).eval()
    graphed = make_policy("pi0", size="tiny", action_dim=4, act_cuda_graphs=True).eval()
    graphed.load_state_dict(eager.state_dict())
    obs = eager.example_obs(3)
    with caplog.at_level(logging.WARNING):
        first = graphed.act(obs, deterministic=True)
        graphed.act(obs, deterministic=True)
    assert sum("act_cuda_graphs has no effect" in record.message for record in caplog.records) == 1
    torch.testing.assert_close(first.actions, eager.act(obs, deterministic=True).actions)


@pytest.mark.parametrize("name", ["pi0", "openvla", "openvla_oft"])
def test_act_compile_without_graphs_is_rejected(name):
    with pytest.raises(ValueError, match="act_compile=true .* act_cuda_graphs=false"):
        make_policy(name, size="tiny", action_dim=4, act_compile=True)
    make_policy(name, size="tiny", action_dim=4, act_compile=True, act_cuda_graphs=True)  # accepted together


@pytest.mark.parametrize("name", ["pi0", "gr00t"])
def test_the_denoising_loop_compiles_as_one_graph(name):
    """act_compile compiles the part act_cuda_graphs captures. Traced by dynamo with the eager backend (same
    kernels, so the same numbers; inductor's code generation needs the GPU test), the loop must be one graph
    without breaks: a break would leave its pieces unfused."""
    policy = make_policy(name, size="tiny", action_dim=4).eval()
    obs = policy.example_obs(3)
    with torch.no_grad():
        context = policy.encode_observation(obs)
        x_init = policy.initial_noise(3, deterministic=True)
        stochastic = torch.zeros(3, policy.config.num_denoise_steps, dtype=torch.bool)
        stochastic[:, 0] = True
        any_noisy = tuple(stochastic.any(dim=0).tolist())

        def loop(inputs):
            sample = policy.denoise_eager(inputs["context"], inputs["x_init"], inputs["stochastic"], any_noisy)
            return {"chain": sample.chain, "log_probs": sample.log_probs}

        inputs = {"context": context, "x_init": x_init, "stochastic": stochastic}
        graphs = []

        def counting_eager(graph_module, example_inputs):  # dynamo's eager backend, counting the graphs it gets
            graphs.append(graph_module)
            return graph_module.forward

        torch.manual_seed(1)
        expected = loop(inputs)
        torch.manual_seed(1)
        got = compiled_part(loop, ("denoise",), backend=counting_eager)(inputs)  # traced once (before: explain too)
    assert len(graphs) == 1, f"{len(graphs)} graphs: the denoising loop breaks into pieces"
    torch.testing.assert_close(got["chain"], expected["chain"])
    torch.testing.assert_close(got["log_probs"], expected["log_probs"])


def test_a_failed_compilation_names_the_way_back():
    def broken(inputs):
        raise TypeError("unsupported operand")

    with pytest.raises(RuntimeError, match="act_compile: compiling denoise failed .*act_compile=false"):
        compiled_part(broken, ("denoise",), backend="eager")({"x": torch.zeros(1)})


def test_openvla_static_cache_decode_agrees_with_the_teacher_forced_pass():
    """The static-cache decode (static shapes, for graphs) must pick and score tokens as a full pass does."""
    policy = make_policy("openvla", size="tiny", action_dim=4).eval()
    obs = policy.example_obs(3)
    deterministic = policy.act(obs, deterministic=True)
    log_p, _, _ = policy.token_log_probs(obs, deterministic.extras["action_tokens"])
    expected_tokens = policy.action_tokenizer.classes_to_tokens(log_p.argmax(-1))
    assert torch.equal(deterministic.extras["action_tokens"][:, 0], expected_tokens)
    sampled = policy.act(obs)
    torch.testing.assert_close(policy.evaluate(obs, sampled).log_probs, sampled.log_probs, rtol=1e-4, atol=1e-4)


def test_sample_categorical_draws_from_the_given_probabilities():
    from rlinf_embodied.policies.openvla.modeling import sample_categorical

    torch.manual_seed(0)
    probs = torch.tensor([0.7, 0.2, 0.1]).expand(20000, 3)
    frequencies = torch.bincount(sample_categorical(probs), minlength=3).float() / 20000
    torch.testing.assert_close(frequencies, torch.tensor([0.7, 0.2, 0.1]), rtol=0, atol=0.015)


def cuda_pair(name: str) -> tuple:
    torch.manual_seed(0)
    eager = make_policy(name, size="tiny", action_dim=4).cuda().eval()
    graphed = make_policy(name, size="tiny", action_dim=4, act_cuda_graphs=True).cuda().eval()
    graphed.load_state_dict(eager.state_dict())
    return eager, graphed


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["pi0", "gr00t"])
def test_replayed_loop_matches_the_eager_loop(name):
    eager, graphed = cuda_pair(name)
    for batch in (1, 3, 8):  # 3 pads to a bucket of 4
        obs = eager.example_obs(batch)
        expected = eager.act(obs, deterministic=True)
        for _ in range(2):  # the first call captures, the second replays
            got = graphed.act(obs, deterministic=True)
            # a padded batch may pick other matmul kernels than the unpadded one: equal up to rounding
            torch.testing.assert_close(got.actions, expected.actions, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(
                got.extras["denoise_chain"], expected.extras["denoise_chain"], rtol=1e-4, atol=1e-4
            )
    assert graphed._graph_cache.count("denoise") == 3  # buckets 1, 4 and 8
    assert graphed._graph_cache.count("prefix") == (3 if name == "pi0" else 0)  # pi0's prefix is graphed too


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["pi0", "gr00t"])
def test_replayed_sampling_draws_fresh_noise_and_agrees_with_evaluate(name):
    _, graphed = cuda_pair(name)
    obs = graphed.example_obs(3)
    first, second = graphed.act(obs), graphed.act(obs)
    assert not torch.equal(first.extras["denoise_chain"], second.extras["denoise_chain"])
    evaluated = graphed.evaluate(obs, second)
    torch.testing.assert_close(evaluated.log_probs, second.log_probs, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["pi0", "gr00t", "openvla_oft"])
def test_compiled_graphs_match_eager_up_to_rounding(name):
    torch.manual_seed(0)
    eager = make_policy(name, size="tiny", action_dim=4).cuda().eval()
    compiled = make_policy(name, size="tiny", action_dim=4, act_cuda_graphs=True, act_compile=True).cuda().eval()
    compiled.load_state_dict(eager.state_dict())
    obs = eager.example_obs(3)
    expected = eager.act(obs, deterministic=True)
    for _ in range(2):  # the first call compiles and captures, the second replays
        got = compiled.act(obs, deterministic=True)
        torch.testing.assert_close(got.actions, expected.actions, rtol=1e-3, atol=1e-3)  # fused kernels round
    assert compiled._graph_cache.compile_parts and compiled._graph_cache.captures >= 1
    sampled = compiled.act(obs)
    torch.testing.assert_close(compiled.evaluate(obs, sampled).log_probs, sampled.log_probs, rtol=1e-2, atol=1e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("name, parts", [("pi0", 2), ("openvla", 1)])  # pi0: prefix + loop; openvla: decode
def test_moved_weights_are_recaptured(name, parts):
    eager, graphed = cuda_pair(name)
    obs = eager.example_obs(2)
    for moves in range(1, 3):  # twice: OpenVLA-7B's second iteration failed to recapture into a stale pool
        graphed.act(obs, deterministic=True)
        assert graphed._graph_cache.captures == moves * parts
        before = weight_addresses(graphed)
        # an offload and onload; the allocator may hand the freed blocks straight back (the graphs then stay
        # valid), so the old blocks are held, as the actor's tensors hold them when it used the GPU in between
        held = [t.data for t in (*graphed.parameters(), *graphed.buffers())]
        graphed.cpu()
        graphed.cuda()
        assert weight_addresses(graphed) != before
        del held
        with torch.no_grad():
            for parameter in (*eager.parameters(), *graphed.parameters()):
                parameter.mul_(0.5)  # a weight update, applied in place
        got = graphed.act(obs, deterministic=True)
        assert graphed._graph_cache.captures == (moves + 1) * parts
        torch.testing.assert_close(got.actions, eager.act(obs, deterministic=True).actions, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize(
    "name, overrides",
    [("openvla", {}), ("openvla_oft", {}), ("openvla_oft", {"action_head_type": "discrete"})],
)
def test_openvla_replayed_act_matches_eager_and_evaluate(name, overrides):
    torch.manual_seed(0)
    eager = make_policy(name, size="tiny", action_dim=4, **overrides).cuda().eval()
    graphed = make_policy(name, size="tiny", action_dim=4, act_cuda_graphs=True, **overrides).cuda().eval()
    graphed.load_state_dict(eager.state_dict())
    for batch in (1, 3):
        obs = eager.example_obs(batch)
        expected = eager.act(obs, deterministic=True)
        for _ in range(2):  # the first call captures, the second replays
            got = graphed.act(obs, deterministic=True)
            torch.testing.assert_close(got.actions, expected.actions, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(got.log_probs, expected.log_probs, rtol=1e-4, atol=1e-4)
    assert len(graphed._graph_cache.graphs) == 2  # buckets 1 and 4
    obs = graphed.example_obs(3)
    first, second = graphed.act(obs), graphed.act(obs)
    assert not torch.equal(first.actions, second.actions)  # fresh samples on every replay
    torch.testing.assert_close(graphed.evaluate(obs, second).log_probs, second.log_probs, rtol=1e-4, atol=1e-4)


class _FakeGraph:
    def replay(self) -> None:
        pass


def test_moved_weights_drop_the_memory_pool_with_the_graphs(monkeypatch):
    """Recapturing into the pool of graphs that are gone trips PyTorch's `use_count > 0` assert (OpenVLA-7B,
    second iteration on an H200): after the weights move, the next capture must start a fresh pool."""
    cache, module = GraphCache(), torch.nn.Linear(2, 2)
    pools_at_capture = []

    def fake_capture(fn, inputs, part):
        pools_at_capture.append(cache.pool)
        cache.pool = ("pool", len(pools_at_capture))  # what graph.pool() returns after a capture
        return CapturedGraph(graph=_FakeGraph(), static_inputs=inputs.clone(), output=fn(inputs))

    monkeypatch.setattr(cache, "capture", fake_capture)
    inputs = torch.ones(2, 2)
    cache.run(module, ("decode",), lambda x: x * 2, inputs, batch=2)
    cache.run(module, ("prefix",), lambda x: x * 3, inputs, batch=2)  # a second part shares the first's pool
    module.weight = torch.nn.Parameter(torch.zeros(2, 2))  # an onload after an offload
    out = cache.run(module, ("decode",), lambda x: x * 2, inputs, batch=2)
    assert pools_at_capture == [None, ("pool", 1), None]
    assert out.tolist() == [[2.0, 2.0], [2.0, 2.0]] and cache.count("prefix") == 0


def test_release_act_graphs_frees_the_captured_parts():
    policy = make_policy("pi0", size="tiny", action_dim=4)
    release_act_graphs(policy)  # nothing captured yet: a no-op
    policy._graph_cache = GraphCache()
    policy._graph_cache.graphs[(("loop",), 1, True, ())] = CapturedGraph(_FakeGraph(), None, None)
    policy._graph_cache.pool = ("pool", 1)
    release_act_graphs(policy)
    assert policy._graph_cache.count("loop") == 0 and policy._graph_cache.pool is None
