"""benchmarks/sft_throughput.py on CPU (in this process): --flops-only's FLOP count of an SFT step, --override
parsing, and the module list --blocking-copies patches."""

import argparse

import pytest


def test_flops_only_counts_a_step_that_grows_with_the_batch(tmp_path, capsys, benchmark_script):
    benchmark = benchmark_script("sft_throughput")
    args = argparse.Namespace(policy="pi0", size="tiny", batch_sizes=[4, 8], peak_tflops=989.0)
    args.overrides = dict([benchmark.parse_override("vlm_mlp_dim=256")])
    assert args.overrides == {"vlm_mlp_dim": 256}  # the value read as JSON
    root = benchmark.write_dataset(str(tmp_path / "ds"), 90, image_size=32)
    benchmark.flops_table(args, root)
    output = capsys.readouterr().out
    rows = [line.split("|") for line in output.splitlines()]
    per_step = {int(r[1]): float(r[2]) for r in rows if len(r) > 3 and r[1].strip().isdigit()}
    per_sample = float(output.split("counted at batch 4: ")[1].split()[0])
    assert set(per_step) == {4, 8} and per_step[4] > 0 and abs(per_step[8] - 2 * per_step[4]) <= 1e-3 * per_step[8]
    assert abs(per_step[4] / 4 - per_sample) <= 0.01 * per_sample  # the table scales the counted step


def test_override_must_be_key_equals_value(benchmark_script):
    with pytest.raises(SystemExit, match="expected KEY=VALUE"):
        benchmark_script("sft_throughput").parse_override("vlm_depth")


def test_blocking_copies_reaches_every_caller_of_host_to_device_and_restores_it(benchmark_script):
    """--blocking-copies patches the modules that call host_to_device: a new call site must join COPY_MODULES, or the
    'blocking' column would time a step that is partly non-blocking."""
    import importlib
    import pathlib

    import rlinf_embodied
    from rlinf_embodied.transfer import host_to_device

    benchmark = benchmark_script("sft_throughput")
    package = pathlib.Path(rlinf_embodied.__file__).parent
    callers = {
        "rlinf_embodied." + ".".join(path.relative_to(package).with_suffix("").parts)
        for path in package.rglob("*.py")
        if "host_to_device(" in path.read_text() and path.name != "transfer.py"
    }
    assert callers == set(benchmark.COPY_MODULES)
    modules = [importlib.import_module(name) for name in benchmark.COPY_MODULES]
    with benchmark.blocking_copies():
        assert all(module.host_to_device is not host_to_device for module in modules)
    assert all(module.host_to_device is host_to_device for module in modules)
