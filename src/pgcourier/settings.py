"""All configuration, read once from ``PGCOURIER_*`` variables and validated at start."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from pgcourier import policy
from pgcourier.errors import ConfigurationError
from pgcourier.netguard import Network, parse_networks
from pgcourier.sealing import Keyring, key_problem, keyring_from

Seconds = Annotated[float, BeforeValidator(policy.parse_duration)]
# 32 characters of a random token are beyond guessing over HTTP.
ADMIN_TOKEN_MIN_LENGTH = 32
# (No "; " in it: the CLI prints each problem of a message joined by "; " on a line of its own.)
_MAKE_TOKEN = "python3 -c 'import secrets;print(secrets.token_urlsafe(32))'"


class Settings(BaseSettings):
    """pgcourier settings. Each field is read from ``PGCOURIER_<FIELD NAME IN CAPITALS>``.

    Durations accept ``500ms``, ``5s``, ``5m``, ``2h``, ``1d`` or a number of seconds.
    """

    model_config = SettingsConfigDict(env_prefix="PGCOURIER_", extra="ignore", frozen=True)

    database_url: str | None = Field(
        default=None,
        description="Postgres DSN. Unset: an embedded Postgres whose data lives in data_dir.",
    )
    data_dir: Path = Field(default=Path(".pgcourier"), description="Embedded Postgres home.")
    auto_migrate: bool = Field(default=True, description="Apply migrations when `run` starts.")

    poll_interval: Seconds = Field(default=1.0, gt=0, le=3600)
    retry_schedule: str = Field(default=policy.DEFAULT_RETRY_SCHEDULE)
    retry_jitter: float = Field(default=policy.DEFAULT_JITTER, ge=0, lt=1)
    delivery_timeout: Seconds = Field(default=10.0, gt=0, le=300)
    max_in_flight: int = Field(default=128, ge=1, le=10_000)
    lease: Seconds = Field(
        default=60.0, gt=0, description="How long a claimed delivery stays with one relay."
    )
    shutdown_timeout: Seconds = Field(default=15.0, ge=0, le=3600)
    idle_settle_timeout: Seconds = Field(
        default=0.05,
        ge=0,
        le=10,
        description="How long a relay going idle waits for producers' commits in progress to "
        "end, so that it sees their events (0: it does not wait, and such an event may wait "
        "for the poll). Above the longest commit on the primary, a synchronous standby's "
        "answer included.",
    )
    completion_flush_interval: Seconds = Field(default=0.005, gt=0, le=10)
    relay_synchronous_commit: bool = Field(
        default=True,
        description="Commit the relay's own bookkeeping synchronously. false: faster, and after "
        "a Postgres crash (not a clean restart) the last moments of attempt records may be lost "
        "and those events sent again with the same webhook-id. Producers are not affected.",
    )
    max_payload_bytes: int = Field(default=256 * 1024, ge=1, le=64 * 1024 * 1024)
    response_body_limit: int = Field(default=4096, ge=0, le=1024 * 1024)
    http_client: Literal["reqwest", "aiohttp"] = Field(
        default="reqwest",
        description="HTTP client of webhook deliveries: reqwest (pyreqwest, less CPU per "
        "delivery) or aiohttp; both keep the same limits and the same SSRF guard.",
    )
    event_types: Literal["open", "strict"] = Field(
        default="open",
        description="strict: the database refuses events whose type is not in the catalog "
        "(applied by migrate and run).",
    )

    allow_networks: str = Field(
        default="",
        description="CIDRs the relay may deliver to although they are loopback, private, "
        "link-local or reserved (the SSRF guard refuses those by default), e.g. 10.0.0.0/8.",
    )
    retry_after_cap: Seconds = Field(default=3600.0, ge=0, le=7 * 86400)
    circuit_failures: int = Field(
        default=5, ge=1, le=10_000, description="Consecutive failures that open a circuit."
    )
    circuit_cooldown: Seconds = Field(default=60.0, gt=0, le=86400)
    circuit_max_cooldown: Seconds = Field(default=3600.0, gt=0, le=7 * 86400)
    disable_after: Seconds = Field(
        default=5 * 86400.0,
        ge=0,
        description="Disable an endpoint that has failed continuously this long (0: never).",
    )
    # At most ~100 years: longer would overflow the date arithmetic of a pruning pass.
    retention: Seconds = Field(
        default=30 * 86400.0,
        ge=0,
        le=36500 * 86400,
        description="Prune events older than this whose deliveries all finished, with their "
        "deliveries and attempts (0: keep everything, dead letters too).",
    )
    dead_retention: Seconds = Field(
        default=90 * 86400.0,
        ge=0,
        le=36500 * 86400,
        description="Prune dead letters dead this long, with their attempts (0: keep them).",
    )

    admin_enabled: bool = Field(default=True, description="Serve the admin HTTP server.")
    admin_host: str = Field(default="127.0.0.1", min_length=1)
    admin_port: int = Field(default=8787, ge=0, le=65535, description="0 picks a free port.")
    admin_token: SecretStr | None = Field(
        default=None,
        description=f"Bearer token for /api/v1 (at least {ADMIN_TOKEN_MIN_LENGTH} printable ASCII "
        "characters); required to bind beyond loopback.",
    )
    metrics_endpoint_labels: bool = Field(
        default=False,
        description="Also count deliveries per endpoint (one series per endpoint and outcome).",
    )
    admin_open_operations: bool = Field(
        default=True,
        description="Serve /health, /ready, /metrics and /openapi.json without the token "
        "(false: token needed).",
    )
    ui_enabled: bool = Field(
        default=True,
        description="Serve the operator console under /ui/ on the admin server (same token).",
    )

    slack_bot_token: SecretStr | None = Field(
        default=None,
        description="Bot token (xoxb-...): request_submitted events go to slack_default_channel.",
    )
    slack_default_channel: str = Field(
        default="#integrations", pattern=r"^[#@]?[A-Za-z0-9._-]{1,80}$"
    )
    slack_api_url: str = Field(
        default="https://slack.com/api/", pattern=r"^https?://", description="Slack Web API base."
    )

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        default="auto",
        description="Event loop of run/admin: uvloop when installed (auto), or asyncio's own.",
    )

    secret_key: SecretStr | None = Field(
        default=None,
        description="Keys that encrypt endpoint secrets and Slack tokens at rest, comma-separated "
        "(the first encrypts, every one decrypts); make one with `pgcourier keys generate`. "
        "Unset: stored unencrypted (a warning at start).",
    )
    max_claims: int = Field(
        default=10,
        ge=2,
        le=1000,
        description="Claims without a recorded attempt (its relay died or stalled each time) "
        "after which a delivery is dead-lettered as poison.",
    )

    @field_validator("retry_schedule")
    @classmethod
    def _schedule_parses(cls, value: str) -> str:
        policy.parse_schedule(value)
        return value

    @field_validator("allow_networks")
    @classmethod
    def _networks_parse(cls, value: str) -> str:
        parse_networks(value)
        return value

    @field_validator("admin_token")
    @classmethod
    def _token_guards_something(cls, value: SecretStr | None) -> SecretStr | None:
        problem = None if value is None else admin_token_problem(value.get_secret_value())
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("secret_key")
    @classmethod
    def _keys_are_keys(cls, value: SecretStr | None) -> SecretStr | None:
        problem = None if value is None else key_problem(value.get_secret_value())
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("log_level", "event_types", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _lease_outlives_a_delivery(self) -> Settings:
        # A lease shorter than one HTTP attempt would let a second relay take a delivery that is
        # still in flight and send it twice.
        if self.lease < 2 * self.delivery_timeout:
            raise ValueError(
                f"lease ({self.lease:g}s) must be at least twice delivery_timeout "
                f"({self.delivery_timeout:g}s)"
            )
        return self

    @model_validator(mode="after")
    def _no_open_admin_beyond_loopback(self) -> Settings:
        if (
            self.admin_enabled
            and self.admin_token_value is None
            and not is_loopback(self.admin_host)
        ):
            raise ValueError(
                f"admin_host {self.admin_host!r} is not loopback: set PGCOURIER_ADMIN_TOKEN "
                "before serving the admin API beyond this machine"
            )
        return self

    @property
    def admin_token_value(self) -> str | None:
        """The admin token, or None when none is set (the validator refuses empty ones, so
        None is the one way to say "no token")."""
        return self.admin_token.get_secret_value() if self.admin_token is not None else None

    @property
    def keyring(self) -> Keyring | None:
        """The keys of ``secret_key`` (None when unset), for whatever writes or reads secrets."""
        return keyring_from(self.secret_key.get_secret_value() if self.secret_key else None)

    @property
    def retry_delays(self) -> tuple[float, ...]:
        """The parsed retry schedule."""
        return policy.parse_schedule(self.retry_schedule)

    @property
    def allowed_networks(self) -> tuple[Network, ...]:
        """The parsed ``allow_networks``."""
        return parse_networks(self.allow_networks)


def admin_token_problem(token: str) -> str | None:
    """Why ``token`` cannot guard the admin API, or None when it can.

    The one rule for "a token is set": the settings apply it at start and the admin app again
    when it is built, so an empty token can never pass one check and disable the other.
    """
    if not token.strip():
        return (
            "is set but empty: unset it to serve the admin API on loopback without a token, "
            f"or set a token, e.g. from {_MAKE_TOKEN}"
        )
    # A bearer token travels in an HTTP header: only visible ASCII can be sent and compared
    # byte for byte (RFC 6750's b64token is a subset).
    if not all("!" <= char <= "~" for char in token):
        return f"must be printable ASCII without spaces, e.g. from {_MAKE_TOKEN}"
    if len(token) < ADMIN_TOKEN_MIN_LENGTH:
        return (
            f"is too short to resist guessing: use at least {ADMIN_TOKEN_MIN_LENGTH} "
            f"characters, e.g. from {_MAKE_TOKEN}"
        )
    return None


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def describe_validation_error(exc: ValidationError) -> list[str]:
    """One line per problem, naming the environment variable."""
    lines = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ()) if part]
        name = "PGCOURIER_" + loc[0].upper() if loc else "settings"
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        lines.append(f"{name}: {message}")
    return lines


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment (``overrides`` win), or raise ConfigurationError."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigurationError("; ".join(describe_validation_error(exc))) from exc
