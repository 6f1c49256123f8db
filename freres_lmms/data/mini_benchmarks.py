"""Miniature copies of real video benchmarks in the layout lmms-eval reads offline: a test fixture.

No benchmark can be downloaded here, so lmms-eval's own task code (its YAML, ``utils.py``, the
``datasets`` load, the video paths under ``HF_HOME``, answer parsing and aggregation) would never
run. ``write(hf_home, names)`` writes, per benchmark, a few rows with the dataset's real column
names and answer formats as the prepared Arrow cache that ``datasets.load_dataset(<repo>)`` finds
with ``HF_DATASETS_OFFLINE=1`` (``$HF_HOME/datasets/<namespace>___<name>/<config>/0.0.0/<hash>``),
and synthetic clips at the paths the task's ``utils.py`` builds from ``HF_HOME``. The questions
and answers mean nothing: this proves the path, it is not a benchmark.

    python -m freres_lmms mini-benchmarks --hf-home /tmp/mini-hf [--benchmarks videomme]
    HF_HOME=/tmp/mini-hf HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python -m freres_lmms eval \\
        --model full_qwen2vl --model_args pretrained=testbed-qwen2vl --tasks videomme
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .synthetic import render, sample, write_mp4

CLIP_FRAMES, CLIP_SIZE, CLIP_FPS = 16, 224, 8


@dataclass(frozen=True)
class MiniBenchmark:
    """One benchmark's miniature: the dataset repo lmms-eval loads, its rows per config, the clips."""

    repo: str  # the task YAML's dataset_path
    split: str  # its test_split
    tables: Callable[[], dict]  # config (the YAML's dataset_name; None: the default) -> the split's rows
    videos: Callable[[str | None, list[dict]], list[str]]  # a config's rows' video files, relative to HF_HOME

    def rows(self) -> list[dict]:
        return [row for rows in self.tables().values() for row in rows]

    def video_paths(self) -> list[str]:
        return [path for config, rows in self.tables().items() for path in self.videos(config, rows)]


def _videomme_rows() -> list[dict]:
    """lmms-eval/Video-MME, split test: one video per duration, two questions each (letters differ)."""
    rows = []
    for index, duration in enumerate(("short", "medium", "long")):
        video_id = f"{index + 1:03d}"
        for question in range(2):
            rows.append({
                "video_id": video_id, "duration": duration, "domain": "Knowledge", "sub_category": "Humanity & History",
                "url": f"https://www.youtube.com/watch?v=mini{video_id}", "videoID": f"mini{video_id}",
                "question_id": f"{video_id}-{question + 1}", "task_type": ("Counting Problem", "Object Recognition")[question],
                "question": "How many objects are in the video?",
                "options": ["A. 1.", "B. 2.", "C. 3.", "D. 4."], "answer": "ABCD"[(2 * index + question) % 4],
            })
    return rows


MLVU_TYPES = ("anomaly_reco", "count", "ego", "needle", "order", "plotQA", "topic_reasoning")


def _mlvu_rows() -> list[dict]:
    """sy1998/MLVU_dev, split test: one multiple-choice question per task type (its aggregation
    averages the seven types); options inside the question text, the answer a letter."""
    return [{"video_name": f"{task}/mini_{task}.mp4", "duration": 180.0, "task_type": task,
             "question": "How many objects are in the video?\n(A) 1\n(B) 2\n(C) 3\n(D) 4",
             "candidates": ["1", "2", "3", "4"], "answer": "ABCD"[index % 4], "question_id": f"{task}_0"}
            for index, task in enumerate(MLVU_TYPES)]


def _lvbench_rows() -> list[dict]:
    """lmms-eval/LVBench, split train: options in the question text, the answer a letter."""
    return [{"uid": f"mini{index}", "key": f"minivid{index % 2}", "video_path": f"minivid{index % 2}.mp4",
             "type": "cartoon", "question_type": ["entity recognition"], "time_reference": "00:01-00:02",
             "question": "How many objects are in the video?\n(A) 1\n(B) 2\n(C) 3\n(D) 4", "answer": "ABCD"[index]}
            for index in range(4)]


def _egoschema_rows() -> list[dict]:
    """lmms-eval/egoschema, config Subset, split test: five options "A. ...", the answer the index as text."""
    return [{"question_idx": f"mini-{index}", "video_idx": f"mini-ego-{index}", "question": "What does the camera wearer do?",
             "option": [f"{letter}. option {letter}" for letter in "ABCDE"], "answer": str(index % 5)}
            for index in range(5)]


def _nextqa_rows() -> list[dict]:
    """lmms-eval/NExTQA, config MC, split test: options a0-a4, the answer their index."""
    return [{"video": 1000 + index, "frame_count": 16, "width": 224, "height": 224, "question": "how many objects are there",
             "answer": index % 5, "qid": index, "type": ("CW", "TN", "DC", "CH", "TC")[index % 5],
             **{f"a{option}": f"{option + 1} objects" for option in range(5)}}
            for index in range(5)]


def _longvideobench_rows() -> list[dict]:
    """longvideobench/LongVideoBench, split validation: option0-4 ("N/A" when absent), the answer
    their index (correct_choice); four options here, as many of its questions have."""
    return [{"id": f"mini{index}", "video_id": f"minilvb{index % 2}", "video_path": f"minilvb{index % 2}.mp4",
             "subtitle_path": f"minilvb{index % 2}_en.json", "duration": 30.0, "duration_group": (15, 60)[index % 2],
             "starting_timestamp_for_subtitles": 0.0, "question": "How many objects are in the video?",
             "question_wo_referring_query": "How many objects are in the video?", "question_category": ("S2E", "T3O")[index % 2],
             "topic_category": "NP-News-Programs", "level": "L1-Perception", "correct_choice": index % 4,
             **{f"option{option}": (f"{option + 1}" if option < 4 else "N/A") for option in range(5)}}
            for index in range(4)]


# lmms-eval's MVBench folders per sub-task (tasks/mvbench/utils.py DATA_LIST); each sub-task is a config
MVBENCH_FOLDERS = {
    "action_sequence": "star/Charades_segment", "action_prediction": "star/Charades_segment",
    "action_antonym": "ssv2_video_mp4", "fine_grained_action": "Moments_in_Time_Raw/videos",
    "unexpected_action": "FunQA_test/test", "object_existence": "clevrer/video_validation",
    "object_interaction": "star/Charades_segment", "object_shuffle": "perception/videos",
    "moving_direction": "clevrer/video_validation", "action_localization": "sta/sta_video_segment",
    "scene_transition": "scene_qa/video", "action_count": "perception/videos", "moving_count": "clevrer/video_validation",
    "moving_attribute": "clevrer/video_validation", "state_change": "perception/videos",
    "fine_grained_pose": "nturgbd_convert", "character_order": "perception/videos", "egocentric_navigation": "vlnqa",
    "episodic_reasoning": "tvqa/video_fps3_hq_segment", "counterfactual_inference": "clevrer/video_validation",
}


def _mvbench_tables() -> dict:
    """OpenGVLab/MVBench (revision video), one config per sub-task, split train: candidates and the
    answer as the right candidate's text."""
    return {task: [{"video": f"mini_{task}.mp4", "question": "How many objects are in the video?",
                    "candidates": ["1", "2", "3", "4"], "answer": str(1 + index % 4)}]
            for index, task in enumerate(MVBENCH_FOLDERS)}


def _single(rows: Callable[[], list[dict]], config: str | None = None) -> Callable[[], dict]:
    return lambda: {config: rows()}


BENCHMARKS = {
    "videomme": MiniBenchmark("lmms-eval/Video-MME", "test", _single(_videomme_rows),
                              lambda _, rows: [f"videomme/data/{r['videoID']}.mp4" for r in rows]),
    "mlvu": MiniBenchmark("sy1998/MLVU_dev", "test", _single(_mlvu_rows),
                          lambda _, rows: [f"mlvu/{r['video_name']}" for r in rows]),
    "longvideobench": MiniBenchmark("longvideobench/LongVideoBench", "validation", _single(_longvideobench_rows),
                                    lambda _, rows: [f"datasets/longvideobench/videos/{r['video_path']}" for r in rows]),
    "egoschema": MiniBenchmark("lmms-eval/egoschema", "test", _single(_egoschema_rows, "Subset"),
                               lambda _, rows: [f"egoschema/videos/{r['video_idx']}.mp4" for r in rows]),
    "nextqa": MiniBenchmark("lmms-eval/NExTQA", "test", _single(_nextqa_rows, "MC"),
                            lambda _, rows: [f"nextqa/NExTVideo/{r['video']}.mp4" for r in rows]),
    "mvbench": MiniBenchmark("OpenGVLab/MVBench", "train", _mvbench_tables,
                             lambda task, rows: [f"mvbench_video/{MVBENCH_FOLDERS[task]}/{r['video']}" for r in rows]),
    "lvbench": MiniBenchmark("lmms-eval/LVBench", "train", _single(_lvbench_rows),
                             lambda _, rows: [f"lvbench/{r['video_path']}" for r in rows]),
}


def write_arrow_cache(datasets_cache: Path, repo: str, config: str | None, split: str, rows: list[dict]) -> Path:
    """``rows`` as the prepared dataset ``datasets`` reads for ``repo`` offline (its "cache" builder)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets.naming import camelcase_to_snakecase
    from datasets.packaged_modules.parquet.parquet import Parquet

    namespace, name = repo.split("/")
    dataset_name = camelcase_to_snakecase(name)
    config = config or "default"
    target = datasets_cache / f"{namespace}___{dataset_name}" / config / "0.0.0" / "freresmini"
    with tempfile.TemporaryDirectory() as scratch:
        parquet = Path(scratch) / f"{split}.parquet"
        pq.write_table(pa.Table.from_pylist(rows), parquet)
        # built outside the repo's namespace (no repo to check the files against), then moved under it
        builder = Parquet(cache_dir=str(Path(scratch) / "build"), dataset_name=dataset_name, config_name=config,
                          data_files={split: [str(parquet)]}, hash="freresmini")
        builder.download_and_prepare()
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(builder.cache_dir, target)
    return target


def write(hf_home: str | Path, names: list[str] | None = None, seed: int = 0) -> dict[str, Path]:
    """Write the miniature of each benchmark in ``names`` (default: all) under ``hf_home``."""
    hf_home = Path(hf_home)
    out = {}
    for name in names or list(BENCHMARKS):
        if name not in BENCHMARKS:
            raise KeyError(f"no miniature of {name!r}; known: {', '.join(BENCHMARKS)}")
        spec = BENCHMARKS[name]
        for config, rows in spec.tables().items():
            out[name] = write_arrow_cache(hf_home / "datasets", spec.repo, config, spec.split, rows).parents[2]
        paths = list(dict.fromkeys(spec.video_paths()))  # one clip per distinct video
        scene, _ = sample(len(paths), CLIP_FRAMES, CLIP_SIZE, seed)
        for path, clip in zip(paths, render(scene, CLIP_FRAMES, CLIP_SIZE).numpy()):
            (hf_home / path).parent.mkdir(parents=True, exist_ok=True)
            write_mp4(hf_home / path, clip, CLIP_FPS)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hf-home", required=True, help="the HF_HOME to write (then run with HF_HOME pointing at it)")
    parser.add_argument("--benchmarks", nargs="+", default=None, choices=list(BENCHMARKS))
    args = parser.parse_args(argv)
    for name, path in write(args.hf_home, args.benchmarks).items():
        print(f"{name}: {path}")
