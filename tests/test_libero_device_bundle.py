"""benchmarks/libero_device_bundle.py's pieces: written, checked and extracted again (the strace-driven packing
itself needs LIBERO and runs by hand, see its docstring)."""

import argparse
import os
from pathlib import Path

import pytest


@pytest.fixture
def bundle(benchmark_script):
    return benchmark_script("libero_device_bundle")


def staged_tree(root: Path) -> None:
    (root / "pkg").mkdir()
    (root / "pkg" / "__init__.py").write_text("VALUE = 1\n")
    (root / "pkg" / "mesh.bin").write_bytes(os.urandom(3 * 2**20))  # incompressible: several pieces


def test_pieces_round_trip(tmp_path, bundle):
    staging, out, site = tmp_path / "staging", tmp_path / "pieces", tmp_path / "site"
    staging.mkdir()
    staged_tree(staging)
    pieces = bundle.write_pieces(staging, out, piece_mib=1)
    assert len(pieces) >= 3 and (out / "SHA256SUMS").read_text().count("libero.part.") == len(pieces)
    bundle.unpack(argparse.Namespace(pieces=str(out), site=str(site)))
    assert (site / "pkg" / "mesh.bin").read_bytes() == (staging / "pkg" / "mesh.bin").read_bytes()


def test_unpack_waits_for_missing_pieces_and_rejects_corrupt_ones(tmp_path, bundle):
    staging, out = tmp_path / "staging", tmp_path / "pieces"
    staging.mkdir()
    staged_tree(staging)
    pieces = bundle.write_pieces(staging, out, piece_mib=1)
    kept = pieces[-1].read_bytes()
    pieces[-1].unlink()
    with pytest.raises(SystemExit) as waiting:
        bundle.unpack(argparse.Namespace(pieces=str(out), site=str(tmp_path / "site")))
    assert waiting.value.code == 3
    pieces[-1].write_bytes(kept[:-1] + bytes([kept[-1] ^ 1]))
    with pytest.raises(SystemExit, match="sha256 mismatch"):
        bundle.unpack(argparse.Namespace(pieces=str(out), site=str(tmp_path / "site")))
