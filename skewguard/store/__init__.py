"""The results store (SQLAlchemy only here): SQLite by default, PostgreSQL by URL."""

from __future__ import annotations

from skewguard.store.joins import JoinRows
from skewguard.store.sql import (
    Checkpoint,
    NewAlert,
    Store,
    StoredAlert,
    StoredWindow,
    StoreTransaction,
    UndeliveredAlert,
    from_micros,
    to_micros,
)

__all__ = [
    "Checkpoint",
    "JoinRows",
    "NewAlert",
    "Store",
    "StoreTransaction",
    "StoredAlert",
    "StoredWindow",
    "UndeliveredAlert",
    "from_micros",
    "to_micros",
]
