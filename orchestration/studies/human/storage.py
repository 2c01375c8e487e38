"""The answers of a study in SQLite: one row per answer, committed before the next pair shows.

Tables: `raters` (id, the seed of its schedule, when it started), `shown` (the screen each
rater was given at each position, with a random token the answer must carry) and `answers`
(one row per answered screen, choices in A/B terms: 'a', 'b' or 'tie'). A rater's next
screen is the number of answers it has, so a reload or a restarted server resumes there.
`record` checks and writes in one IMMEDIATE transaction: a double submit, a replayed or a
forged answer is refused and leaves the database as it was.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from orchestration.studies.human.design import QUESTION_KEYS

DB_FILE = "answers.sqlite"
_AB = "('a', 'b', 'tie')"
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS raters (
    rater TEXT PRIMARY KEY, seed INTEGER NOT NULL, started REAL NOT NULL);
CREATE TABLE IF NOT EXISTS shown (
    rater TEXT NOT NULL, position INTEGER NOT NULL, item TEXT NOT NULL, a_side TEXT NOT NULL,
    token TEXT NOT NULL, shown REAL NOT NULL, PRIMARY KEY (rater, position));
CREATE TABLE IF NOT EXISTS answers (
    rater TEXT NOT NULL, position INTEGER NOT NULL, item TEXT NOT NULL,
    a_side TEXT NOT NULL CHECK (a_side IN ('left', 'right')), repeat INTEGER NOT NULL,
    {", ".join(f"{q} TEXT NOT NULL CHECK ({q} IN {_AB})" for q in QUESTION_KEYS)},
    answered REAL NOT NULL, PRIMARY KEY (rater, position));
"""


class AnswerRejected(Exception):
    """An answer the study cannot take; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class AnswerStore:
    """A study's answers database; every call opens its own connection (thread-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        with closing(self._connect()) as db, db:
            db.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA synchronous = FULL")  # an acknowledged answer survives a crash
        return db

    def register(self, rater: str, seed: int) -> None:
        with closing(self._connect()) as db:
            db.execute("INSERT OR IGNORE INTO raters VALUES (?, ?, ?)", (rater, seed, time.time()))

    def answered(self, rater: str) -> int:
        """How many screens `rater` has answered (= the position of its next screen)."""
        with closing(self._connect()) as db:
            return db.execute("SELECT COUNT(*) FROM answers WHERE rater = ?", (rater,)).fetchone()[0]

    def show(self, rater: str, screen: dict) -> str:
        """Record that `screen` is shown to `rater`; its token (the same on a reload)."""
        with closing(self._connect()) as db:
            db.execute(
                "INSERT OR IGNORE INTO shown VALUES (?, ?, ?, ?, ?, ?)",
                (rater, screen["position"], screen["item"], screen["a_side"],
                 secrets.token_hex(16), time.time()),
            )
            return db.execute("SELECT token FROM shown WHERE rater = ? AND position = ?",
                              (rater, screen["position"])).fetchone()[0]

    def record(self, rater: str, screen: dict, token: str, choices: dict[str, str]) -> int:
        """Write one answer (choices: question -> 'a' / 'b' / 'tie'); returns the answer count.

        Raises AnswerRejected (409) for a screen already answered or not yet shown, or a
        token that is not the one shown; nothing is written then.
        """
        position = screen["position"]
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")  # one writer: a double submit waits, then fails
            try:
                done = db.execute("SELECT COUNT(*) FROM answers WHERE rater = ?",
                                  (rater,)).fetchone()[0]
                if position < done:
                    raise AnswerRejected(409, f"screen {position} is already answered (a double "
                                         "submit or a replay); nothing was changed")
                row = db.execute("SELECT token FROM shown WHERE rater = ? AND position = ?",
                                 (rater, position)).fetchone()
                if position > done or row is None:
                    raise AnswerRejected(409, f"screen {position} was not shown to {rater!r} "
                                         f"yet; its next screen is {done}")
                if not secrets.compare_digest(row[0], token):
                    raise AnswerRejected(409, f"the token does not match the one shown to "
                                         f"{rater!r} at screen {position}; reload the page")
                db.execute(
                    f"INSERT INTO answers VALUES (?, ?, ?, ?, ?, {', '.join('?' * len(QUESTION_KEYS))}, ?)",
                    (rater, position, screen["item"], screen["a_side"], int(screen["repeat"]),
                     *(choices[q] for q in QUESTION_KEYS), time.time()),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return done + 1

    def all_answers(self) -> list[dict]:
        """Every answer as a dict, by rater and position."""
        with closing(self._connect()) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute("SELECT * FROM answers ORDER BY rater, position").fetchall()
            return [dict(r) for r in rows]

    def rater_seeds(self) -> dict[str, int]:
        with closing(self._connect()) as db:
            return dict(db.execute("SELECT rater, seed FROM raters").fetchall())
