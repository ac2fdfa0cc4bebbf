"""The API's database sessions cannot hang on a slow statement: PostgreSQL cancels it after
the configured statement timeout; migrations (an explicit URL) have none."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from shared.db import session as db_session
from shared.errors import DatabaseUnavailable


def test_given_statement_timeout_expect_slow_statement_canceled_as_unavailable(postgres_database: str) -> None:
    # given the default engine configured as the API does, with a 0.5 s statement timeout
    db_session.configure(postgres_database, statement_timeout_s=0.5)
    try:
        # when a statement runs for 5 s
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable) as info, db_session.session_scope() as session:
            session.execute(text("SELECT pg_sleep(5)"))
        # expect it canceled at the timeout, as a retryable "database unavailable" (503)
        assert time.monotonic() - started < 3
        assert info.value.retryable
        # and the next statement on the same pool works
        with db_session.session_scope() as session:
            assert session.execute(text("SHOW statement_timeout")).scalar() == "500ms"
        # while an explicit URL (what migrations use) has no statement timeout
        with db_session.get_engine(postgres_database).connect() as conn:
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "0"
            conn.execute(text("SELECT pg_sleep(0.8)"))
    finally:
        db_session.configure(None)
        db_session.dispose_engines()
