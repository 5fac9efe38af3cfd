"""Loaded at the start of every Python process that has this folder on PYTHONPATH (tests/test_trial_cost.py): counts
the storage's write transactions, SQLAlchemy commits after an INSERT, UPDATE or DELETE (each an fsync in SQLite),
and appends the process's count to $STORAGE_WRITES_FILE at its exit."""

import atexit
import os

from sqlalchemy import event
from sqlalchemy.engine import Engine

writes = 0


@event.listens_for(Engine, "before_cursor_execute")
def _statement(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
    if statement.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
        conn.info["wrote"] = True


@event.listens_for(Engine, "commit")
def _commit(conn):  # noqa: ANN001
    global writes
    if conn.info.pop("wrote", False):
        writes += 1


@atexit.register
def _report() -> None:
    with open(os.environ["STORAGE_WRITES_FILE"], "a") as file:
        file.write(f"{writes}\n")
