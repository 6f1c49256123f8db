"""freres_synthetic_long: the functions of freres_synthetic's utils.py for the long task's files and
question types (freres_lmms/data/synthetic_long.py)."""

import importlib.util
import os

HERE = os.path.dirname(os.path.abspath(__file__))
DATA_DIR = os.path.join(HERE, "data")
QTYPES = ("flash", "changes", "first", "small_count", "small_where", "when_flash")
CATEGORIES = ("brief", "spread", "detail", "mixed")

_spec = importlib.util.spec_from_file_location("freres_synthetic_utils", os.path.join(HERE, "..", "freres_synthetic", "utils.py"))
_shared = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_shared)
doc_to_text, extract_letter, accuracy, answered = _shared.doc_to_text, _shared.extract_letter, _shared.accuracy, _shared.answered
globals().update(_shared.task_functions(DATA_DIR, QTYPES, CATEGORIES))
