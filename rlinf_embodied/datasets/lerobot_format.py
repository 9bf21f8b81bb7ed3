"""Demonstrations on disk in the LeRobotDataset v2.1 layout, written and read with pyarrow.

    root/
      meta/info.json              codebase_version "v2.1", fps, robot_type, totals, features, data_path, ...
      meta/episodes.jsonl         {"episode_index", "tasks", "length", "success", "seed"} per episode
      meta/episodes_stats.jsonl   per-episode feature stats (min/max/mean/std/count), as LeRobot v2.1 reads them
      meta/tasks.jsonl            {"task_index", "task"}
      data/chunk-000/episode_000000.parquet

Parquet columns: `observation.state` / `action` (list<float32>, actions in env units), one
`observation.images.<camera>` per camera (struct {bytes: PNG, path: null}, the Hugging Face
`datasets` Image encoding), `timestamp`, `frame_index`, `episode_index`, `index`, `task_index`,
`next.reward`, `next.done`, `next.success`. The files carry the `huggingface` schema metadata, so
`datasets.load_dataset("parquet", ...)` decodes the image columns as images.

Besides LeRobot's keys, info.json holds `control_mode` (the controller the actions were recorded
in, e.g. "pd_joint_delta_pos"; null when unknown), `env_id` (our gymnasium id, when known) and
`reward_settings` (the env settings that define `next.reward`, e.g. {"reward_mode": "normalized_dense",
"reward_delta": false}; null when unknown). `fps` is the rate the env stepped at (its control frequency).

The reader takes LeRobot v2.0/v2.1 datasets whose cameras are image columns; it refuses v3.0 (episodes in
meta/episodes/*.parquet) and video cameras (dtype "video", mp4 files) by name, and a dataset whose files disagree
(an episode file's episode_index column or frame count against its name and meta/episodes.jsonl, total_frames).
"""

from __future__ import annotations

import io
import json
import math
import numbers
import os
import string
import tempfile
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from ..transfer import host_to_device

CODEBASE_VERSION = "v2.1"
# LeRobot versions read here: v2.0 and v2.1 share the layout (meta/episodes.jsonl, meta/tasks.jsonl, a parquet file
# per episode); v2.1 only moved the stats into meta/episodes_stats.jsonl, which the reader does not need. v3.0
# describes its episodes in meta/episodes/*.parquet and packs many episodes per data file.
SUPPORTED_VERSIONS = ("v2.0", CODEBASE_VERSION)
REQUIRED_INFO_KEYS = ("codebase_version", "fps", "total_episodes", "total_frames", "features")
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
DATA_PATH_FIELDS = ("episode_chunk", "episode_index")  # the placeholders a v2.x data_path formats with
IMAGE_PREFIX = "observation.images."
# "auto" decodes every PNG once at load when the decoded frames fit in this fraction of the host's available
# memory; above it, per sample (host-bound: stop 29's 1,600 demonstrations, 4.1 GB decoded, ran SFT 5x slower
# per step under the old fixed 2 GiB limit than 800 did eagerly).
EAGER_DECODE_MEMORY_FRACTION = 0.5

FrameIndices = Union[Sequence[int], np.ndarray, torch.Tensor]


def available_host_bytes() -> int:
    """Memory the host can still give out (Linux MemAvailable, else free pages)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class ControlModeMismatchError(ValueError):
    pass


# ---- small helpers -------------------------------------------------------------------------------
def _atomic_write(path: str, data: Union[str, bytes]) -> None:
    """Write `data` to `path` so that readers see either the old or the new file, never half of one."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def _read_jsonl(path: str) -> list[dict]:
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [_parse_line(path, number, line) for number, line in enumerate(f, 1) if line.strip()]


def _parse_line(path: str, number: int, line: str) -> dict:
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} line {number} is not valid JSON ({error}): the dataset is damaged") from None


def read_meta_rows(root: str, name: str, total: Optional[int] = None) -> list[dict]:
    """The first `total` rows of meta/<name> (episodes.jsonl, episodes_stats.jsonl); `total` defaults to info.json's
    total_episodes. The writer appends one row per episode and commits it with info.json afterwards, so rows past
    the total belong to an episode whose write was interrupted, and the last of them may be cut short."""
    if total is None:
        total = int(load_info(root)["total_episodes"])
    path = os.path.join(root, "meta", name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing: meta/info.json lists {total} episodes, described there")
    rows: list[dict] = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if len(rows) == total:
                break
            if line.strip():
                rows.append(_parse_line(path, number, line))
    return rows


def read_tasks(root: str) -> dict[int, str]:
    """meta/tasks.jsonl: task_index -> instruction."""
    path = os.path.join(root, "meta", "tasks.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing: the episodes' task_index columns refer to its rows")
    try:
        return {int(row["task_index"]): row["task"] for row in _read_jsonl(path)}
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: every row needs task_index and task ({type(error).__name__}: {error})") from None


def _append_line(path: str, row: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def encode_png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _stats(array: np.ndarray, axis: Any) -> dict[str, list]:
    array = array.astype(np.float64)
    return {
        "min": np.min(array, axis=axis).tolist(),
        "max": np.max(array, axis=axis).tolist(),
        "mean": np.mean(array, axis=axis).tolist(),
        "std": np.std(array, axis=axis).tolist(),
        "count": [int(array.shape[0])],
    }


def _image_stats(frames: np.ndarray) -> dict[str, list]:
    """LeRobot's per-channel image stats: (3, 1, 1) lists of values in [0, 1], from up to 100 frames.

    Read off a 256-bin histogram per channel (exact for uint8 frames): about 14x faster than float arithmetic
    over every pixel, which cost the collecting process more than the PNG encoding (benchmarks/dataset_writer.py)."""
    sample = frames[:: max(1, len(frames) // 100)]  # (S, H, W, 3) uint8
    pixels = sample.reshape(-1, 3)  # (S * H * W, 3)
    counts = np.stack([np.bincount(pixels[:, channel], minlength=256) for channel in range(3)])  # (3, 256)
    values = np.arange(256, dtype=np.float64) / 255.0
    total = counts.sum(axis=1)  # (3,)
    mean = counts @ values / total
    std = np.sqrt(np.maximum(counts @ values**2 / total - mean**2, 0.0))
    present = counts > 0
    low, high = present.argmax(axis=1), 255 - present[:, ::-1].argmax(axis=1)
    stats = {
        name: [[[float(v)]] for v in array]
        for name, array in (("min", low / 255.0), ("max", high / 255.0), ("mean", mean), ("std", std))
    }
    stats["count"] = [len(sample)]
    return stats


def data_file(root: str, episode_index: int, chunks_size: int = CHUNKS_SIZE, data_path: str = DATA_PATH) -> str:
    return os.path.join(root, data_path.format(episode_chunk=episode_index // chunks_size, episode_index=episode_index))


def build_features(state_dim: int, action_dim: int, camera_shapes: dict[str, tuple[int, int, int]]) -> dict[str, dict]:
    features: dict[str, dict] = {
        "observation.state": {
            "dtype": "float32",
            "shape": [state_dim],
            "names": [f"state_{i}" for i in range(state_dim)],
        },
        "action": {"dtype": "float32", "shape": [action_dim], "names": [f"action_{i}" for i in range(action_dim)]},
    }
    for camera, shape in camera_shapes.items():
        features[IMAGE_PREFIX + camera] = {
            "dtype": "image",
            "shape": [int(s) for s in shape],
            "names": ["height", "width", "channels"],
        }
    for name, dtype in (
        ("timestamp", "float32"),
        ("frame_index", "int64"),
        ("episode_index", "int64"),
        ("index", "int64"),
        ("task_index", "int64"),
        ("next.reward", "float32"),
        ("next.done", "bool"),
        ("next.success", "bool"),
    ):
        features[name] = {"dtype": dtype, "shape": [1], "names": None}
    return features


def _hf_features(features: dict[str, dict]) -> dict[str, Any]:
    """The `datasets` Features description stored in the parquet schema metadata (key b"huggingface")."""
    hf: dict[str, Any] = {}
    for name, feature in features.items():
        if feature["dtype"] == "image":
            hf[name] = {"_type": "Image"}
        elif feature["shape"] == [1]:
            hf[name] = {"dtype": feature["dtype"], "_type": "Value"}
        else:
            hf[name] = {
                "feature": {"dtype": feature["dtype"], "_type": "Value"},
                "length": feature["shape"][0],
                "_type": "Sequence",
            }
    return {"info": {"features": hf}}


# ---- writer --------------------------------------------------------------------------------------
class LeRobotDatasetWriter:
    """Append episodes to a LeRobot v2.1 dataset at `root`; opening an existing root resumes it.

    Every `add_episode` leaves a complete, valid dataset on disk: the episode's parquet file is
    written first, then the meta files, info.json last (each replaced atomically), so an interrupted
    run keeps every episode it finished. `camera_shapes={}` records state only. `fps` is the rate the env
    stepped at (each frame's timestamp is frame_index / fps); `reward_settings` the env settings that define the
    rewards (e.g. {"reward_mode": "sparse", "reward_delta": False}): a resume with another fps, control_mode or
    reward_settings than the dataset's is refused.
    """

    def __init__(
        self,
        root: str,
        fps: int = 20,
        robot_type: str = "panda",
        state_dim: int = 0,
        action_dim: int = 0,
        camera_shapes: Optional[dict[str, Sequence[int]]] = None,
        control_mode: Optional[str] = None,
        env_id: Optional[str] = None,
        reward_settings: Optional[Mapping[str, Any]] = None,
    ):
        if state_dim < 1 or action_dim < 1:
            raise ValueError(f"state_dim={state_dim} and action_dim={action_dim} must both be >= 1")
        check_writer_fps(fps)
        self.root = os.path.abspath(root)
        self.fps = int(fps)
        # the env settings that define next.reward (None: unknown); an append with others is refused
        self.reward_settings = None if reward_settings is None else dict(reward_settings)
        self.chunks_size, self.data_path = CHUNKS_SIZE, DATA_PATH  # a resumed dataset's own, where it has others
        self.robot_type = robot_type
        self.state_dim, self.action_dim = int(state_dim), int(action_dim)
        self.camera_shapes = {k: tuple(int(s) for s in v) for k, v in (camera_shapes or {}).items()}
        for camera, shape in self.camera_shapes.items():
            if len(shape) != 3 or shape[2] != 3:
                raise ValueError(f"camera {camera!r}: shape {_shape(shape)} must be (H, W, 3)")
        self.control_mode, self.env_id = control_mode, env_id
        self.features = build_features(self.state_dim, self.action_dim, self.camera_shapes)
        self._episodes: list[dict] = []
        self._tasks: list[str] = []
        self._total_frames = 0
        if os.path.isfile(os.path.join(self.root, "meta", "info.json")):
            self._resume()
        else:  # rows left by a first episode whose write was interrupted (no info.json committed it)
            for name in ("episodes.jsonl", "episodes_stats.jsonl"):
                stale = os.path.join(self.root, "meta", name)
                if os.path.isfile(stale):
                    os.remove(stale)

    # -- resume --
    def _resume(self) -> None:
        info = load_info(self.root)
        existing = dataset_layout(info, os.path.join(self.root, "meta", "info.json"))
        wanted = {
            "fps": self.fps,
            "state_dim": self.state_dim,
            "action_dim": self.action_dim,
            "cameras": {k: list(v) for k, v in self.camera_shapes.items()},
        }
        mismatched = [key for key in wanted if existing[key] != wanted[key]]
        if mismatched:
            raise ValueError(
                f"the dataset at {self.root} has "
                + ", ".join(f"{k}={_layout_value(k, existing[k])}" for k in mismatched)
                + " but this writer was asked for "
                + ", ".join(f"{k}={_layout_value(k, wanted[k])}" for k in mismatched)
                + "; use another root, or the same settings to append"
            )
        for key in ("control_mode", "env_id"):
            stored, asked = info.get(key), getattr(self, key)
            if stored is not None and asked is not None and stored != asked:
                raise ValueError(
                    f"the dataset at {self.root} has {key}={stored!r} but this writer was asked for "
                    f"{key}={asked!r}; use another root"
                )
            setattr(self, key, asked if asked is not None else stored)
        self._resume_reward_settings(info.get("reward_settings"))
        self.robot_type = info.get("robot_type", self.robot_type)
        # new episode files go where the dataset's own layout puts them (before: always DATA_PATH / CHUNKS_SIZE,
        # and info.json was rewritten with those, losing a foreign dataset's episodes)
        self.chunks_size = info.get("chunks_size", CHUNKS_SIZE)
        self.data_path = info.get("data_path", DATA_PATH)
        total = int(info["total_episodes"])
        # Meta rows past info.json's totals belong to an episode whose write was interrupted: drop them, and
        # rewrite both files without them so that the next episode's rows append after the last committed one.
        self._episodes = read_meta_rows(self.root, "episodes.jsonl", total)
        episodes_stats = read_meta_rows(self.root, "episodes_stats.jsonl", total)
        self._tasks = [
            row["task"]
            for row in sorted(
                _read_jsonl(os.path.join(self.root, "meta", "tasks.jsonl")), key=lambda row: row["task_index"]
            )
        ]
        if len(self._episodes) != total:
            raise ValueError(
                f"{self.root}: info.json says {total} episodes but meta/episodes.jsonl lists "
                f"{len(self._episodes)}; the dataset is damaged"
            )
        meta = os.path.join(self.root, "meta")
        _atomic_write(os.path.join(meta, "episodes.jsonl"), _jsonl(self._episodes))
        _atomic_write(os.path.join(meta, "episodes_stats.jsonl"), _jsonl(episodes_stats))
        self._total_frames = sum(int(row["length"]) for row in self._episodes)

    def _resume_reward_settings(self, stored: Optional[dict]) -> None:
        """Refuse to append episodes whose rewards are defined otherwise than the dataset's (before: a resume with
        another env.kwargs.reward_mode / reward_delta mixed reward definitions in next.reward, without a word).
        A dataset that records none (written before they were recorded, or without them) keeps none: its earlier
        episodes' definition is unknown, so the new one is not claimed for them. A writer given none appends to the
        dataset's (as with control_mode)."""
        asked = self.reward_settings
        if stored is None or asked is None:
            self.reward_settings = None if stored is None else dict(stored)
            return
        keys = sorted(set(stored) | set(asked))
        mismatched = [key for key in keys if stored.get(key) != asked.get(key)]
        if mismatched:
            raise ValueError(
                f"the dataset at {self.root} holds rewards (next.reward) computed with "
                + ", ".join(f"{key}={stored.get(key)!r}" for key in mismatched)
                + " but this writer was asked for "
                + ", ".join(f"{key}={asked.get(key)!r}" for key in mismatched)
                + ": the column would mean different things in different episodes; use another root, or the "
                "dataset's reward settings to append (collect: "
                + " ".join(f"env.kwargs.{key}={_cli_value(stored.get(key))}" for key in mismatched)
                + ")"
            )
        self.reward_settings = dict(stored)

    # -- public --
    @property
    def num_episodes(self) -> int:
        return len(self._episodes)

    @property
    def num_frames(self) -> int:
        return self._total_frames

    def seeds_done(self) -> set[int]:
        return {int(row["seed"]) for row in self._episodes if row.get("seed") is not None}

    def add_episode(
        self,
        instruction: str,
        states: Any,
        actions: Any,
        images: Optional[dict[str, Any]] = None,
        rewards: Any = None,
        success: bool = False,
        seed: Optional[int] = None,
    ) -> int:
        """Write one episode of T frames; returns its episode index."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        states = _as_numpy(states, np.float32)
        actions = _as_numpy(actions, np.float32)
        length = len(states)
        if length < 1:
            raise ValueError("an episode needs at least one frame")
        if states.shape != (length, self.state_dim):
            raise ValueError(f"states has shape {_shape(states.shape)}, expected {_shape(('T', self.state_dim))}")
        if actions.shape != (length, self.action_dim):
            raise ValueError(
                f"actions has shape {_shape(actions.shape)}, expected {_shape((length, self.action_dim))} (one "
                "action per state)"
            )
        images = {k: _as_numpy(v, np.uint8) for k, v in (images or {}).items()}
        if set(images) != set(self.camera_shapes):
            raise ValueError(
                f"images has cameras {sorted(images)} but the dataset records {sorted(self.camera_shapes)}"
            )
        for camera, frames in images.items():
            if frames.shape != (length, *self.camera_shapes[camera]):
                raise ValueError(
                    f"images[{camera!r}] has shape {_shape(frames.shape)}, expected "
                    f"{_shape((length, *self.camera_shapes[camera]))}"
                )
        rewards = np.zeros(length, np.float32) if rewards is None else _as_numpy(rewards, np.float32).reshape(-1)
        if rewards.shape != (length,):
            raise ValueError(f"rewards has shape {_shape(rewards.shape)}, expected {_shape((length,))}")

        episode_index = self.num_episodes
        new_task = instruction not in self._tasks
        if new_task:
            self._tasks.append(instruction)
        task_index = self._tasks.index(instruction)
        frame_index = np.arange(length, dtype=np.int64)
        done = np.zeros(length, bool)
        done[-1] = True
        step_success = np.zeros(length, bool)
        step_success[-1] = bool(success)
        columns: dict[str, pa.Array] = {
            "observation.state": pa.FixedSizeListArray.from_arrays(pa.array(states.reshape(-1)), self.state_dim).cast(
                pa.list_(pa.float32())
            ),
            "action": pa.FixedSizeListArray.from_arrays(pa.array(actions.reshape(-1)), self.action_dim).cast(
                pa.list_(pa.float32())
            ),
        }
        for camera in self.camera_shapes:
            png = [encode_png(frame) for frame in images[camera]]
            columns[IMAGE_PREFIX + camera] = pa.StructArray.from_arrays(
                [pa.array(png, pa.binary()), pa.array([None] * length, pa.string())], names=["bytes", "path"]
            )
        columns.update(
            {
                "timestamp": pa.array((frame_index / self.fps).astype(np.float32)),
                "frame_index": pa.array(frame_index),
                "episode_index": pa.array(np.full(length, episode_index, np.int64)),
                "index": pa.array(np.arange(self._total_frames, self._total_frames + length, dtype=np.int64)),
                "task_index": pa.array(np.full(length, task_index, np.int64)),
                "next.reward": pa.array(rewards),
                "next.done": pa.array(done),
                "next.success": pa.array(step_success),
            }
        )
        table = pa.table(columns)
        table = table.replace_schema_metadata({"huggingface": json.dumps(_hf_features(self.features))})
        path = data_file(self.root, episode_index, self.chunks_size, self.data_path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        sink = io.BytesIO()
        pq.write_table(table, sink)
        _atomic_write(path, sink.getvalue())

        stats = {"observation.state": _stats(states, 0), "action": _stats(actions, 0)}
        for camera in self.camera_shapes:
            stats[IMAGE_PREFIX + camera] = _image_stats(images[camera])
        for name, values in (
            ("timestamp", frame_index / self.fps),
            ("frame_index", frame_index),
            ("episode_index", np.full(length, episode_index)),
            ("index", np.arange(self._total_frames, self._total_frames + length)),
            ("task_index", np.full(length, task_index)),
            ("next.reward", rewards),
            ("next.done", done),
            ("next.success", step_success),
        ):
            stats[name] = _stats(np.asarray(values, np.float64).reshape(-1, 1), 0)
        episode = {
            "episode_index": episode_index,
            "tasks": [instruction],
            "length": length,
            "success": bool(success),
            "seed": None if seed is None else int(seed),
        }
        self._write_meta(episode, {"episode_index": episode_index, "stats": stats}, new_task, length)
        return episode_index

    def _write_meta(self, episode: dict, episode_stats: dict, new_task: bool, length: int) -> None:
        """Append the episode's meta rows, then commit them with info.json (replaced atomically, last).

        Appending keeps the cost per episode constant: rewriting every row each time cost the collecting
        process twice as much per episode at 1,200 episodes as at the start (benchmarks/dataset_writer.py)."""
        meta = os.path.join(self.root, "meta")
        os.makedirs(meta, exist_ok=True)
        if new_task:
            _atomic_write(
                os.path.join(meta, "tasks.jsonl"),
                _jsonl([{"task_index": i, "task": task} for i, task in enumerate(self._tasks)]),
            )
        _append_line(os.path.join(meta, "episodes.jsonl"), episode)
        _append_line(os.path.join(meta, "episodes_stats.jsonl"), episode_stats)
        self._episodes.append(episode)
        self._total_frames += length
        _atomic_write(os.path.join(meta, "info.json"), json.dumps(self.info(), indent=4))

    def info(self) -> dict[str, Any]:
        return {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": self.robot_type,
            "total_episodes": self.num_episodes,
            "total_frames": self._total_frames,
            "total_tasks": len(self._tasks),
            "total_videos": 0,
            "total_chunks": (self.num_episodes + self.chunks_size - 1) // self.chunks_size,
            "chunks_size": self.chunks_size,
            "fps": self.fps,
            "splits": {"train": f"0:{self.num_episodes}"},
            "data_path": self.data_path,
            "video_path": None,
            "features": self.features,
            "control_mode": self.control_mode,
            "env_id": self.env_id,
            "reward_settings": self.reward_settings,
        }


def _shape(dims: Sequence[Any]) -> str:
    """A shape as the error messages print it, alike for numpy, torch and list shapes: a plain tuple, e.g.
    (3, 96, 96, 3) or (3,), never torch.Size([3]) or [3]; a dim given as a name prints as it, e.g. (T, 6)."""
    text = ", ".join(str(int(d)) if isinstance(d, numbers.Integral) else str(d) for d in dims)
    return f"({text},)" if len(dims) == 1 else f"({text})"


def _layout_value(key: str, value: Any) -> str:
    """A dataset_layout value in the writer's resume mismatch: the cameras' shapes as _shape prints them."""
    if key == "cameras":
        return "{" + ", ".join(f"{camera!r}: {_shape(shape)}" for camera, shape in value.items()) + "}"
    return str(value)


def fps_value(fps: Any, whole: bool = True, rel_tol: float = 0.0) -> Optional[Union[int, float]]:
    """The one check of an fps (frames per second: a writer's, an env's control rate, a meta/info.json's): a real,
    finite number (not a bool) > 0, returned as it is; with `whole`, a whole number >= 1 (LeRobot's info.json holds
    an int), within `rel_tol` (a rate computed as 1 / step_dt may be off by rounding), returned as an int. None where
    `fps` is not one: each caller raises, naming its own context (env id, file) and what it needs."""
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not math.isfinite(fps) or fps <= 0:
        return None
    if not whole:
        return fps
    if fps < 1 or not math.isclose(fps, round(fps), rel_tol=rel_tol):
        return None
    return int(round(fps))


def check_writer_fps(fps: Any) -> None:
    """A writer's fps: a whole number of frames per second >= 1 (LeRobot's info.json holds an int); before, 7.5 was
    written as 7 and 0 failed at the first episode's timestamps."""
    if fps_value(fps) is None:
        raise ValueError(
            f"fps={fps!r} must be a whole number >= 1: the frames per second the episodes were recorded at (the env's "
            "control rate), written to meta/info.json's fps and each frame's timestamp (frame_index / fps)"
        )


def _cli_value(value: Any) -> str:
    """`value` as a command-line override writes it (None -> null, True -> true)."""
    return json.dumps(value) if value is None or isinstance(value, bool) else str(value)


def _as_numpy(value: Any, dtype: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def load_info(root: str) -> dict[str, Any]:
    path = os.path.join(root, "meta", "info.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"no LeRobot dataset at {root!r}: expected {path} (LeRobotDataset v2.1 layout: meta/info.json, "
            f"meta/episodes.jsonl, meta/tasks.jsonl, data/chunk-000/episode_000000.parquet, ...), e.g. as "
            f"written by `python -m rlinf_embodied.collect collect.output_dir={root}`"
        )
    with open(path, encoding="utf-8") as f:
        try:
            info = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error}): the dataset is damaged") from None
    check_format(info, path)
    return info


def check_format(info: Any, path: str = "meta/info.json") -> None:
    """Refuse a meta/info.json (read from `path`) of a dataset this module cannot read: another LeRobot
    codebase_version than SUPPORTED_VERSIONS, or cameras stored as video. Raises ValueError naming `path`."""
    if not isinstance(info, dict):
        raise ValueError(f"{path} holds a JSON {type(info).__name__}, not an object: the dataset is damaged")
    version = info.get("codebase_version")
    if version is not None and version not in SUPPORTED_VERSIONS:
        raise ValueError(
            f"{path} has codebase_version={version!r}: this reader reads LeRobot {' / '.join(SUPPORTED_VERSIONS)} "
            "datasets only (meta/episodes.jsonl, one parquet file per episode, cameras as image columns), not "
            f"{version}"
            + (" (episodes in meta/episodes/*.parquet, many episodes per data file)" if str(version) >= "v3" else "")
            + ". Use a v2.1 copy of the dataset (a Hub dataset converted to v3.0 often keeps its v2.1 revision), "
            "write its episodes into a v2.1 dataset with rlinf_embodied.datasets.LeRobotDatasetWriter, or collect "
            "demonstrations with `python -m rlinf_embodied.collect`"
        )
    features = info.get("features")
    videos = sorted(name for name, f in features.items() if _dtype(f) == "video") if isinstance(features, dict) else []
    if videos:
        raise ValueError(
            f"{path}: the feature(s) {videos} have dtype 'video' (frames in mp4 files under videos/): this reader "
            "reads cameras stored as image columns only (dtype 'image', PNG frames inside the parquet files, as "
            "LeRobot writes with use_videos=False and `python -m rlinf_embodied.collect` does). Decode the videos "
            "into image features first (e.g. write the episodes into a new dataset with "
            "rlinf_embodied.datasets.LeRobotDatasetWriter), or collect demonstrations with "
            "`python -m rlinf_embodied.collect`"
        )


def check_info(info: Any, path: str = "meta/info.json") -> None:
    """check_format, and the keys the reader and the writer need are there: REQUIRED_INFO_KEYS, and the
    observation.state and action features with their shapes. Raises ValueError naming `path` and the keys."""
    check_format(info, path)
    missing = [key for key in REQUIRED_INFO_KEYS if key not in info]
    if missing:
        raise ValueError(
            f"{path} lacks the key(s) {missing} that a LeRobot v2.1 meta/info.json holds: the dataset is damaged "
            "(restore meta/info.json, or re-collect the dataset)"
        )
    for key in ("total_episodes", "total_frames"):
        if type(info[key]) is not int or info[key] < 0:
            raise ValueError(f"{path}: {key}={info[key]!r} is not a count (an integer >= 0): the dataset is damaged")
    _check_fps(info["fps"], path)
    _check_episode_layout(info, path)
    for key in ("control_mode", "env_id"):  # before: "control_mode": 5 was accepted, and compared as 5
        if info.get(key) is not None and not isinstance(info[key], str):
            raise ValueError(f"{path}: {key}={info[key]!r} is not a string (or null): the dataset is damaged")
    if info.get("reward_settings") is not None and not isinstance(info["reward_settings"], dict):
        raise ValueError(
            f"{path}: reward_settings={info['reward_settings']!r} is not an object (or null): the dataset is damaged"
        )
    features = info["features"]
    if not isinstance(features, dict):
        raise ValueError(f"{path}: 'features' is a {type(features).__name__}, not an object: the dataset is damaged")
    for name in ("observation.state", "action"):
        shape = features.get(name, {}).get("shape") if isinstance(features.get(name), dict) else None
        if not (isinstance(shape, list) and len(shape) == 1 and isinstance(shape[0], int) and shape[0] >= 1):
            raise ValueError(
                f"{path}: features[{name!r}] "
                + ("is missing" if name not in features else f"has shape {shape!r}, not [dim]")
                + f" (features: {sorted(features)}): the dataset is damaged, or not one of state/action demonstrations"
            )


def _check_fps(fps: Any, path: str) -> None:
    """info.json's fps: a positive number of frames per second (before: "20" was read as 20, and 0 or -5 accepted)."""
    if fps_value(fps, whole=False) is None:
        raise ValueError(
            f"{path}: fps={fps!r} is not a positive number (the frames per second the episodes were recorded at, "
            "e.g. 20): the dataset is damaged"
        )


def _check_episode_layout(info: dict[str, Any], path: str) -> None:
    """chunks_size and data_path, which place each episode's file (episode_file): before, chunks_size 0 was a
    ZeroDivisionError and an unknown placeholder in data_path a bare KeyError, each naming neither file nor key."""
    chunks_size = info.get("chunks_size", CHUNKS_SIZE)
    if type(chunks_size) is not int or chunks_size < 1:
        raise ValueError(
            f"{path}: chunks_size={chunks_size!r} is not an integer >= 1 (the episodes per data/chunk-* directory, "
            f"LeRobot's {CHUNKS_SIZE}): the dataset is damaged"
        )
    data_path = info.get("data_path", DATA_PATH)
    valid = (
        f"a LeRobot v2.x data_path formats with the placeholders {{episode_index}} and optionally {{episode_chunk}} "
        f"only, e.g. {DATA_PATH!r}"
    )
    if not isinstance(data_path, str):
        raise ValueError(f"{path}: data_path={data_path!r} is not a string; {valid}: the dataset is damaged")
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(data_path) if name is not None]
    except ValueError as error:  # e.g. an unmatched brace
        problem = f"does not parse ({error})"
    else:
        unknown = sorted({name for name in fields if name not in DATA_PATH_FIELDS})
        problem = f"has the placeholder(s) {unknown}" if unknown else None
        if problem is None and "episode_index" not in fields:  # every episode would be read from one file
            problem = "has no {episode_index} placeholder"
        if problem is None:
            try:
                data_path.format(episode_chunk=0, episode_index=0)
            except (ValueError, IndexError, KeyError) as error:  # a spec no int takes, e.g. {episode_index:s}
                problem = f"does not format ({type(error).__name__}: {error})"
    if problem is not None:
        raise ValueError(f"{path}: data_path={data_path!r} {problem}; {valid}: the dataset is damaged")


def _dtype(feature: Any) -> Any:
    return feature.get("dtype") if isinstance(feature, dict) else None


def camera_shapes(features: dict[str, Any]) -> dict[str, list[int]]:
    """The cameras of a dataset's meta/info.json features, by env obs key ("rgb", ...): their shapes. Cameras stored
    as video (dtype 'video') are refused (ValueError): their frames are not in the parquet files."""
    cameras = {name: f for name, f in features.items() if name.startswith(IMAGE_PREFIX)}
    videos = sorted(name for name, f in cameras.items() if _dtype(f) == "video")
    if videos:
        raise ValueError(
            f"meta/info.json's feature(s) {videos} have dtype 'video': this reader reads cameras stored as image "
            "columns (dtype 'image', PNG frames inside the parquet files) only"
        )
    return {name[len(IMAGE_PREFIX) :]: list(f["shape"]) for name, f in cameras.items()}


def dataset_layout(info: dict[str, Any], path: str = "meta/info.json") -> dict[str, Any]:
    """A meta/info.json's fps, state_dim, action_dim and cameras ({obs key: shape}), after check_info: a missing or
    malformed feature is a ValueError naming `path` and the feature, the one check of them for the reader, the
    writer and SFT's start-up checks."""
    check_info(info, path)
    features = info["features"]
    fps = info["fps"]  # a positive number (check_info); LeRobot writes an int
    return {
        "fps": int(fps) if float(fps).is_integer() else float(fps),
        "state_dim": int(features["observation.state"]["shape"][0]),
        "action_dim": int(features["action"]["shape"][0]),
        "cameras": camera_shapes(features),
    }


# ---- reader --------------------------------------------------------------------------------------
class DemoDataset:
    """All frames of a LeRobot v2.1 dataset in memory; `sample` returns env-style obs and action chunks.

    `decode_images`: "eager" decodes every PNG at load, "lazy" per `sample` (on the host, every batch),
    "auto" (default) eagerly when the decoded frames fit in EAGER_DECODE_MEMORY_FRACTION of the host's
    available memory. `decoded_eagerly` and `decoded_bytes` say what was chosen.
    """

    def __init__(self, root: str, decode_images: str = "auto"):
        if decode_images not in ("auto", "eager", "lazy"):
            raise ValueError(f"decode_images={decode_images!r}; valid: 'auto', 'eager', 'lazy'")
        self.root = os.path.abspath(root)
        self.info = load_info(root)
        layout = dataset_layout(self.info, os.path.join(self.root, "meta", "info.json"))
        self.fps = layout["fps"]
        self.state_dim, self.action_dim = layout["state_dim"], layout["action_dim"]
        self.camera_shapes = {k: tuple(v) for k, v in layout["cameras"].items()}
        self.camera_keys = list(self.camera_shapes)
        self.control_mode: Optional[str] = self.info.get("control_mode")
        self.env_id: Optional[str] = self.info.get("env_id")
        self.reward_settings: Optional[dict] = self.info.get("reward_settings")  # what next.reward means
        self.robot_type: Optional[str] = self.info.get("robot_type")
        total = int(self.info["total_episodes"])
        self.episodes = read_episode_rows(self.root, total)
        tasks = read_tasks(self.root)
        states, actions, task_index, images = [], [], [], {camera: [] for camera in self.camera_keys}
        lengths: list[int] = []
        for episode_index in range(total):
            path = episode_file(self.root, self.info, episode_index)
            table = _read_episode(path, total)
            held = _column(table, "episode_index", path).to_numpy()
            _check_episode_agrees(
                path, episode_index, (int(held.min()), int(held.max())), table.num_rows, self.episodes[episode_index]
            )
            states.append(_list_column(table, "observation.state", self.state_dim, path))
            actions.append(_list_column(table, "action", self.action_dim, path))
            task_index.append(_task_column(table, tasks, path))
            for camera in self.camera_keys:
                column = _column(table, IMAGE_PREFIX + camera, path)
                images[camera].extend(column.combine_chunks().field("bytes").to_pylist())
            lengths.append(table.num_rows)
        _check_total_frames(self.root, self.info, sum(lengths))
        self._states = torch.from_numpy(np.concatenate(states)) if states else torch.zeros(0, self.state_dim)
        self._actions = torch.from_numpy(np.concatenate(actions)) if actions else torch.zeros(0, self.action_dim)
        frame_tasks = np.concatenate(task_index) if task_index else np.zeros(0, np.int64)
        self._frame_instruction = [tasks[int(i)] for i in frame_tasks]
        ends = np.cumsum(lengths, dtype=np.int64)
        self._starts = ends - np.asarray(lengths, np.int64)
        self._ends = ends
        self._frame_episode = np.repeat(np.arange(total), lengths)
        self._png = images
        self.num_episodes, self.num_frames = total, int(ends[-1]) if total else 0
        self.decoded_bytes = self.num_frames * sum(int(np.prod(s)) for s in self.camera_shapes.values())
        eager = decode_images == "eager" or (  # the host's memory is read only when "auto" asks
            decode_images == "auto" and self.decoded_bytes <= EAGER_DECODE_MEMORY_FRACTION * available_host_bytes()
        )
        self.decoded_eagerly = eager or not self.camera_keys
        self._images: dict[str, torch.Tensor] = {}
        if eager:
            for camera in self.camera_keys:
                frames = np.empty((self.num_frames, *self.camera_shapes[camera]), np.uint8)
                for i, data in enumerate(self._png[camera]):
                    frames[i] = decode_png(data)
                self._images[camera] = torch.from_numpy(frames)
            self._png = {}
        self.device = torch.device("cpu")
        self._episode_ends = torch.from_numpy(ends)  # (episodes,) on self.device, for sample()
        self._episode_of_frame = torch.from_numpy(self._frame_episode)  # (frames,)

    def to(self, device: Union[str, torch.device]) -> "DemoDataset":
        """Keep the states, actions and decoded frames on `device` (a GPU's memory holds a few hundred
        demonstrations' 96-128 px frames), so `sample` gathers and returns a batch there without host
        copies; lazily decoded frames are decoded per batch on the host and copied. Returns self."""
        device = torch.device(device)
        self._states, self._actions = self._states.to(device), self._actions.to(device)
        self._images = {camera: frames.to(device) for camera, frames in self._images.items()}
        self._episode_ends, self._episode_of_frame = self._episode_ends.to(device), self._episode_of_frame.to(device)
        self.device = device
        return self

    def __len__(self) -> int:
        return self.num_frames

    def camera_variation(self, max_frames: int = 256) -> dict[str, float]:
        """Per camera: the standard deviation across frames of each pixel, averaged over pixels, on up to
        `max_frames` evenly spaced frames. 0 means every frame shows the same image: nothing was rendered
        (e.g. frames recorded where the simulator could not render), so no policy can learn from it."""
        index = np.linspace(0, max(self.num_frames - 1, 0), min(max_frames, self.num_frames)).astype(np.int64)
        variation = {}
        for camera in self.camera_keys:
            if camera in self._images:
                frames = self._images[camera][torch.from_numpy(index).to(self.device)].float()
            else:
                frames = torch.from_numpy(np.stack([decode_png(self._png[camera][i]) for i in index])).float()
            variation[camera] = float(frames.std(dim=0).mean()) if len(index) > 1 else 0.0
        return variation

    def episode_bounds(self) -> list[tuple[int, int]]:
        return [(int(s), int(e)) for s, e in zip(self._starts, self._ends)]

    def instructions(self) -> list[str]:
        return [self._frame_instruction[int(s)] for s in self._starts]

    def successes(self) -> list[bool]:
        return [bool(row.get("success", False)) for row in self.episodes]

    def seeds(self) -> list[Optional[int]]:
        return [row.get("seed") for row in self.episodes]

    def check_control_mode(self, control_mode: Optional[str], env_id: Optional[str] = None) -> None:
        """Raise unless the actions were recorded in `control_mode` (the action space of the env to run).

        A dataset with unknown control mode (None) passes. `env_id` only improves the message.
        """
        if self.control_mode is None or control_mode is None or self.control_mode == control_mode:
            return
        where = f" of {env_id}" if env_id else ""
        raise ControlModeMismatchError(
            f"the dataset at {self.root} holds actions in control_mode={self.control_mode!r}, but the env{where} "
            f"acts in control_mode={control_mode!r}: the action spaces differ. Run the env with "
            f"env.kwargs.control_mode={self.control_mode}, or collect the dataset in {control_mode!r}"
        )

    def sample(
        self, frame_indices: FrameIndices, action_chunk: int = 1
    ) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
        """Observations at global frames `frame_indices` and the next `action_chunk` actions of each.

        Returns `(obs, actions (B, chunk, A) float32, is_pad (B, chunk) bool)`; past an episode's end
        the last action is repeated and `is_pad` is True.
        """
        if action_chunk < 1:
            raise ValueError(f"action_chunk={action_chunk} must be >= 1")
        if isinstance(frame_indices, torch.Tensor):
            index = frame_indices.reshape(-1).to("cpu", torch.int64)  # checked on the host: no device sync
        else:
            index = torch.from_numpy(np.asarray(frame_indices, dtype=np.int64).reshape(-1))
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.num_frames):
            raise IndexError(
                f"frame indices must lie in [0, {self.num_frames}), got {int(index.min())}..{int(index.max())}"
            )
        on_device = host_to_device(index, self.device)
        ends = self._episode_ends[self._episode_of_frame[on_device]]  # (B,) end of each frame's episode
        rows = on_device[:, None] + torch.arange(action_chunk, device=self.device)[None, :]  # (B, chunk)
        is_pad = rows >= ends[:, None]
        rows = torch.minimum(rows, ends[:, None] - 1)  # past the end: the last action, repeated
        obs: dict[str, Any] = {"state": self._states[on_device]}
        for camera in self.camera_keys:
            if camera in self._images:
                obs[camera] = self._images[camera][on_device]
            else:
                obs[camera] = torch.from_numpy(
                    np.stack([decode_png(self._png[camera][i]) for i in index.tolist()])
                    if index.numel()
                    else np.zeros((0, *self.camera_shapes[camera]), np.uint8)
                ).to(self.device)
        obs["instruction"] = [self._frame_instruction[i] for i in index.tolist()]
        return obs, self._actions[rows], is_pad


def episode_file(root: str, info: dict[str, Any], episode_index: int) -> str:
    """The parquet file of an episode, where meta/info.json's chunks_size and data_path put it."""
    chunks_size = int(info.get("chunks_size", CHUNKS_SIZE))
    return data_file(root, episode_index, chunks_size, info.get("data_path", DATA_PATH))


def read_episode_rows(root: str, total: int) -> list[dict]:
    """meta/episodes.jsonl's rows of info.json's `total` episodes, all of them present, row i of episode i."""
    rows = read_meta_rows(root, "episodes.jsonl", total)
    path = os.path.join(root, "meta", "episodes.jsonl")
    if len(rows) < total:
        raise ValueError(
            f"{path} lists {len(rows)} episodes, meta/info.json total_episodes={total}: the dataset is damaged"
        )
    for number, row in enumerate(rows):
        if not isinstance(row, dict) or row.get("episode_index", number) != number:
            found = row.get("episode_index") if isinstance(row, dict) else row
            raise ValueError(
                f"{path}: row {number} (episode {number}) says episode_index={found!r}: the dataset is "
                f"inconsistent ({INCONSISTENT_FIX})"
            )
    return rows


INCONSISTENT_FIX = "re-collect it, or fix the meta files"


def _check_episode_agrees(path: str, episode_index: int, held: tuple[int, int], frames: int, row: dict) -> None:
    """The episode file `path`, of episode `episode_index` by its name, agrees with meta/episodes.jsonl's `row`:
    its episode_index column (min, max `held`) names that episode, and its `frames` equal the row's length."""
    if held != (episode_index, episode_index):
        values = held[0] if held[0] == held[1] else f"{held[0]}..{held[1]}"
        raise ValueError(
            f"{path}: its episode_index column holds {values}, but its file name makes it episode {episode_index}: "
            "the dataset is inconsistent (episode files renamed or swapped?), and meta/episodes.jsonl's seeds and "
            "successes would describe other frames (re-collect it, or rename each file after the episode_index its "
            "column holds)"
        )
    if "length" not in row or row["length"] != frames:
        raise ValueError(
            f"{path} holds {frames} frames, but meta/episodes.jsonl's row {episode_index} says "
            + (f"length={row['length']!r}" if "length" in row else "no length")
            + f": the dataset is inconsistent ({INCONSISTENT_FIX})"
        )


def _check_total_frames(root: str, info: dict[str, Any], frames: int) -> None:
    if info["total_frames"] != frames:
        raise ValueError(
            f"{os.path.join(root, 'meta', 'info.json')} says total_frames={info['total_frames']!r}, but its "
            f"{info['total_episodes']} episode files hold {frames} frames (as meta/episodes.jsonl's lengths say): "
            f"the dataset is inconsistent ({INCONSISTENT_FIX})"
        )


def check_dataset_files(root: str, info: dict[str, Any]) -> None:
    """Cheap checks of a dataset before anything loads it: meta/info.json is of a version and layout this module
    reads, the meta files exist and parse, every episode's parquet file exists, has frames and the columns (and
    per-frame widths) meta/info.json describes, and the files agree: each file's episode_index column names the
    episode its file name does, its frames match meta/episodes.jsonl's length, and they add up to info.json's
    total_frames. Read from the parquet footers alone (row counts, column statistics; the episode_index column
    where its statistics are missing). Raises FileNotFoundError / ValueError naming the file."""
    layout = dataset_layout(info, os.path.join(root, "meta", "info.json"))
    total = int(info["total_episodes"])
    rows = read_episode_rows(root, total)
    tasks = read_tasks(root)
    widths = {"observation.state": layout["state_dim"], "action": layout["action_dim"]}
    columns = [*widths, "task_index", "episode_index", *(IMAGE_PREFIX + camera for camera in layout["cameras"])]
    frames = 0
    for episode_index in range(total):
        path = episode_file(root, info, episode_index)
        frames += _check_episode_footer(path, total, columns, widths, tasks, episode_index, rows[episode_index])
    _check_total_frames(root, info, frames)


def _check_episode_footer(
    path: str,
    total: int,
    columns: list[str],
    widths: dict[str, int],
    tasks: dict[int, str],
    episode_index: int,
    row: dict,
) -> int:
    """Check episode `episode_index`'s file at `path` from its footer; returns its frames."""
    import pyarrow.parquet as pq

    metadata = _read_parquet(path, total, pq.read_metadata)
    names = metadata.schema.to_arrow_schema().names
    missing = [name for name in columns if name not in names]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {missing} that meta/info.json's features describe")
    leaves = [metadata.schema.column(i).path for i in range(metadata.num_columns)]
    for name, dim in widths.items():
        leaf = next(i for i, leaf in enumerate(leaves) if leaf.startswith(name + "."))
        values = sum(metadata.row_group(g).column(leaf).num_values for g in range(metadata.num_row_groups))
        if values != dim * metadata.num_rows:
            raise ValueError(
                f"{path}: column {name!r} holds {values / metadata.num_rows:g} values per frame, but "
                f"meta/info.json's features[{name!r}].shape says {dim}"
            )
    _check_task_range(path, metadata, leaves.index("task_index"), tasks)
    held = _footer_range(metadata, leaves.index("episode_index"))
    if held is None:  # no statistics written: read that column alone
        values = pq.read_table(path, columns=["episode_index"]).column(0).to_numpy()
        held = (int(values.min()), int(values.max()))
    _check_episode_agrees(path, episode_index, held, metadata.num_rows, row)
    return metadata.num_rows


def _footer_range(metadata: Any, leaf: int) -> Optional[tuple[int, int]]:
    """(min, max) of an integer column over every row group, from the footer's statistics; None where missing."""
    low = high = None
    for group in range(metadata.num_row_groups):
        stats = metadata.row_group(group).column(leaf).statistics
        if stats is None or not stats.has_min_max:
            return None
        low = int(stats.min) if low is None else min(low, int(stats.min))
        high = int(stats.max) if high is None else max(high, int(stats.max))
    return None if low is None else (low, high)


def _check_task_range(path: str, metadata: Any, leaf: int, tasks: dict[int, str]) -> None:
    """task_index's min/max statistics (when written) lie among meta/tasks.jsonl's rows."""
    for group in range(metadata.num_row_groups):
        stats = metadata.row_group(group).column(leaf).statistics
        if stats is None or not stats.has_min_max:
            continue
        unknown = sorted({int(stats.min), int(stats.max)} - set(tasks))
        if unknown:
            raise ValueError(
                f"{path}: column 'task_index' holds {unknown}, which meta/tasks.jsonl does not list "
                f"(valid: {sorted(tasks)})"
            )


def _read_episode(path: str, total: int) -> Any:
    """An episode's table; errors name the file."""
    import pyarrow.parquet as pq

    return _read_parquet(path, total, pq.read_table)


def _read_parquet(path: str, total: int, read: Callable[[str], Any]) -> Any:
    """`read(path)` (pyarrow's read_table, or read_metadata for the footer alone) of one of the `total` episode
    files, which must exist, be readable and hold a frame; errors name the file."""
    import pyarrow as pa

    if not os.path.isfile(path):
        raise FileNotFoundError(f"meta/info.json lists {total} episodes but {path} is missing")
    try:
        result = read(path)
    except (OSError, pa.ArrowException) as error:
        raise ValueError(f"{path} is not a readable parquet file ({error}): the dataset is damaged") from None
    if result.num_rows == 0:
        raise ValueError(f"{path} holds no frames: every episode needs at least one (the writer refuses empty ones)")
    return result


def _column(table: Any, name: str, path: str) -> Any:
    if name not in table.column_names:
        raise ValueError(f"{path} has no column {name!r} (it has {table.column_names})")
    return table.column(name)


def _list_column(table: Any, name: str, dim: int, path: str) -> np.ndarray:
    """(rows, dim) float32 of a list column, finite: errors name the file, column and frame."""
    column = _column(table, name, path).combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    if values.size != len(column) * dim:
        raise ValueError(
            f"{path}: column {name!r} holds {values.size / max(len(column), 1):g} values per frame, but "
            f"meta/info.json's features[{name!r}].shape says {dim}"
        )
    values = values.reshape(len(column), dim)
    bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
    if bad.size:
        raise ValueError(
            f"{path}: column {name!r} holds non-finite values (NaN/inf) at frame(s) {bad[:5].tolist()}"
            f"{' ...' if bad.size > 5 else ''}: the policy would train on them (loss NaN); drop or re-collect "
            "the episode"
        )
    return values


def _task_column(table: Any, tasks: dict[int, str], path: str) -> np.ndarray:
    values = _column(table, "task_index", path).to_numpy()
    unknown = sorted(set(values.tolist()) - set(tasks))
    if unknown:
        raise ValueError(
            f"{path}: column 'task_index' holds {unknown}, which meta/tasks.jsonl does not list "
            f"(valid: {sorted(tasks)})"
        )
    return values
