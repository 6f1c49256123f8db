"""Procedural videos of moving coloured shapes with multiple-choice questions.

Each sample is drawn for one question type. Spatial questions need one frame (how many objects,
the colour of the moving object, where an object sits); temporal questions need several (the
direction of motion, which object appears first, which object changes colour). The correct
option's letter is drawn uniformly, so answers are balanced.

Rendering is batched tensor code over videos, objects, frames and pixels (``render``); scene
sampling and question text are per sample. Videos are written as H.264 mp4 with PyAV and read
back with decord by :mod:`freres_lmms.data.video`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 200),
    "white": (240, 240, 240),
}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
QUADRANTS = ("top-left", "top-right", "bottom-left", "bottom-right")
QUESTION_TYPES = {
    "count": "spatial",
    "colour": "spatial",
    "position": "spatial",
    "direction": "temporal",
    "order": "temporal",
    "changed": "temporal",
}
LETTERS = "ABCD"
MAX_OBJECTS = 4
BACKGROUND = (30, 30, 36)


@dataclass
class Scene:
    """Per-object parameters of a batch of videos (tensors lead with [N, K])."""

    active: torch.Tensor  # bool [N, K]
    shape: torch.Tensor  # long [N, K] index into SHAPES
    colour_start: torch.Tensor  # long [N, K] index into COLOURS
    colour_end: torch.Tensor  # long [N, K]
    change_frame: torch.Tensor  # long [N, K]; colour_end from this frame on
    appear_frame: torch.Tensor  # long [N, K]; invisible before
    start: torch.Tensor  # float [N, K, 2] centre (x, y) in pixels at frame 0
    velocity: torch.Tensor  # float [N, K, 2] pixels per frame
    radius: torch.Tensor  # float [N, K]


def render(scene: Scene, frames: int, size: int) -> torch.Tensor:
    """Draw every video of ``scene``: uint8 [N, T, size, size, 3]. No loop over frames or videos."""
    device = scene.start.device
    t = torch.arange(frames, device=device, dtype=torch.float32)
    centre = scene.start[:, :, None, :] + scene.velocity[:, :, None, :] * t[None, None, :, None]  # [N,K,T,2]
    axis = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    dx = axis[None, None, None, None, :] - centre[..., 0, None, None]  # [N,K,T,1,W]
    dy = axis[None, None, None, :, None] - centre[..., 1, None, None]  # [N,K,T,H,1]
    r = scene.radius[:, :, None, None, None]
    circle = dx**2 + dy**2 <= r**2
    square = (dx.abs() <= r * 0.85) & (dy.abs() <= r * 0.85)
    triangle = (dy <= r * 0.8) & (dy >= -r) & (dx.abs() <= (dy + r) * 0.55)
    shape = scene.shape[:, :, None, None, None]
    mask = torch.where(shape == 0, circle, torch.where(shape == 1, square, triangle))
    visible = scene.active[:, :, None] & (t[None, None, :] >= scene.appear_frame[:, :, None])
    mask = mask & visible[..., None, None]  # [N,K,T,H,W]
    # Later objects are drawn on top: the layer index of the topmost object at each pixel.
    layer = torch.arange(1, scene.active.shape[1] + 1, device=device)[None, :, None, None, None]
    top = (mask * layer).amax(dim=1)  # [N,T,H,W], 0 = background
    palette = torch.tensor(list(COLOURS.values()), device=device, dtype=torch.uint8)
    colour_idx = torch.where(
        t[None, None, :] >= scene.change_frame[:, :, None], scene.colour_end[:, :, None], scene.colour_start[:, :, None]
    )  # [N,K,T]
    colours = torch.cat([torch.tensor(BACKGROUND, device=device, dtype=torch.uint8).expand(*colour_idx.shape[::2], 1, 3),
                         palette[colour_idx].permute(0, 2, 1, 3)], dim=2)  # [N,T,K+1,3]
    return _lookup(colours, top)


def _lookup(colours: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """colours [N,T,K+1,3] indexed by top [N,T,H,W] -> [N,T,H,W,3]."""
    n, t, h, w = top.shape
    flat = colours.reshape(n * t, -1, 3)
    idx = top.reshape(n * t, h * w)
    out = torch.gather(flat, 1, idx[..., None].expand(-1, -1, 3))
    return out.reshape(n, t, h, w, 3)


def _options(rng: np.random.Generator, correct: str, pool: list[str]) -> tuple[list[str], str]:
    """Four options with ``correct`` at a uniformly drawn letter; distractors from ``pool``."""
    distractors = [p for p in pool if p != correct]
    picked = list(rng.choice(distractors, size=3, replace=False))
    slot = int(rng.integers(4))
    options = picked[:slot] + [correct] + picked[slot:]
    return options, LETTERS[slot]


def _describe(colour: int, shape: int) -> str:
    return f"the {list(COLOURS)[colour]} {SHAPES[shape]}"


def sample_scene(rng: np.random.Generator, qtype: str, frames: int, size: int) -> tuple[dict, str, list[str], str]:
    """One scene's parameters (as arrays over K objects) and its question, options and answer."""
    k = MAX_OBJECTS
    margin = size * 0.18
    p = {
        "active": np.zeros(k, bool),
        "shape": rng.integers(0, len(SHAPES), k),
        "colour_start": rng.permutation(len(COLOURS))[:k],
        "change_frame": np.full(k, frames + 1),
        "appear_frame": np.zeros(k, int),
        "start": rng.uniform(margin, size - margin, (k, 2)),
        "velocity": np.zeros((k, 2)),
        "radius": rng.uniform(size * 0.07, size * 0.1, k),
    }
    p["colour_end"] = p["colour_start"].copy()
    # Static objects sit in distinct quadrants so they never overlap.
    quad = rng.permutation(4)
    half = size / 2
    p["start"] = np.stack([(quad % 2) * half, (quad // 2) * half], 1) + rng.uniform(size * 0.14, half - size * 0.14, (k, 2))
    colour_names = list(COLOURS)
    if qtype == "count":
        n = int(rng.integers(1, 5))
        p["active"][:n] = True
        options, answer = [str(i) for i in range(1, 5)], LETTERS[n - 1]
        return p, "How many objects are in the video?", options, answer
    if qtype == "position":
        n = int(rng.integers(1, 5))
        p["active"][:n] = True
        target = int(rng.integers(n))
        correct = QUADRANTS[int(quad[target])]
        options, answer = list(QUADRANTS), LETTERS[QUADRANTS.index(correct)]
        return p, f"Where is {_describe(p['colour_start'][target], p['shape'][target])}?", options, answer
    if qtype in ("colour", "direction"):
        n = int(rng.integers(1, 4))
        p["active"][:n] = True
        mover = 0
        name = str(rng.choice(list(DIRECTIONS)))
        step = np.array(DIRECTIONS[name], float) * size * 0.45 / max(frames - 1, 1)
        p["velocity"][mover] = step
        # Start the mover where its whole path stays inside the frame.
        travel = step * (frames - 1)
        low = np.maximum(margin, margin - travel)
        high = np.minimum(size - margin, size - margin - travel)
        p["start"][mover] = rng.uniform(low, high)
        if qtype == "colour":
            correct = colour_names[p["colour_start"][mover]]
            options, answer = _options(rng, correct, colour_names)
            return p, "What colour is the moving object?", options, answer
        options, answer = list(DIRECTIONS), LETTERS[list(DIRECTIONS).index(name)]
        return p, f"In which direction does {_describe(p['colour_start'][mover], p['shape'][mover])} move?", options, answer
    if qtype == "order":
        p["active"][:3] = True
        p["shape"][:3] = rng.permutation(3)
        slots = rng.permutation(4)[:3]
        p["appear_frame"][:3] = slots * frames // 4
        first = int(np.argmin(p["appear_frame"][:3]))
        names = [_describe(p["colour_start"][i], p["shape"][i]) for i in range(3)]
        absent = _describe(p["colour_start"][3], int(rng.integers(3)))
        options, answer = _options(rng, names[first], names + [absent])
        return p, "Which object appears first?", options, answer
    if qtype == "changed":
        p["active"][:3] = True
        p["shape"][:3] = rng.permutation(3)
        target = int(rng.integers(3))
        p["colour_end"][target] = p["colour_start"][3]  # a colour no other object has
        p["change_frame"][target] = int(rng.integers(frames // 4, 3 * frames // 4 + 1))
        options = [f"the {s}" for s in SHAPES] + ["none of them"]
        return p, "Which object changes colour?", options, LETTERS[int(p["shape"][target])]
    raise ValueError(f"unknown question type {qtype!r}; known: {', '.join(QUESTION_TYPES)}")


def stack_scenes(params: list[dict], device: str = "cpu") -> Scene:
    def col(key, dtype):
        return torch.as_tensor(np.stack([p[key] for p in params]), dtype=dtype, device=device)

    return Scene(
        active=col("active", torch.bool), shape=col("shape", torch.long), colour_start=col("colour_start", torch.long),
        colour_end=col("colour_end", torch.long), change_frame=col("change_frame", torch.long),
        appear_frame=col("appear_frame", torch.long), start=col("start", torch.float32),
        velocity=col("velocity", torch.float32), radius=col("radius", torch.float32),
    )


def write_mp4(path: Path, frames: np.ndarray, fps: int) -> None:
    """Encode uint8 [T, H, W, 3] frames as near-lossless H.264."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "12", "preset": "veryfast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def generate(out_dir: str | Path, per_type: int = 10, frames: int = 16, size: int = 224, fps: int = 8,
             seed: int = 0, split: str = "test", batch: int = 16) -> Path:
    """Write ``per_type`` samples of each question type: ``OUT/videos/*.mp4`` and ``OUT/<split>.jsonl``."""
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    docs, params = [], []
    for qtype in QUESTION_TYPES:
        for i in range(per_type):
            p, question, options, answer = sample_scene(rng, qtype, frames, size)
            params.append(p)
            docs.append({
                "id": f"{split}-{qtype}-{i:04d}", "video": f"videos/{split}-{qtype}-{i:04d}.mp4",
                "question": question, "options": options, "answer": answer,
                "qtype": qtype, "category": QUESTION_TYPES[qtype],
            })
    for lo in range(0, len(docs), batch):
        videos = render(stack_scenes(params[lo:lo + batch]), frames, size).numpy()
        for doc, video in zip(docs[lo:lo + batch], videos):
            write_mp4(out / doc["video"], video, fps)
    with open(out / f"{split}.jsonl", "w") as f:
        for doc in docs:
            f.write(json.dumps(doc) + "\n")
    return out / f"{split}.jsonl"


DEFAULT_TASK_DATA = Path(__file__).resolve().parents[2] / "task_configs" / "freres_synthetic" / "data"


def ensure_synthetic(out_dir: str | Path = DEFAULT_TASK_DATA, **kwargs) -> Path:
    """The synthetic test split, generated if missing."""
    path = Path(out_dir) / "test.jsonl"
    return path if path.exists() else generate(out_dir, **kwargs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_TASK_DATA), help="where the task YAML looks by default")
    parser.add_argument("--per-type", type=int, default=10)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="test")
    args = parser.parse_args(argv)
    print(generate(args.out, args.per_type, args.frames, args.size, args.fps, args.seed, args.split))


if __name__ == "__main__":
    main()
