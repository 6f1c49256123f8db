"""Resume at sample granularity: every answered sample is committed to SQLite as it finishes.

lmms-eval's ``--use_cache`` writes only after a whole ``generate_until`` call returns, so a run
killed at sample 21 of 40 has nothing to resume from, and a cached answer comes back without its
token counts. With ``resume=true`` (or ``resume=PATH``) the wrapper keeps its own store: one row
per (configuration, task, split, doc id, prompt), holding the answer and the whole per-sample
record, committed after each batch. A rerun of the same command answers stored samples from it
(same text, same record) and computes only the rest. The configuration key hashes everything that
decides an answer: the model id, the checkpoint, the method and its knobs, the frame sampling and
encoding, dtype, attention, decoding length and the package version; a changed knob is a new key.
The file uses SQLite's write-ahead log with a busy timeout, so the ranks of an ``accelerate
launch`` share one store. Failed samples are not stored: a rerun tries them again. Clear it by
deleting the file (``outputs/freres_samples.sqlite`` by default).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

DEFAULT_STORE = Path("outputs") / "freres_samples.sqlite"

SCHEMA = """CREATE TABLE IF NOT EXISTS samples (
    config TEXT NOT NULL, task TEXT NOT NULL, split TEXT NOT NULL, doc_id TEXT NOT NULL, prompt TEXT NOT NULL,
    text TEXT NOT NULL, record TEXT NOT NULL, PRIMARY KEY (config, task, split, doc_id, prompt))"""


def store_path(resume) -> Path | None:
    """``resume`` model_arg -> the store's path: false/None: none; true: the default; else a path."""
    if resume is None or resume is False:
        return None
    return DEFAULT_STORE if resume is True else Path(str(resume)).expanduser()


def digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:32]


def stored_count(path: Path) -> int:
    """Rows in the store at ``path`` over every configuration, read from outside the run writing it
    (0 while the file or its table does not exist yet; never creates the file)."""
    if not Path(path).exists():
        return 0
    try:
        with sqlite3.connect(str(path), timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
    except sqlite3.OperationalError:  # the table is not there yet
        return 0


class SampleStore:
    """One SQLite file of answered samples, keyed by configuration and request."""

    def __init__(self, path: Path, config: dict):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.config = digest(config)
        self.db = sqlite3.connect(str(path), timeout=120, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(SCHEMA)
        self.db.commit()

    @staticmethod
    def key(args) -> tuple[str, str, str, str]:
        """(task, split, doc id, prompt digest) of a generate_until request's arguments."""
        context, gen_kwargs, _, doc_id, task, split = args
        return str(task), str(split), str(doc_id), digest([context, gen_kwargs])

    def get(self, args) -> tuple[str, dict] | None:
        row = self.db.execute("SELECT text, record FROM samples WHERE config=? AND task=? AND split=? AND doc_id=? "
                              "AND prompt=?", (self.config, *self.key(args))).fetchone()
        return (row[0], json.loads(row[1])) if row else None

    def put(self, items: list[tuple[tuple, str, dict]]) -> None:
        """Commit (request arguments, answer, record) rows at once."""
        self.db.executemany("INSERT OR REPLACE INTO samples VALUES (?, ?, ?, ?, ?, ?, ?)",
                            [(self.config, *self.key(args), text, json.dumps(record)) for args, text, record in items])
        self.db.commit()

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM samples WHERE config=?", (self.config,)).fetchone()[0]
