"""The converters' command lines (main): a source that is no upstream checkpoint of the converter's model, and an
output folder that is a file or already holds files, are refused with a message before any weights are read.

Before: a missing source gave "FileNotFoundError: ... has neither model.safetensors ...", this package's own
checkpoint a KeyError from deep in the OpenVLA mapping, a file as output a bare FileExistsError, and a non-empty output
folder was written over silently, keeping the older checkpoint's env_actions.json / demonstrations.json beside it."""

import importlib
import json
import os

import pytest
import torch
from test_pi0_convert import write_upstream_pi0

from rlinf_embodied.policies import load_policy, make_policy
from rlinf_embodied.policies.flow.convert_utils import source_error

CONVERTERS = ["pi0", "gr00t", "openvla", "openvla_oft"]
LABELS = {"pi0": "pi0 (LeRobot / openpi)", "gr00t": "GR00T-N1.5", "openvla": "OpenVLA", "openvla_oft": "OpenVLA-OFT"}


def run_main(name: str, argv: list[str], capsys) -> str:
    """`name`'s converter main(argv), which must exit with argparse's usage error; its stderr."""
    module = importlib.import_module(f"rlinf_embodied.policies.{name}.convert")
    with pytest.raises(SystemExit) as exit_info:
        module.main(argv)
    assert exit_info.value.code == 2
    return " ".join(capsys.readouterr().err.split())  # argparse wraps long messages


def write_config(folder, config: dict, weights: bool = True) -> str:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    if weights:
        open(os.path.join(folder, "model.safetensors"), "wb").close()
    return str(folder)


OPENVLA_CONFIG = {"architectures": ["OpenVLAForActionPrediction"], "model_type": "openvla"}
GR00T_CONFIG = {"model_type": "gr00t_n1_5", "action_head_cfg": {}, "backbone_cfg": {}}
PI0_CONFIG = {"type": "pi0", "chunk_size": 4}


@pytest.mark.parametrize("name", CONVERTERS)
def test_a_missing_or_file_source_is_named(name, tmp_path, capsys):
    missing = tmp_path / "nonexist"
    err = run_main(name, [str(missing), str(tmp_path / "out")], capsys)
    assert f"policy source {missing} does not exist" in err
    file_source = tmp_path / "weights.safetensors"
    file_source.write_bytes(b"")
    err = run_main(name, [str(file_source), str(tmp_path / "out")], capsys)
    assert f"policy source {file_source} is a file, not a folder" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", CONVERTERS)
def test_this_packages_checkpoint_is_refused_as_loading_as_it_is(name, tmp_path, capsys):
    make_policy("mlp").save_pretrained(tmp_path / "ckpt")
    err = run_main(name, [str(tmp_path / "ckpt"), str(tmp_path / "out")], capsys)
    assert (
        f"policy source {tmp_path / 'ckpt'} holds this package's mlp checkpoint, not an upstream {LABELS[name]} one"
        in err
    )
    assert "it loads as it is" in err


@pytest.mark.parametrize(
    "name, config, other",
    [
        ("pi0", OPENVLA_CONFIG, "openvla"),
        ("pi0", GR00T_CONFIG, "gr00t"),
        ("gr00t", PI0_CONFIG, "pi0"),
        ("openvla", PI0_CONFIG, "pi0"),
        ("openvla_oft", GR00T_CONFIG, "gr00t"),
    ],
)
def test_another_models_upstream_checkpoint_names_its_converter(name, config, other, tmp_path, capsys):
    src = write_config(tmp_path / "src", config)
    err = run_main(name, [src, str(tmp_path / "out")], capsys)
    assert f"holds an upstream {LABELS[other]} checkpoint, not an upstream {LABELS[name]} one" in err
    assert f"python -m rlinf_embodied.policies.{other}.convert {src} <dst>" in err


def test_openvla_oft_checkpoint_goes_to_the_oft_converter(tmp_path, capsys):
    """The plain OpenVLA converter would drop an OFT checkpoint's action head and proprio projector."""
    src = write_config(tmp_path / "src", OPENVLA_CONFIG)
    torch.save({}, os.path.join(src, "action_head--100_checkpoint.pt"))
    err = run_main("openvla", [src, str(tmp_path / "out")], capsys)
    assert "holds an upstream OpenVLA-OFT checkpoint, not an upstream OpenVLA one" in err
    assert "openvla_oft.convert" in err
    assert source_error(src, "openvla_oft") is None
    plain = write_config(tmp_path / "plain", OPENVLA_CONFIG)
    assert source_error(plain, "openvla") is None and source_error(plain, "openvla_oft") is None  # discrete variant


def test_other_sources_are_named(tmp_path, capsys):
    lerobot = write_config(tmp_path / "act", {"type": "act"})
    assert "holds a LeRobot 'act' policy, not an upstream pi0 (LeRobot / openpi) checkpoint" in run_main(
        "pi0", [lerobot, str(tmp_path / "out")], capsys
    )
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    assert "config.json' is not valid JSON" in run_main("gr00t", [str(broken), str(tmp_path / "out")], capsys)
    no_config = tmp_path / "no_config"
    no_config.mkdir()
    assert f"policy source {no_config} has no config.json" in run_main(
        "openvla", [str(no_config), str(tmp_path / "out")], capsys
    )
    # a training run's folder: no weights of its own, this package's checkpoints below it
    run_dir = tmp_path / "run"
    make_policy("mlp").save_pretrained(run_dir / "checkpoints" / "final" / "policy")
    err = run_main("pi0", [str(run_dir), str(tmp_path / "out")], capsys)
    assert f"policy source {run_dir} holds neither model.safetensors nor model.safetensors.index.json" in err
    assert "checkpoints/final/policy" in err


@pytest.mark.parametrize("name", CONVERTERS)
def test_an_output_that_is_a_file_is_refused(name, tmp_path, capsys):
    src = write_config(tmp_path / "src", {"pi0": PI0_CONFIG, "gr00t": GR00T_CONFIG}.get(name, OPENVLA_CONFIG))
    out = tmp_path / "out.bin"
    out.write_bytes(b"keep")
    err = run_main(name, [src, str(out)], capsys)
    assert f"output {out} is a file, not a folder" in err
    assert out.read_bytes() == b"keep"


def test_a_non_empty_output_needs_overwrite_which_clears_it(tmp_path, capsys):
    from rlinf_embodied.policies.pi0.convert import main

    torch.manual_seed(0)
    write_upstream_pi0(make_policy("pi0", size="tiny"), tmp_path / "upstream", "new")
    src, out = str(tmp_path / "upstream"), tmp_path / "ckpt_copy"
    make_policy("mlp").save_pretrained(out)  # an older checkpoint with extra files
    (out / "env_actions.json").write_text("{}")
    (out / "demonstrations.json").write_text("{}")
    (out / "extra").mkdir()
    (out / "extra" / "note.txt").write_text("old")

    err = run_main("pi0", [src, str(out), "--size", "tiny"], capsys)
    assert f"output folder {out} is not empty" in err and "pass --overwrite" in err
    assert load_policy(out).name == "mlp"  # untouched

    main([src, str(out), "--size", "tiny", "--overwrite"])
    left = set(os.listdir(out))
    assert {"config.json", "model.safetensors"} <= left
    assert not left & {"env_actions.json", "demonstrations.json", "extra"}
    assert load_policy(out).name == "pi0"

    err = run_main("pi0", [src, src, "--size", "tiny", "--overwrite"], capsys)
    assert f"output folder {src} is (or holds) the policy source" in err
    err = run_main("pi0", [src, str(tmp_path), "--size", "tiny", "--overwrite"], capsys)
    assert "is (or holds) the policy source" in err
    assert os.path.isfile(os.path.join(src, "model.safetensors"))


def test_a_new_or_empty_output_converts_without_overwrite(tmp_path):
    from rlinf_embodied.policies.pi0.convert import main

    write_upstream_pi0(make_policy("pi0", size="tiny"), tmp_path / "upstream", "new")
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "empty", tmp_path / "new" / "nested"):
        main([str(tmp_path / "upstream"), str(out), "--size", "tiny"])
        assert load_policy(out).name == "pi0"
