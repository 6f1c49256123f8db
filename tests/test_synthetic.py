import json
from collections import Counter

import numpy as np
import pytest
import torch

from freres_lmms.data.synthetic import QUESTION_TYPES, generate, render, sample_scene, stack_scenes
from freres_lmms.data.video import VideoLoadError, load_video, sample_indices


def test_generated_split_is_readable_and_balanced(tmp_path):
    jsonl = generate(tmp_path, per_type=8, frames=8, fps=4, size=112, seed=3)
    docs = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert Counter(d["qtype"] for d in docs) == {q: 8 for q in QUESTION_TYPES}
    assert {d["category"] for d in docs} == {"spatial", "temporal"}
    letters = Counter(d["answer"] for d in docs)
    assert set(letters) == set("ABCD") and max(letters.values()) <= 0.45 * len(docs)
    video = load_video(str(tmp_path / docs[0]["video"]), max_num_frames=8)
    assert tuple(video.frames.shape) == (8, 3, 112, 112) and video.frames.dtype == torch.uint8
    assert video.fps == pytest.approx(4.0) and video.indices == list(range(8))


def test_same_seed_same_split(tmp_path):
    a = generate(tmp_path / "a", per_type=2, frames=4, size=64, seed=7).read_text()
    b = generate(tmp_path / "b", per_type=2, frames=4, size=64, seed=7).read_text()
    assert a == b


def test_direction_videos_really_move():
    rng = np.random.default_rng(0)
    params, answers = [], []
    for _ in range(8):
        p, _, options, answer = sample_scene(rng, "direction", 8, 112)
        params.append(p)
        answers.append(options["ABCD".index(answer)])
    frames = render(stack_scenes(params), 8, 112).float()  # [N,T,H,W,3]
    for video, direction in zip(frames, answers):
        moving = (video[-1] - video[0]).abs().sum(-1) > 0  # pixels that changed
        first = (video[0] != video[0, 0, 0]).any(-1).float()
        assert moving.any()
        # the object's centroid moves the way the answer says
        last = (video[-1] != video[-1, 0, 0]).any(-1).float()
        grid = torch.arange(112.0)
        dx = (last.sum(0) @ grid / last.sum() - first.sum(0) @ grid / first.sum()).item()
        dy = (last.sum(1) @ grid / last.sum() - first.sum(1) @ grid / first.sum()).item()
        main = {"left": -dx, "right": dx, "up": -dy, "down": dy}
        assert max(main, key=main.get) == direction


def test_sample_indices():
    assert sample_indices(10, 2.0, 4) == [0, 3, 6, 9]
    assert sample_indices(3, 2.0, 8) == [0, 1, 2]
    assert sample_indices(100, 10.0, 64, fps=1) == np.linspace(0, 99, 10).round().astype(int).tolist()


def test_video_load_errors(tmp_path):
    with pytest.raises(VideoLoadError, match="not found"):
        load_video(str(tmp_path / "nope.mp4"))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(VideoLoadError, match="cannot decode video .*bad.mp4"):
        load_video(str(bad))
