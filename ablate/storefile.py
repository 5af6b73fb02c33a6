"""Facts about a results store that need no SQLAlchemy: where it lives, which schema.

Reports (``ablate table``) read SQLite files with the standard library alone, because
importing SQLAlchemy took longer than reading a 10,000-run table; they need the URL
rules and the schema version without importing :mod:`ablate.store`, which re-exports
both.
"""

from __future__ import annotations

from pathlib import Path

SCHEMA_VERSION = 3


def to_url(db: str) -> str:
    """A plain path becomes a sqlite URL; anything with '://' is taken as given."""
    return db if "://" in db else f"sqlite:///{Path(db).expanduser()}"


def sqlite_path(db: str) -> Path | None:
    """The file of a SQLite store (``None`` for other URLs and in-memory databases)."""
    url = to_url(db)
    if not url.startswith("sqlite:///"):
        return None
    path = url.split("sqlite:///", 1)[1]
    return Path(path) if path and path != ":memory:" else None


def store_exists(db: str) -> bool:
    """Whether a store is there to read: a SQLite file that exists (a server URL is taken
    to exist; connecting tells)."""
    url = to_url(db)
    if not url.startswith("sqlite:///"):
        return True
    return Path(url.split("sqlite:///", 1)[1]).is_file()
