"""Video decoding with decord: uniformly sampled frames plus the metadata Qwen processors need."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch


class VideoLoadError(ValueError):
    """A video cannot be used: missing, unreadable, or without frames."""


@dataclass
class LoadedVideo:
    frames: torch.Tensor  # uint8 [T, 3, H, W]
    fps: float  # the file's frame rate
    indices: list[int]  # which frames of the file were sampled
    total_frames: int

    def metadata(self) -> dict:
        """What Qwen processors need for timestamps (Qwen3-VL) and temporal ids (Qwen2.5-VL)."""
        return {"fps": self.fps, "frames_indices": self.indices, "total_num_frames": self.total_frames}

    def per_frame(self) -> "LoadedVideo":
        """Each frame twice in a row, so Qwen's temporal patch of 2 encodes one frame per latent slice.

        ``frame_encoding=per_frame``: one latent frame per sampled frame, the Fre-Res paper's
        accounting (twice the encoder cost of the native ``paired`` mode). The copies count as a
        video at twice the rate (indices ``2i, 2i + 1``), so Qwen2.5-VL's seconds per slice are one
        frame interval and Qwen3-VL's timestamps stay within a quarter interval of the frame's.
        """
        doubled = [j for i in self.indices for j in (2 * i, 2 * i + 1)]
        return LoadedVideo(self.frames.repeat_interleave(2, dim=0), 2 * self.fps, doubled, 2 * self.total_frames)


def sample_indices(total: int, video_fps: float, max_num_frames: int, fps: float | None = None) -> list[int]:
    """Evenly spaced frame indices: ``max_num_frames`` over the clip, or fewer at rate ``fps``."""
    count = min(total, max_num_frames)
    if fps is not None and video_fps > 0:
        count = max(1, min(count, int(total / video_fps * fps)))
    return np.linspace(0, total - 1, count).round().astype(int).tolist()


def load_video(path: str, max_num_frames: int = 16, fps: float | None = None,
               size: tuple[int, int] | None = None) -> LoadedVideo:
    """Decode ``max_num_frames`` evenly spaced frames of ``path`` (fewer if ``fps`` says so), at
    ``size`` (height, width) when given (the decoder scales them), else at the file's size."""
    if not os.path.isfile(path):
        raise VideoLoadError(f"video file not found: {path}")
    import decord

    decord.logging.set_level(decord.logging.QUIET)  # its C++ and FFmpeg lines; the error below names the file
    try:
        scale = {} if size is None else {"height": size[0], "width": size[1]}
        reader = decord.VideoReader(path, num_threads=1, **scale)
        total = len(reader)
    except Exception:  # decord raises its own DECORDError and RuntimeError, with C++ text
        raise VideoLoadError(f"cannot decode video {path}: not a readable video file (truncated, corrupt or "
                             f"not a video; {os.path.getsize(path)} bytes)") from None
    if total == 0:
        raise VideoLoadError(f"video has no frames: {path}")
    video_fps = float(reader.get_avg_fps() or 0.0)
    indices = sample_indices(total, video_fps, max_num_frames, fps)
    try:
        frames = reader.get_batch(indices).asnumpy()
    except Exception:
        raise VideoLoadError(f"cannot decode frames {indices[:4]}... of {path}: the file ends or breaks before them "
                             f"(truncated or corrupt; {total} frames in its header)") from None
    return LoadedVideo(torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous(), video_fps or 1.0, indices, total)
