"""Exception hierarchy. Driver errors are translated at the boundary (see :mod:`pgcourier.db`),
so nothing above the storage layer imports asyncpg's exception types."""

from __future__ import annotations


class PgCourierError(Exception):
    """Root of every error pgcourier raises on purpose."""


class ConfigurationError(PgCourierError):
    """Settings are missing or invalid; the message says which and why."""


class InvalidInput(PgCourierError):
    """A caller gave a value pgcourier refuses; nothing was changed.

    ``field`` names the offending input when it is known.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(PgCourierError):
    """The thing asked for does not exist."""


class Conflict(PgCourierError):
    """Postgres aborted the statement because of a concurrent one (a deadlock, 40P01, or a
    serialization failure, 40001): nothing was changed and the same request may simply be made
    again. Operations retry it themselves a few times first (pgcourier.ops.retrying)."""


class DatabaseUnavailable(PgCourierError):
    """Postgres could not be reached or dropped the connection."""


class MigrationError(PgCourierError):
    """The schema cannot be brought to the version this code expects."""
