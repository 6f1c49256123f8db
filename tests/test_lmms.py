"""The lmms-eval wrappers: registration, identity with lmms-eval's own Qwen wrappers, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lmms_eval.api.instance import Instance
from lmms_eval.models import get_model

from freres_lmms.core import METHODS
from freres_lmms.data.checkpoints import MAX_PIXELS, MIN_PIXELS
from freres_lmms.families import FAMILIES
from freres_lmms.lmms.manifests import model_ids

# lmms-eval's own wrapper per family. Qwen2.5-VL: its chat class (the default for --model
# qwen2_5_vl); the simple one does not forward the clip's fps, so its temporal ids differ
# (lmms-eval issue #674).
BUILTIN = {"qwen2vl": ("qwen2_vl", True), "qwen2_5vl": ("qwen2_5_vl", False), "qwen3vl": ("qwen3_vl", True)}
TASK, SPLIT = "probe", "test"


def request(docs, doc_id, context, max_new_tokens=8, chat=False):
    def doc_to_visual(doc):
        return [doc["video"]] if doc.get("video") else []

    def doc_to_messages(doc):
        return [{"role": "user", "content": [{"type": "video", "url": doc["video"]}, {"type": "text", "text": context}]}]

    gen = {"max_new_tokens": max_new_tokens, "temperature": 0, "do_sample": False, "until": []}
    args = (context, doc_to_messages, gen, doc_id, TASK, SPLIT) if chat else (context, gen, doc_to_visual, doc_id, TASK, SPLIT)
    return Instance(request_type="generate_until", arguments=args, idx=0, metadata={"task": TASK, "doc_id": doc_id, "repeats": 1})


def test_every_id_resolves_through_lmms_eval():
    ids = model_ids()
    assert set(ids) == {f"vtc_{f}" for f in FAMILIES} | {f"{m}_{f}" for m in METHODS for f in FAMILIES}
    for model_id in ids:
        cls = get_model(model_id)
        assert cls.is_simple and cls.family in FAMILIES
        if not model_id.startswith("vtc_"):
            assert model_id == f"{cls.default_method}_{cls.family}" and cls.default_method_fixed


def test_unknown_method_lists_known(checkpoints):
    with pytest.raises(KeyError) as err:
        get_model("vtc_qwen2vl")(pretrained=str(checkpoints["qwen2vl"]), method="nope", device="cpu")
    assert all(name in str(err.value) for name in METHODS)


def test_fixed_id_refuses_other_method(checkpoints):
    with pytest.raises(ValueError, match="uniform_qwen2vl"):
        get_model("full_qwen2vl")(pretrained=str(checkpoints["qwen2vl"]), method="uniform", device="cpu")


@pytest.mark.parametrize("family", FAMILIES)
def test_full_budget_equals_lmms_eval_builtin_wrapper(family, checkpoints, videos):
    """Same frames (8-frame 2 fps clips: every frame kept by both), same prompt, same answers."""
    path = str(checkpoints[family])
    docs = videos[:3]
    context = "Answer with the option's letter. What is in the video?"
    name, simple = BUILTIN[family]
    builtin_cls = get_model(name, force_simple=simple)
    builtin = builtin_cls(pretrained=path, max_num_frames=8, device="cpu", device_map="cpu",
                          min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    dtype = str(builtin.model.dtype).removeprefix("torch.")  # lmms-eval loads Qwen2.5/3-VL in bf16
    ours = get_model(f"full_{family}")(pretrained=path, device="cpu", max_num_frames=8, dtype=dtype)
    for lm in (ours, builtin):
        lm.task_dict = {TASK: {SPLIT: docs}}
    reqs = [request(docs, i, context) for i in range(len(docs))]
    got = [r.text for r in ours.generate_until(reqs)]
    expected = [r if isinstance(r, str) else r.text for r in builtin.generate_until([request(docs, i, context, chat=not simple) for i in range(len(docs))])]
    assert got == [text.strip() for text in expected]  # our wrapper strips, as lmms-eval's Qwen2-VL one does
    assert len(set(got)) > 1  # answers differ between videos, so equality is not vacuous


def write_task(tmp_path, docs):
    (tmp_path / "data").mkdir()
    with open(tmp_path / "data" / "test.jsonl", "w") as f:
        for doc in docs:
            f.write(json.dumps(doc) + "\n")
    src = Path(__file__).parents[1] / "task_configs" / "freres_synthetic"
    (tmp_path / "utils.py").write_text((src / "utils.py").read_text())
    (tmp_path / "probe_badinput.yaml").write_text(
        (src / "freres_synthetic.yaml").read_text().replace("task: freres_synthetic", "task: freres_probe_badinput")
    )


def test_bad_samples_are_recorded_and_the_run_goes_on(tmp_path, checkpoints, videos):
    import av
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    empty = tmp_path / "empty.mp4"
    with av.open(str(empty), mode="w") as container:
        stream = container.add_stream("libx264", rate=2)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        container.start_encoding()  # a header, a video stream, and not one frame
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(Path(videos[6]["video"]).read_bytes()[:1500])
    good = [dict(videos[0]), dict(videos[3])]
    bad = [dict(videos[1], video=str(tmp_path / "missing.mp4")), dict(videos[2], video=str(corrupt)),
           dict(videos[4], video=str(empty)), dict(videos[5], video=""), dict(videos[6], video=str(truncated))]
    docs = [good[0], bad[0], bad[1], bad[2], bad[3], good[1], bad[4]]
    write_task(tmp_path, docs)
    lm = get_model("uniform_qwen2vl")(pretrained=str(checkpoints["qwen2vl"]), device="cpu", max_num_frames=8,
                                      stride=2, batch_size=2)
    out = simple_evaluate(model=lm, tasks=["freres_probe_badinput"], task_manager=TaskManager(include_path=str(tmp_path)),
                          log_samples=True)
    samples = sorted(out["samples"]["freres_probe_badinput"], key=lambda s: s["doc_id"])
    records = [s["token_counts"][0] for s in samples]
    errors = [r.get("error") for r in records]
    assert errors[0] is None and errors[5] is None
    assert "not found" in errors[1] and "missing.mp4" in errors[1]
    assert "corrupt.mp4" in errors[2]
    assert "empty.mp4" in errors[3]
    assert "no video" in errors[4]
    assert "truncated.mp4" in errors[6] and "not a readable video file" in errors[6]  # ours, not decord's C++ text
    for good_record in (records[0], records[5]):
        assert good_record["visual_tokens_before"] == 256 and good_record["visual_tokens_after"] == 128
        assert good_record["compression_seconds"] >= 0
    # failed samples are counted apart: accuracy over the two answered, means over their records
    metrics = out["results"]["freres_probe_badinput"]
    correct = [samples[i]["accuracy"]["correct"] for i in (0, 5)]
    assert metrics["answered,none"] == 2 and metrics["accuracy,none"] == pytest.approx(50.0 * sum(correct))
    throughput = out["throughput"]
    assert throughput["avg_sample_errors"] == pytest.approx(5 / 7)
    assert throughput["avg_visual_tokens_after"] == 128 and throughput["avg_visual_tokens_before"] == 256


def test_vtc_id_takes_method_and_knobs_from_model_args(checkpoints):
    from freres_lmms.core import UniformMethod

    lm = get_model("vtc_qwen3vl")(pretrained=str(checkpoints["qwen3vl"]), device="cpu", method="uniform", budget=0.25)
    assert isinstance(lm.method, UniformMethod) and lm.method.budget == 0.25
    with pytest.raises(ValueError, match="qwen2_vl"):  # a checkpoint of another family is refused
        get_model("full_qwen3vl")(pretrained=str(checkpoints["qwen2vl"]), device="cpu")
