"""The store under test: a real SQLite file, and PostgreSQL (a schema of its own per test)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from skewguard.store import Store

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        st = Store(f"sqlite:///{tmp_path / 'results.db'}")
    else:
        st = Store(POSTGRES_URL, schema=f"sg_test_{uuid.uuid4().hex[:10]}")
    yield st
    if st.dialect == "postgresql":
        st.drop_all()
    st.close()
