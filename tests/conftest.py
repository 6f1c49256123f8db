"""Session fixtures: tiny checkpoints of every family and a few synthetic videos, built locally."""

from __future__ import annotations

import json

import pytest
import torch

from freres_lmms.data.checkpoints import write_checkpoint
from freres_lmms.data.synthetic import generate
from freres_lmms.families import FAMILIES


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    return {family: write_checkpoint(family, root / family) for family in FAMILIES}


@pytest.fixture(scope="session")
def videos(tmp_path_factory):
    """Seven synthetic videos of 8 frames at 2 fps (one per question type) and their docs."""
    root = tmp_path_factory.mktemp("synthetic")
    jsonl = generate(root, count=7, frames=8, fps=2, size=224)
    docs = [json.loads(line) for line in jsonl.read_text().splitlines()]
    for doc in docs:
        doc["video"] = str(root / doc["video"])
    return docs


@pytest.fixture(scope="session")
def loaded(checkpoints):
    """(model, processor) per family, loaded once through from_pretrained."""
    from transformers import AutoProcessor

    from freres_lmms.models import ADAPTERS

    out = {}
    for family, path in checkpoints.items():
        model = ADAPTERS[family].model_class.from_pretrained(path, dtype=torch.float32).eval()
        processor = AutoProcessor.from_pretrained(path)
        processor.tokenizer.padding_side = "left"
        out[family] = (model, processor)
    return out
