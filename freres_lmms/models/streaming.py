"""Streamed model inputs: a long video's frames preprocessed one chunk at a time.

The processor's one call turns every frame into fp32 pixel values at once (1800 slices of 768x768:
23.7 GiB). Here the prompt is built from the video's shape and metadata alone, with the
processor's own placeholder text (``replace_video_token``: Qwen3-VL's timestamps included), and the
pixel values come lazily, ``chunk_frames`` frames at a time, from uint8 frames: the adapter's
``compress_inputs`` runs the vision tower on each chunk as it comes and feeds the method's stream,
so no more than one chunk of pixel values exists at a time.

Frames are taken at the size they come in (``do_resize=False``): the processor's resize rule
depends on the whole video's frame count, so a chunk cannot apply it. Decode at the size the model
should see (a multiple of ``patch_size * merge_size`` on both sides); the result then equals the
processor's one call exactly (tested).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from transformers.video_utils import VideoMetadata


@dataclass
class FrameSource:
    """One video's sampled frames, read in chunks: ``read(start, stop)`` gives uint8 ``[n, 3, H, W]``.

    ``indices`` are the sampled frames' indices in the file (Qwen3-VL's timestamps, Qwen2.5-VL's
    temporal ids), ``fps`` and ``total_frames`` the file's rate and length.
    """

    num_frames: int
    height: int
    width: int
    fps: float
    indices: list[int]
    total_frames: int
    read: Callable[[int, int], torch.Tensor]

    @classmethod
    def from_frames(cls, frames: torch.Tensor, fps: float, indices: list[int] | None = None,
                    total_frames: int | None = None) -> FrameSource:
        """Frames already decoded (uint8 ``[N, 3, H, W]``; a tensor of a few GB, not their pixel values)."""
        n = int(frames.shape[0])
        indices = list(range(n)) if indices is None else list(indices)
        return cls(n, int(frames.shape[-2]), int(frames.shape[-1]), float(fps), indices,
                   n if total_frames is None else int(total_frames), lambda lo, hi: frames[lo:hi])

    @classmethod
    def from_file(cls, path: str, max_frames: int | None = None, fps: float | None = None) -> FrameSource:
        """A video file read with decord, one chunk of frames per ``read`` (nothing decoded up front)."""
        import decord

        from ..data.video import VideoLoadError, sample_indices

        try:
            reader = decord.VideoReader(path, num_threads=0)
        except Exception:
            raise VideoLoadError(f"cannot decode video {path}: not a readable video file") from None
        total, rate = len(reader), float(reader.get_avg_fps() or 1.0)
        indices = sample_indices(total, rate, max_frames or total, fps)
        height, width = reader[0].shape[:2]

        def read(lo: int, hi: int) -> torch.Tensor:
            return torch.from_numpy(reader.get_batch(indices[lo:hi]).asnumpy()).permute(0, 3, 1, 2).contiguous()

        return cls(len(indices), int(height), int(width), rate, indices, total, read)

    def per_frame(self) -> FrameSource:
        """Each frame twice in a row (``LoadedVideo.per_frame``: one latent slice per frame), read lazily."""
        source = self

        def read(lo: int, hi: int) -> torch.Tensor:
            return source.read(lo // 2, (hi + 1) // 2).repeat_interleave(2, dim=0)[lo % 2: lo % 2 + hi - lo]

        doubled = [j for i in self.indices for j in (2 * i, 2 * i + 1)]
        return FrameSource(2 * self.num_frames, self.height, self.width, 2 * self.fps, doubled, 2 * self.total_frames, read)

    def metadata(self, lo: int = 0, hi: int | None = None) -> VideoMetadata:
        hi = self.num_frames if hi is None else hi
        return VideoMetadata(total_num_frames=self.total_frames, fps=self.fps, frames_indices=self.indices[lo:hi],
                             height=self.height, width=self.width)


@dataclass
class StreamTimer:
    """Seconds spent reading frames (decode) and preprocessing them, summed over chunks."""

    decode: float = 0.0
    preprocess: float = 0.0


def streamed_inputs(processor, texts: list[str], sources: list[FrameSource], chunk_frames: int = 64,
                    device: torch.device | str = "cpu", timer: StreamTimer | None = None) -> dict:
    """``compress_inputs`` kwargs for one prompt per video, each with one ``<|video_pad|>``: the
    prompt's ids, mask and token types as the processor writes them, ``video_grid_thw`` (and
    Qwen2.5-VL's ``second_per_grid_ts``), and ``video_chunks``: per video, a lazy sequence of
    ``(pixel values, grid [1, 3])`` chunks of ``chunk_frames`` frames, preprocessed when read."""
    if len(texts) != len(sources):
        raise ValueError(f"{len(texts)} prompts for {len(sources)} videos: give one prompt per video")
    vp = processor.video_processor
    temporal, factor = vp.temporal_patch_size, vp.patch_size * vp.merge_size
    if chunk_frames < temporal or chunk_frames % temporal:
        raise ValueError(f"chunk_frames must be a positive multiple of the temporal patch ({temporal}), got {chunk_frames}")
    grids = []
    for i, source in enumerate(sources):
        if source.num_frames < 1:
            raise ValueError(f"video {i} has no frames")
        if source.height % factor or source.width % factor:
            raise ValueError(f"video {i}: frames of {source.height}x{source.width} are not multiples of "
                             f"{factor} (patch {vp.patch_size} x merge {vp.merge_size}); decode at the model's input size")
        grids.append([-(-source.num_frames // temporal), source.height // vp.patch_size, source.width // vp.patch_size])
    grid = torch.tensor(grids, dtype=torch.long)
    described = {"video_grid_thw": grid, "video_metadata": [s.metadata() for s in sources]}
    replacements = [processor.replace_video_token(described, video_idx=i) for i in range(len(sources))]
    texts, _ = processor.get_text_with_replacements(list(texts), [], replacements, [])
    tokens = processor.tokenizer(texts, padding=True, return_tensors="pt")
    out = {"input_ids": tokens["input_ids"].to(device), "attention_mask": tokens["attention_mask"].to(device),
           "mm_token_type_ids": torch.tensor(processor.create_mm_token_type_ids(tokens["input_ids"].tolist())).to(device),
           "video_grid_thw": grid.to(device),
           "video_chunks": [VideoChunks(vp, s, chunk_frames, device, timer) for s in sources]}
    if "second_per_grid_ts" in getattr(processor, "model_input_names", []):  # Qwen2.5-VL: seconds per slice
        out["second_per_grid_ts"] = torch.tensor([temporal / s.metadata().sampled_fps for s in sources]).to(device)
    return out


class VideoChunks:
    """The chunks of one video: iterating reads, preprocesses and yields them one at a time."""

    def __init__(self, video_processor, source: FrameSource, chunk_frames: int, device, timer: StreamTimer | None):
        self.video_processor, self.source, self.chunk_frames = video_processor, source, chunk_frames
        self.device, self.timer = torch.device(device), timer or StreamTimer()

    def _prepare(self, lo: int) -> tuple[torch.Tensor, torch.Tensor]:
        hi = min(lo + self.chunk_frames, self.source.num_frames)
        started = time.perf_counter()
        frames = self.source.read(lo, hi)
        read = time.perf_counter()
        batch = self.video_processor(videos=[frames], video_metadata=[self.source.metadata(lo, hi)], do_resize=False,
                                     do_sample_frames=False, return_tensors="pt")
        self.timer.decode += read - started
        self.timer.preprocess += time.perf_counter() - read
        return batch["pixel_values_videos"], batch["video_grid_thw"]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The next chunk is read and preprocessed on a worker thread while the caller uses this one
        (the CPU work overlaps the vision tower); at most two chunks of pixel values exist."""
        starts = list(range(0, self.source.num_frames, self.chunk_frames))
        with ThreadPoolExecutor(max_workers=1) as worker:
            pending = worker.submit(self._prepare, starts[0])
            for index in range(len(starts)):
                pixels, grid = pending.result()
                if index + 1 < len(starts):
                    pending = worker.submit(self._prepare, starts[index + 1])
                yield pixels.to(self.device, non_blocking=True), grid.to(self.device)
                del pixels
