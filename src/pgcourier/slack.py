"""Slack destinations: ``chat.postMessage`` through slack-sdk's ``AsyncWebClient``.

A Slack endpoint is an endpoint like any other (fan-out, retries, dead letters, replay, attempts
and metrics); only the transport differs. How Slack's answers map onto the delivery policies:

* ``ok``: delivered; the attempt records the message's ``ts``.
* HTTP 429 / ``ratelimited``: retried, no sooner than ``Retry-After``, and the endpoint waits too.
* ``invalid_auth``, ``token_revoked``, ``account_inactive``, ``channel_not_found``,
  ``not_in_channel``, ``is_archived``: permanent: dead at once and the endpoint disabled with the
  reason (fix the token or the channel, enable it, replay the dead letters).
* Other errors, 5xx, timeouts and connection errors: retried on the schedule.

Tokens are never logged: slack-sdk's own logger (which prints request headers at debug level)
is given a logger that only passes warnings and above.

No proxy, whatever the environment says: slack-sdk reads ``HTTPS_PROXY``/``HTTP_PROXY`` itself
(not through the session), and the SSRF guard would then only see the proxy's address. Slack
calls connect directly, like webhooks.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from pgcourier.delivery import Transport
from pgcourier.model import ERROR_LIMIT, AttemptResult, Job, storable_text
from pgcourier.slack_message import build_message

DEFAULT_API_URL = "https://slack.com/api/"
PERMANENT_ERRORS = frozenset(
    {
        "invalid_auth",
        "token_revoked",
        "account_inactive",
        "channel_not_found",
        "not_in_channel",
        "is_archived",
    }
)

_quiet = logging.getLogger("pgcourier.slack_sdk")
_quiet.setLevel(logging.WARNING)


def _error(text: str) -> str:
    """An attempt's error: one line, bounded, without what Postgres text refuses (NUL)."""
    return storable_text(text, ERROR_LIMIT, one_line=True)


class SlackTransport:
    """Posts jobs of Slack endpoints; one ``AsyncWebClient`` per token, on the relay's session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        token: str | None,
        api_url: str = DEFAULT_API_URL,
        timeout: float = 10.0,
        response_body_limit: int = 4096,
    ) -> None:
        self._session = session
        self._body_limit = response_body_limit
        self._token = token
        self._api_url = api_url
        self._timeout = timeout
        self._clients: dict[str, AsyncWebClient] = {}

    def _client(self, token: str) -> AsyncWebClient:
        client = self._clients.get(token)
        if client is None:
            client = AsyncWebClient(
                token=token,
                base_url=self._api_url,
                session=self._session,
                timeout=max(1, round(self._timeout)),
                logger=_quiet,
                retry_handlers=[],  # pgcourier's own schedule decides, not the SDK
            )
            # The constructor takes a proxy from HTTPS_PROXY/HTTP_PROXY when none is given (an
            # empty string counts as none), so the only way to say "no proxy" is afterwards;
            # each request passes client.proxy to aiohttp, where None means a direct connection.
            client.proxy = None
            self._clients[token] = client
        return client

    async def send(self, job: Job) -> AttemptResult:
        started_at = datetime.now(UTC)
        t0 = time.perf_counter()
        token = job.slack_token or self._token
        if not token:
            return AttemptResult(
                started_at=started_at,
                duration=0.0,
                error="slack: no bot token (set PGCOURIER_SLACK_BOT_TOKEN or the endpoint's)",
                permanent="no Slack bot token",
            )
        try:
            message = build_message(json.loads(job.body()), job.template)
        except RecursionError:
            # Stored before enqueue capped the nesting depth. Not `permanent`: that would
            # disable the endpoint for one event; the schedule ends it in the dead letters.
            return AttemptResult(
                started_at=started_at,
                duration=time.perf_counter() - t0,
                error="slack: the event's payload is nested too deeply to build a message from",
            )
        try:
            response = await self._client(token).chat_postMessage(
                channel=job.slack_channel or "", **message
            )
        except SlackApiError as exc:
            data = exc.response.data if isinstance(exc.response.data, dict) else {}
            error = str(data.get("error") or f"HTTP {exc.response.status_code}")
            status = exc.response.status_code
            retry_after = exc.response.headers.get("Retry-After") if status == 429 else None
            if error == "ratelimited" and status != 429:
                status = 429
            return AttemptResult(
                started_at=started_at,
                duration=time.perf_counter() - t0,
                status=status,
                # What Slack (or whatever answers at api_url) sent is text of any length and any
                # bytes: made storable and bounded like a webhook receiver's (delivery.py).
                error=_error(f"slack: {error}"),
                response_body=storable_text(
                    json.dumps(data) if data else str(exc.response.data), self._body_limit
                ),
                retry_after=retry_after,
                permanent=_error(f"Slack said {error}") if error in PERMANENT_ERRORS else None,
            )
        except TimeoutError:
            return AttemptResult(
                started_at=started_at,
                duration=time.perf_counter() - t0,
                error=f"slack: timeout after {self._timeout:g}s",
            )
        except (aiohttp.ClientError, OSError) as exc:
            return AttemptResult(
                started_at=started_at,
                duration=time.perf_counter() - t0,
                error=_error(f"slack: {type(exc).__name__}: {exc}"),
            )
        return AttemptResult(
            started_at=started_at,
            duration=time.perf_counter() - t0,
            status=response.status_code,
            response_body=storable_text(f"ok ts={response.get('ts')}", self._body_limit),
        )


class Router:
    """The relay's transport: Slack endpoints to :class:`SlackTransport`, the rest to webhooks."""

    def __init__(self, webhook: Transport, slack: Transport) -> None:
        self._webhook = webhook
        self._slack = slack

    async def send(self, job: Job) -> AttemptResult:
        if job.kind == "slack":
            return await self._slack.send(job)
        return await self._webhook.send(job)
