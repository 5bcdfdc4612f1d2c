"""The PostgreSQL server the storage tests use: its URL, whether it answers, and the marker that
skips a test where it does not. With REQUIRE_POSTGRES=1 (CI sets it) nothing is skipped: a test
that needs the server then fails, so CI never passes without having tested it."""

from __future__ import annotations

import os

import pytest

PG_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRED = os.environ.get("REQUIRE_POSTGRES") == "1"


def unreachable_reason() -> str | None:
    """None when PG_URL accepts connections, else why not (the reason tests are skipped)."""
    from sqlalchemy.engine import make_url

    from sweeps.storage import redact_url

    try:
        import psycopg
    except ImportError as e:
        return f"psycopg not installed ({e})"
    url = make_url(PG_URL)
    try:
        conn = psycopg.connect(host=url.host, port=url.port or 5432, user=url.username, password=url.password,
                               dbname=url.database, connect_timeout=3)
    except Exception as e:  # noqa: BLE001
        return f"PostgreSQL not reachable at {redact_url(PG_URL)}: {str(e).strip().splitlines()[0]}"
    conn.close()
    return None


UNREACHABLE = unreachable_reason()
needs_postgres = pytest.mark.skipif(UNREACHABLE is not None and not REQUIRED, reason=UNREACHABLE or "")


def skip_unless_required(reason: str) -> None:
    """Skip the running test for `reason`, or fail it where the server is required."""
    if REQUIRED:
        pytest.fail(f"REQUIRE_POSTGRES=1, but {reason}")
    pytest.skip(reason)
