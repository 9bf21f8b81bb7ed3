"""VideoRecorder: tiled mp4s of the first k envs' "rgb" observations of a vector env."""

from __future__ import annotations

import importlib.util
import logging
import math
import os
from typing import Any, Optional

import gymnasium as gym
import numpy as np
import torch

from ..batching import is_int

logger = logging.getLogger(__name__)


def tile_frames(frames: np.ndarray) -> np.ndarray:
    """(k, H, W, 3) uint8 -> one (rows*H, cols*W, 3) image, near-square grid, black padding."""
    count, height, width, channels = frames.shape
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    canvas = np.zeros((rows * height, cols * width, channels), np.uint8)
    for index in range(count):
        row, col = divmod(index, cols)
        canvas[row * height : (row + 1) * height, col * width : (col + 1) * width] = frames[index]
    return canvas


def pad_to_even(frame: np.ndarray) -> np.ndarray:
    """(H, W, C) -> (H + H % 2, W + W % 2, C): one black row at the bottom / column at the right where a side is
    odd, the pixels left as they are. H.264 in yuv420p (what the mp4s are written as, and what players read) needs
    even sides: before, an odd camera_size (LIBERO's 33, or a tile grid of such frames) made ffmpeg exit and the
    next frame's write fail with a BrokenPipeError, which ended the evaluation without its results.json."""
    height, width = frame.shape[:2]
    if height % 2 == 0 and width % 2 == 0:
        return frame
    return np.pad(frame, ((0, height % 2), (0, width % 2)) + ((0, 0),) * (frame.ndim - 2))


def require_mp4_writer() -> None:
    """Fail early and clearly where imageio cannot write mp4: without imageio-ffmpeg it falls back to
    another plugin (e.g. tifffile) and fails at the first frame with an unrelated TypeError."""
    if importlib.util.find_spec("imageio_ffmpeg") is None:
        raise ImportError(
            "VideoRecorder writes mp4 files through imageio's ffmpeg plugin, and the "
            "'imageio-ffmpeg' package is not installed; pip install imageio-ffmpeg"
        )


def check_fps(fps: Any) -> None:
    """A positive, finite int or float (before: "20" failed at the first frame with imageio's bare AssertionError,
    a negative fps with ffmpeg's errors and a BrokenPipeError, and 0 was accepted)."""
    is_number = isinstance(fps, (int, float, np.integer, np.floating)) and not isinstance(fps, bool)
    if not is_number or not 0 < fps < math.inf:
        raise ValueError(
            f"fps={fps!r} must be a positive int or float (the video's frames per second, "
            "e.g. 20); a string, bool, 0 or a negative number is refused"
        )


def _as_tensor(value: Any) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))


class VideoRecorder(gym.vector.VectorWrapper):
    """Writes one mp4 per `reset` (an episode batch) of the first `num_envs_to_record` envs, tiled.

    Frames are the `rgb` observations (the obs after each step; for a chunked step, the obs after
    the chunk); where a recorded env's episode ended at a step, first the frame it ended in
    (`info["final_obs"]`), then the next episode's first. The file being written is closed at the next `reset` or at `close`;
    `last_video_path` is the path of the latest file (written or being written), None where writing it failed.

    Frame sizes: a tiled frame with an odd height or width (e.g. an odd camera_size) gets one black row at the
    bottom / column at the right (pad_to_even): H.264 (libx264, yuv420p) encodes even sizes only. Nothing is resized.

    A failure of the mp4 writer (ffmpeg exiting, a full disk) never ends the episodes being recorded: it is logged
    as a warning naming the file, which is left incomplete; the rest of that episode batch is not recorded, and the
    next `reset` starts a new file. (Before, the writer's BrokenPipeError ended an evaluation partway, and its
    results.json was never written.)
    """

    def __init__(
        self,
        env: gym.vector.VectorEnv,
        video_dir: str,
        name_prefix: str = "rollout",
        num_envs_to_record: Optional[int] = None,
        fps: int = 20,
    ):
        super().__init__(env)
        rgb_space = getattr(env.single_observation_space, "spaces", {}).get("rgb")
        if rgb_space is None:
            raise ValueError(
                f"VideoRecorder needs 'rgb' observations; this env's observation keys are "
                f"{sorted(getattr(env.single_observation_space, 'spaces', {}))} -- make it with "
                f"obs_mode='rgb'"
            )
        if num_envs_to_record is None:
            num_envs_to_record = min(4, env.num_envs)
        if not is_int(num_envs_to_record) or not 1 <= num_envs_to_record <= env.num_envs:
            raise ValueError(
                f"num_envs_to_record={num_envs_to_record!r} must lie in [1, {env.num_envs}] (an int; the env's num_envs), "
                "or None: the first min(4, num_envs)"
            )
        check_fps(fps)
        require_mp4_writer()
        self.video_dir, self.name_prefix, self.fps = video_dir, name_prefix, fps
        self.num_envs_to_record = num_envs_to_record
        self.last_video_path: Optional[str] = None
        self._writer: Any = None
        self._failed = False  # the writer failed in this episode batch: no more frames until the next reset
        self._video_index = 0
        os.makedirs(video_dir, exist_ok=True)

    def _add_frame(self, obs: dict[str, Any]) -> None:
        if self._failed:
            return
        rgb = obs["rgb"][: self.num_envs_to_record]
        frames = rgb.cpu().numpy() if isinstance(rgb, torch.Tensor) else np.asarray(rgb)
        frame = pad_to_even(tile_frames(frames.astype(np.uint8)))
        try:
            if self._writer is None:
                self._open()
            self._writer.append_data(frame)
        except Exception as error:  # ffmpeg's exit, a full disk, ...: the episodes go on (see the class docstring)
            self._writer_failed(error)

    def _open(self) -> None:
        import imageio

        self.last_video_path = os.path.join(self.video_dir, f"{self.name_prefix}-{self._video_index}.mp4")
        self._video_index += 1
        # macro_block_size=1: imageio would otherwise resize frames whose sides are no multiple of 16 (with a
        # warning); it does not make odd sides encodable, which is why _add_frame pads frames to even sides
        self._writer = imageio.get_writer(self.last_video_path, fps=self.fps, codec="libx264", macro_block_size=1)

    def _finish(self) -> None:
        writer, self._writer = self._writer, None
        self._failed = False
        if writer is None:
            return
        try:
            writer.close()
            # ffmpeg can exit with an error at a short video's end without the writer raising: an empty file
            if self.last_video_path is not None and not os.path.getsize(self.last_video_path):
                raise OSError("ffmpeg wrote an empty file (its errors are above)")
        except Exception as error:
            self._writer_failed(error)
            self._failed = False

    def _writer_failed(self, error: Exception) -> None:
        """Log the failure, close what is left of the writer, and record nothing more until the next reset."""
        path, writer = self.last_video_path, self._writer
        self._writer, self._failed, self.last_video_path = None, True, None
        logger.warning(
            "VideoRecorder: writing the video %s failed (%s: %s); that file is incomplete and the rest of this "
            "episode batch is not recorded (the episodes themselves go on; the next reset starts a new file)",
            path,
            type(error).__name__,
            error,
        )
        if writer is not None:
            try:
                writer.close()
            except Exception:  # the writer is already broken; its failure was logged above
                pass

    def reset(self, *, seed: Any = None, options: Optional[dict] = None) -> tuple[dict, dict]:
        self._finish()
        obs, info = self.env.reset(seed=seed, options=options)
        self._add_frame(obs)
        return obs, info

    def step(self, actions: Any) -> tuple[Any, ...]:
        obs, rewards, terminations, truncations, info = self.env.step(actions)
        last_frames = self._last_frames(obs, info)
        if last_frames is not None:
            self._add_frame(last_frames)
        self._add_frame(obs)
        return obs, rewards, terminations, truncations, info

    def _last_frames(self, obs: dict[str, Any], info: dict[str, Any]) -> Optional[dict[str, Any]]:
        """The frame an episode ended in, where a recorded env ended at this step: with SAME_STEP auto-reset the
        step returns the next episode's first observation, and the one it ended in (the success or failure a video
        is watched for) is only in info["final_obs"]. Before, every video jumped from the frame before an episode's last
        one to the next episode's start. The other recorded envs show their current frame (held for one more frame)."""
        final_obs, mask = info.get("final_obs"), info.get("_final_obs")
        if not isinstance(final_obs, dict) or "rgb" not in final_obs or mask is None:
            return None
        count = self.num_envs_to_record
        ended = _as_tensor(mask[:count]).to(torch.bool)
        if not bool(ended.any()):
            return None
        current = _as_tensor(obs["rgb"][:count])
        final = _as_tensor(final_obs["rgb"][:count]).to(current.device)
        ended = ended.to(current.device).view(-1, *([1] * (current.ndim - 1)))
        return {"rgb": torch.where(ended, final, current)}

    def close(self, **kwargs: Any) -> None:
        self._finish()
        super().close(**kwargs)
