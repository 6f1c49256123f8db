"""The synthetic tasks: one generator interface per task, for the files (lmms-eval) and for training.

``short`` is ``freres_synthetic`` (16 frames, ``data.synthetic``); ``long`` is
``freres_synthetic_long`` (128 frames by default, ``data.synthetic_long``). A task names its
question types and their groups, its phrases (question and option strings, indexed by the
``Questions`` codes), and its ``sample`` / ``render`` / ``extra`` functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import synthetic, synthetic_long

TASK_ROOT = Path(__file__).resolve().parents[2] / "task_configs"


@dataclass(frozen=True)
class SyntheticTask:
    name: str  # the lmms-eval task
    qtypes: dict  # question type -> group, in the order of the Questions codes
    phrases: list  # every question and option string (``Questions`` indexes them)
    sample: Callable  # (n, frames, size, seed, device="cpu", first=0) -> (scene, Questions)
    render: Callable  # (scene, frames, size) -> uint8 [N, T, H, W, 3]
    extra: Callable  # (scene, questions, turns, frames, size, seed) -> [Questions]
    frames: int
    fps: int
    test_size: int  # samples of the shipped test split (a multiple of the type count)
    render_batch: int  # clips rendered at once when writing files (bounds the memory)
    version: int  # bump when the clips or questions a seed gives change

    @property
    def data_dir(self) -> Path:
        return TASK_ROOT / self.name / "data"

    @property
    def groups(self) -> tuple:
        return tuple(dict.fromkeys(self.qtypes.values()))


TASKS = {
    "short": SyntheticTask("freres_synthetic", synthetic.QUESTION_TYPES, synthetic.PHRASES, synthetic.sample,
                           synthetic.render, synthetic.extra_questions, 16, 8, synthetic.DEFAULT_TEST_SIZE, 32,
                           synthetic.GENERATOR_VERSION),
    "long": SyntheticTask("freres_synthetic_long", synthetic_long.LONG_QUESTION_TYPES, synthetic_long.LONG_PHRASES,
                          synthetic_long.sample_long, synthetic_long.render_long, synthetic_long.extra_long_questions,
                          synthetic_long.LONG_FRAMES, 8, 300, 2, synthetic_long.LONG_VERSION),
}
