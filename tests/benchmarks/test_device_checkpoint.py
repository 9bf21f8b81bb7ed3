"""benchmarks/device_checkpoint.sh: a checkpoint must come back from the GPU device intact, in pieces that fit.

The device returns at most 64 MiB per call, so `pack` compresses and splits; a lost or corrupt piece must be
refused, not unpacked into a half checkpoint."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "device_checkpoint.sh"
pytestmark = pytest.mark.skipif(shutil.which("xz") is None, reason="xz is not installed")


def run(*args: str) -> subprocess.CompletedProcess:
    """The script with this interpreter as its $PYTHON: `python3` on PATH may lack torch (before: it had to be the
    venv's, so `.venv/bin/pytest` failed without an activated venv)."""
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, check=False, env=env)


def write_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    path.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    tensors = {"weight": torch.randn(512, 512, generator=generator), "steps": torch.arange(4)}
    save_file(tensors, str(path / "model.safetensors"))
    (path / "config.json").write_text('{"policy": "pi0"}')
    return tensors


def test_pack_then_unpack_gives_the_bf16_checkpoint_back(tmp_path):
    tensors = write_checkpoint(tmp_path / "policy")
    packed = run("pack", str(tmp_path / "policy"), str(tmp_path / "pieces"))
    assert packed.returncode == 0, packed.stderr
    pieces = sorted((tmp_path / "pieces").glob("ckpt.part.*"))
    # 512 x 512 bf16 random weights are 0.5 MiB: compressed below their raw size
    assert pieces and sum(piece.stat().st_size for piece in pieces) < 512 * 512 * 2
    unpacked = run("unpack", str(tmp_path / "pieces"), str(tmp_path / "back"))
    assert unpacked.returncode == 0, unpacked.stderr
    restored = load_file(str(tmp_path / "back" / "model.safetensors"))
    assert restored["weight"].dtype == torch.bfloat16
    assert torch.equal(restored["weight"], tensors["weight"].to(torch.bfloat16))
    assert torch.equal(restored["steps"], tensors["steps"])  # integer tensors keep their dtype
    assert (tmp_path / "back" / "config.json").read_text() == '{"policy": "pi0"}'


def test_unpack_refuses_a_corrupt_piece_and_leaves_no_checkpoint(tmp_path):
    write_checkpoint(tmp_path / "policy")
    assert run("pack", str(tmp_path / "policy"), str(tmp_path / "pieces")).returncode == 0
    piece = sorted((tmp_path / "pieces").glob("ckpt.part.*"))[0]
    piece.write_bytes(piece.read_bytes()[:-1] + b"\0")
    result = run("unpack", str(tmp_path / "pieces"), str(tmp_path / "back"))
    assert result.returncode != 0 and not (tmp_path / "back").exists()


def test_unpack_waits_for_a_missing_piece(tmp_path):
    write_checkpoint(tmp_path / "policy")
    assert run("pack", str(tmp_path / "policy"), str(tmp_path / "pieces")).returncode == 0
    sorted((tmp_path / "pieces").glob("ckpt.part.*"))[0].unlink()
    result = run("unpack", str(tmp_path / "pieces"), str(tmp_path / "back"))
    assert result.returncode == 3 and "waiting for pieces" in result.stdout


def test_pack_runs_the_tests_interpreter_not_the_python3_on_path(tmp_path, monkeypatch):
    """`.venv/bin/pytest` without an activated venv: the python3 on PATH can lack torch."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "python3").write_text("#!/bin/sh\necho 'python3 without torch' >&2\nexit 1\n")
    (fake_bin / "python3").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    write_checkpoint(tmp_path / "policy")
    packed = run("pack", str(tmp_path / "policy"), str(tmp_path / "pieces"))
    assert packed.returncode == 0, packed.stderr
