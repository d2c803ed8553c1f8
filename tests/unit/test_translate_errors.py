"""What the storage boundary makes of the driver's errors: an unavailable database is retried
by every caller, so an error that means "not now" must never pass for a failure of its own."""

from __future__ import annotations

import asyncpg
import pytest

from pgcourier.db import translate_errors
from pgcourier.errors import DatabaseUnavailable


def test_a_database_not_accepting_connections_is_unavailable() -> None:
    # ALTER DATABASE ... ALLOW_CONNECTIONS false (or a database being dropped) refuses new
    # connections with SQLSTATE 55000; a relay whose pool reconnects then must wait it out, not
    # exit (it did: test_logging's outage test, about one run in two).
    error = asyncpg.ObjectNotInPrerequisiteStateError(
        'database "x" is not currently accepting connections'
    )
    with pytest.raises(DatabaseUnavailable), translate_errors():
        raise error


def test_an_admin_shutdown_is_unavailable() -> None:
    with pytest.raises(DatabaseUnavailable), translate_errors():
        raise asyncpg.AdminShutdownError("terminating connection due to administrator command")
