"""Prompt, answer extraction and metrics of the freres_synthetic task."""

import os
import re

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
LETTERS = "ABCD"


def doc_to_visual(doc):
    path = doc.get("video")
    if not path:
        return []
    return [path if os.path.isabs(path) else os.path.join(DATA_DIR, path)]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    options = "\n".join(f"({letter}) {option}" for letter, option in zip(LETTERS, doc["options"]))
    return f"Question: {doc['question']}\nOptions:\n{options}\nAnswer with the option's letter."


def extract_letter(response):
    """The first standalone option letter of the response, or None."""
    match = re.search(r"\(?\b([A-D])\b\)?", response or "")
    return match.group(1) if match else None


def process_results(doc, results):
    pred = extract_letter(results[0])
    record = {"qtype": doc["qtype"], "category": doc["category"], "correct": float(pred == doc["answer"])}
    return {"accuracy": record, "spatial_accuracy": record, "temporal_accuracy": record}


def _mean_correct(records, category=None):
    kept = [r["correct"] for r in records if category is None or r["category"] == category]
    return 100.0 * sum(kept) / len(kept) if kept else float("nan")


def accuracy(records):
    return _mean_correct(records)


def spatial_accuracy(records):
    return _mean_correct(records, "spatial")


def temporal_accuracy(records):
    return _mean_correct(records, "temporal")
