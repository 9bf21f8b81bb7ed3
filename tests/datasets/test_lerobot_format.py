"""LeRobot v2.1 writer/reader round trips (pyarrow only; no simulator)."""

import json
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from rlinf_embodied.datasets import DemoDataset, LeRobotDatasetWriter
from rlinf_embodied.datasets.demo_seeds import dataset_seeds
from rlinf_embodied.datasets.lerobot_format import ControlModeMismatchError, _image_stats

D, A, H, W = 5, 3, 8, 6
CAMERAS = {"rgb": (H, W, 3), "wrist_rgb": (H, W, 3)}


def make_episode(rng, length, cameras=CAMERAS):
    states = rng.standard_normal((length, D)).astype(np.float32)
    actions = rng.standard_normal((length, A)).astype(np.float32)
    images = {k: rng.integers(0, 256, (length, *shape), dtype=np.uint8) for k, shape in cameras.items()}
    rewards = rng.random(length).astype(np.float32)
    return states, actions, images, rewards


def write(root, episodes, cameras=CAMERAS, **kwargs):
    writer = LeRobotDatasetWriter(
        root, fps=20, robot_type="panda", state_dim=D, action_dim=A, camera_shapes=cameras, **kwargs
    )
    for i, (instruction, (states, actions, images, rewards), success, seed) in enumerate(episodes):
        assert (
            writer.add_episode(instruction, states, actions, images, rewards, success, seed) == writer.num_episodes - 1
        )
    return writer


def test_round_trip_layout_and_chunks(tmp_path):
    rng = np.random.default_rng(0)
    eps = [
        ("pick", make_episode(rng, 4), True, 10),
        ("push", make_episode(rng, 6), False, 11),
        ("pick", make_episode(rng, 3), True, 12),
    ]
    root = str(tmp_path / "ds")
    writer = write(root, eps, control_mode="pd_joint_delta_pos", env_id="rlinf/ManiSkill-PickCube")
    assert writer.num_episodes == 3 and writer.seeds_done() == {10, 11, 12}

    info = json.load(open(os.path.join(root, "meta", "info.json")))
    assert info["codebase_version"] == "v2.1" and info["fps"] == 20 and info["robot_type"] == "panda"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"], info["chunks_size"]) == (3, 13, 2, 1000)
    assert info["data_path"] == "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
    assert info["features"]["observation.images.rgb"]["dtype"] == "image"
    assert info["features"]["observation.images.rgb"]["shape"] == [H, W, 3]
    assert info["features"]["observation.state"]["shape"] == [D]
    assert info["splits"] == {"train": "0:3"} and info["control_mode"] == "pd_joint_delta_pos"
    tasks = [json.loads(line) for line in open(os.path.join(root, "meta", "tasks.jsonl"))]
    assert tasks == [{"task_index": 0, "task": "pick"}, {"task_index": 1, "task": "push"}]
    episodes = [json.loads(line) for line in open(os.path.join(root, "meta", "episodes.jsonl"))]
    assert [(e["length"], e["success"], e["seed"], e["tasks"]) for e in episodes] == [
        (4, True, 10, ["pick"]),
        (6, False, 11, ["push"]),
        (3, True, 12, ["pick"]),
    ]
    assert len(open(os.path.join(root, "meta", "episodes_stats.jsonl")).readlines()) == 3

    table = pq.read_table(os.path.join(root, "data", "chunk-000", "episode_000001.parquet"))
    state_type = table.schema.field("observation.state").type
    assert pa.types.is_list(state_type) and state_type.value_type == pa.float32()
    assert str(table.schema.field("observation.images.rgb").type) == "struct<bytes: binary, path: string>"
    assert table.column("index").to_pylist() == list(range(4, 10))
    assert table.column("frame_index").to_pylist() == list(range(6))
    assert table.column("episode_index").to_pylist() == [1] * 6
    assert table.column("task_index").to_pylist() == [1] * 6
    assert table.column("next.done").to_pylist() == [False] * 5 + [True]
    assert table.column("observation.images.rgb").to_pylist()[0]["bytes"][:4] == b"\x89PNG"
    np.testing.assert_allclose(table.column("timestamp").to_numpy(), np.arange(6) / 20, rtol=1e-6)
    assert b"huggingface" in table.schema.metadata

    for decode in ("eager", "lazy"):
        ds = DemoDataset(root, decode_images=decode)
        assert (ds.num_episodes, ds.num_frames, ds.fps, ds.state_dim, ds.action_dim) == (3, 13, 20, D, A)
        assert ds.camera_keys == ["rgb", "wrist_rgb"] and ds.control_mode == "pd_joint_delta_pos"
        assert ds.episode_bounds() == [(0, 4), (4, 10), (10, 13)]
        assert ds.instructions() == ["pick", "push", "pick"]
        assert ds.successes() == [True, False, True] and ds.seeds() == [10, 11, 12]
        obs, actions, is_pad = ds.sample([0, 5, 9, 12], action_chunk=3)
        states = np.concatenate([e[1][0] for e in eps])
        all_actions = np.concatenate([e[1][1] for e in eps])
        rgb = np.concatenate([e[1][2]["rgb"] for e in eps])
        wrist = np.concatenate([e[1][2]["wrist_rgb"] for e in eps])
        assert obs["state"].dtype == torch.float32 and obs["rgb"].dtype == torch.uint8
        np.testing.assert_array_equal(obs["state"].numpy(), states[[0, 5, 9, 12]])
        np.testing.assert_array_equal(obs["rgb"].numpy(), rgb[[0, 5, 9, 12]])
        np.testing.assert_array_equal(obs["wrist_rgb"].numpy(), wrist[[0, 5, 9, 12]])
        assert obs["instruction"] == ["pick", "push", "push", "pick"]
        assert actions.shape == (4, 3, A) and actions.dtype == torch.float32
        # frame 0: rows 0,1,2; frame 5 (episode 1 = 4..9): 5,6,7; frame 9: 9, then pad with 9; frame 12: 12 x3
        expected_rows = [[0, 1, 2], [5, 6, 7], [9, 9, 9], [12, 12, 12]]
        np.testing.assert_array_equal(actions.numpy(), all_actions[expected_rows])
        assert is_pad.dtype == torch.bool
        assert is_pad.tolist() == [[False] * 3, [False] * 3, [False, True, True], [False, True, True]]
    ds.check_control_mode("pd_joint_delta_pos")
    with pytest.raises(
        ControlModeMismatchError, match="pd_joint_pos.*pd_joint_delta_pos|pd_joint_delta_pos.*pd_joint_pos"
    ):
        ds.check_control_mode("pd_joint_pos")


def test_resume_appends_and_checks_layout(tmp_path):
    rng = np.random.default_rng(1)
    root = str(tmp_path / "ds")
    write(root, [("a", make_episode(rng, 2, {}), True, 0)], cameras={})
    writer = LeRobotDatasetWriter(root, fps=20, state_dim=D, action_dim=A, camera_shapes={})
    assert writer.num_episodes == 1 and writer.seeds_done() == {0}
    states, actions, _, rewards = make_episode(rng, 5, {})
    writer.add_episode("b", states, actions, {}, rewards, False, 7)
    ds = DemoDataset(root)
    assert ds.num_episodes == 2 and ds.num_frames == 7 and ds.camera_keys == []
    assert ds.episode_bounds() == [(0, 2), (2, 7)] and ds.seeds() == [0, 7]
    obs, acts, _ = ds.sample(torch.tensor([2]), 1)
    np.testing.assert_array_equal(obs["state"].numpy()[0], states[0])
    np.testing.assert_array_equal(acts.numpy()[0, 0], actions[0])
    assert set(obs) == {"state", "instruction"}
    table = pq.read_table(os.path.join(root, "data", "chunk-000", "episode_000001.parquet"))
    assert table.column("index").to_pylist() == list(range(2, 7))

    with pytest.raises(ValueError, match=r"state_dim=5.*state_dim=6"):
        LeRobotDatasetWriter(root, fps=20, state_dim=D + 1, action_dim=A, camera_shapes={})
    with pytest.raises(ValueError, match=r"cameras=\{\}.*cameras=\{'rgb'"):
        LeRobotDatasetWriter(root, fps=20, state_dim=D, action_dim=A, camera_shapes={"rgb": (H, W, 3)})


def test_interrupted_write_keeps_finished_episodes(tmp_path):
    """Meta rows beyond info.json's totals (an episode cut short mid-write) are dropped on resume."""
    rng = np.random.default_rng(2)
    root = str(tmp_path / "ds")
    write(root, [("a", make_episode(rng, 3, {}), True, 0)], cameras={})
    info_path = os.path.join(root, "meta", "info.json")
    info_before = open(info_path).read()
    write(root, [("a", make_episode(rng, 4, {}), True, 1)], cameras={})
    open(info_path, "w").write(info_before)  # as if killed before info.json was replaced
    with open(os.path.join(root, "meta", "episodes_stats.jsonl"), "a") as f:
        f.write('{"episode_index": 2, "sta')  # and a row cut short by the kill
    assert DemoDataset(root).num_frames == 3 and dataset_seeds(root) == [0]  # readers stop at the committed total
    writer = LeRobotDatasetWriter(root, fps=20, state_dim=D, action_dim=A, camera_shapes={})
    assert writer.num_episodes == 1 and writer.seeds_done() == {0}
    states, actions, _, rewards = make_episode(rng, 2, {})
    writer.add_episode("a", states, actions, {}, rewards, True, 5)  # appends after the last committed row
    for name in ("episodes.jsonl", "episodes_stats.jsonl"):
        rows = [json.loads(line) for line in open(os.path.join(root, "meta", name))]
        assert [row["episode_index"] for row in rows] == [0, 1], name
    assert DemoDataset(root).seeds() == [0, 5] and dataset_seeds(root) == [0, 5]


def test_meta_rows_are_appended_not_rewritten(tmp_path):
    """Each episode appends its meta rows (a constant cost per episode); rewriting all of them made the
    collecting process twice as slow per episode at 1,200 episodes (benchmarks/dataset_writer.py)."""
    rng = np.random.default_rng(4)
    root = str(tmp_path / "ds")
    writer = write(root, [("a", make_episode(rng, 2, {}), True, 0)], cameras={})
    paths = [os.path.join(root, "meta", name) for name in ("episodes.jsonl", "episodes_stats.jsonl")]
    inodes = [os.stat(path).st_ino for path in paths]
    states, actions, _, rewards = make_episode(rng, 3, {})
    writer.add_episode("a", states, actions, {}, rewards, True, 1)
    assert [os.stat(path).st_ino for path in paths] == inodes  # the same files, grown
    assert [len(open(path).readlines()) for path in paths] == [2, 2]


def test_image_stats_match_the_float_computation():
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 256, (250, 7, 5, 3), dtype=np.uint8)
    frames[..., 2] = np.clip(frames[..., 2], 40, 200)  # a channel that spans less than 0-255
    stats = _image_stats(frames)
    sample = frames[::2].astype(np.float64) / 255.0  # up to 100 frames: every 2nd of 250
    for name, fn in (("min", np.min), ("max", np.max), ("mean", np.mean), ("std", np.std)):
        np.testing.assert_allclose(np.asarray(stats[name]).reshape(3), fn(sample, axis=(0, 1, 2)), atol=1e-9)
    assert stats["count"] == [125]
    assert stats["min"][2] == [[40 / 255]] and stats["max"][2] == [[200 / 255]]


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"meta/info.json"):
        DemoDataset(str(tmp_path / "nothing"))
    writer = LeRobotDatasetWriter(str(tmp_path / "ds"), fps=20, state_dim=D, action_dim=A, camera_shapes=CAMERAS)
    rng = np.random.default_rng(3)
    states, actions, images, rewards = make_episode(rng, 3)
    with pytest.raises(ValueError, match="actions has shape"):
        writer.add_episode("x", states, actions[:2], images, rewards, True, 0)
    with pytest.raises(ValueError, match="cameras"):
        writer.add_episode("x", states, actions, {"rgb": images["rgb"]}, rewards, True, 0)
    assert writer.num_episodes == 0
    writer.add_episode("x", torch.from_numpy(states), torch.from_numpy(actions), images, rewards, True, 0)
    with pytest.raises(IndexError):
        DemoDataset(str(tmp_path / "ds")).sample([3], 2)


def test_shape_mismatches_print_every_shape_as_a_plain_tuple(tmp_path):
    """Before: a resume mismatch printed the cameras' shapes as lists ({'rgb': [8, 6, 3]}), add_episode its own
    shapes as numpy's tuples and the expected ones formatted by hand; now every shape prints as (8, 6, 3)."""
    root = str(tmp_path / "ds")
    writer = LeRobotDatasetWriter(root, fps=20, state_dim=D, action_dim=A, camera_shapes={"rgb": (H, W, 3)})
    rng = np.random.default_rng(14)
    states, actions, images, rewards = make_episode(rng, 3, {"rgb": (H, W, 3)})
    for given, message in (
        ({"states": torch.from_numpy(states[:, :2])}, r"states has shape \(3, 2\), expected \(T, 5\)$"),
        ({"actions": torch.from_numpy(actions[:2])}, r"actions has shape \(2, 3\), expected \(3, 3\) \(one action"),
        (
            {"images": {"rgb": images["rgb"][:, :4]}},
            r"images\['rgb'\] has shape \(3, 4, 6, 3\), expected \(3, 8, 6, 3\)$",
        ),
        ({"rewards": torch.from_numpy(rewards[:2])}, r"rewards has shape \(2,\), expected \(3,\)$"),
    ):
        episode = {"states": states, "actions": actions, "images": images, "rewards": rewards, **given}
        with pytest.raises(ValueError, match=message):
            writer.add_episode("x", success=True, seed=0, **episode)
    writer.add_episode("x", states, actions, images, rewards, True, 0)
    with pytest.raises(
        ValueError, match=r"has cameras=\{'rgb': \(8, 6, 3\)\} but .* asked for cameras=\{'rgb': \(4, 6, 3\)\};"
    ):
        LeRobotDatasetWriter(root, fps=20, state_dim=D, action_dim=A, camera_shapes={"rgb": [4, W, 3]})
    with pytest.raises(ValueError, match=r"camera 'rgb': shape \(8, 6\) must be \(H, W, 3\)"):
        LeRobotDatasetWriter(root, fps=20, state_dim=D, action_dim=A, camera_shapes={"rgb": torch.Size([H, W])})


@pytest.mark.parametrize("device", ["meta", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_dataset_on_a_device_samples_there_the_same_batches(tmp_path, device):
    """`to(device)` keeps every array on the device: sample() gathers there (meta: shapes and devices
    only, no host copy can sneak in); on a GPU the values equal the host dataset's."""
    rng = np.random.default_rng(3)
    root = str(tmp_path / "ds")
    write(root, [("pick", make_episode(rng, 5), True, 0), ("push", make_episode(rng, 3), True, 1)])
    host, moved = DemoDataset(root), DemoDataset(root).to(device)
    index = torch.tensor([0, 4, 5, 7, 2])
    obs, actions, is_pad = moved.sample(index, 3)
    assert moved.device == torch.device(device)
    for tensor in (obs["state"], obs["rgb"], obs["wrist_rgb"], actions, is_pad):
        assert tensor.device.type == torch.device(device).type
    assert actions.shape == (5, 3, A) and is_pad.shape == (5, 3) and obs["rgb"].shape == (5, H, W, 3)
    assert obs["instruction"] == ["pick", "pick", "push", "push", "pick"]
    if device != "meta":
        expected_obs, expected_actions, expected_pad = host.sample(index, 3)
        assert torch.equal(actions.cpu(), expected_actions) and torch.equal(is_pad.cpu(), expected_pad)
        for key in ("state", "rgb", "wrist_rgb"):
            assert torch.equal(obs[key].cpu(), expected_obs[key])
    with pytest.raises(IndexError, match=r"\[0, 8\)"):  # checked on the host, before any gather
        moved.sample([8], 1)


@pytest.mark.parametrize("decode_images", ["eager", "lazy"])
def test_camera_variation_tells_rendered_frames_from_constant_ones(tmp_path, decode_images):
    from rlinf_embodied.workers.sft_worker import check_cameras_vary

    rng = np.random.default_rng(0)
    writer = LeRobotDatasetWriter(
        str(tmp_path), fps=10, state_dim=2, action_dim=1, camera_shapes={"rgb": (8, 8, 3), "wrist_rgb": (8, 8, 3)}
    )
    for episode in range(2):
        images = {
            "rgb": rng.integers(0, 256, size=(5, 8, 8, 3), dtype=np.uint8),  # a moving scene
            "wrist_rgb": np.full((5, 8, 8, 3), 17, np.uint8),  # nothing rendered: one colour throughout
        }
        writer.add_episode(
            "t", np.zeros((5, 2), np.float32), np.zeros((5, 1), np.float32), images, np.zeros(5), True, episode
        )
    dataset = DemoDataset(str(tmp_path), decode_images=decode_images)
    variation = dataset.camera_variation()
    assert variation["rgb"] > 50 and variation["wrist_rgb"] == 0.0
    with pytest.raises(ValueError, match=r"camera\(s\) \{'wrist_rgb': 0.0\} show the same image in every frame"):
        check_cameras_vary(dataset, str(tmp_path))


def test_auto_decoding_follows_the_hosts_available_memory(tmp_path, monkeypatch):
    """ "auto" decodes at load while the frames fit in half the available memory, else per batch (stop 29:
    a fixed 2 GiB limit made 1,600 demonstrations decode per batch on a 128 GiB host, 5x slower per step)."""
    import rlinf_embodied.datasets.lerobot_format as lerobot_format

    writer = LeRobotDatasetWriter(str(tmp_path), fps=10, state_dim=2, action_dim=1, camera_shapes={"rgb": (8, 8, 3)})
    frames = np.random.default_rng(0).integers(0, 256, size=(5, 8, 8, 3), dtype=np.uint8)
    writer.add_episode(
        "t", np.zeros((5, 2), np.float32), np.zeros((5, 1), np.float32), {"rgb": frames}, np.zeros(5), True, 0
    )
    decoded_bytes = 5 * 8 * 8 * 3
    monkeypatch.setattr(lerobot_format, "available_host_bytes", lambda: 2 * decoded_bytes)
    roomy = DemoDataset(str(tmp_path))
    assert roomy.decoded_eagerly and roomy.decoded_bytes == decoded_bytes
    monkeypatch.setattr(lerobot_format, "available_host_bytes", lambda: 2 * decoded_bytes - 1)
    tight = DemoDataset(str(tmp_path))
    assert not tight.decoded_eagerly
    np.testing.assert_array_equal(tight.sample([3])[0]["rgb"].numpy(), roomy.sample([3])[0]["rgb"].numpy())
    monkeypatch.undo()
    assert lerobot_format.available_host_bytes() > 0


# ---- damaged datasets: the pre-flight check (meta files, parquet footers) and the reader name the file -----------
def _episode_path(root, index):
    return os.path.join(root, "data", "chunk-000", f"episode_{index:06d}.parquet")


def _rewrite_column(root, index, name, values, type_):
    table = pq.read_table(_episode_path(root, index))
    table = table.set_column(table.schema.get_field_index(name), name, pa.array(values, type_))
    pq.write_table(table, _episode_path(root, index))


def _truncate(path, keep=0.5):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: int(len(data) * keep)])


def _set_action_shape(root, dim):
    path = os.path.join(root, "meta", "info.json")
    info = json.load(open(path))
    info["features"]["action"]["shape"] = [dim]
    json.dump(info, open(path, "w"))


def _empty_last_episode(root):
    path = _episode_path(root, 1)
    pq.write_table(pq.read_table(path).slice(0, 0), path)


DAMAGES = {
    "tasks.jsonl missing": (
        lambda r: os.remove(os.path.join(r, "meta", "tasks.jsonl")),
        r"meta/tasks.jsonl is missing",
    ),
    "episodes.jsonl cut": (
        lambda r: _truncate(os.path.join(r, "meta", "episodes.jsonl"), keep=0.9),
        r"meta/episodes.jsonl line \d+ is not valid JSON",
    ),
    "info.json cut": (lambda r: _truncate(os.path.join(r, "meta", "info.json")), r"meta/info.json is not valid JSON"),
    "parquet cut": (lambda r: _truncate(_episode_path(r, 1)), r"episode_000001.parquet is not a readable parquet"),
    "parquet missing": (lambda r: os.remove(_episode_path(r, 1)), r"episode_000001.parquet is missing"),
    "unknown task_index": (
        lambda r: _rewrite_column(r, 1, "task_index", [5] * 3, pa.int64()),
        r"episode_000001.parquet: column 'task_index' holds \[5\].*valid: \[0\]",
    ),
    "action width": (
        lambda r: _set_action_shape(r, A - 1),
        rf"episode_000000.parquet: column 'action' holds {A} values per frame.*shape says {A - 1}",
    ),
    "empty episode": (_empty_last_episode, r"episode_000001.parquet holds no frames"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_datasets_are_refused_naming_the_file(tmp_path, damage):
    """Before: KeyError: 0 / KeyError: 5 / a JSONDecodeError or ArrowInvalid without a path / a reshape error, in the
    SFT worker after Ray had started; an empty held-out episode silently dropped sft/val_loss."""
    from rlinf_embodied.datasets.lerobot_format import check_dataset_files, load_info

    rng = np.random.default_rng(4)
    root = str(tmp_path / "ds")
    write(root, [("pick", make_episode(rng, 4), True, 0), ("pick", make_episode(rng, 3), True, 1)])
    check_dataset_files(root, load_info(root))
    damage_fn, message = DAMAGES[damage]
    damage_fn(root)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        check_dataset_files(root, load_info(root))
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        DemoDataset(root)


@pytest.mark.parametrize("column", ["action", "observation.state"])
def test_non_finite_demonstrations_are_refused_at_load(tmp_path, column):
    """Before: a NaN action trained until check_finite stopped the run on 'sft/loss' steps later."""
    rng = np.random.default_rng(5)
    root = str(tmp_path / "ds")
    write(root, [("pick", make_episode(rng, 4, cameras={}), True, 0)], cameras={})
    values = pq.read_table(_episode_path(root, 0)).column(column).to_pylist()
    values[2][1] = float("nan")
    _rewrite_column(root, 0, column, values, pa.list_(pa.float32()))
    with pytest.raises(ValueError, match=rf"episode_000000.parquet: column '{column}' holds non-finite .* \[2\]"):
        DemoDataset(root)


# ---- datasets of another LeRobot version or with video cameras: refused by name, not as damaged files ------------
def _edit_info(root, **changes):
    path = os.path.join(root, "meta", "info.json")
    info = json.load(open(path))
    for key, value in changes.items():
        if value is None:
            del info[key]
        else:
            info[key] = value
    json.dump(info, open(path, "w"))
    return info


def _as_v30(root):
    """Meta files as LeRobot v3.0 lays them out: episodes in meta/episodes/*.parquet, no episodes.jsonl."""
    rows = [json.loads(line) for line in open(os.path.join(root, "meta", "episodes.jsonl"))]
    os.makedirs(os.path.join(root, "meta", "episodes", "chunk-000"))
    pq.write_table(pa.Table.from_pylist(rows), os.path.join(root, "meta", "episodes", "chunk-000", "file-000.parquet"))
    os.remove(os.path.join(root, "meta", "episodes.jsonl"))
    _edit_info(root, codebase_version="v3.0", data_path="data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet")


def _as_video(root):
    """The rgb camera stored as mp4 video: a 'video' feature, no column in the parquet files."""
    info = json.load(open(os.path.join(root, "meta", "info.json")))
    info["features"]["observation.images.rgb"]["dtype"] = "video"
    _edit_info(root, features=info["features"], video_path="videos/{video_key}/episode_{episode_index:06d}.mp4")
    for index in (0, 1):
        pq.write_table(
            pq.read_table(_episode_path(root, index)).drop_columns(["observation.images.rgb"]),
            _episode_path(root, index),
        )


UNSUPPORTED = {
    "v3.0 layout": (_as_v30, r"meta/info.json has codebase_version='v3.0': this reader reads LeRobot v2.0 / v2.1"),
    "v3.0 whose files match": (  # before: loaded as if it were v2.1
        lambda r: _edit_info(r, codebase_version="v3.0"),
        r"codebase_version='v3.0'.*not v3.0 .*collect",
    ),
    "video camera": (_as_video, r"\['observation.images.rgb'\] have dtype 'video'.*image columns.*Decode the videos"),
}


@pytest.mark.parametrize("case", list(UNSUPPORTED))
def test_other_versions_and_video_cameras_are_refused_by_name(tmp_path, case):
    """Before: 'meta/episodes.jsonl is missing' / 'parquet has no column observation.images.rgb' (as if the dataset
    were damaged), or a v3.0 dataset loaded unchecked."""
    from rlinf_embodied.datasets.lerobot_format import check_dataset_files, load_info

    rng = np.random.default_rng(6)
    root = str(tmp_path / "ds")
    write(root, [("pick", make_episode(rng, 4), True, 0), ("pick", make_episode(rng, 3), True, 1)])
    make, message = UNSUPPORTED[case]
    make(root)
    with pytest.raises(ValueError, match=message):
        check_dataset_files(root, load_info(root))
    with pytest.raises(ValueError, match=message):
        DemoDataset(root)
    with pytest.raises(ValueError, match=message):  # nor does the writer append to it
        LeRobotDatasetWriter(root, fps=20, state_dim=D, action_dim=A, camera_shapes=CAMERAS)


def test_video_features_are_no_cameras_and_v20_still_loads(tmp_path):
    from rlinf_embodied.datasets import camera_shapes

    with pytest.raises(ValueError, match=r"'observation.images.top'\] have dtype 'video'"):  # before: {'top': [..]}
        camera_shapes({"observation.images.top": {"dtype": "video", "shape": [H, W, 3]}})
    rng = np.random.default_rng(7)
    root = str(tmp_path / "ds")
    write(root, [("pick", make_episode(rng, 4), True, 0)])
    _edit_info(root, codebase_version="v2.0")  # v2.0: stats in meta/stats.json, which the reader does not read
    os.remove(os.path.join(root, "meta", "episodes_stats.jsonl"))
    assert DemoDataset(root).num_frames == 4


# ---- internally inconsistent datasets: the files disagree with each other ----------------------------------------
def _edit_episode_row(root, index, **changes):
    path = os.path.join(root, "meta", "episodes.jsonl")
    rows = [json.loads(line) for line in open(path)]
    rows[index].update(changes)
    open(path, "w").write("".join(json.dumps(row) + "\n" for row in rows))


def _swap_episode_files(root, statistics=True):
    tables = [pq.read_table(_episode_path(root, index)) for index in (0, 1)]
    for index, table in zip((1, 0), tables):
        pq.write_table(table, _episode_path(root, index), write_statistics=statistics)


INCONSISTENCIES = {
    "episode length": (
        lambda r: _edit_episode_row(r, 1, length=1),
        r"episode_000001.parquet holds 3 frames, but meta/episodes.jsonl's row 1 says length=1: the dataset is "
        r"inconsistent \(re-collect it, or fix the meta files\)",
    ),
    "total_frames": (
        lambda r: _edit_info(r, total_frames=10),
        r"meta/info.json says total_frames=10, but its 2 episode files hold 7 frames.*inconsistent.*re-collect",
    ),
    "files swapped": (
        _swap_episode_files,
        r"episode_000000.parquet: its episode_index column holds 1, but its file name makes it episode 0: the "
        r"dataset is inconsistent.*seeds and successes",
    ),
    "files swapped, no column statistics": (  # the check reads the episode_index column instead
        lambda r: _swap_episode_files(r, statistics=False),
        r"episode_000000.parquet: its episode_index column holds 1, but its file name makes it episode 0",
    ),
    "episodes.jsonl rows out of order": (
        lambda r: _edit_episode_row(r, 1, episode_index=0),
        r"meta/episodes.jsonl: row 1 \(episode 1\) says episode_index=0: the dataset is inconsistent",
    ),
    "no features": (
        lambda r: _edit_info(r, features=None),
        r"meta/info.json lacks the key\(s\) \['features'\]",
    ),
    "no fps": (lambda r: _edit_info(r, fps=None), r"meta/info.json lacks the key\(s\) \['fps'\]"),
    "total_episodes not a count": (
        lambda r: _edit_info(r, total_episodes="2"),
        r"meta/info.json: total_episodes='2' is not a count",
    ),
}


@pytest.mark.parametrize("case", list(INCONSISTENCIES))
def test_inconsistent_datasets_are_refused_naming_file_field_and_values(tmp_path, case):
    """Before: each loaded silently (episode bounds from the parquet files whatever episodes.jsonl said; swapped
    files gave every episode another one's seed and success), or failed as a bare KeyError: 'features' / 'fps'."""
    from rlinf_embodied.datasets.lerobot_format import check_dataset_files, load_info

    rng = np.random.default_rng(8)
    root = str(tmp_path / "ds")
    write(root, [("pick", make_episode(rng, 4), True, 0), ("pick", make_episode(rng, 3), False, 1)])
    damage, message = INCONSISTENCIES[case]
    damage(root)
    with pytest.raises(ValueError, match=message):
        check_dataset_files(root, load_info(root))
    with pytest.raises(ValueError, match=message):
        DemoDataset(root)


def test_the_consistency_check_reads_no_column(tmp_path, monkeypatch):
    """check_dataset_files runs at SFT start on datasets of ~1,200 episodes with images: footers only (row counts,
    the episode_index column's statistics), never a column of the files our writer writes."""
    from rlinf_embodied.datasets.lerobot_format import check_dataset_files, load_info

    rng = np.random.default_rng(9)
    root = str(tmp_path / "ds")
    write(root, [("pick", make_episode(rng, 4), True, 0), ("pick", make_episode(rng, 3), False, 1)])

    def no_read(*args, **kwargs):
        raise AssertionError("check_dataset_files read a column")

    monkeypatch.setattr(pq, "read_table", no_read)
    check_dataset_files(root, load_info(root))


# ---- info.json keys that place the episode files, and the writer's fps / reward settings -------------------------
MALFORMED_INFO = {
    "chunks_size 0": ({"chunks_size": 0}, r"chunks_size=0 is not an integer >= 1"),  # before: ZeroDivisionError
    "chunks_size a string": ({"chunks_size": "1000"}, r"chunks_size='1000' is not an integer >= 1"),
    "chunks_size a bool": ({"chunks_size": True}, r"chunks_size=True is not an integer >= 1"),
    "unknown placeholder": (  # before: KeyError: 'foo'
        {"data_path": "x/{foo}.parquet"},
        r"data_path='x/\{foo\}.parquet' has the placeholder\(s\) \['foo'\]; .*\{episode_index\} and optionally "
        r"\{episode_chunk\} only",
    ),
    "positional placeholder": ({"data_path": "x/{}.parquet"}, r"has the placeholder\(s\) \[''\]"),
    "no episode_index": ({"data_path": "x/{episode_chunk}.parquet"}, r"has no \{episode_index\} placeholder"),
    "unmatched brace": ({"data_path": "x/{episode_index.parquet"}, r"data_path='x/\{episode_index.parquet' does not"),
    "format spec": ({"data_path": "x/{episode_index:s}.parquet"}, r"does not format \(ValueError"),
    "data_path not a string": ({"data_path": 5}, r"data_path=5 is not a string"),
    "fps a string": ({"fps": "20"}, r"fps='20' is not a positive number"),  # before: read as 20
    "fps 0": ({"fps": 0}, r"fps=0 is not a positive number"),
    "fps negative": ({"fps": -5}, r"fps=-5 is not a positive number"),
    "control_mode a number": ({"control_mode": 5}, r"control_mode=5 is not a string"),
    "reward_settings a list": ({"reward_settings": [1]}, r"reward_settings=\[1\] is not an object"),
}


@pytest.mark.parametrize("case", list(MALFORMED_INFO))
def test_malformed_layout_keys_of_info_json_are_named(tmp_path, case):
    """Before: chunks_size 0 was a ZeroDivisionError and data_path "x/{foo}.parquet" a KeyError: 'foo' (naming
    neither file nor key); fps "20", 0 or -5 and control_mode 5 were accepted."""
    from rlinf_embodied.datasets.lerobot_format import check_dataset_files, load_info

    root = str(tmp_path / "ds")
    write(root, [("pick", make_episode(np.random.default_rng(10), 3, {}), True, 0)], cameras={})
    changes, message = MALFORMED_INFO[case]
    _edit_info(root, **changes)
    message = r"meta/info.json: .*" + message + r".*the dataset is damaged"
    with pytest.raises(ValueError, match=message):
        check_dataset_files(root, load_info(root))
    with pytest.raises(ValueError, match=message):
        DemoDataset(root)
    with pytest.raises(ValueError, match=message):
        LeRobotDatasetWriter(root, fps=20, state_dim=D, action_dim=A, camera_shapes={})


def test_a_foreign_layout_is_read_and_appended_where_its_info_json_puts_the_files(tmp_path):
    """A dataset with another chunks_size / data_path (valid ones): read from there, and a resumed writer adds its
    episodes there too (before: at DATA_PATH, rewriting info.json's data_path, so the earlier files were lost)."""
    rng = np.random.default_rng(11)
    root = str(tmp_path / "ds")
    write(root, [("a", make_episode(rng, 2, {}), True, 0), ("a", make_episode(rng, 3, {}), True, 1)], cameras={})
    moved = "episodes/c{episode_chunk}/e{episode_index:03d}.parquet"
    for index in range(2):
        target = os.path.join(root, moved.format(episode_chunk=index, episode_index=index))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(os.path.join(root, "data", "chunk-000", f"episode_{index:06d}.parquet"), target)
    _edit_info(root, chunks_size=1, data_path=moved, fps=15.0)
    assert DemoDataset(root).seeds() == [0, 1] and DemoDataset(root).fps == 15
    writer = LeRobotDatasetWriter(root, fps=15, state_dim=D, action_dim=A, camera_shapes={})
    states, actions, _, rewards = make_episode(rng, 4, {})
    writer.add_episode("a", states, actions, {}, rewards, True, 2)
    assert os.path.isfile(os.path.join(root, "episodes", "c2", "e002.parquet"))
    info = json.load(open(os.path.join(root, "meta", "info.json")))
    assert (info["chunks_size"], info["data_path"], info["total_chunks"]) == (1, moved, 3)
    assert DemoDataset(root).seeds() == [0, 1, 2]


@pytest.mark.parametrize("fps", [7.5, 0, -20, True, float("nan"), float("inf"), "20", None])
def test_the_writer_refuses_an_fps_that_is_no_whole_positive_number(tmp_path, fps):
    """Before: 7.5 was written as 7 (int()), 0 failed at the first episode's timestamps (division by zero)."""
    with pytest.raises(ValueError, match=rf"fps={re.escape(repr(fps))} must be a whole number >= 1: the frames per"):
        LeRobotDatasetWriter(str(tmp_path / "ds"), fps=fps, state_dim=D, action_dim=A, camera_shapes={})
    assert not (tmp_path / "ds").exists()


def test_one_fps_check_for_the_writer_the_reader_and_the_env():
    """fps_value is the check check_writer_fps, check_info's fps and collect's env_fps share: a real, finite,
    non-bool number > 0; a whole one >= 1 (an int) for the writer and the env, within a tolerance for an env's
    1 / step_dt. Before, env_fps had its own: True was 1 fps and inf an OverflowError."""
    from rlinf_embodied.datasets.lerobot_format import fps_value

    for bad in (0, -5, True, False, float("nan"), float("inf"), "20", None, [20]):
        assert fps_value(bad) is None and fps_value(bad, whole=False) is None, bad
    assert fps_value(7.5) is None and fps_value(7.5, whole=False) == 7.5 and fps_value(0.5, whole=False) == 0.5
    assert fps_value(0.5) is None and fps_value(29.9999999) is None
    assert fps_value(29.9999999, rel_tol=1e-6) == 30 and type(fps_value(np.float64(20.0))) is int
    assert fps_value(np.int64(15)) == 15 and fps_value(20.0, whole=False) == 20.0


def test_resuming_with_other_reward_settings_is_refused(tmp_path):
    """Before: a resume with another env.kwargs.reward_mode / reward_delta appended episodes whose next.reward meant
    something else (dense values beside sparse ones), without a word; info.json did not record the settings."""
    rng = np.random.default_rng(12)
    root = str(tmp_path / "ds")
    dense = {"reward_mode": "normalized_dense", "reward_delta": False}
    write(root, [("a", make_episode(rng, 2, {}), True, 0)], cameras={}, reward_settings=dense)
    assert json.load(open(os.path.join(root, "meta", "info.json")))["reward_settings"] == dense
    assert DemoDataset(root).reward_settings == dense
    for other, message in (
        (
            {"reward_mode": "sparse", "reward_delta": False},
            r"computed with reward_mode='normalized_dense' but this writer was asked for reward_mode='sparse': the "
            r"column would mean different things in different episodes; use another root, or the dataset's reward "
            r"settings to append \(collect: env.kwargs.reward_mode=normalized_dense\)",
        ),
        (
            {"reward_mode": "normalized_dense", "reward_delta": True},
            r"reward_delta=False but this writer was asked for reward_delta=True.*env.kwargs.reward_delta=false\)",
        ),
    ):
        with pytest.raises(ValueError, match=message):
            LeRobotDatasetWriter(root, fps=20, state_dim=D, action_dim=A, camera_shapes={}, reward_settings=other)
    # the same settings, or none given (the dataset's), append
    for given in (dense, None):
        writer = LeRobotDatasetWriter(root, fps=20, state_dim=D, action_dim=A, camera_shapes={}, reward_settings=given)
        states, actions, _, rewards = make_episode(rng, 2, {})
        writer.add_episode("a", states, actions, {}, rewards, True, writer.num_episodes)
    assert DemoDataset(root).reward_settings == dense and DemoDataset(root).num_episodes == 3


def test_a_dataset_without_reward_settings_keeps_them_unknown(tmp_path):
    """A dataset that records none (written before they were recorded): appending is allowed, and the appended
    episodes' settings are not claimed for the earlier ones."""
    rng = np.random.default_rng(13)
    root = str(tmp_path / "ds")
    write(root, [("a", make_episode(rng, 2, {}), True, 0)], cameras={})
    _edit_info(root, reward_settings=None)  # as before the key existed
    writer = LeRobotDatasetWriter(
        root, fps=20, state_dim=D, action_dim=A, camera_shapes={}, reward_settings={"reward_mode": "sparse"}
    )
    states, actions, _, rewards = make_episode(rng, 2, {})
    writer.add_episode("a", states, actions, {}, rewards, True, 1)
    assert json.load(open(os.path.join(root, "meta", "info.json")))["reward_settings"] is None
