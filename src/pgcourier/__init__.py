"""pgcourier: a Postgres-native event relay.

Producers write events into ``courier.outbox`` inside their own transactions; relays deliver them
as signed webhooks. Receivers verify signatures with :func:`pgcourier.signing.verify`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pgcourier")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["__version__"]
