"""Prompt, answer extraction and metrics of the freres_synthetic task (and, through
``task_functions``, of freres_synthetic_long)."""

import os
import re

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
LETTERS = "ABCD"
QTYPES = ("count", "colour", "position", "direction", "order", "changed", "destination")
CATEGORIES = ("spatial", "temporal", "mixed")


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    # Must stay equal to freres_lmms.data.synthetic.prompt_text: the testbed is trained on it.
    options = "\n".join(f"({letter}) {option}" for letter, option in zip(LETTERS, doc["options"]))
    return f"Question: {doc['question']}\nOptions:\n{options}\nAnswer with the option's letter."


def extract_letter(response):
    """The first standalone option letter of the response, or None."""
    match = re.search(r"\(?\b([A-D])\b\)?", response or "")
    return match.group(1) if match else None


def _mean_correct(records, key=None, value=None):
    kept = [r["correct"] for r in records if r.get("answered", True) and (key is None or r[key] == value)]
    return 100.0 * sum(kept) / len(kept) if kept else float("nan")


def accuracy(records):
    """Percent correct over the answered samples (``answered`` counts them)."""
    return _mean_correct(records)


def answered(records):
    return sum(bool(r.get("answered", True)) for r in records)


def _aggregation(key, value):
    def aggregate(records):
        return _mean_correct(records, key, value)

    aggregate.__name__ = f"{value}_accuracy"
    return aggregate


def task_functions(data_dir, qtypes, categories):
    """The functions a task YAML names (``!function utils.<name>``) for a task whose files are under
    ``data_dir``, with question types ``qtypes`` in groups ``categories``: ``doc_to_visual``,
    ``process_results`` and one ``<type>_accuracy`` / ``<group>_accuracy`` aggregation each."""
    metrics = ["accuracy", "answered"] + [f"{c}_accuracy" for c in categories] + [f"{q}_accuracy" for q in qtypes]

    def doc_to_visual(doc):
        path = doc.get("video")
        if not path:
            return []
        return [path if os.path.isabs(path) else os.path.join(data_dir, path)]

    def process_results(doc, results):
        # an empty response is a sample the model could not answer (the freres-lmms wrappers answer a
        # failed sample with "" and the error in its record): counted apart, not as a wrong answer
        response = results[0] or ""
        pred = extract_letter(response)
        record = {"qtype": doc["qtype"], "category": doc["category"], "answered": bool(response.strip()),
                  "correct": float(pred == doc["answer"])}
        return {metric: record for metric in metrics}

    functions = {"doc_to_visual": doc_to_visual, "process_results": process_results, "METRICS": metrics}
    functions.update({f"{c}_accuracy": _aggregation("category", c) for c in categories})
    functions.update({f"{q}_accuracy": _aggregation("qtype", q) for q in qtypes})
    return functions


# doc_to_visual, process_results, spatial_accuracy, ..., count_accuracy, ...: the names the YAML reads
globals().update(task_functions(DATA_DIR, QTYPES, CATEGORIES))
