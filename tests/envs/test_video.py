"""VideoRecorder on the toy env's rgb frames (no renderer needed)."""

import os
import re

import gymnasium as gym
import imageio
import numpy as np
import pytest
import torch

from rlinf_embodied.envs.testing import ToyReachFactory
from rlinf_embodied.envs.vector import SubprocVectorEnv
from rlinf_embodied.envs.wrappers.video import VideoRecorder, pad_to_even, tile_frames


def test_tile_frames_grid():
    frames = torch.arange(3, dtype=torch.uint8).view(3, 1, 1, 1).expand(3, 2, 2, 3).numpy()
    tiled = tile_frames(frames)
    assert tiled.shape == (4, 4, 3) and tiled[0, 2, 0] == 1 and tiled[2, 0, 0] == 2 and tiled[2, 2, 0] == 0


def test_video_recorder_writes_one_mp4_per_reset(tmp_path):
    env = SubprocVectorEnv([ToyReachFactory(image_size=16) for _ in range(3)], num_workers=1, max_episode_steps=5)
    env = VideoRecorder(env, str(tmp_path), name_prefix="toy", num_envs_to_record=2, fps=10)
    env.reset(seed=0)
    for _ in range(5):
        env.step(torch.ones(3, 2))
    first = env.last_video_path
    env.reset(seed=1)
    env.step(torch.ones(3, 2))
    env.close()
    assert first != env.last_video_path and os.path.getsize(first) > 0
    frames = imageio.mimread(first)
    # the reset frame, 5 steps, and the frame the episodes ended in before the 5th step's reset frame
    assert len(frames) == 7 and frames[0].shape == (16, 32, 3)


def test_video_recorder_needs_rgb(tmp_path):
    env = SubprocVectorEnv([ToyReachFactory()], num_workers=1)
    with pytest.raises(ValueError, match="needs 'rgb'"):
        VideoRecorder(env, str(tmp_path))
    env.close()


def test_video_recorder_without_ffmpeg_names_the_package(tmp_path, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "imageio_ffmpeg" else real_find_spec(name, *args),
    )
    env = SubprocVectorEnv([ToyReachFactory(image_size=8)], num_workers=1)
    with pytest.raises(ImportError, match="pip install imageio-ffmpeg"):
        VideoRecorder(env, str(tmp_path))
    env.close()


def test_video_recorder_refuses_more_envs_than_it_has(tmp_path):
    env = SubprocVectorEnv([ToyReachFactory(image_size=8) for _ in range(2)], num_workers=1)
    with pytest.raises(ValueError, match=r"num_envs_to_record=3 must lie in \[1, 2\]"):  # before: 2, silently
        VideoRecorder(env, str(tmp_path), num_envs_to_record=3)
    assert VideoRecorder(env, str(tmp_path)).num_envs_to_record == 2  # unset: min(4, num_envs)
    env.close()


def test_video_shows_the_frame_each_episode_ended_in_before_the_next_ones_first(tmp_path):
    """Before: with SAME_STEP auto-reset the step that ends an episode returns the next episode's first frame, and
    the video showed that one, never the frame the episode ended in (info["final_obs"]): the success a user looks
    for was missing from every eval video."""
    env = SubprocVectorEnv([ToyReachFactory(image_size=16)], num_workers=1, max_episode_steps=3)
    env = VideoRecorder(env, str(tmp_path), name_prefix="toy", fps=10)
    env.reset(seed=0)
    for _ in range(3):
        obs, _, _, truncated, info = env.step(torch.ones(1, 2))
    assert bool(truncated[0])
    final = info["final_obs"]["rgb"][0, 0, 0].numpy().astype(int)
    next_first = obs["rgb"][0, 0, 0].numpy().astype(int)
    assert abs(final - next_first).max() > 20  # the two frames differ enough to tell apart after mp4 compression
    env.close()
    frames = imageio.mimread(env.last_video_path)
    assert len(frames) == 5  # reset, 3 steps, the final frame of the ended episode
    shown = [frame[8, 8].astype(int) for frame in frames[-2:]]
    assert abs(shown[0] - final).max() <= 8 and abs(shown[1] - next_first).max() <= 8


class RgbVectorEnv(gym.vector.VectorEnv):
    """Only the spaces VideoRecorder's constructor reads (no subprocesses)."""

    def __init__(self, num_envs=2):
        self.num_envs = num_envs
        self.single_observation_space = gym.spaces.Dict({"rgb": gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)})


@pytest.mark.parametrize("fps", ["20", 0, -5, True, float("nan"), float("inf"), None])
def test_video_recorder_refuses_an_fps_that_is_no_positive_number(tmp_path, fps):
    """Before: "20" failed at the first frame with imageio's bare AssertionError, a negative fps with ffmpeg's
    errors and a BrokenPipeError, and 0 was accepted."""
    with pytest.raises(ValueError, match=rf"^fps={re.escape(repr(fps))} must be a positive int or float"):
        VideoRecorder(RgbVectorEnv(), str(tmp_path), fps=fps)
    assert VideoRecorder(RgbVectorEnv(), str(tmp_path), fps=12.5).fps == 12.5


def test_video_recorder_refuses_a_bool_number_of_envs_to_record(tmp_path):
    """Before: True was read as 1."""
    with pytest.raises(ValueError, match=r"num_envs_to_record=True must lie in \[1, 2\] \(an int"):
        VideoRecorder(RgbVectorEnv(), str(tmp_path), num_envs_to_record=True)


def test_pad_to_even_adds_one_black_row_or_column_where_a_side_is_odd():
    frame = np.full((9, 11, 3), 200, np.uint8)
    padded = pad_to_even(frame)
    assert padded.shape == (10, 12, 3) and np.array_equal(padded[:9, :11], frame)
    assert not padded[9].any() and not padded[:, 11].any()
    even = np.zeros((8, 6, 3), np.uint8)
    assert pad_to_even(even) is even


def test_odd_camera_size_is_padded_to_even_and_written(tmp_path):
    """Before: macro_block_size=1 passed the odd size to libx264 (yuv420p: even sides only), ffmpeg exited, and the
    writes failed with a BrokenPipeError (an evaluation with an odd LIBERO camera_size died without results.json)."""
    env = SubprocVectorEnv([ToyReachFactory(image_size=9)], num_workers=1, max_episode_steps=5)
    env = VideoRecorder(env, str(tmp_path), name_prefix="odd", fps=10)
    obs, _ = env.reset(seed=0)
    env.step(torch.ones(1, 2))
    env.close()
    frames = imageio.mimread(env.last_video_path)
    assert len(frames) == 2 and frames[0].shape == (10, 10, 3)
    assert abs(frames[0][4, 4].astype(int) - obs["rgb"][0, 4, 4].numpy().astype(int)).max() <= 8


class FailingWriter:
    def __init__(self):
        self.closed = False

    def append_data(self, frame):
        raise BrokenPipeError(32, "Broken pipe")

    def close(self):
        self.closed = True


def test_a_writer_failure_is_logged_and_the_episodes_go_on(tmp_path, monkeypatch, caplog):
    """Before: the writer's BrokenPipeError came out of env.step and ended the evaluation, losing its results.json."""
    writers = []
    monkeypatch.setattr(imageio, "get_writer", lambda *args, **kwargs: writers.append(FailingWriter()) or writers[-1])
    env = SubprocVectorEnv([ToyReachFactory(image_size=8)], num_workers=1, max_episode_steps=5)
    env = VideoRecorder(env, str(tmp_path), name_prefix="toy", fps=10)
    with caplog.at_level("WARNING", logger="rlinf_embodied.envs.wrappers.video"):
        env.reset(seed=0)
        for _ in range(3):
            env.step(torch.ones(1, 2))
    assert len(writers) == 1 and writers[0].closed and env.last_video_path is None  # no path to a broken file
    assert re.search(r"writing the video .*toy-0\.mp4 failed \(BrokenPipeError: .*Broken pipe\)", caplog.text)
    assert caplog.text.count("VideoRecorder") == 1  # one warning, no more frames to that file
    env.reset(seed=1)  # a new file for the next episode batch
    env.close()
    assert len(writers) == 2
