import json
from collections import Counter

import numpy as np
import pytest
import torch

from freres_lmms.data.synthetic import (
    COLOURS, DIRECTIONS, LETTERS, QTYPES, QUADRANTS, QUESTION_TYPES, PhraseTable, Scene, VALID_QUESTIONS, ensure_synthetic, extra_questions, generate,
    prompt_text, render, sample,
)
from freres_lmms.data.tokenizer import train_tokenizer
from freres_lmms.data.video import VideoLoadError, load_video, sample_indices


def _centroid(mask):
    """(x, y) centroid of a bool [H, W] mask."""
    ys, xs = mask.nonzero(as_tuple=True)
    return xs.float().mean().item(), ys.float().mean().item()


def test_generated_split_is_readable_and_balanced(tmp_path):
    jsonl = generate(tmp_path, count=28, frames=8, fps=4, size=112, split="validation")
    docs = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [d["qtype"] for d in docs[:7]] == list(QTYPES)  # interleaved: any prefix is balanced
    assert Counter(d["qtype"] for d in docs) == {q: 4 for q in QUESTION_TYPES}
    assert {d["category"] for d in docs} == {"spatial", "temporal", "mixed"}
    video = load_video(str(tmp_path / docs[0]["video"]), max_num_frames=8)
    assert tuple(video.frames.shape) == (8, 3, 112, 112) and video.frames.dtype == torch.uint8
    assert video.fps == pytest.approx(4.0) and video.indices == list(range(8))
    assert json.loads((tmp_path / "validation.meta.json").read_text())["count"] == 28


def test_answers_uniform_within_every_type():
    _, questions = sample(7 * 400, frames=8, size=112, seed=5)
    for index, name in enumerate(QTYPES):
        letters = torch.bincount(questions.answer[questions.qtype == index], minlength=4)
        assert letters.min() >= 70, (name, letters.tolist())  # 100 expected per letter


def test_every_type_has_one_fixed_option_list():
    """The letter is a function of the video: options never change order or content within a type."""
    scene, questions = sample(7 * 50, frames=8, size=112, seed=6)
    assert all(len(set(row)) == 4 for row in scene.colour_start.tolist())  # the colour swap keeps them distinct
    for index, name in enumerate(QTYPES):
        options = questions.options[questions.qtype == index]
        assert (options == options[0]).all(), name
    docs = questions.docs("x")
    assert docs[1]["options"] == docs[4]["options"] == list(COLOURS)[:4]  # colour and order questions
    assert docs[5]["options"] == list(COLOURS)[:3] + ["none"]  # changed


def test_splits_are_deterministic_and_distinct(tmp_path):
    a = generate(tmp_path / "a", count=7, frames=4, size=56).read_text()
    b = generate(tmp_path / "b", count=7, frames=4, size=56).read_text()
    c = generate(tmp_path / "c", count=7, frames=4, size=56, split="train").read_text()
    assert a == b and a != c


def test_ensure_regenerates_when_asked_for_other_data(tmp_path):
    ensure_synthetic(tmp_path, count=7, frames=4, size=56)
    first = (tmp_path / "test.jsonl").stat().st_mtime_ns
    ensure_synthetic(tmp_path, count=7, frames=4, size=56)
    assert (tmp_path / "test.jsonl").stat().st_mtime_ns == first
    ensure_synthetic(tmp_path, count=14, frames=4, size=56)
    assert len((tmp_path / "test.jsonl").read_text().splitlines()) == 14


def test_tokens_assembled_on_tensors_equal_the_tokenizer():
    tokenizer = train_tokenizer()
    table = PhraseTable(tokenizer)
    _, questions = sample(700, seed=9)
    ids, lengths = table.assemble(questions.segments(), tokenizer.pad_token_id)
    for i, doc in enumerate(questions.docs("test")):
        reference = tokenizer(prompt_text(doc["question"], doc["options"]), add_special_tokens=False)["input_ids"]
        assert ids[i, :lengths[i]].tolist() == reference, doc
        assert (ids[i, lengths[i]:] == tokenizer.pad_token_id).all()


def test_videos_show_what_the_answers_say():
    frames, size = 8, 112
    scene, questions = sample(7 * 6, frames, size, seed=2)
    video = render(scene, frames, size)  # [N,T,H,W,3]
    background = video[0, 0, 0, 0]
    docs = questions.docs("x")
    for i, doc in enumerate(docs):
        answer = doc["options"][LETTERS.index(doc["answer"])]
        objects = (video[i] != background).any(-1)  # [T,H,W]
        mover = scene.map(lambda v: v[i])
        if doc["qtype"] == "count":
            assert int(answer) == int(mover.active.sum())
        if doc["qtype"] in ("direction", "colour", "destination"):
            alone = render(Scene(**{**vars(scene.map(lambda v: v[i:i + 1])),
                                    "active": torch.tensor([[True, False, False, False]])}), frames, size)[0]
            path = (alone != background).any(-1)
            (x0, y0), (x1, y1) = _centroid(path[0]), _centroid(path[-1])
            moves = {"left": x0 - x1, "right": x1 - x0, "up": y0 - y1, "down": y1 - y0}
            if doc["qtype"] == "direction":
                assert max(moves, key=moves.get) == answer
            if doc["qtype"] == "destination":
                assert QUADRANTS[2 * int(y1 >= size / 2) + int(x1 >= size / 2)] == answer
                assert QUADRANTS[2 * int(y0 >= size / 2) + int(x0 >= size / 2)] != answer
        if doc["qtype"] == "order":  # the first frame with an object shows the answer's colour
            first = int(objects.flatten(1).any(1).nonzero()[0])
            seen = video[i, first][objects[first]].unique(dim=0).tolist()
            assert seen == [list(COLOURS[answer])]
        if doc["qtype"] == "changed":  # the answer's colour shows at the end and not at the start
            colours = [{tuple(c) for c in video[i, f][objects[f]].tolist()} for f in (0, -1)]
            assert colours[0] != colours[1] if answer != "none" else colours[0] == colours[1]
            if answer != "none":
                assert colours[1] - colours[0] == {COLOURS[answer]}
        if doc["qtype"] == "position":  # one object, still, in the answer's quadrant
            ys, xs = objects.nonzero(as_tuple=True)[1:]
            assert int(mover.active.sum()) == 1 and (objects[0] == objects[-1]).all()
            assert {QUADRANTS[2 * int(y >= size / 2) + int(x >= size / 2)] for y, x in zip(ys.tolist(), xs.tolist())} == {answer}
    assert set(DIRECTIONS) == {"left", "right", "up", "down"}


def test_extra_questions_are_answered_by_the_same_scene():
    """Extra questions are of a type valid for the scene, and each answer is what the scene shows."""
    frames, size = 8, 112
    scene, questions = sample(7 * 20, frames, size, seed=4)
    video = render(scene, frames, size)
    for extra in extra_questions(scene, questions, turns=3, frames=frames, size=size, seed=5):
        assert VALID_QUESTIONS[questions.qtype, extra.qtype].all()
        for i, doc in enumerate(extra.docs("x")):
            answer = doc["options"][LETTERS.index(doc["answer"])]
            if doc["qtype"] == "count":
                assert int(answer) == int(scene.active[i].sum())
            if doc["qtype"] == "position":  # the one object is in the answer's quadrant
                pixels = (video[i] != video[i, 0, 0, 0]).any(-1)  # [T,H,W]
                assert int(scene.active[i].sum()) == 1 and pixels.any(), doc
                ys, xs = pixels.nonzero(as_tuple=True)[1:]
                quadrants = {QUADRANTS[2 * int(y >= size / 2) + int(x >= size / 2)] for y, x in zip(ys.tolist(), xs.tolist())}
                assert quadrants == {answer}, doc
            if doc["qtype"] == "colour":  # the one object that moves has the answer's colour
                moving = (scene.velocity[i] != 0).any(-1) & scene.active[i]
                assert int(moving.sum()) == 1
                assert list(COLOURS)[int(scene.colour_start[i][moving])] == answer
            if doc["qtype"] == "order":
                assert QTYPES[int(questions.qtype[i])] == "order"
    assert len({tuple(e.answer.tolist()) for e in extra_questions(scene, questions, 2, frames, size, 5)}) == 2


def test_render_has_no_python_loop_cost_per_frame():
    scene, _ = sample(4, frames=32, size=64, seed=1)
    assert render(scene, 32, 64).shape == (4, 32, 64, 64, 3)


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
